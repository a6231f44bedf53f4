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


@pytest.mark.parametrize("device", ["phone", "page"])
def test_fix_to_broadcast_prefill_confirm_and_link_back(
    request, device, app, live_server, make_user, sshd_machine
):
    page = request.getfixturevalue(device)
    from portal.community import fixes, issues
    from portal.extensions import db

    alice = make_user("alice")
    sshd_machine(alice, name="web-a", tags="web")
    sshd_machine(alice, name="web-b", tags="web")
    with app.app_context():
        from portal.accounts.models import User

        author = db.session.get(User, alice.id)
        issue = issues.create_issue(author, {"title": "Disk full on web", "body": "help"})
        fix = fixes.create_fix(
            author, issue, {"body": "Run this:\n\n```\necho from-the-fix\n```\n"}
        )
        fixes.accept_fix(author, issue, fix)
        db.session.commit()
        issue_id, fix_id = issue.id, fix.id
    base = live_server.url
    sign_in(page, base, "alice", PASSWORD)
    page.goto(f"{base}/community/issues/{issue_id}")
    page.click(f"#fix-{fix_id} >> text=Run on machines…")
    page.wait_for_url(f"{base}/machines/broadcast*")
    expect(page.locator("#broadcast-form input[name=command]")).to_have_value("echo from-the-fix")
    expect(page.locator("#broadcast-results")).to_be_empty()  # nothing ran
    button = page.locator("#broadcast-form button[type=submit]")
    expect(button).to_have_text("Pick machines or a tag")
    page.click("#broadcast-form button[type=submit]")  # nothing picked: said in words
    expect(page.locator("#broadcast-error")).to_have_text("Pick at least one machine or a tag.")
    page.check("input[name=agent_ids] >> nth=0")
    page.check("input[name=agent_ids] >> nth=1")
    expect(button).to_have_text("Run on 2 machines")
    page.once("dialog", lambda d: d.dismiss())  # declined: nothing runs
    button.click()
    expect(page.locator("#broadcast-results")).to_be_empty()
    messages = []

    def accept(d):
        messages.append(d.message)
        d.accept()

    page.once("dialog", accept)
    button.click()
    expect(page.locator("#broadcast-results tr.done")).to_have_count(2)
    assert messages == ["Run “echo from-the-fix” on 2 machines?"]
    shot(page, f"fix-broadcast-{device}")
    page.click("#broadcast-results >> text=from the fix")
    page.wait_for_url(f"{base}/community/issues/{issue_id}*")


@pytest.mark.parametrize("device", ["phone", "page"])
def test_profile_api_key_copy_regenerate_asks_avatar_limit(request, device, live_server, make_user):
    page = request.getfixturevalue(device)
    make_user("alice")
    base = live_server.url
    sign_in(page, base, "alice", PASSWORD)
    page.goto(f"{base}/profile")
    page.click("button:has-text('Create key')")  # no key yet: nothing to lose, no question
    key = page.input_value("#new-api-key")
    assert key
    expect(page.locator("button[data-copy='#new-api-key']")).to_be_visible()
    asked = []

    def decline(d):
        asked.append(d.message)
        d.dismiss()

    page.once("dialog", decline)
    page.click("button:has-text('Regenerate key')")
    assert asked and "stops working" in asked[0]
    assert page.input_value("#new-api-key") == key  # declined: the same key, still shown
    # an avatar over 2 MB is refused in the browser, next to the field, with no upload
    uploads = []
    page.on("request", lambda r: uploads.append(r) if "/profile/avatar" in r.url else None)
    big = {"name": "big.png", "mimeType": "image/png", "buffer": b"\x89PNG" + b"0" * (3 << 20)}
    page.set_input_files("#f-avatar", big)
    expect(page.locator("#e-avatar")).to_contain_text("the limit is 2 MB")
    page.click("button:has-text('Upload')")
    expect(page.locator("#e-avatar")).to_be_visible()
    assert uploads == []
    shot(page, f"profile-{device}")
