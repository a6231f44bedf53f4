"""Passkey JSON routes, bad input and rules that need no authenticator: every refusal is a
clear 4xx that changes nothing. (The ceremonies themselves, and the abuse cases with real
answers, are in test_passkeys_browser.py with Chromium's virtual authenticator.)"""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, csrf_from


@pytest.fixture
def stored_passkey(app):
    """stored_passkey(user, name) -> id of a passkey row (a stored credential; its key is
    never used by these tests)."""
    from portal.accounts.models import Passkey
    from portal.extensions import db

    def _make(user, name="Laptop", cred="Y3JlZC0x") -> int:
        with app.app_context():
            row = Passkey(
                user_id=user.id,
                credential_id=cred,
                public_key=b"\x00" * 16,
                sign_count=0,
                transports="internal",
                user_handle="aGFuZGxl",
                name=name,
            )
            db.session.add(row)
            db.session.commit()
            return row.id

    return _make


def passkey_names(app, user) -> list[str]:
    from portal.accounts import passkeys
    from portal.accounts.models import User
    from portal.extensions import db

    with app.app_context():
        return [p.name for p in passkeys.user_passkeys(db.session.get(User, user.id))]


def test_registration_options_are_for_this_host_and_need_resident_keys(client, make_user, auth):
    user = make_user("mo")
    resp = client.post("/api/profile/mfa/passkeys/options", json={}, headers=auth(user))
    assert resp.status_code == 200
    options = resp.get_json()["options"]
    assert options["rp"]["id"] == "localhost"  # the test client's host
    assert options["user"]["name"] == "mo" and options["user"]["id"] != str(user.id)
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert len(options["challenge"]) >= 43


def test_rp_id_and_origin_come_from_config(client, app, make_user, auth):
    app.config["PORTAL_WEBAUTHN_RP_ID"] = "portal.example.org"
    app.config["PORTAL_WEBAUTHN_ORIGIN"] = "https://portal.example.org"
    user = make_user("mo")
    resp = client.post("/api/auth/passkey/options", json={"purpose": "login"})
    assert resp.get_json()["options"]["rpId"] == "portal.example.org"
    app.config["PORTAL_WEBAUTHN_RP_ID"] = None
    resp = client.post("/api/profile/mfa/passkeys/options", json={}, headers=auth(user))
    assert resp.get_json()["options"]["rp"]["id"] == "portal.example.org"  # from the origin


def test_a_garbage_answer_is_refused_and_its_challenge_is_gone(client, app, make_user):
    from portal.accounts.models import WebauthnChallenge
    from portal.extensions import db

    make_user("mo")
    client.post("/api/login", json={"login": "mo", "password": PASSWORD})
    opts = client.post("/api/auth/passkey/options", json={"purpose": "login"})
    assert opts.status_code == 200
    with app.app_context():
        assert db.session.query(WebauthnChallenge).count() == 1
    bad = client.post(
        "/api/auth/passkey", json={"purpose": "login", "credential": {"id": "nope", "rawId": 7}}
    )
    assert bad.status_code == 401 and bad.get_json()["code"] == "passkey_refused"
    with app.app_context():
        assert db.session.query(WebauthnChallenge).count() == 0
    again = client.post("/api/auth/passkey", json={"purpose": "login", "credential": {}})
    assert again.status_code == 401 and "no passkey check is pending" in again.get_json()["error"]


@pytest.mark.parametrize(
    "body, status",
    [
        ({"purpose": "sudo"}, 400),
        ({"purpose": "mfa"}, 401),  # no password step in this session
        ({"purpose": "step-up"}, 401),  # not signed in
        ({"purpose": "reauth"}, 401),
    ],
)
def test_authentication_options_refuse_what_does_not_apply(client, body, status):
    resp = client.post("/api/auth/passkey/options", json=body)
    assert resp.status_code == status and resp.get_json()["error"]


def test_step_up_options_for_an_account_without_passkeys_is_a_conflict(client, make_user, auth):
    user = make_user("mo")
    resp = client.post("/api/auth/passkey/options", json={"purpose": "step-up"}, headers=auth(user))
    assert resp.status_code == 409 and "no passkey" in resp.get_json()["error"]


