"""The community board in real Chromium: ask, answer, preview, attach an image, like in place,
accept; the list's live search; everything fits a 375 px phone."""

from __future__ import annotations

import io
import os
import re

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.fixtures.browser import sign_in
from tests.test_community_api import quick_users

SHOTS = os.environ.get("PORTAL_SHOTS_DIR", "/tmp/shots")


def shot(page, name):
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def png_bytes() -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (320, 120), (30, 41, 59))
    ImageDraw.Draw(img).text((12, 50), "Permission denied (publickey)", fill=(248, 113, 113))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.timeout(120)
def test_ask_answer_like_accept_in_browser(live_server, page, app, browser):
    asker, helper = quick_users(app, "asker", "helper")
    base = live_server.url

    # helper posts the question's answer later; asker asks first
    sign_in(page, base, "asker", PASSWORD)
    page.click("nav >> text=Community")
    page.wait_for_url(f"{base}/community")
    page.click("text=Ask a question")
    page.fill("#f-title", "ssh: Permission denied (publickey) on web-1")
    page.fill(
        "#f-body",
        "Since this morning:\n\n```console\n$ ssh deploy@web-1\nPermission denied (publickey).\n```\n",
    )
    page.fill("#f-tags", "ssh, keys")
    # attach a screenshot through the editor's picker: uploaded, then inserted as Markdown
    page.set_input_files(
        "input[data-cm-file]",
        files=[{"name": "error.png", "mimeType": "image/png", "buffer": png_bytes()}],
    )
    expect(page.locator("#f-body")).to_have_value(
        re.compile(r"!\[error\]\(/community/uploads/[0-9a-f]{32}\.png\)")
    )
    # paste and drag-and-drop go through the same upload (a PNG drawn in the page's canvas)
    for kind in ("paste", "drop"):
        page.evaluate(
            """async (kind) => {
              const c = document.createElement('canvas'); c.width = 30; c.height = 20;
              c.getContext('2d').fillRect(0, 0, 30, 20);
              const blob = await new Promise(r => c.toBlob(r, 'image/png'));
              const dt = new DataTransfer();
              dt.items.add(new File([blob], kind + '.png', {type: 'image/png'}));
              const ta = document.querySelector('#f-body');
              ta.setSelectionRange(ta.value.length, ta.value.length);
              const ev = kind === 'paste'
                ? new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true})
                : new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true});
              ta.dispatchEvent(ev);
            }""",
            kind,
        )
        expect(page.locator("#f-body")).to_have_value(
            re.compile(rf"!\[{kind}\]\(/community/uploads/[0-9a-f]{{32}}\.png\)")
        )
    # preview renders the sanitised HTML in place
    page.click("[data-cm-tab=preview]")
    expect(page.locator(".cm-preview-slot pre code")).to_contain_text("Permission denied")
    expect(page.locator(".cm-preview-slot img")).to_have_count(3)
    page.click("[data-cm-tab=write]")
    shot(page, "community-new-desktop")
    page.click("button:has-text('Post question')")
    page.wait_for_url(f"{base}/community/issues/*")
    issue_url = page.url
    expect(page.locator("h1.cm-title")).to_have_text("ssh: Permission denied (publickey) on web-1")
    expect(page.locator(".cm-body img")).to_have_count(3)
    assert page.evaluate("document.querySelector('.cm-body img').naturalWidth") == 320
    assert page.js_errors == []

    # helper answers, with a preview first; the fix appears without a reload
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    p2 = ctx.new_page()
    p2.set_default_timeout(15_000)
    sign_in(p2, base, "helper", PASSWORD)
    p2.goto(issue_url)
    p2.evaluate("window.__noReload = true")
    p2.fill("#fix-form textarea", "")
    p2.click("#fix-form button[type=submit]")
    expect(p2.locator("#fix-form .field-error")).to_contain_text("body is required")
    p2.fill(
        "#fix-form textarea",
        "Your key was rotated. Re-add it:\n\n```bash\nssh-copy-id deploy@web-1\n```",
    )
    p2.click("#fix-form [data-cm-tab=preview]")
    expect(p2.locator("#fix-form .cm-preview-slot code.language-bash")).to_contain_text(
        "ssh-copy-id"
    )
    p2.click("#fix-form button[type=submit]")
    expect(p2.locator("#fixes .cm-fix")).to_have_count(1)
    expect(p2.locator("#fix-form textarea")).to_have_value("")
    # like in place: the count changes, the page does not reload
    like = p2.locator("#fixes .cm-like").first
    expect(like.locator(".cm-like-count")).to_have_text("0")
    like.click()
    expect(p2.locator("#fixes .cm-like.liked .cm-like-count")).to_have_text("1")
    p2.locator("#fixes .cm-like").first.click()
    expect(p2.locator("#fixes .cm-like:not(.liked) .cm-like-count")).to_have_text("0")
    p2.locator("#fixes .cm-like").first.click()
    expect(p2.locator("#fixes .cm-like.liked .cm-like-count")).to_have_text("1")
    assert p2.evaluate("window.__noReload") is True
    assert p2.locator("button:has-text('Accept')").count() == 0  # not the issue's author
    ctx.close()

    # asker accepts it in place: badge and status change without a reload
    page.goto(issue_url)
    page.evaluate("window.__noReload = true")
    expect(page.locator("#issue-status")).to_contain_text("Open")
    page.click("#fixes button:has-text('Accept')")
    expect(page.locator("#fixes .cm-fix.accepted")).to_have_count(1)
    expect(page.locator("#issue-status")).to_contain_text("Solved")
    assert page.evaluate("window.__noReload") is True
    shot(page, "community-issue-desktop")

    # the list: live search while typing, filters
    page.goto(f"{base}/community")
    page.fill("#f-q", "publick")
    expect(page.locator("#issue-list .cm-issue-row")).to_have_count(1)
    page.fill("#f-q", "nothing-like-this")
    expect(page.locator("#issue-list .cm-empty")).to_be_visible()
    assert "q=nothing-like-this" in page.url  # pushed: the search is shareable
    page.fill("#f-q", "")
    page.select_option("select[name=status]", "solved")
    expect(page.locator("#issue-list .cm-issue-row")).to_have_count(1)
    expect(page.locator("#issue-list .badge.ok")).to_have_text("Solved")
    shot(page, "community-list-desktop")
    assert page.js_errors == []


