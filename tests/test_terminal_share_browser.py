"""Sharing from the terminal toolbar, the watcher count, the sessions page's filters and
paging, and the live byte counters: real Chromium (1280x800 and 375x740) against the real
server and a real sshd. Screenshots go to $PORTAL_SHOTS (default /tmp/shots)."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
import requests

from tests.conftest import PASSWORD
from tests.fixtures.browser import sign_in
from tests.test_terminal_browser import (
    SHOTS,
    active,
    open_terminal,
    shot,
    wait_line,
    watch_errors,
)

pytestmark = pytest.mark.timeout(90)

WATCHERS = "() => document.querySelector('[data-action=share]').getAttribute('data-watchers')"


@pytest.fixture
def share_setup(live_server, make_user, sshd_machine, grant_role):
    owner = make_user("sharer")
    machine = sshd_machine(owner, name="shared-box")
    viewer = make_user("onlooker")
    grant_role(machine, viewer, "viewer")
    return owner, viewer, machine, live_server.url


def _watchers(page, n: int) -> None:
    page.wait_for_function(f"() => ({WATCHERS})() === '{n}'")


def test_share_button_copies_the_watch_link_and_counts_watchers(share_setup, page, browser):
    owner, viewer, machine, base = share_setup
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    open_terminal(page, base, owner, machine)
    page.keyboard.type("echo shared-$((6*7))\n")
    wait_line(page, "shared-42")
    sid = active(page, "t.sessionId")
    btn = page.locator("[data-action=share]")
    assert btn.get_attribute("aria-pressed") == "false" and btn.is_enabled()
    assert page.is_hidden("[data-role=watchers]")

    btn.click()
    page.wait_for_selector("[data-role=share-pop][data-copied=true]")
    link = page.input_value("[data-role=share-link]")
    assert link == f"{base}/sessions/{sid}/watch"
    assert "copied" in page.inner_text("[data-role=share-msg]")
    assert page.evaluate("() => navigator.clipboard.readText()") == link
    assert btn.get_attribute("aria-pressed") == "true"
    page.wait_for_selector("[data-role=watchers]:visible")
    _watchers(page, 0)
    shot(page, "share-copied-1280.png")

    # the link works in another browser, for someone who may view the machine
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        other = ctx.new_page()
        errors = watch_errors(other)
        sign_in(other, base, viewer.username, PASSWORD)
        other.goto(link)
        other.wait_for_function(
            "() => window.portalWatch && portalWatch.text().includes('shared-42')"
        )
        _watchers(page, 1)  # the owner's toolbar counts them, live
        assert page.inner_text("[data-role=watchers]") == "1"
        page.bring_to_front()
        page.keyboard.type("echo more-$((5*5))\n")
        other.wait_for_function("() => portalWatch.text().includes('more-25')")
        shot(page, "share-watched-1280.png")
        other.goto(f"{base}/sessions")  # the watcher leaves
        _watchers(page, 0)

        # Share again stops sharing: the link no longer works for the viewer
        btn.click()
        page.wait_for_function(
            "() => document.querySelector('[data-action=share]')"
            ".getAttribute('aria-pressed') === 'false'"
        )
        # (the socket's watchers frame can flip the button before the POST's answer writes
        # the message)
        page.wait_for_function(
            "() => document.querySelector('[data-role=share-msg]')"
            ".textContent.includes('Sharing stopped')"
        )
        assert page.is_hidden("[data-role=watchers]")
        assert other.goto(link).status == 404
        assert errors == []
    finally:
        ctx.close()
    assert page.js_errors == []


def test_share_on_a_phone_shows_the_link_when_the_clipboard_is_refused(share_setup, phone):
    owner, _viewer, machine, base = share_setup
    open_terminal(phone, base, owner, machine)
    sid = active(phone, "t.sessionId")
    box = phone.locator("[data-action=share]").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375  # in the toolbar, on screen
    # No clipboard permission here, and the API refuses: the link is shown, selected.
    phone.evaluate(
        "() => { navigator.clipboard.writeText = () => Promise.reject(new Error('denied')); }"
    )
    phone.tap("[data-action=share]")
    phone.wait_for_selector("[data-role=share-pop][data-copied=false]")
    assert phone.input_value("[data-role=share-link]") == f"{base}/sessions/{sid}/watch"
    assert "Copy the watch link" in phone.inner_text("[data-role=share-msg]")
    pop = phone.locator("[data-role=share-pop]").bounding_box()
    assert pop["x"] >= 0 and pop["x"] + pop["width"] <= 375
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    shot(phone, "share-375.png")
    phone.tap("[data-action=share-dismiss]")
    assert phone.is_hidden("[data-role=share-pop]")


def _seed(app, machine, user, n, status="closed", day=0):
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    start = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC) + dt.timedelta(days=day)
    with app.app_context():
        for i in range(n):
            db.session.add(
                TerminalSession(
                    id=str(uuid.uuid4()),
                    machine_id=machine.id,
                    user_id=user.id,
                    status=status,
                    started_at=start + dt.timedelta(minutes=i),
                    ended_at=start + dt.timedelta(minutes=i + 3),
                    close_reason="closed by its user",
                    bytes_in=5,
                    bytes_out=900,
                )
            )
        db.session.commit()
        db.session.remove()


def test_sessions_page_filters_and_pages_without_reloading(
    app, live_server, make_user, make_machine, page, phone
):
    from portal.terminal.listing import PER_PAGE

    owner = make_user("lister")
    web, db_box = make_machine(owner, name="web-1"), make_machine(owner, name="db-1")
    _seed(app, web, owner, PER_PAGE + 3, day=0)
    _seed(app, db_box, owner, 4, day=10)
    base = live_server.url
    watch_errors(page)
    sign_in(page, base, owner.username, PASSWORD)
    page.goto(f"{base}/sessions")
    rows = page.locator("#sessions-rows tr[id^=session-]")
    assert rows.count() == PER_PAGE
    assert f"{PER_PAGE + 7} sessions" in page.inner_text("#sessions-summary")
    page.evaluate("() => { window.__samePage = true; }")  # gone if the page reloads

    page.select_option("#f-machine", db_box.agent_id)
    page.wait_for_function("() => document.querySelectorAll('#sessions-rows tr[id]').length === 4")
    assert "machine=" + db_box.agent_id in page.url  # the URL keeps the filter
    assert "4 sessions" in page.inner_text("#sessions-summary")
    assert all("db-1" in t for t in rows.all_inner_texts())

    page.select_option("#f-machine", web.agent_id)
    page.wait_for_function(
        f"() => document.querySelectorAll('#sessions-rows tr[id]').length === {PER_PAGE}"
    )
    page.click("#sessions-pager [rel=next]")
    page.wait_for_function("() => document.querySelectorAll('#sessions-rows tr[id]').length === 3")
    assert "page=2" in page.url and f"machine={web.agent_id}" in page.url
    assert "page 2 of 2" in page.inner_text("#sessions-summary")

    page.fill("#f-since", "2026-04-05")
    page.fill("#f-until", "2026-04-02")
    page.click("#session-filters button[type=submit]")
    page.wait_for_selector("#err-until:visible")
    assert "before the start date" in page.inner_text("#err-until")
    assert rows.count() == 0
    assert page.evaluate("() => window.__samePage === true")
    shot(page, "sessions-filters-1280.png")

    # a bad date typed into the URL: a message, not an error page
    resp = page.goto(f"{base}/sessions?since=last-week")
    assert resp.status == 400
    assert "use a date like" in page.inner_text("#err-since")
    assert page.js_errors == []

    sign_in(phone, base, owner.username, PASSWORD)
    phone.goto(f"{base}/sessions?machine={db_box.agent_id}")
    phone.wait_for_load_state("networkidle")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    phone.screenshot(path=os.path.join(SHOTS, "sessions-filters-375.png"), full_page=True)


def test_live_byte_counters_grow_and_are_stored_on_close(share_setup, page, browser, app, auth):
    owner, _viewer, machine, base = share_setup
    open_terminal(page, base, owner, machine)
    page.keyboard.type("echo start-$((1+1))\n")
    wait_line(page, "start-2")
    sid = active(page, "t.sessionId")

    detail = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = watch_errors(detail)
    sign_in(detail, base, owner.username, PASSWORD)
    detail.goto(f"{base}/sessions/{sid}")
    first = int(detail.get_attribute("#session-traffic", "data-bytes-out"))
    typed = int(detail.get_attribute("#session-traffic", "data-bytes-in"))
    assert first > 0 and typed >= len("echo start-$((1+1))\r")

    page.bring_to_front()
    page.keyboard.type("seq 1 3000; echo flowed\n")
    wait_line(page, "flowed")
    # the detail page's partial polls: the counters grow without a reload
    detail.wait_for_function(
        "(n) => +document.getElementById('session-traffic').dataset.bytesOut > n + 10000",
        arg=first,
    )
    seen = int(detail.get_attribute("#session-traffic", "data-bytes-out"))
    api = requests.get(f"{base}/api/sessions/{sid}", headers=auth(owner), timeout=10).json()
    assert api["session"]["bytes_out"] >= seen and api["session"]["bytes_in"] > typed
    detail.screenshot(path=os.path.join(SHOTS, "session-traffic-1280.png"))

    # closed: the totals are in the database, and the partial stops polling
    r = requests.delete(f"{base}/api/terminal/sessions/{sid}", headers=auth(owner), timeout=15)
    assert r.status_code == 204
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    with app.app_context():
        row = db.session.get(TerminalSession, sid)
        assert row.status == "closed"
        assert row.bytes_out >= seen and row.bytes_in == api["session"]["bytes_in"]
        stored = (row.bytes_in, row.bytes_out)
        db.session.remove()
    detail.wait_for_function(
        "() => !document.getElementById('session-traffic').hasAttribute('hx-trigger')"
    )
    assert int(detail.get_attribute("#session-traffic", "data-bytes-out")) == stored[1]
    detail.close()
    assert errors == []
