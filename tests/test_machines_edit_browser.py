"""Issue 20 in real Chromium, phone (375x740, touch) and desktop (1280x800): edit a machine
with mistakes (a taken name, a bad port), see both errors next to their fields, fix them
without pasting the key again; the keyboard walks the add-machine form in reading order.
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
    page.screenshot(path=os.path.join(SHOTS, f"machedit-{name}.png"), full_page=True)


@pytest.mark.parametrize("device", ["phone", "page"])
def test_edit_machine_mistakes_fixed_without_repasting(
    request, device, live_server, make_user, sshd_machine, make_machine, sshd
):
    page = request.getfixturevalue(device)
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    alice = make_user("alice")
    m = sshd_machine(alice, "password", name="web-a")
    make_machine(alice, name="web-b")
    base = live_server.url
    sign_in(page, base, "alice", PASSWORD)
    page.goto(f"{base}/machines/{m.agent_id}")
    page.click("a.btn:has-text('Edit')")
    page.wait_for_url(f"{base}/machines/{m.agent_id}/edit")
    expect(page.locator("#f-host")).to_have_value(sshd.host)
    expect(page.locator("#f-password")).to_have_value("")  # the stored one is never shown
    expect(page.locator("#f-private_key")).to_be_hidden()
    page.fill("#f-name", "web-b")  # mistake 1: taken
    page.fill("#f-port", "70000")  # mistake 2
    page.check("input[name=auth_method][value=key]")
    expect(page.locator("#f-private_key")).to_be_visible()
    page.fill("#f-private_key", sshd.client_key_private_text)
    page.click("button:has-text('Save')")
    expect(page.locator("#e-name")).to_contain_text("already have a machine named")
    expect(page.locator("#e-port")).to_contain_text("65535")
    # both next to their fields, and the pasted key is still there
    name_box = page.locator("#f-name").bounding_box()
    err_box = page.locator("#e-name").bounding_box()
    assert 0 <= err_box["y"] - (name_box["y"] + name_box["height"]) < 40
    expect(page.locator("#f-private_key")).to_be_visible()
    expect(page.locator("#f-private_key")).to_have_value(sshd.client_key_private_text)
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    shot(page, f"edit-errors-{device}")
    page.fill("#f-name", "web-c")
    page.fill("#f-port", str(sshd.port))
    page.click("button:has-text('Save')")
    page.wait_for_url(f"{base}/machines/{m.agent_id}")
    expect(page.locator(".flash.success")).to_contain_text("web-c is reachable")
    expect(page.locator("h1")).to_contain_text("web-c")
    expect(page.locator("dl.kv")).to_contain_text("private key")
    shot(page, f"edit-saved-{device}")
    assert not js_errors


def test_add_machine_form_tab_order(page, live_server, make_user):
    """Reading order: the keyboard moves through the fields as they appear, no positive
    tabindex anywhere, and a focused field shows its outline."""
    make_user("alice")
    base = live_server.url
    sign_in(page, base, "alice", PASSWORD)
    for path in ("/dashboard", "/machines", "/machines/new", "/community", "/profile"):
        page.goto(base + path)
        positive = page.evaluate(
            "[...document.querySelectorAll('[tabindex]')].filter(e => e.tabIndex > 0).length"
        )
        assert positive == 0, path
    page.goto(f"{base}/machines/new")
    page.focus("#f-name")
    order = ["f-name"]
    describe = """() => {
        const e = document.activeElement;
        if (e.id) return e.id;
        if (e.name) return e.name + (e.value ? '=' + e.value : '');
        return e.tagName.toLowerCase() + ':' + e.textContent.trim();
    }"""
    for _ in range(12):
        page.keyboard.press("Tab")
        order.append(page.evaluate(describe))
    assert order == [
        "f-name",
        "f-host",
        "f-port",
        "f-username",
        "f-gateway",
        "f-tags",
        "auth_method=key",  # the radio group is one stop: the checked one
        "f-private_key",
        "f-passphrase",
        "button:Fetch host key",
        "summary:…or paste the host key line / SHA256 fingerprint",
        "button:Add machine",
        "a:Cancel",
    ], order
    page.focus("#f-host")
    outline = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth]; })()"
    )
    assert outline[0] != "none" and outline[1] != "0px", outline
    shot(page, "add-focus-1280")
