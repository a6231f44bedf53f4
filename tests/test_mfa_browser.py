"""Two-step sign-in in real Chromium at 375 px and 1280 px: enrol the authenticator app from
the profile (QR code and key), sign out, sign in with a code, and get the step-up prompt
before the terminal page of a sensitive machine."""

from __future__ import annotations

import time

import pyotp
import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.fixtures.browser import age_session, fits, new_page, shot, sign_in


@pytest.mark.timeout(120)
@pytest.mark.parametrize("width", [375, 1280])
def test_enrol_sign_in_with_code_and_step_up_before_sensitive_terminal(
    live_server, browser, make_user, make_machine, width
):
    ctx, page = new_page(browser, width)
    base = live_server.url
    user = make_user("mo")
    box = make_machine(user, "vault-box", sensitive=True, host="127.0.0.1", port=1)
    try:
        sign_in(page, base, "mo", PASSWORD)
        page.goto(f"{base}/profile")
        page.click("text=Manage two-step sign-in")
        page.click("text=Set up authenticator app")
        expect(page.locator(".mfa-qr svg")).to_be_visible()
        secret = page.inner_text("#totp-secret").strip()
        fits(page, width)
        shot(page, f"mfa-enrol-{width}")
        totp = pyotp.TOTP(secret)
        page.fill("#f-code", "000000")
        page.click("#totp button[type=submit]")
        expect(page.locator("#e-code")).to_contain_text("not right")
        page.fill("#f-code", totp.now())
        page.click("#totp button[type=submit]")
        codes = page.locator("#recovery-codes textarea").input_value().split()
        assert len(codes) == 10
        expect(page.locator("#totp")).to_contain_text("Recovery codes left: 10")
        fits(page, width)
        shot(page, f"mfa-codes-{width}")

        # sign out, sign in: the code is asked after the password (the page is left first:
        # a request of it still in flight would set the session cookie again)
        page.wait_for_load_state("networkidle")
        page.goto("about:blank")
        ctx.clear_cookies()
        page.goto(f"{base}/login")
        page.fill("#f-login", "mo")
        page.fill("#f-password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/login/mfa")
        fits(page, width)
        shot(page, f"mfa-login-{width}")
        page.fill("#f-code", totp.at(time.time() + 30))
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/dashboard")

        # a stale check (as in a long session: the sign-in's check an hour ago): the sensitive
        # terminal asks again, and only the right code answers it
        age_session(ctx, live_server.app, base, 3600)
        page.goto(f"{base}/machines/{box.agent_id}/terminal")
        expect(page.locator("#step-up h1")).to_have_text("Confirm it is you")
        fits(page, width)
        shot(page, f"mfa-stepup-{width}")
        page.fill("#f-mfa_code", "not-a-code")
        page.click("#step-up button[type=submit]")
        expect(page.locator("#step-up h1")).to_have_text("Confirm it is you")
        page.fill("#f-mfa_code", codes[0])
        page.click("#step-up button[type=submit]")
        page.wait_for_url(f"{base}/machines/{box.agent_id}/terminal*")
        assert "Confirm it is you" not in page.content()
        page.goto(f"{base}/profile/mfa")
        expect(page.locator("#totp")).to_contain_text("Recovery codes left: 9")
        assert page.js_errors == []
    finally:
        ctx.close()
