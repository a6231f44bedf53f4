"""An OAuth sign-in into an account with a second factor asks for it too (real local OIDC
provider from tests/fixtures)."""

from __future__ import annotations

import time

import pyotp

from tests.conftest import csrf_from
from tests.test_accounts_oauth import app_config, oauth_dance  # noqa: F401  (fixture reused)


def test_oauth_sign_in_asks_for_the_second_factor(client, oidc_provider, make_user, login):
    user = make_user("pia")
    csrf = login(user)
    oidc_provider.set_user("sub-pia", "pia-elsewhere@example.test")
    oauth_dance(client, start="/auth/oauth/oidc/link")
    page = client.post("/profile/mfa/totp", data={"csrf_token": csrf}).get_data(as_text=True)
    secret = page.split('id="totp-secret">', 1)[1].split("<", 1)[0]
    totp = pyotp.TOTP(secret)
    ok = client.post("/profile/mfa/totp/confirm", data={"csrf_token": csrf, "code": totp.now()})
    assert ok.status_code == 200
    client.post("/logout", data={"csrf_token": csrf})

    final = oauth_dance(client)
    assert final.status_code == 302 and final.location.endswith("/login/mfa")
    assert client.get("/api/profile").status_code == 401  # not signed in by OAuth alone
    token = csrf_from(client.get("/login/mfa").get_data(as_text=True))
    code = totp.at(time.time() + 30)
    done = client.post("/login/mfa", data={"csrf_token": token, "code": code})
    assert done.status_code == 303
    assert client.get("/api/profile").get_json()["user"]["username"] == "pia"
