"""Step-up: risky actions need a fresh second factor (API: 401 step_up_required, retried
with the code; pages: a prompt that continues the action). Users without a factor are not
asked, unless an admin requires one for everyone."""

from __future__ import annotations

import re
import time

import pyotp
import pytest

from tests.conftest import PASSWORD, csrf_from


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


@pytest.fixture
def with_totp(client, auth):
    """with_totp(user) -> the secret of a confirmed authenticator app (code of step -1 used)."""

    def _enrol(user) -> str:
        secret = client.post("/api/profile/mfa/totp", headers=auth(user)).get_json()["secret"]
        # The code of step -1 is good only until the current step ends (the server accepts
        # one step either side): near its end, wait for the next step, or the server may
        # check it a moment later two steps old (a CI failure on PostgreSQL).
        left = 30 - time.time() % 30
        if left < 3:
            time.sleep(left + 0.05)
        resp = client.post(
            "/api/profile/mfa/totp/confirm", json={"code": code_at(secret, -1)}, headers=auth(user)
        )
        assert resp.status_code == 200
        return secret

    return _enrol


def test_api_key_creation_needs_step_up_then_accepts_header_or_body(
    client, make_user, auth, with_totp
):
    user = make_user("mo")
    secret = with_totp(user)
    resp = client.post("/api/profile/regenerate-api-key", headers=auth(user))
    assert resp.status_code == 401
    body = resp.get_json()
    assert body["step_up_required"] is True and "api_key" not in body
    wrong = client.post(
        "/api/profile/regenerate-api-key", headers={**auth(user), "X-MFA-Code": "000000"}
    )
    assert wrong.status_code == 401 and wrong.get_json()["step_up_required"] is True
    ok = client.post(
        "/api/profile/regenerate-api-key", headers={**auth(user), "X-MFA-Code": code_at(secret)}
    )
    assert ok.status_code == 200 and ok.get_json()["api_key"].startswith("wxp_")


def test_jwt_from_an_mfa_sign_in_is_fresh_and_goes_stale(client, app, make_user, with_totp):
    user = make_user("mo")
    secret = with_totp(user)
    signed = client.post(
        "/api/login", json={"login": "mo", "password": PASSWORD, "totp": code_at(secret)}
    ).get_json()
    headers = {"Authorization": f"Bearer {signed['token']}"}
    assert client.post("/api/profile/regenerate-api-key", headers=headers).status_code == 200
    app.config["PORTAL_STEP_UP_MAX_AGE"] = -1  # now it is too old
    stale = client.post("/api/profile/regenerate-api-key", headers=headers)
    assert stale.status_code == 401 and stale.get_json()["step_up_required"] is True


def test_user_without_a_factor_is_not_asked_unless_required(
    client, make_user, auth, admin, with_totp
):
    user = make_user("mo")
    assert client.post("/api/profile/regenerate-api-key", headers=auth(user)).status_code == 200
    secret = with_totp(admin)
    r = client.post(
        "/api/admin/mfa-required",
        json={"required": True, "totp": code_at(secret)},
        headers=auth(admin),
    )
    assert r.status_code == 200
    resp = client.post("/api/profile/regenerate-api-key", headers=auth(user))
    assert resp.status_code == 401 and "set one up" in resp.get_json()["error"]


def test_admin_actions_on_users_need_step_up(client, make_user, auth, admin, with_totp):
    other = make_user("eve")
    secret = with_totp(admin)
    resp = client.post(f"/api/users/{other.id}/role", json={"role": "admin"}, headers=auth(admin))
    assert resp.status_code == 401 and resp.get_json()["step_up_required"] is True
    assert client.get("/api/users", headers=auth(admin)).get_json()["users"][-1]["role"] == "user"
    resp = client.post(
        f"/api/users/{other.id}/role",
        json={"role": "admin", "totp": code_at(secret)},
        headers=auth(admin),
    )
    assert resp.status_code == 200 and resp.get_json()["user"]["role"] == "admin"


