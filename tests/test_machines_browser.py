"""Machines pages in real Chromium, desktop (1280) and phone (375): list + search-as-you-type,
add with the trust step, command box, log search, broadcast rows filling in.
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
    page.screenshot(path=os.path.join(SHOTS, f"machines-{name}.png"), full_page=True)


def _no_horizontal_scroll(page):
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"] + 1, f"page is {width}px wide"


def test_desktop_list_detail_command(live_server, page, make_user, make_machine, sshd_machine):
    alice = make_user("alice")
    m = sshd_machine(alice, "key", name="api-server", tags="prod,api")
    make_machine(alice, name="db-primary", tags="prod,db", status="offline", os="Linux 6.1")
    make_machine(alice, name="edge-cache", tags="edge", status="error")
    make_machine(
        alice, name="new-box", status="pending", host=None, username=None, auth_method=None
    )
    base = live_server.url
    sign_in(page, base, "alice", PASSWORD)
    page.goto(f"{base}/machines")
    expect(page.locator("#machines-table tbody tr")).to_have_count(4)
    shot(page, "list-1280")
    page.fill("input[name=q]", "edge")
    expect(page.locator("#machines-table tbody tr")).to_have_count(1)
    expect(page.locator("#machines-table")).to_contain_text("edge-cache")
    page.fill("input[name=q]", "")
    page.select_option("select[name=status]", "online")
    expect(page.locator("#machines-table tbody tr")).to_have_count(1)
    page.click("text=api-server")
    page.wait_for_url(f"{base}/machines/{m.agent_id}")
    page.fill(".command-form input[name=command]", "echo hello from the browser; uname -s")
    page.click(".command-form button[type=submit]")
    expect(page.locator("#command-result")).to_contain_text("hello from the browser")
    expect(page.locator("#command-result")).to_contain_text("exit 0")
    expect(page.locator("#recent-commands")).to_contain_text("echo hello from the browser")
    page.fill(".command-form input[name=command]", "cat /no/such/file")
    page.click(".command-form button[type=submit]")
    expect(page.locator("#command-result")).to_contain_text("exit 1")
    page.reload()
    page.fill(".logs-filters input[name=q]", "such")
    expect(page.locator("#log-rows tr.log-row")).to_have_count(1)
    expect(page.locator("#log-rows")).to_contain_text("cat /no/such/file")
    shot(page, "detail-1280")
    assert not page.js_errors


def test_desktop_add_machine_trust_step(live_server, page, make_user, sshd):
    make_user("alice")
    base = live_server.url
    sign_in(page, base, "alice", PASSWORD)
    page.goto(f"{base}/machines/new")
    expect(page.locator("[data-auth=password]")).to_be_hidden()
    page.fill("#f-name", "browser-added")
    page.fill("#f-host", sshd.host)
    page.fill("#f-port", str(sshd.port))
    page.fill("#f-username", sshd.username)
    page.check("input[name=auth_method][value=password]")
    expect(page.locator("[data-auth=key]")).to_be_hidden()
    page.fill("#f-password", sshd.password)
    page.click("text=Fetch host key")
    expect(page.locator("#hostkey-scan")).to_contain_text(sshd.host_key_fingerprints[0])
    shot(page, "add-1280")
    page.click("button:has-text('Add machine')")
    expect(page.locator(".field-error")).to_contain_text("confirm")  # box not ticked
    # nothing to paste or fetch again: the password and the fetched keys are still there
    expect(page.locator("#f-password")).to_have_value(sshd.password)
    expect(page.locator("#hostkey-scan")).to_contain_text(sshd.host_key_fingerprints[0])
    page.check("input[name=host_key_ack]")
    page.click("button:has-text('Add machine')")
    page.wait_for_url(f"{base}/machines/*")
    expect(page.locator("h1")).to_contain_text("browser-added")
    expect(page.locator(".flash.success")).to_contain_text("reachable")
    assert not page.js_errors


def test_phone_pages_and_broadcast(live_server, phone, make_user, make_machine, sshd_machine):
    alice = make_user("alice")
    a = sshd_machine(alice, "key", name="fleet-a", tags="fleet")
    sshd_machine(alice, "password", name="fleet-b", tags="fleet")
    make_machine(
        alice, name="an-offline-machine-with-a-long-name", tags="fleet,storage", status="offline"
    )
    base = live_server.url
    sign_in(phone, base, "alice", PASSWORD)
    phone.goto(f"{base}/machines")
    expect(phone.locator("#machines-table tbody tr")).to_have_count(3)
    _no_horizontal_scroll(phone)
    shot(phone, "list-375")
    phone.goto(f"{base}/machines/{a.agent_id}")
    phone.fill(".command-form input[name=command]", "df -h / | tail -n 1")
    phone.click(".command-form button[type=submit]")
    expect(phone.locator("#command-result")).to_contain_text("exit 0")
    _no_horizontal_scroll(phone)
    shot(phone, "detail-375")
    phone.goto(f"{base}/machines/new")
    _no_horizontal_scroll(phone)
    shot(phone, "add-375")
    phone.goto(f"{base}/machines/new?mode=enroll")
    phone.fill("#f-name", "to-enroll")
    phone.click("button:has-text('Create enrollment command')")
    cmd = phone.input_value("#enroll-cmd")
    assert "X-Registration-Token: wxreg_" in cmd and "token=" not in cmd
    _no_horizontal_scroll(phone)
    shot(phone, "enroll-375")
    phone.goto(f"{base}/machines/broadcast")
    phone.fill("#broadcast-form input[name=command]", "echo fleet-ok")
    phone.select_option("#bc-tag", "fleet")
    expect(phone.locator("#broadcast-form button[type=submit]")).to_have_text("Run on tag fleet")
    phone.once("dialog", lambda d: d.accept())  # it asks first (issue 20)
    phone.click("#broadcast-form button[type=submit]")
    expect(phone.locator("#broadcast-results tr.done")).to_have_count(3)
    expect(phone.locator("#broadcast-results")).to_contain_text("fleet-ok")
    expect(phone.locator("#broadcast-results")).to_contain_text("unreachable")
    _no_horizontal_scroll(phone)
    shot(phone, "broadcast-375")