@pytest.mark.timeout(90)
def test_community_fits_a_phone(live_server, phone, app, client, auth):
    (u,) = quick_users(app, "pocket")
    h = auth(u)
    long = "A very long line without spaces " + "x" * 300
    for i in range(3):
        r = client.post("/api/community/issues", headers=h, json={
            "title": f"Question {i}: nginx returns 502 after upgrading to the new release",
            "body": f"{long}\n\n```\n{'y' * 400}\n```\n\n| a | b | c |\n|---|---|---|\n| 1 | 2 | {'z' * 200} |",
            "tags": ["nginx", "upgrade"],
        })  # fmt: skip
    issue_id = r.json["issue"]["id"]
    client.post(
        f"/api/community/issues/{issue_id}/fixes",
        json={"body": "Restart php-fpm: `systemctl restart php-fpm`"},
        headers=h,
    )
    base = live_server.url
    sign_in(phone, base, "pocket", PASSWORD)
    for path, name in [
        ("/community", "list"),
        (f"/community/issues/{issue_id}", "issue"),
        ("/community/issues/new", "new"),
    ]:
        phone.goto(base + path)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} scrolls sideways on a phone ({width}px)"
        shot(phone, f"community-{name}-phone")
    # like from the phone, in place
    phone.goto(f"{base}/community/issues/{issue_id}")
    phone.locator("#fixes .cm-like").first.tap()
    expect(phone.locator("#fixes .cm-like.liked .cm-like-count")).to_have_text("1")
