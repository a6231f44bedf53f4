"""Second factor on the pages (test client, real forms and CSRF): enrol from the profile,
the sign-in step after the password, removal with the password, the admin's require switch."""

from __future__ import annotations

import re
import time

import pyotp

from tests.conftest import PASSWORD, csrf_from


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


def enrol_on_page(client, csrf) -> tuple[str, list[str]]:
    page = client.post("/profile/mfa/totp", data={"csrf_token": csrf}).get_data(as_text=True)
    assert "<svg" in page  # the QR code is drawn here, not by an outside service
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    bad = client.post("/profile/mfa/totp/confirm", data={"csrf_token": csrf, "code": "000000"})
    assert bad.status_code == 422 and "not right" in bad.get_data(as_text=True)
    ok = client.post(
        "/profile/mfa/totp/confirm", data={"csrf_token": csrf, "code": code_at(secret)}
    )
    html = ok.get_data(as_text=True)
    assert ok.status_code == 200 and "Your recovery codes" in html
    codes = re.search(r'aria-label="Recovery codes">([^<]+)<', html).group(1).split()
    assert len(codes) == 10
    # shown once: the page no longer holds the secret nor the codes
    again = client.get("/profile/mfa").get_data(as_text=True)
    assert secret not in again and codes[0] not in again
    return secret, codes


def password_step(client, username="mo"):
    token = csrf_from(client.get("/login").get_data(as_text=True))
    return client.post(
        "/login?next=/machines",
        data={"login": username, "password": PASSWORD, "csrf_token": token},
    )


def test_enrol_then_sign_in_asks_for_the_code(client, make_user, login):
    user = make_user("mo")
    csrf = login(user)
    secret, codes = enrol_on_page(client, csrf)
    client.post("/logout", data={"csrf_token": csrf})

    resp = password_step(client)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/login/mfa")
    assert client.get("/profile").status_code in (302, 303)  # not signed in yet
    page = client.get("/login/mfa").get_data(as_text=True)
    token = csrf_from(page)
    wrong = client.post("/login/mfa", data={"csrf_token": token, "code": "123456"})
    assert wrong.status_code == 401 and "wrong" in wrong.get_data(as_text=True)
    ok = client.post("/login/mfa", data={"csrf_token": token, "code": code_at(secret, 1)})
    assert ok.status_code == 303 and ok.headers["Location"].endswith("/machines")
    assert client.get("/profile").status_code == 200


def test_lost_phone_recovery_code_works_once_on_the_page(client, make_user, login):
    user = make_user("mo")
    csrf = login(user)
    _secret, codes = enrol_on_page(client, csrf)
    client.post("/logout", data={"csrf_token": csrf})
    password_step(client)
    token = csrf_from(client.get("/login/mfa").get_data(as_text=True))
    assert (
        client.post("/login/mfa", data={"csrf_token": token, "code": codes[3]}).status_code == 303
    )
    csrf = csrf_from(client.get("/profile").get_data(as_text=True))
    client.post("/logout", data={"csrf_token": csrf})
    password_step(client)
    token = csrf_from(client.get("/login/mfa").get_data(as_text=True))
    reused = client.post("/login/mfa", data={"csrf_token": token, "code": codes[3]})
    assert reused.status_code == 401 and "already used" in reused.get_data(as_text=True)


def test_second_step_without_password_step_goes_back_to_login(client):
    resp = client.get("/login/mfa")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")


def test_remove_needs_the_password(client, make_user, login):
    user = make_user("mo")
    csrf = login(user)
    enrol_on_page(client, csrf)
    bad = client.post("/profile/mfa/totp/remove", data={"csrf_token": csrf, "password": "x"})
    assert bad.status_code == 422 and "password is wrong" in bad.get_data(as_text=True)
    ok = client.post("/profile/mfa/totp/remove", data={"csrf_token": csrf, "password": PASSWORD})
    assert ok.status_code == 303
    assert "Set up authenticator app" in client.get("/profile/mfa").get_data(as_text=True)


def test_enrol_without_csrf_is_refused(client, make_user, login):
    user = make_user("mo")
    login(user)
    assert client.post("/profile/mfa/totp", data={}).status_code == 400


def test_required_for_everyone_sends_users_to_enrol(client, app, make_user, auth):
    admin = make_user("chief", role="admin")
    make_user("mo")
    resp = client.post("/api/admin/mfa-required", json={"required": True}, headers=auth(admin))
    assert resp.get_json() == {"required": True}
    resp = password_step(client)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/profile/mfa")


def test_new_recovery_codes_on_the_page_need_the_password(client, make_user, login):
    user = make_user("mo")
    csrf = login(user)
    _secret, codes = enrol_on_page(client, csrf)
    bad = client.post(
        "/profile/mfa/recovery-codes", data={"csrf_token": csrf, "codes_password": "x"}
    )
    assert bad.status_code == 422 and 'id="e-codes_password"' in bad.get_data(as_text=True)
    ok = client.post(
        "/profile/mfa/recovery-codes", data={"csrf_token": csrf, "codes_password": PASSWORD}
    )
    html = ok.get_data(as_text=True)
    assert ok.status_code == 200 and "Your recovery codes" in html and codes[0] not in html


def test_admin_page_requires_mfa_and_resets_a_users_factors(client, make_user, login, auth):
    admin = make_user("chief", role="admin")
    user = make_user("mo")
    secret = client.post("/api/profile/mfa/totp", headers=auth(user)).get_json()["secret"]
    client.post("/api/profile/mfa/totp/confirm", json={"code": code_at(secret)}, headers=auth(user))
    csrf = login(admin)
    page = client.get("/admin/users").get_data(as_text=True)
    assert "Require for everyone" in page and "Reset 2FA" in page
    resp = client.post(f"/admin/users/{user.id}/mfa-reset", data={"csrf_token": csrf})
    assert resp.status_code == 200
    assert client.get("/api/profile/mfa", headers=auth(user)).get_json()["totp"] is False
    resp = client.post("/admin/mfa-required", data={"csrf_token": csrf, "required": "1"})
    assert resp.status_code == 303
    assert "Make optional" in client.get("/admin/users").get_data(as_text=True)
