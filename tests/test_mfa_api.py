"""Second factor through the JSON API: TOTP enrolment, sign-in with a code or a recovery
code, reuse and brute force refused, removal and regeneration need the password."""

from __future__ import annotations

import time

import pyotp
import pytest

from tests.conftest import PASSWORD


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


@pytest.fixture
def enrolled(client, make_user, auth):
    """A user with a confirmed authenticator app: (user, secret, recovery codes)."""
    user = make_user("mo")
    begin = client.post("/api/profile/mfa/totp", headers=auth(user))
    assert begin.status_code == 201
    secret = begin.get_json()["secret"]
    resp = client.post(
        "/api/profile/mfa/totp/confirm", json={"code": code_at(secret)}, headers=auth(user)
    )
    assert resp.status_code == 200, resp.get_json()
    return user, secret, resp.get_json()["recovery_codes"]


def login(client, **extra):
    return client.post("/api/login", json={"login": "mo", "password": PASSWORD, **extra})


def test_enrol_gives_otpauth_uri_and_ten_codes_and_secret_is_never_shown_again(
    client, enrolled, auth
):
    user, secret, codes = enrolled
    assert len(codes) == 10 and len(set(codes)) == 10
    status = client.get("/api/profile/mfa", headers=auth(user)).get_json()
    assert status == {"totp": True, "passkeys": 0, "recovery_codes_left": 10, "required": False}
    for path in ("/api/profile", "/api/profile/mfa"):
        assert secret not in client.get(path, headers=auth(user)).get_data(as_text=True)
    # a second enrolment while one is active is refused
    assert client.post("/api/profile/mfa/totp", headers=auth(user)).status_code == 409


def test_unconfirmed_totp_is_not_active_and_wrong_confirm_code_is_refused(client, make_user, auth):
    user = make_user("mo")
    begin = client.post("/api/profile/mfa/totp", headers=auth(user)).get_json()
    assert begin["otpauth_uri"].startswith("otpauth://totp/")
    bad = client.post("/api/profile/mfa/totp/confirm", json={"code": "12345x"}, headers=auth(user))
    assert bad.status_code == 400 and bad.get_json()["field"] == "code"
    # pending: sign-in needs no code yet
    assert login(client).status_code == 200


def test_login_without_code_asks_for_it(client, enrolled):
    resp = login(client)
    assert resp.status_code == 401
    body = resp.get_json()
    assert body["mfa_required"] is True and "second factor" in body["error"]
    assert "token" not in body


def test_login_with_totp_works_once_and_jwt_records_it(client, enrolled):
    import jwt

    _user, secret, _codes = enrolled
    code = code_at(secret, 1)
    ok = login(client, totp=code)
    assert ok.status_code == 200
    claims = jwt.decode(ok.get_json()["token"], options={"verify_signature": False})
    assert isinstance(claims["mfa_at"], int)
    again = login(client, totp=code)
    assert again.status_code == 401
    assert "already used" in again.get_json()["error"]


def test_a_refreshed_jwt_carries_its_sign_in_s_second_factor_check(client, enrolled):
    """The fact survives a refresh (and a refresh of a refresh); its time does not move, so
    a refresh never makes a step-up fresh again. A sign-in without a factor stays without."""
    import jwt

    def claims(token):
        return jwt.decode(token, options={"verify_signature": False})

    _user, secret, _codes = enrolled
    first = login(client, totp=code_at(secret, 1)).get_json()
    mfa_at = claims(first["token"])["mfa_at"]
    time.sleep(1.1)  # a later refresh must not restamp it (whole seconds)
    refreshed = client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.get_json()
    again = client.post(
        "/api/auth/refresh", json={"refresh_token": refreshed.get_json()["refresh_token"]}
    ).get_json()
    assert claims(refreshed.get_json()["token"])["mfa_at"] == mfa_at
    assert claims(again["token"])["mfa_at"] == mfa_at


