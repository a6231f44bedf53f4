"""The terminal front end is ES modules (static/js/terminal/): every terminal page runs
them under the real CSP in real Chromium with no console error, no failed script and no
inline script, and the watch page reconnects through the terminal's own connection module."""

from __future__ import annotations

import pytest

from tests.test_terminal_browser import active, open_terminal, term_setup, wait_line  # noqa: F401

pytestmark = pytest.mark.timeout(90)

SCRIPTS = "() => [...document.scripts].map(s => [s.type || 'classic', s.getAttribute('src')])"


def console_errors(p) -> list[str]:
    """Everything the page would show in red in the console: errors logged (CSP refusals,
    a module that fails to load or to link), uncaught exceptions, scripts that failed."""
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on(
        "requestfailed",
        lambda r: errors.append(f"{r.url}: {r.failure}") if r.resource_type == "script" else None,
    )
    p.on(
        "response",
        lambda r: (
            errors.append(f"{r.url}: {r.status}")
            if r.request.resource_type == "script" and r.status >= 400
            else None
        ),
    )
    return errors


def modules(p) -> list[str]:
    return [src for kind, src in p.evaluate(SCRIPTS) if kind == "module"]


def test_terminal_pages_run_as_modules_without_console_errors(term_setup, context, page):  # noqa: F811
    user, machine, base = term_setup
    errors = console_errors(page)
    open_terminal(page, base, user, machine)
    page.keyboard.type("echo mod-$((6*7))\n")
    wait_line(page, "mod-42")
    sid = active(page, "t.sessionId")
    assert modules(page) == ["/static/js/terminal/main.js"]
    assert all(src for _kind, src in page.evaluate(SCRIPTS)), "an inline script"
    assert page.evaluate("() => !!window.portalTerminals && !('portalTermThemes' in window)")

    other = context.new_page()
    other_errors = console_errors(other)
    other.goto(f"{base}/sessions")
    assert modules(other) == ["/static/js/terminal/sessions.js"]
    other.wait_for_selector(f"#session-{sid}")

    other.goto(f"{base}/sessions/{sid}")
    assert modules(other) == ["/static/js/player.js"]
    other.click("[data-action=share]")  # player.js (a module now) still wires the buttons
    other.wait_for_selector("[data-role=watch-link]:visible")
    other.wait_for_selector("#player[data-player]")

    # The watch page: read-only xterm on the shared session, through connection.js
    other.goto(f"{base}{other.get_attribute('[data-role=watch-link]', 'href')}")
    assert modules(other) == ["/static/js/watch.js"]
    other.wait_for_function(
        "() => window.portalWatch && window.portalWatch.text().includes('mod-42')"
    )
    assert other.inner_text("[data-role=status-text]") == "watching live"
    assert errors == [] and other_errors == []

    # A dropped watch socket comes back (the shared reconnect), and live output follows it.
    other.evaluate("() => portalWatch.conn.forceDrop()")
    other.wait_for_function(
        "() => portalWatch.conn.connects === 2 && portalWatch.conn.state === 'connected'"
    )
    page.bring_to_front()
    page.keyboard.type("echo after-$((2+2))\n")
    other.wait_for_function("() => window.portalWatch.text().includes('after-4')")
    assert other.inner_text("[data-role=status-text]") == "watching live"
    # The socket this page closed itself ends with Chrome's "Invalid frame header": under
    # the werkzeug test server flask-sock writes an HTTP response after the close frame
    # (under gunicorn it writes nothing). Anything else is an error of ours.
    assert [e for e in other_errors if "Invalid frame header" not in e] == []
