"""Sign-up closed by default, single-use invite links, accounts an admin creates, and admin
password resets that force a change at the next sign-in (API, services and pages)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import PASSWORD, csrf_from

NEW_PW = "brand-new-Pass-77"


def signup(client, username="newbie", email=None, invite=None, password="correct-horse-9"):
    body = {"email": email or f"{username}@example.test", "username": username}
    body["password"] = password
    if invite is not None:
        body["invite"] = invite
    return client.post("/api/signup", json=body)


def user_total(client, admin, auth) -> int:
    return client.get("/api/users", headers=auth(admin)).get_json()["total"]


def token_of(url: str) -> str:
    parts = urlsplit(url)
    assert parts.path == "/invite"
    return parse_qs(parts.query)["token"][0]


@pytest.fixture
def invite(client, admin, auth):
    """invite(email=None, role=None, expires_in=None) -> (raw token, invite dict), by the API."""

    def _make(**fields):
        body = {k: v for k, v in fields.items() if v is not None}
        resp = client.post("/api/users/invites", headers=auth(admin), json=body)
        assert resp.status_code == 201, resp.get_json()
        data = resp.get_json()
        return token_of(data["invite_url"]), data["invite"]

    return _make


@pytest.fixture
def admin_htmx(make_user, login):
    """Signed in as the admin "chief": the headers of an HTMX POST, CSRF token included."""
    token = login(make_user("chief", role="admin"))
    return {"X-CSRFToken": token, "HX-Request": "true"}


# ---------------------------------------------------------------- closed by default


def test_signup_is_closed_by_default_after_the_first_account(client, admin, auth):
    resp = signup(client, "stranger")
    assert resp.status_code == 403
    body = resp.get_json()
    assert "invitation" in body["error"] and body["code"] == "signup_closed"
    # closed answers before the input is looked at: bad input is the same 403
    assert client.post("/api/signup", json={}).status_code == 403
    assert user_total(client, admin, auth) == 1
    page = client.get("/signup").get_data(as_text=True)
    assert "by invitation" in page and 'name="password"' not in page


def test_first_account_is_still_the_admin_with_signup_closed(client):
    resp = signup(client, "founder")
    assert resp.status_code == 201 and resp.get_json()["user"]["role"] == "admin"
    assert signup(client, "second").status_code == 403


def test_signup_open_setting_reads_the_environment(monkeypatch, tmp_path):
    from portal.config import load_config

    monkeypatch.delenv("PORTAL_SIGNUP_OPEN", raising=False)
    assert load_config(str(tmp_path))["PORTAL_SIGNUP_OPEN"] is False
    monkeypatch.setenv("PORTAL_SIGNUP_OPEN", "true")
    assert load_config(str(tmp_path))["PORTAL_SIGNUP_OPEN"] is True


def test_open_signup_behaves_as_webxterm(client, admin, open_signup):
    resp = signup(client, "walkin")
    assert resp.status_code == 201 and resp.get_json()["user"]["role"] == "user"


def test_admin_toggle_opens_and_closes_signup(client, make_user, login):
    token = login(make_user("ann", role="admin"))
    assert "Signup is <strong>closed</strong>" in client.get("/admin/users").get_data(as_text=True)
    client.post("/admin/signup", data={"csrf_token": token, "open": "1"})
    assert signup(client, "opened").status_code == 201
    client.post("/admin/signup", data={"csrf_token": token, "open": "0"})
    assert signup(client, "closedagain").status_code == 403


# ---------------------------------------------------------------- invites (API)


def test_invite_works_once_and_is_stored_hashed(client, app, admin, auth, invite):
    raw, inv = invite()
    assert raw.startswith("inv_") and inv["status"] == "pending" and inv["role"] == "user"
    first = signup(client, "guest", invite=raw)
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["user"]["role"] == "user"
    again = signup(client, "guest2", invite=raw)
    assert again.status_code == 403 and again.get_json()["code"] == "invite_used"
    assert "already used" in again.get_json()["error"]
    listed = client.get("/api/users/invites", headers=auth(admin)).get_json()
    assert listed["total"] == 1
    assert listed["invites"][0]["status"] == "used"
    assert listed["invites"][0]["used_by"]["username"] == "guest"
    from sqlalchemy import text

    from portal.extensions import db

    with app.app_context():
        row = db.session.execute(text("SELECT * FROM invites")).mappings().one()
        assert row["token_hash"] == hashlib.sha256(raw.encode()).hexdigest()
        assert raw not in " ".join(str(v) for v in row.values())


def test_invite_link_is_spent_atomically(app, make_user):
    """Two sign-ups that both passed the check race on one link: the atomic spend lets one."""
    from portal.accounts import membership, users
    from portal.errors import AccessDenied
    from portal.extensions import db

    boss = make_user("boss", role="admin")
    with app.test_request_context():
        invite, raw = membership.create_invite(db.session.merge(boss), {})
        db.session.commit()
        checked = membership.find_invite(raw)  # both racers saw it pending
        a = users.create_user(
            email="a@example.test", username="aa", password=PASSWORD, check_open=False
        )
        membership.spend(checked, a)
        db.session.commit()
        b = users.create_user(
            email="b@example.test", username="bb", password=PASSWORD, check_open=False
        )
        with pytest.raises(AccessDenied):
            membership.spend(checked, b)
        db.session.rollback()
        assert users.find_user("bb") is None
        assert db.session.get(type(invite), invite.id).used_by == a.id


def test_expired_and_revoked_invites_are_refused(client, app, admin, auth, invite):
    raw_old, inv_old = invite()
    raw_revoked, inv_revoked = invite()
    from portal.accounts.models import Invite
    from portal.extensions import db

    with app.app_context():
        row = db.session.get(Invite, inv_old["id"])
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        db.session.commit()
    revoked = client.delete(f"/api/users/invites/{inv_revoked['id']}", headers=auth(admin))
    assert revoked.status_code == 200 and revoked.get_json()["invite"]["status"] == "revoked"
    expired = signup(client, "late", invite=raw_old)
    assert expired.status_code == 403 and expired.get_json()["code"] == "invite_expired"
    assert "expired" in expired.get_json()["error"]
    gone = signup(client, "cut", invite=raw_revoked)
    assert gone.status_code == 403 and gone.get_json()["code"] == "invite_revoked"
    forged = signup(client, "forger", invite="inv_" + "A" * 43)
    assert forged.status_code == 403 and forged.get_json()["code"] == "invite_invalid"
    assert signup(client, "typed", invite=["x"]).status_code == 400
    assert user_total(client, admin, auth) == 1
    statuses = {
        i["id"]: i["status"]
        for i in client.get("/api/users/invites", headers=auth(admin)).get_json()["invites"]
    }
    assert statuses == {inv_old["id"]: "expired", inv_revoked["id"]: "revoked"}


def test_email_restricted_invite_refuses_another_email(client, admin, auth, invite):
    raw, inv = invite(email="Invited@Example.test")
    assert inv["email"] == "invited@example.test"
    other = signup(client, "sneaky", email="sneaky@example.test", invite=raw)
    assert other.status_code == 403
    assert other.get_json()["code"] == "invite_email" and other.get_json()["field"] == "email"
    assert user_total(client, admin, auth) == 1
    ok = signup(client, "invited", email="INVITED@example.test", invite=raw)
    assert ok.status_code == 201


def test_admin_role_invite_makes_an_admin(client, invite):
    raw, _ = invite(role="admin")
    assert signup(client, "deputy", invite=raw).get_json()["user"]["role"] == "admin"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"role": "root"}, "role"),
        ({"expires_in": 10}, "expires_in"),
        ({"expires_in": "soon"}, "expires_in"),
        ({"email": "not-an-email"}, "email"),
        ({"email": ["x@example.test"]}, "email"),
    ],
)
def test_invite_bad_input_is_400_and_creates_nothing(client, admin, auth, body, field):
    resp = client.post("/api/users/invites", headers=auth(admin), json=body)
    assert resp.status_code == 400 and resp.get_json()["field"] == field
    assert client.get("/api/users/invites", headers=auth(admin)).get_json()["total"] == 0


def test_non_admin_cannot_create_list_or_revoke_invites(client, app, make_user, auth, invite):
    _, inv = invite()
    user = make_user("pleb")
    h = auth(user)
    assert client.post("/api/users/invites", headers=h, json={}).status_code == 403
    assert client.get("/api/users/invites", headers=h).status_code == 403
    assert client.delete(f"/api/users/invites/{inv['id']}", headers=h).status_code == 403
    assert client.post("/api/users", headers=h, json={}).status_code == 403
    assert client.post(f"/api/users/{user.id}/reset-password", headers=h).status_code == 403
    # the rule lives in the service, whichever face calls it
    from portal.accounts import membership
    from portal.accounts.models import User
    from portal.errors import AccessDenied
    from portal.extensions import db

    with app.test_request_context():
        me = db.session.get(User, user.id)
        for call in (
            lambda: membership.create_invite(me, {}),
            lambda: membership.list_invites(me),
            lambda: membership.admin_create_user(me, {"email": "x@x.test", "username": "xx"}),
            lambda: membership.admin_reset_password(me, me),
        ):
            with pytest.raises(AccessDenied):
                call()


def test_invite_token_is_not_logged(client, invite, caplog):
    caplog.set_level(logging.DEBUG)
    raw, _ = invite()
    client.get(f"/invite?token={raw}")
    signup(client, "quiet", invite=raw)
    signup(client, "quiet2", invite=raw)
    assert raw not in caplog.text


# ---------------------------------------------------------------- admin-made accounts, resets


def test_admin_creates_user_who_must_change_the_password(client, admin, auth):
    resp = client.post(
        "/api/users",
        headers=auth(admin),
        json={"email": "made@example.test", "username": "made", "role": "user"},
    )
    assert resp.status_code == 201
    given = resp.get_json()["password"]
    assert len(given) >= 16 and resp.get_json()["user"]["must_change_password"] is True
    login = {"login": "made", "password": given}
    refused = client.post("/api/login", json=login)
    assert refused.status_code == 403
    body = refused.get_json()
    assert body["code"] == "password_change_required" and body["password_change_required"] is True
    assert "token" not in body
    same = client.post("/api/login", json={**login, "new_password": given})
    assert same.status_code == 400 and same.get_json()["field"] == "new_password"
    weak = client.post("/api/login", json={**login, "new_password": "short"})
    assert weak.status_code == 400
    ok = client.post("/api/login", json={**login, "new_password": NEW_PW})
    assert ok.status_code == 200 and ok.get_json()["user"]["must_change_password"] is False
    assert client.post("/api/login", json={"login": "made", "password": NEW_PW}).status_code == 200
    assert client.post("/api/login", json=login).status_code == 401


def test_admin_created_user_with_chosen_password_and_bad_input(client, admin, auth):
    h = auth(admin)
    bad = client.post("/api/users", headers=h, json={"email": "x@example.test"})
    assert bad.status_code == 400 and bad.get_json()["field"] == "username"
    weak = client.post(
        "/api/users", headers=h, json={"email": "x@example.test", "username": "xx", "password": "1"}
    )
    assert weak.status_code == 400 and weak.get_json()["field"] == "password"
    taken = client.post(
        "/api/users", headers=h, json={"email": "root-admin@example.test", "username": "xx"}
    )
    assert taken.status_code == 409
    ok = client.post(
        "/api/users",
        headers=h,
        json={"email": "x@example.test", "username": "xx", "role": "admin", "password": NEW_PW},
    )
    assert ok.status_code == 201 and "password" not in ok.get_json()
    assert ok.get_json()["user"]["role"] == "admin"


def test_reset_password_ends_every_credential_and_forces_a_change(
    client, app, admin, make_user, auth
):
    user = make_user("forgetful")
    h_user = auth(user)
    pair = client.post("/api/login", json={"login": "forgetful", "password": PASSWORD}).get_json()
    key = client.post("/api/profile/regenerate-api-key", headers=h_user).get_json()["api_key"]
    resp = client.post(f"/api/users/{user.id}/reset-password", headers=auth(admin))
    assert resp.status_code == 200
    temporary = resp.get_json()["password"]
    assert resp.get_json()["user"]["must_change_password"] is True
    # every older credential is dead
    assert client.get("/api/profile", headers=h_user).status_code == 401
    assert client.get("/api/profile", headers={"X-API-Key": key}).status_code == 401
    refresh = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refresh.status_code == 401
    old = client.post("/api/login", json={"login": "forgetful", "password": PASSWORD})
    assert old.status_code == 401
    # the browser: signed in with the temporary password, sent to change it before anything
    token = csrf_from(client.get("/login").get_data(as_text=True))
    signed = client.post(
        "/login", data={"csrf_token": token, "login": "forgetful", "password": temporary}
    )
    assert signed.status_code == 303
    for path in ("/dashboard", "/profile"):
        gated = client.get(path)
        assert gated.status_code == 302 and gated.location.endswith("/password/change")
    htmx = client.get("/dashboard", headers={"HX-Request": "true"})
    assert htmx.headers["HX-Redirect"].endswith("/password/change")
    api = client.get("/api/profile")
    assert api.status_code == 403 and api.get_json()["code"] == "password_change_required"
    page = client.get("/password/change")
    assert page.status_code == 200 and "Choose a new password" in page.get_data(as_text=True)
    token = csrf_from(page.get_data(as_text=True))
    mismatch = client.post(
        "/password/change",
        data={"csrf_token": token, "new_password": NEW_PW, "new_password_confirm": "other-1234"},
    )
    assert mismatch.status_code == 422 and 'id="e-new_password_confirm"' in mismatch.text
    reused = client.post(
        "/password/change",
        data={"csrf_token": token, "new_password": temporary, "new_password_confirm": temporary},
    )
    assert reused.status_code == 422 and "not the one you were given" in reused.text
    done = client.post(
        "/password/change",
        data={"csrf_token": token, "new_password": NEW_PW, "new_password_confirm": NEW_PW},
    )
    assert done.status_code == 303 and done.location.endswith("/dashboard")
    assert client.get("/dashboard").status_code == 200
    assert client.get("/api/profile").get_json()["user"]["must_change_password"] is False
    assert client.get("/password/change").status_code == 302  # nothing pending any more
    ok = client.post("/api/login", json={"login": "forgetful", "password": NEW_PW})
    assert ok.status_code == 200


def test_reset_with_a_chosen_password_and_own_account_refused(client, admin, make_user, auth):
    user = make_user("chosen")
    h = auth(admin)
    resp = client.post(f"/api/users/{user.id}/reset-password", headers=h, json={"password": NEW_PW})
    assert resp.status_code == 200 and "password" not in resp.get_json()
    login = client.post("/api/login", json={"login": "chosen", "password": NEW_PW})
    assert login.status_code == 403 and login.get_json()["password_change_required"] is True
    weak = client.post(f"/api/users/{user.id}/reset-password", headers=h, json={"password": "1"})
    assert weak.status_code == 400
    own = client.post(f"/api/users/{admin.id}/reset-password", headers=h)
    assert own.status_code == 409
    assert client.post("/api/users/999999/reset-password", headers=h).status_code == 404


# ---------------------------------------------------------------- pages


def test_admin_creates_and_revokes_invites_on_the_users_page(client, admin_htmx):
    h = admin_htmx
    resp = client.post(
        "/admin/invites", headers=h, data={"email": "pal@example.test", "expires_in": "86400"}
    )
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "<html" not in html and 'id="invites"' in html
    url = html.split('id="new-invite-url" readonly value="')[1].split('"')[0]
    raw = token_of(url)
    assert "pal@example.test" in html and "pending" in html
    # shown once: the Users page lists the invite, never its link again
    page = client.get("/admin/users").get_data(as_text=True)
    assert raw not in page and "pal@<wbr>example.test" in page and "pending" in page
    bad = client.post("/admin/invites", headers=h, data={"email": "nope"})
    assert bad.status_code == 422 and 'id="e-invite-email"' in bad.get_data(as_text=True)
    invite_id = html.split('id="invite-')[1].split('"')[0]
    revoked = client.post(f"/admin/invites/{invite_id}/revoke", headers=h)
    assert revoked.status_code == 200 and "revoked" in revoked.get_data(as_text=True)
    client.post("/logout", data={"csrf_token": h["X-CSRFToken"]})
    assert "was revoked" in client.get(f"/invite?token={raw}").get_data(as_text=True)


def test_admin_creates_user_and_resets_password_on_the_users_page(client, make_user, admin_htmx):
    h = admin_htmx
    resp = client.post(
        "/admin/users/new", headers=h, data={"email": "new@example.test", "username": "newone"}
    )
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.headers["HX-Trigger"] == "users-changed"
    assert 'id="new-user-password"' in html
    bad = client.post("/admin/users/new", headers=h, data={"email": "x@example.test"})
    assert bad.status_code == 422 and 'id="e-username"' in bad.get_data(as_text=True)
    target = make_user("victim")
    reset = client.post(
        f"/admin/users/{target.id}/reset-password", headers={**h, "HX-Target": "users-table"}
    )
    text = reset.get_data(as_text=True)
    assert reset.status_code == 200 and 'id="reset-password"' in text and "victim" in text
    assert "new password due" in text


def test_invite_page_signs_up_while_closed_and_explains_refusals(client, invite):
    raw, _ = invite(email="pal@example.test")
    page = client.get(f"/invite?token={raw}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'name="token"' in html and "pal@example.test" in html
    token = csrf_from(html)
    form = {
        "csrf_token": token,
        "token": raw,
        "email": "other@example.test",
        "username": "pal",
        "password": NEW_PW,
        "password_confirm": NEW_PW,
    }
    wrong = client.post(f"/invite?token={raw}", data=form)
    assert wrong.status_code == 422 and "another email address" in wrong.get_data(as_text=True)
    done = client.post(f"/invite?token={raw}", data={**form, "email": "pal@example.test"})
    assert done.status_code == 303 and done.location.endswith("/dashboard")
    assert client.get("/api/profile").get_json()["user"]["username"] == "pal"
    client.post("/logout", data={"csrf_token": csrf_from(client.get("/dashboard").text)})
    used = client.get(f"/invite?token={raw}").get_data(as_text=True)
    assert "already used" in used and 'name="password"' not in used
    assert "not valid" in client.get("/invite?token=nonsense").get_data(as_text=True)
    assert "not valid" in client.get("/invite").get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/invites",
        "/admin/invites/1/revoke",
        "/admin/users/new",
        "/admin/users/1/reset-password",
        "/invite",
        "/password/change",
    ],
)
def test_membership_posts_without_csrf_token_are_refused(client, make_user, login, path):
    login(make_user("uma", role="admin"))
    resp = client.post(path, data={"email": "x@example.test", "username": "xx"})
    assert resp.status_code == 400 and "reload the page" in resp.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/admin/invites", "/admin/users/new"])
def test_membership_admin_pages_refuse_plain_users(client, make_user, login, path):
    token = login(make_user("wes"))
    assert client.post(path, data={"csrf_token": token}).status_code == 403
