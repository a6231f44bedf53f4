"""The /audit page in Chromium: a live terminal on the real sshd shows up, an admin closes
all of its user's sessions from there, and the log tells who opened and who closed it."""

from __future__ import annotations

import os

from tests.conftest import PASSWORD
from tests.fixtures.browser import sign_in
from tests.fixtures.terminal import wait_for

SHOTS = os.environ.get("PORTAL_SHOTS", "/tmp/shots")


def test_admin_closes_a_users_sessions_from_the_audit_page(
    app, live_server, term_env, admin, page, phone
):
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    owner, machine, open_term = term_env
    term = open_term()
    ready = term.wait_control("ready")
    sid = ready["session_id"]
    term.run("echo $((40+2))", "42")
    live = app.extensions["portal_terminal"]
    assert live.get(sid) is not None

    url = live_server.url
    sign_in(page, url, admin.username, PASSWORD)
    app.extensions["portal_audit"].flush()
    page.goto(f"{url}/audit")
    row = page.locator(f"#live-{sid}")
    assert "termowner" in row.inner_text() and machine.name in row.inner_text()
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, "audit-1280.png"), full_page=True)

    sign_in(phone, url, admin.username, PASSWORD)
    phone.goto(f"{url}/audit")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    phone.screenshot(path=os.path.join(SHOTS, "audit-375.png"), full_page=True)

    row.locator("[data-action=close-user]").click()
    page.wait_for_url(f"{url}/audit")
    assert page.locator(f"#live-{sid}").count() == 0
    term.drain_close()
    assert term.closed

    def closed():
        with app.app_context():
            r = db.session.get(TerminalSession, sid)
            done = r is not None and r.status == "closed"
            db.session.remove()
            return done

    assert wait_for(closed)
    app.extensions["portal_audit"].flush()

    # The filters narrow the list without a reload (HTMX), to this session's story.
    page.goto(f"{url}/audit")
    page.fill("input[name=q]", sid[:8])
    page.wait_for_function(
        "() => [...document.querySelectorAll('.audit-row')].every("
        "r => r.innerText.includes('terminal'))"
    )
    text = page.inner_text("#audit-events")
    assert "terminal_opened" in text and "terminal_close_requested" in text
    assert "terminal_closed" in text and "sign_in" not in text
    actors = page.locator(".audit-row [data-label=Actor]").all_inner_texts()
    assert "root-admin" in actors and "termowner" in actors