def test_sensitive_machine_flag_grant_admin_and_broadcast(
    client, make_user, auth, make_machine, with_totp
):
    owner = make_user("mo")
    secret = with_totp(owner)
    box = make_machine(owner, "box")
    box2 = make_machine(owner, "box2")
    make_user("pal")
    h = auth(owner)
    # marking sensitive is an admin's edit; turning it off again needs a step-up
    resp = client.patch(f"/api/machines/{box.agent_id}", json={"sensitive": True}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["machine"]["sensitive"] is True
    resp = client.patch(f"/api/machines/{box.agent_id}", json={"sensitive": False}, headers=h)
    assert resp.status_code == 401 and resp.get_json()["step_up_required"] is True
    resp = client.patch(f"/api/machines/{box.agent_id}", json={"sensitive": "maybe"}, headers=h)
    assert resp.status_code == 400
    # a terminal ticket on a sensitive machine
    resp = client.post(f"/api/terminal/{box.agent_id}/ticket", headers=h)
    assert resp.status_code == 401 and resp.get_json()["step_up_required"] is True
    # granting admin (operator is fine)
    url = f"/api/machines/{box.agent_id}/access/grant"
    assert client.post(url, json={"user": "pal", "role": "operator"}, headers=h).status_code == 200
    resp = client.post(url, json={"user": "pal", "role": "admin"}, headers=h)
    assert resp.status_code == 401
    # moving the machine
    resp = client.patch(f"/api/machines/{box.agent_id}", json={"host": "192.0.2.77"}, headers=h)
    assert resp.status_code == 401
    # a broadcast to two machines (refused before any SSH)
    resp = client.post(
        "/api/machines/broadcast",
        json={"agent_ids": [box.agent_id, box2.agent_id], "command": "true"},
        headers=h,
    )
    assert resp.status_code == 401 and resp.get_json()["step_up_required"] is True
    # the retried request with the code goes through
    resp = client.post(
        url, json={"user": "pal", "role": "admin"}, headers={**h, "X-MFA-Code": code_at(secret)}
    )
    assert resp.status_code == 200


def sign_in_stale(client, user, secret) -> str:
    """Password + code on the pages, then age the session's second-factor check by an hour."""
    token = csrf_from(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"login": user.username, "password": PASSWORD, "csrf_token": token})
    token = csrf_from(client.get("/login/mfa").get_data(as_text=True))
    done = client.post("/login/mfa", data={"csrf_token": token, "code": code_at(secret)})
    assert done.status_code == 303
    with client.session_transaction() as sess:
        sess["mfa_at"] = int(time.time()) - 3600
    return csrf_from(client.get("/profile").get_data(as_text=True))


def test_terminal_page_on_a_sensitive_machine_prompts_then_continues(
    client, make_user, login, make_machine, with_totp
):
    user = make_user("mo")
    secret = with_totp(user)
    box = make_machine(user, "box", sensitive=True)
    csrf = sign_in_stale(client, user, secret)
    page = client.get(f"/machines/{box.agent_id}/terminal")
    html = page.get_data(as_text=True)
    assert page.status_code == 401 and "Confirm it is you" in html
    nxt = re.search(r'name="next" value="([^"]+)"', html).group(1)
    bad = client.post("/step-up", data={"csrf_token": csrf, "next": nxt, "mfa_code": "000000"})
    assert bad.status_code == 401 and "wrong" in bad.get_data(as_text=True)
    ok = client.post(
        "/step-up", data={"csrf_token": csrf, "next": nxt, "mfa_code": code_at(secret, 1)}
    )
    assert ok.status_code == 303 and f"/machines/{box.agent_id}/terminal" in ok.headers["Location"]
    assert client.get(f"/machines/{box.agent_id}/terminal").status_code == 200


def test_machine_page_form_is_resent_with_the_code(
    client, make_user, login, make_machine, with_totp
):
    user = make_user("mo")
    secret = with_totp(user)
    box = make_machine(user, "box", sensitive=True)
    csrf = sign_in_stale(client, user, secret)
    form = {"csrf_token": csrf, "name": "box", "tags": "", "sensitive": "0"}
    resp = client.post(f"/machines/{box.agent_id}/edit", data=form)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 401 and "Confirm it is you" in html
    assert 'name="sensitive" value="0"' in html  # the form's own fields ride along
    token = csrf_from(html)
    again = client.post(
        f"/machines/{box.agent_id}/edit",
        data={**form, "csrf_token": token, "mfa_code": code_at(secret, 1)},
    )
    assert again.status_code in (200, 303)
    assert "no" == re.search(
        r'id="m-sensitive">([^<]+)<', client.get(f"/machines/{box.agent_id}").get_data(as_text=True)
    ).group(1)


def test_api_key_without_terminal_rights_cannot_open_a_terminal(
    client, make_user, auth, make_machine
):
    user = make_user("mo")
    box = make_machine(user, "box")
    made = client.post(
        "/api/profile/regenerate-api-key", json={"terminal": False}, headers=auth(user)
    ).get_json()
    assert made["terminal"] is False and made["mfa"] is False
    key = made["api_key"]
    assert client.get("/api/machines", headers={"X-API-Key": key}).status_code == 200
    resp = client.post(f"/api/terminal/{box.agent_id}/ticket", headers={"X-API-Key": key})
    assert resp.status_code == 403 and "terminal rights" in resp.get_json()["error"]
    full = client.post("/api/profile/regenerate-api-key", headers=auth(user)).get_json()
    assert full["terminal"] is True
    ok = client.post(f"/api/terminal/{box.agent_id}/ticket", headers={"X-API-Key": full["api_key"]})
    assert ok.status_code == 200 and ok.get_json()["ticket"]


def test_api_key_made_after_a_second_factor_says_so(client, make_user, auth, with_totp):
    user = make_user("mo")
    secret = with_totp(user)
    made = client.post(
        "/api/profile/regenerate-api-key", headers={**auth(user), "X-MFA-Code": code_at(secret)}
    ).get_json()
    assert made["mfa"] is True
    assert client.get("/api/profile", headers=auth(user)).get_json()["api_key_mfa"] is True
