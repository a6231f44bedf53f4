"""Issue 20 in real Chromium, phone (375x740, touch) and desktop (1280x800): add a machine
with several mistakes, see every error next to its field, fix them without pasting the key
or fetching the host key again; sign-up shows all its errors at once.
Screenshots go to /tmp/shots/ (or PORTAL_SHOTS_DIR)."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.fixtures.browser import sign_in

SHOTS = os.environ.get("PORTAL_SHOTS_DIR", "/tmp/shots")

pytestmark = pytest.mark.timeout(120)


def shot(page, name):
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, f"forms-{name}.png"), full_page=True)


@pytest.mark.parametrize("device", ["phone", "page"])
def test_add_machine_mistakes_fixed_without_repasting(
    request, device, live_server, make_user, sshd
):
    page = request.getfixturevalue(device)
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    make_user("alice")
    base = live_server.url
    sign_in(page, base, "alice", PASSWORD)
    page.goto(f"{base}/machines/new")
    page.fill("#f-name", "phone-added")
    page.fill("#f-host", sshd.host)
    page.fill("#f-port", str(sshd.port))
    page.click("text=Fetch host key")
    expect(page.locator("#hostkey-scan")).to_contain_text(sshd.host_key_fingerprints[0])
    page.fill("#f-port", "70000")  # mistake 1; username left empty: mistake 2
    page.fill("#f-private_key", sshd.client_key_private_text)
    page.click("button:has-text('Add machine')")  # trust box unticked: mistake 3
    expect(page.locator("#e-port")).to_contain_text("65535")
    expect(page.locator("#e-username")).to_be_visible()
    expect(page.locator("#e-host_key-top")).to_be_visible()  # not inside a closed section
    expect(page.locator("#e-host_key-top")).to_contain_text("tick the box")
    shot(page, f"add-errors-{device}")
    # the key and the fetched host key are still there: fix only what was wrong
    expect(page.locator("#f-private_key")).to_have_value(sshd.client_key_private_text)
    expect(page.locator("#hostkey-scan")).to_contain_text(sshd.host_key_fingerprints[0])
    page.fill("#f-port", str(sshd.port))
    page.fill("#f-username", sshd.username)
    page.check("input[name=host_key_ack]")
    page.click("button:has-text('Add machine')")
    page.wait_for_url(f"{base}/machines/*")
    expect(page.locator("h1")).to_contain_text("phone-added")
    expect(page.locator(".flash.success")).to_contain_text("reachable")
    assert not js_errors


def test_signup_all_errors_phone(live_server, phone, open_signup, make_user):
    js_errors: list[str] = []
    phone.on("pageerror", lambda exc: js_errors.append(str(exc)))
    make_user("first")  # not the first account: plain sign-up
    phone.goto(f"{live_server.url}/signup")
    phone.fill("#f-email", "nope")
    phone.fill("#f-username", "x")
    phone.click("button:has-text('Create account')")
    for field in ("email", "username", "password"):
        expect(phone.locator(f"#e-{field}")).to_be_visible()
    expect(phone.locator("#f-email")).to_have_value("nope")
    shot(phone, "signup-errors-375")
    assert not js_errors


@pytest.mark.parametrize("device", ["phone", "page"])
def test_nav_all_items_visible_and_skip_link(request, device, live_server, make_user):
    page = request.getfixturevalue(device)
    make_user("root", role="admin")  # admins see one more item (Users)
    base = live_server.url
    sign_in(page, base, "root", PASSWORD)
    width = page.viewport_size["width"]
    for path in ("/dashboard", "/machines", "/machines/new", "/sessions", "/community"):
        page.goto(base + path)
        links = page.locator("nav.nav a")
        assert links.count() >= 4
        for i in range(links.count()):
            box = links.nth(i).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (path, i, box)
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    shot(page, f"nav-{device}")
    # keyboard: the first Tab lands on the skip link, Enter moves focus to the content
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    expect(page.locator(".skip-link")).to_be_in_viewport()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.goto(base + "/no/such/page")
    expect(page.locator("main")).to_contain_text("/no/such/page")
    shot(page, f"404-{device}")