def test_finish_without_options_and_with_a_wrong_purpose(client, make_user, auth):
    user = make_user("mo")
    resp = client.post(
        "/api/profile/mfa/passkeys", json={"credential": {"id": "x"}}, headers=auth(user)
    )
    assert resp.status_code == 401 and "no passkey check is pending" in resp.get_json()["error"]
    resp = client.post("/api/auth/passkey", json={"purpose": "step-up", "credential": {}})
    assert resp.status_code == 400 and "with the request" in resp.get_json()["error"]
    resp = client.post("/api/profile/mfa/passkeys", json={"credential": "text"}, headers=auth(user))
    assert resp.status_code == 400


def test_rename_and_remove_rules(client, app, make_user, auth, stored_passkey):
    mo, eve = make_user("mo"), make_user("eve")
    pid = stored_passkey(mo)
    url = f"/api/profile/mfa/passkeys/{pid}"
    assert client.get("/api/profile/mfa/passkeys", headers=auth(mo)).get_json()["passkeys"][0][
        "transports"
    ] == ["internal"]
    for name in ("", "   ", "x" * 65, 5):
        resp = client.patch(url, json={"name": name}, headers=auth(mo))
        assert resp.status_code == 400 and resp.get_json()["field"] == "name"
    # someone else's passkey does not exist for them
    assert client.patch(url, json={"name": "mine"}, headers=auth(eve)).status_code == 404
    assert client.delete(url, json={"password": PASSWORD}, headers=auth(eve)).status_code == 404
    ok = client.patch(url, json={"name": "  Work   laptop "}, headers=auth(mo))
    assert ok.status_code == 200 and ok.get_json()["passkey"]["name"] == "Work laptop"
    # removing needs the password (or a passkey answer)
    for body in ({}, {"password": "wrong"}, {"passkey": "not json"}):
        resp = client.delete(url, json=body, headers=auth(mo))
        assert resp.status_code == 400, body
    assert passkey_names(app, mo) == ["Work laptop"]
    assert client.delete(url, json={"password": PASSWORD}, headers=auth(mo)).status_code == 200
    assert passkey_names(app, mo) == []


def test_a_passkey_is_a_factor_sign_in_asks_for_it_and_reset_removes_it(
    client, app, make_user, auth, admin, stored_passkey
):
    user = make_user("mo")
    stored_passkey(user)
    status = client.get("/api/profile/mfa", headers=auth(user)).get_json()
    assert status["passkeys"] == 1 and status["totp"] is False
    resp = client.post("/api/login", json={"login": "mo", "password": PASSWORD})
    assert resp.status_code == 401 and resp.get_json()["mfa_required"] is True
    assert "passkey" in resp.get_json()["error"]
    # the page goes to the second step, which offers the passkey
    token = csrf_from(client.get("/login").get_data(as_text=True))
    page = client.post("/login", data={"login": "mo", "password": PASSWORD, "csrf_token": token})
    assert page.status_code == 303 and page.headers["Location"].endswith("/login/mfa")
    html = client.get("/login/mfa").get_data(as_text=True)
    assert 'id="passkey-mfa"' in html and 'name="code"' not in html  # no app, no codes
    opts = client.post("/api/auth/passkey/options", json={"purpose": "mfa"})
    assert opts.status_code == 200
    assert opts.get_json()["options"]["allowCredentials"][0]["id"] == "Y3JlZC0x"
    # an admin's reset removes passkeys too (the admin steps up with no factor: not asked)
    resp = client.post(f"/api/users/{user.id}/mfa/reset", headers=auth(admin))
    assert resp.status_code == 200
    assert passkey_names(app, user) == []


def test_adding_an_app_beside_a_passkey_needs_a_step_up(client, make_user, auth, stored_passkey):
    user = make_user("mo")
    # signed in with the password while the account had no factor (no fresh check)
    token = csrf_from(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"login": "mo", "password": PASSWORD, "csrf_token": token})
    stored_passkey(user)
    resp = client.post("/api/profile/mfa/totp", headers=auth(user))
    assert resp.status_code == 401 and resp.get_json()["step_up_required"] is True
    assert resp.get_json()["action"] == "totp.add"
    # the page shows the prompt (with the passkey button), not an error on the profile
    token = csrf_from(client.get("/profile/mfa").get_data(as_text=True))
    page = client.post("/profile/mfa/totp", data={"csrf_token": token})
    assert page.status_code == 401
    html = page.get_data(as_text=True)
    assert "Confirm it is you" in html and 'id="passkey-step-up"' in html