def test_a_refresh_of_a_sign_in_without_a_factor_has_none(client, make_user):
    import jwt

    make_user("plain")
    body = client.post("/api/login", json={"login": "plain", "password": PASSWORD}).get_json()
    r = client.post("/api/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert r.status_code == 200
    assert "mfa_at" not in jwt.decode(r.get_json()["token"], options={"verify_signature": False})


def test_wrong_code_is_401_and_attempts_are_limited_per_account(client, enrolled, app):
    _user, secret, codes = enrolled
    app.config["PORTAL_MFA_MAX_FAILURES"] = 3
    for _ in range(3):
        resp = login(client, totp="000000")
        assert resp.status_code == 401 and resp.get_json()["mfa_required"] is True
    # from another address too: the limit belongs to the account
    blocked = client.post(
        "/api/login",
        json={"login": "mo", "password": PASSWORD, "recovery_code": codes[0]},
        environ_base={"REMOTE_ADDR": "10.9.9.9"},
    )
    assert blocked.status_code == 429
    assert "too many" in blocked.get_json()["error"].lower()


def test_recovery_code_signs_in_once(client, enrolled, auth):
    user, _secret, codes = enrolled
    assert login(client, recovery_code=codes[0].upper()).status_code == 200
    reused = login(client, recovery_code=codes[0])
    assert reused.status_code == 401 and "already used" in reused.get_json()["error"]
    assert client.get("/api/profile/mfa", headers=auth(user)).get_json()["recovery_codes_left"] == 9


def test_regenerate_needs_password_and_kills_old_codes(client, enrolled, auth):
    user, _secret, codes = enrolled
    wrong = client.post(
        "/api/profile/mfa/recovery-codes", json={"password": "nope"}, headers=auth(user)
    )
    assert wrong.status_code == 400 and wrong.get_json()["field"] == "password"
    new = client.post(
        "/api/profile/mfa/recovery-codes", json={"password": PASSWORD}, headers=auth(user)
    )
    assert new.status_code == 200
    assert set(new.get_json()["recovery_codes"]).isdisjoint(codes)
    assert login(client, recovery_code=codes[1]).status_code == 401
    assert login(client, recovery_code=new.get_json()["recovery_codes"][0]).status_code == 200


def test_remove_needs_password(client, enrolled, auth):
    user, _secret, _codes = enrolled
    r = client.delete("/api/profile/mfa/totp", json={"password": "nope"}, headers=auth(user))
    assert r.status_code == 400
    assert login(client).status_code == 401  # still there
    r = client.delete("/api/profile/mfa/totp", json={"password": PASSWORD}, headers=auth(user))
    assert r.status_code == 200
    assert login(client).status_code == 200


def test_admin_resets_factors_and_others_cannot(client, enrolled, auth, admin, make_user):
    user, _secret, _codes = enrolled
    other = make_user("eve")
    assert client.post(f"/api/users/{user.id}/mfa/reset", headers=auth(other)).status_code == 403
    assert login(client).status_code == 401
    assert client.post(f"/api/users/{user.id}/mfa/reset", headers=auth(admin)).status_code == 200
    assert login(client).status_code == 200


def test_mfa_events_are_signalled_without_secrets(client, app, make_user, auth):
    from portal import signals

    seen = []

    def receiver(sender, **kw):
        seen.append((kw["action"], kw["method"], kw["user"].username, dict(kw["details"])))

    signals.mfa_event.connect(receiver, app)
    try:
        user = make_user("mo")
        secret = client.post("/api/profile/mfa/totp", headers=auth(user)).get_json()["secret"]
        client.post(
            "/api/profile/mfa/totp/confirm", json={"code": code_at(secret)}, headers=auth(user)
        )
        login(client, totp="000000")
        login(client, totp=code_at(secret, 1))
    finally:
        signals.mfa_event.disconnect(receiver, app)
    actions = [(a, m) for a, m, _u, _d in seen]
    assert actions == [("totp_enrolled", "totp"), ("failed", "totp"), ("used", "totp")]
    assert secret not in repr(seen)


@pytest.mark.parametrize(
    "body",
    [{"code": None}, {"code": 123456}, {"code": "x" * 5000}, {"code": ["1"]}],
)
def test_bad_confirm_input_is_4xx(client, make_user, auth, body):
    user = make_user("mo")
    client.post("/api/profile/mfa/totp", headers=auth(user))
    resp = client.post("/api/profile/mfa/totp/confirm", json=body, headers=auth(user))
    assert resp.status_code == 400 and "error" in resp.get_json()


def test_a_code_longer_than_the_field_allows_is_a_wrong_code(client, enrolled):
    from portal.accounts.factors import CODE_MAX
    from portal.formlimits import limits

    assert limits()["mfa_code"] == CODE_MAX  # what the pages' maxlength says
    _user, secret, codes = enrolled
    padded = codes[0] + " " * (CODE_MAX - len(codes[0]) + 1)  # the right code, too long
    r = login(client, recovery_code=padded)
    assert r.status_code == 401 and r.get_json()["mfa_required"] is True
    assert login(client, recovery_code=codes[0]).status_code == 200  # it was not used up
