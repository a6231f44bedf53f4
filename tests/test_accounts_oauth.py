"""OAuth sign-in against a real OpenID Connect provider started locally (tests/fixtures)."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import PASSWORD, csrf_from

CALLBACK = "http://localhost/auth/oauth/oidc/callback"


@pytest.fixture
def app_config(app_config, oidc_provider):
    oidc_provider.register_redirect_uri(CALLBACK)
    app_config.update(
        OAUTH_OIDC_CLIENT_ID=oidc_provider.client_id,
        OAUTH_OIDC_CLIENT_SECRET=oidc_provider.client_secret,
        OAUTH_OIDC_DISCOVERY_URL=oidc_provider.discovery_url,
        OAUTH_OIDC_NAME="TestID",
    )
    return app_config


def oauth_dance(client, start="/auth/oauth/oidc"):
    """Browser-like: portal -> provider (real HTTP) -> portal callback. Returns the last response."""
    r1 = client.get(start)
    assert r1.status_code == 302
    assert r1.location.startswith("http://127.0.0.1:")
    r2 = requests.get(r1.location, allow_redirects=False, timeout=10)
    assert r2.status_code in (302, 303), r2.text
    return client.get(r2.headers["Location"])


def me(client):
    return client.get("/api/profile")


def assert_back_on_login(client, final, message: str) -> None:
    """A refused OAuth sign-in: back to the login page, nobody signed in, the page says why."""
    assert final.status_code == 302 and "/login" in final.location
    assert me(client).status_code == 401
    assert message in client.get("/login").get_data(as_text=True)


def test_login_page_shows_only_configured_provider(client):
    html = client.get("/login").get_data(as_text=True)
    assert "Continue with TestID" in html
    assert "GitHub" not in html and "Google" not in html


def test_first_login_creates_account_when_signup_open(client, oidc_provider, admin, open_signup):
    oidc_provider.set_user(
        "sub-new", "newbie@example.test", email_verified=True, preferred_username="newbie"
    )
    final = oauth_dance(client)
    assert final.status_code == 302 and final.location.endswith("/dashboard")
    prof = me(client).get_json()
    assert prof["user"]["username"] == "newbie" and prof["user"]["role"] == "user"
    assert prof["identities"] == [{"provider": "oidc", "email": "newbie@example.test"}]
    # PKCE and nonce were used
    params = oidc_provider.last_authorize_params
    assert params["code_challenge_method"] == "S256" and params["nonce"] and params["state"]


def test_oauth_sign_in_never_takes_over_a_local_account_with_the_same_email(
    client, oidc_provider, make_user, admin, app
):
    """Pre-account takeover (issue 16): an attacker signs up locally as victim@corp (the portal
    never verified that address). The victim's first OIDC sign-in with that provider-verified
    email must not land in the attacker's account: it is refused, nothing created or linked."""
    from sqlalchemy import func, select

    from portal.accounts import users
    from portal.accounts.models import OAuthIdentity
    from portal.extensions import db

    make_user("mallory", email="victim@corp.test")
    for verified in (True, False):
        oidc_provider.set_user("sub-victim", "victim@corp.test", email_verified=verified)
        final = oauth_dance(client)
        assert_back_on_login(client, final, "an account with this email already exists")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OAuthIdentity)) == 0
        assert users.list_users()[1] == 2
    # The attacker's password sign-in shows no linked identity either.
    ok = client.post("/api/login", json={"login": "mallory", "password": PASSWORD})
    assert ok.status_code == 200
    headers = {"Authorization": f"Bearer {ok.get_json()['token']}"}
    assert client.get("/api/profile", headers=headers).get_json()["identities"] == []


def test_owner_links_from_profile_then_oauth_signs_into_that_account(
    client, oidc_provider, make_user, login
):
    """The supported way to use a provider with an existing account: link while signed in."""
    olga = make_user("olga", email="olga@example.test")
    token = login(olga)
    oidc_provider.set_user("sub-olga", "olga@example.test", email_verified=True)
    assert oauth_dance(client, start="/auth/oauth/oidc/link").location.endswith("/profile")
    client.post("/logout", data={"csrf_token": token})
    assert me(client).status_code == 401
    oauth_dance(client)
    assert me(client).get_json()["user"]["username"] == "olga"


def test_signup_closed_refuses_new_account(client, oidc_provider, admin, app):
    from portal.accounts import settings, users
    from portal.extensions import db

    with app.app_context():
        settings.set_setting("signup_open", "0")
        db.session.commit()
    oidc_provider.set_user("sub-x", "stranger@example.test", email_verified=True)
    assert_back_on_login(client, oauth_dance(client), "signup is closed")
    with app.app_context():
        assert users.list_users()[1] == 1


def test_denied_at_provider_signs_nobody_in(client, oidc_provider, admin):
    oidc_provider.deny_next()
    final = oauth_dance(client)
    assert final.status_code == 302
    assert me(client).status_code == 401


def test_forged_state_is_refused(client, oidc_provider, admin):
    oidc_provider.set_user("sub-f", "forged@example.test")
    r1 = client.get("/auth/oauth/oidc")
    r2 = requests.get(r1.location, allow_redirects=False, timeout=10)
    forged = r2.headers["Location"].replace("state=", "state=evil")
    client.get(forged)
    assert me(client).status_code == 401


