"""Invites and admin-made accounts in real Chromium, on a phone (375 px) and a desktop (1280 px):
the admin makes a link on the Users page, a stranger's own browser opens it and signs up."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.fixtures.browser import sign_in

SHOTS = os.environ.get("PORTAL_SHOTS_DIR")  # set to save screenshots for a human to look at
NEW_PW = "brand-new-Pass-77"


def shot(page, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


@pytest.fixture
def new_page(browser, width):
    """new_page() -> a page in a browser context of its own (its own cookies: another person)
    at the test's width; every context is closed after the test."""
    phone = width < 600
    contexts = []

    def _new():
        ctx = browser.new_context(
            viewport={"width": width, "height": 740 if phone else 800},
            is_mobile=phone,
            has_touch=phone,
            device_scale_factor=2 if phone else 1,
        )
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.js_errors = []
        page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
        return page

    yield _new
    for ctx in contexts:
        ctx.close()


def admin_on_users_page(new_page, base: str):
    """The admin "chief" signed in, on the Users page."""
    page = new_page()
    sign_in(page, base, "chief", PASSWORD)
    page.goto(f"{base}/admin/users")
    return page


def fits(page, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} scrolls sideways at {width}px ({scroll}px)"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("width", [375, 1280])
def test_admin_invites_and_a_stranger_signs_up_through_the_link(
    live_server, new_page, make_user, width
):
    make_user("chief", role="admin")
    make_user("helper")
    base = live_server.url
    page = admin_on_users_page(new_page, base)
    guest = new_page()
    expect(page.locator(".page-head")).to_contain_text("Signup is closed")
    page.fill("#f-invite-email", f"pal{width}@example.test")
    page.select_option("#f-invite-expires", "86400")
    page.click("#invites button[type=submit]")
    link = page.locator("#new-invite-url")
    expect(link).to_be_visible()
    url = link.input_value()
    assert url.startswith(f"{base}/invite?token=inv_")
    expect(page.locator("#invites-table")).to_contain_text("pending")
    fits(page, width)
    shot(page, f"users-{width}")

    guest.goto(url)
    expect(guest.locator("h1")).to_have_text("Join this portal")
    assert guest.input_value("#f-email") == f"pal{width}@example.test"
    fits(guest, width)
    shot(guest, f"invite-{width}")
    guest.fill("#f-username", f"pal{width}")
    guest.fill("#f-password", NEW_PW)
    guest.fill("#f-password_confirm", "typo-" + NEW_PW)
    guest.click("form button[type=submit]")
    expect(guest.locator("#e-password_confirm")).to_contain_text("do not match")
    guest.fill("#f-password", NEW_PW)
    guest.fill("#f-password_confirm", NEW_PW)
    guest.click("form button[type=submit]")
    guest.wait_for_url(f"{base}/dashboard")
    assert "Your account is ready" in guest.inner_text("#flash")
    assert f"pal{width}" in guest.inner_text(".me") or width < 600

    # the link is spent; the admin sees who used it
    page.reload()
    expect(page.locator("#invites-table")).to_contain_text("used")
    expect(page.locator("#invites-table")).to_contain_text(f"by pal{width}")
    expect(page.locator("#users-table")).to_contain_text(f"pal{width}")
    late = new_page()
    late.goto(url)
    expect(late.locator(".notice")).to_contain_text("already used")
    shot(late, f"invite-used-{width}")
    assert page.js_errors == [] and guest.js_errors == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("width", [375, 1280])
def test_admin_made_account_must_choose_a_password_first(live_server, new_page, make_user, width):
    make_user("chief", role="admin")
    base = live_server.url
    page = admin_on_users_page(new_page, base)
    newcomer = new_page()
    page.fill("#f-email", "made@example.test")
    page.fill("#f-username", "made")
    page.click("#create-user button[type=submit]")
    secret = page.locator("#new-user-password")
    expect(secret).to_be_visible()
    given = secret.input_value()
    # the table below refreshed itself with the new account
    expect(page.locator("#users-table")).to_contain_text("new password due")
    fits(page, width)
    shot(page, f"users-created-{width}")

    newcomer.goto(f"{base}/login")
    newcomer.fill("#f-login", "made")
    newcomer.fill("#f-password", given)
    newcomer.click("button[type=submit]")
    newcomer.wait_for_url(f"{base}/password/change")
    newcomer.goto(f"{base}/profile")  # nothing else until the password is changed
    newcomer.wait_for_url(f"{base}/password/change")
    fits(newcomer, width)
    shot(newcomer, f"change-password-{width}")
    newcomer.fill("#f-new_password", NEW_PW)
    newcomer.fill("#f-new_password_confirm", NEW_PW)
    newcomer.click("form button[type=submit]:has-text('Save')")
    newcomer.wait_for_url(f"{base}/dashboard")

    # reset from the users table: a one-time password, and the change is due again
    page.reload()
    page.on("dialog", lambda d: d.accept())
    row = page.locator("#users-table tbody tr", has_text="made@example.test")
    expect(row).not_to_contain_text("new password due")
    row.locator("button:has-text('Reset password')").click()
    expect(page.locator("#reset-password")).to_be_visible()
    expect(row).to_contain_text("new password due")
    fits(page, width)
    newcomer.goto(f"{base}/dashboard")  # signed out everywhere by the reset
    newcomer.wait_for_url("**/login**")
    assert page.js_errors == [] and newcomer.js_errors == []
