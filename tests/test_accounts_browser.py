"""Accounts pages in real Chromium: sign up, sign out, sign in, profile, admin — desktop and phone."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.fixtures.browser import sign_in

SHOTS = os.environ.get("PORTAL_SHOTS_DIR")  # set to save screenshots for a human to look at


def shot(page, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


@pytest.mark.timeout(90)
def test_signup_signout_signin_in_browser(live_server, page):
    base = live_server.url
    page.goto(f"{base}/signup")
    shot(page, "signup-desktop")
    page.fill("#f-email", "first@example.test")
    page.fill("#f-username", "first")
    page.fill("#f-password", "short")
    page.fill("#f-password_confirm", "short")
    page.click("button[type=submit]")
    assert "at least 8 characters" in page.inner_text("#e-password")
    assert page.input_value("#f-username") == "first"
    page.fill("#f-password", "long-enough-1")
    page.fill("#f-password_confirm", "long-enough-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard")
    assert "You are the admin" in page.inner_text("#flash")
    page.click("text=Sign out")
    page.wait_for_url(f"{base}/login")
    page.fill("#f-login", "first")
    page.fill("#f-password", "wrong-password")
    page.click("button[type=submit]")
    assert "invalid login or password" in page.inner_text(".auth-card")
    shot(page, "login-error-desktop")
    page.fill("#f-password", "long-enough-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard")
    assert page.js_errors == []


@pytest.mark.timeout(90)
def test_admin_page_htmx_actions_in_browser(live_server, page, make_user):
    make_user("chief", role="admin")
    make_user("helper1")
    base = live_server.url
    sign_in(page, base, "chief", PASSWORD)
    page.goto(f"{base}/admin/users")
    page.fill("input[name=q]", "helper")
    expect(page.locator("#users-table tbody tr")).to_have_count(1)
    page.on("dialog", lambda d: d.accept())
    page.click("#users-table button:has-text('Deactivate')")
    page.wait_for_selector("#users-table .badge.bad")
    assert "deactivated" in page.inner_text("#users-table")
    shot(page, "admin-users-desktop")
    assert page.js_errors == []


@pytest.mark.timeout(90)
def test_pages_fit_a_phone(live_server, phone, make_user):
    make_user("mobile", role="admin")
    base = live_server.url
    phone.goto(f"{base}/login")
    shot(phone, "login-phone")
    sign_in(phone, base, "mobile", PASSWORD)
    for path in ("/dashboard", "/profile", "/admin/users"):
        phone.goto(base + path)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} scrolls sideways on a phone ({width}px)"
        shot(phone, "phone" + path.replace("/", "-"))


@pytest.mark.timeout(90)
def test_profile_api_key_and_avatar_in_browser(live_server, page, make_user, tmp_path):
    from PIL import Image

    make_user("pic")
    base = live_server.url
    sign_in(page, base, "pic", PASSWORD)
    page.goto(f"{base}/profile")
    page.click("button:has-text('Create key')")
    key = page.input_value("#new-api-key")
    assert key.startswith("wxp_")
    img = tmp_path / "me.jpg"
    Image.new("RGB", (400, 300), (20, 120, 200)).save(img)
    page.set_input_files("#f-avatar", str(img))
    page.click("form[action$='/profile/avatar'] button")
    page.wait_for_selector("img.avatar.lg")
    page.wait_for_function("(i => i && i.complete)(document.querySelector('img.avatar.lg'))")
    natural = page.evaluate("document.querySelector('img.avatar.lg').naturalWidth")
    assert natural == 256
    bad = tmp_path / "evil.png"
    bad.write_text("<svg onload=alert(1)>")
    page.set_input_files("#f-avatar", str(bad))
    page.click("form[action$='/profile/avatar'] button")
    assert "PNG, JPEG, WebP or GIF" in page.inner_text(".field-error")
    shot(page, "profile-desktop")
    assert page.js_errors == []