def test_wrong_audience_id_token_is_refused(client, oidc_provider, admin):
    oidc_provider.set_user("sub-aud", "aud@example.test")
    oidc_provider.override_next_id_token(aud="someone-else")
    oauth_dance(client)
    assert me(client).status_code == 401


def test_link_and_unlink_from_profile(client, oidc_provider, make_user, login):
    user = make_user("pia")
    token = login(user)
    oidc_provider.set_user("sub-pia", "pia-elsewhere@example.test")
    final = oauth_dance(client, start="/auth/oauth/oidc/link")
    assert final.location.endswith("/profile")
    profile = client.get("/profile").get_data(as_text=True)
    assert "linked" in profile and "pia-elsewhere@example.test" in profile
    resp = client.post("/profile/unlink/oidc", data={"csrf_token": token})
    assert resp.status_code == 303
    assert me(client).get_json()["identities"] == []
    assert user.id


def test_unlinking_the_only_way_to_sign_in_is_refused(client, oidc_provider, admin, open_signup):
    oidc_provider.set_user("sub-only", "only@example.test", preferred_username="onlyoauth")
    oauth_dance(client)
    token = csrf_from(client.get("/profile").get_data(as_text=True))
    resp = client.post("/profile/unlink/oidc", data={"csrf_token": token})
    assert resp.status_code == 409
    assert "only way to sign in" in resp.get_data(as_text=True)
    assert me(client).get_json()["identities"][0]["provider"] == "oidc"


def test_password_login_still_works_for_linked_account(client, oidc_provider, make_user):
    make_user("quinn")
    ok = client.post("/api/login", json={"login": "quinn", "password": PASSWORD})
    assert ok.status_code == 200


def _invite(app, admin_user, **fields) -> str:
    from portal.accounts import membership
    from portal.accounts.models import User
    from portal.extensions import db

    with app.test_request_context():
        _inv, raw = membership.create_invite(db.session.get(User, admin_user.id), fields)
        db.session.commit()
    return raw


def test_invite_page_continue_with_provider_creates_the_account(client, oidc_provider, admin, app):
    raw = _invite(app, admin, role="admin")
    page = client.get(f"/invite?token={raw}").get_data(as_text=True)
    start = f"/invite/oauth/oidc?token={raw}"
    assert f'href="{start}"' in page and "Continue with TestID" in page
    oidc_provider.set_user("sub-inv", "invited@example.test", preferred_username="invitee")
    final = oauth_dance(client, start=start)
    assert final.status_code == 302 and final.location.endswith("/dashboard")
    prof = me(client).get_json()
    assert prof["user"]["username"] == "invitee" and prof["user"]["role"] == "admin"
    # spent: a second stranger through the same link is refused
    client.post("/logout", data={"csrf_token": csrf_from(client.get("/dashboard").text)})
    back = client.get(start)  # not sent to the provider: back to the page that says why
    assert back.status_code == 302 and back.location == f"/invite?token={raw}"
    assert me(client).status_code == 401
    assert "already used" in client.get(back.location).get_data(as_text=True)


def test_oauth_invite_for_another_email_creates_nothing(client, oidc_provider, admin, app):
    raw = _invite(app, admin, email="meant@example.test")
    oidc_provider.set_user("sub-other", "other@example.test")
    final = oauth_dance(client, start=f"/invite/oauth/oidc?token={raw}")
    assert_back_on_login(client, final, "another email address")
    from portal.accounts.users import list_users

    with app.app_context():
        assert list_users()[1] == 1
    # the invite is still good for the address it names
    oidc_provider.set_user("sub-meant", "meant@example.test")
    oauth_dance(client, start=f"/invite/oauth/oidc?token={raw}")
    assert me(client).get_json()["user"]["email"] == "meant@example.test"


def test_plain_provider_button_does_not_reuse_an_abandoned_invite(
    client, oidc_provider, admin, app
):
    """An invite left in the session (provider never came back) is dropped by a later plain
    "Continue with" sign-in: it cannot create an account while sign-up is closed."""
    raw = _invite(app, admin)
    assert client.get(f"/invite/oauth/oidc?token={raw}").status_code == 302  # abandoned
    oidc_provider.set_user("sub-late", "late@example.test")
    oauth_dance(client)
    assert me(client).status_code == 401
    assert "signup is closed" in client.get("/login").get_data(as_text=True)


def test_oauth_sign_in_refused_after_flushing_its_user_changes_nothing(
    client, oidc_provider, admin, app
):
    """The invite is spent by someone else while this OAuth sign-in writes its new user: the
    callback answers with a redirect (a success status), so it marks the request failed
    (db.fail_request) and the flushed user is rolled back, not committed."""
    from sqlalchemy import update

    from portal.accounts.models import Invite, User
    from portal.accounts.users import find_user, list_users
    from portal.db import utcnow
    from tests.fixtures.race import commit_before_flush_of

    raw = _invite(app, admin)
    oidc_provider.set_user("sub-race", "racer@example.test", preferred_username="racer")
    other = update(Invite).values(used_at=utcnow(), used_by=admin.id)
    with commit_before_flush_of(User, lambda u: u.username == "racer", other) as fired:
        final = oauth_dance(client, start=f"/invite/oauth/oidc?token={raw}")
    assert fired, "the racing sign-up did not run"
    assert_back_on_login(client, final, "already used")
    with app.app_context():
        assert find_user("racer") is None and list_users()[1] == 1
