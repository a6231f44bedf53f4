"""The terminal page in real Chromium against the real server and a real sshd: commands,
the phone key bar, reconnect after a dropped socket, tabs, theme and font controls,
the sessions list, the session page (recording player, share) and the watch page."""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import PASSWORD
from tests.fixtures.browser import sign_in
from tests.fixtures.terminal import drop_socket

pytestmark = pytest.mark.timeout(90)

SHOTS = os.environ.get("PORTAL_SHOTS", "/tmp/shots")

CONNECTED = """(i) => {
  const pt = window.portalTerminals; if (!pt) return false;
  const t = i === null ? pt.active() : pt.tabs[i];
  return !!t && t.state === 'connected';
}"""
HAS_TEXT = """([needle, i]) => {
  const pt = window.portalTerminals; if (!pt) return false;
  const t = i === null ? pt.active() : pt.tabs[i];
  return !!t && pt.text(t).includes(needle);
}"""
HAS_LINE = """([line, i]) => {
  const pt = window.portalTerminals; if (!pt) return false;
  const t = i === null ? pt.active() : pt.tabs[i];
  return !!t && pt.text(t).split('\\n').some(l => l.trim() === line);
}"""


def shot(page, name: str) -> None:
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, name))


def wait_connected(page, tab: int | None = None) -> None:
    page.wait_for_function(CONNECTED, arg=tab)


def wait_text(page, needle: str, tab: int | None = None) -> None:
    page.wait_for_function(HAS_TEXT, arg=[needle, tab])


def wait_line(page, line: str, tab: int | None = None) -> None:
    page.wait_for_function(HAS_LINE, arg=[line, tab])


def wait_reconnected(page, connects: int) -> None:
    """Until the active tab has connected again since it had made `connects` connections."""
    page.wait_for_function(
        "(n) => { const t = portalTerminals.active(); return t.connects > n && t.state === 'connected'; }",
        arg=connects,
    )


def term_text(page, tab: int | None = None) -> str:
    return page.evaluate(
        "(i) => portalTerminals.text(i === null ? null : portalTerminals.tabs[i])", tab
    )


def active(page, expr: str):
    return page.evaluate(f"() => {{ const t = portalTerminals.active(); return {expr}; }}")


def watch_errors(p) -> list[str]:
    errors = getattr(p, "js_errors", None)
    if errors is None:
        errors = []
        p.on("pageerror", lambda exc: errors.append(str(exc)))
        p.js_errors = errors
    return errors


@pytest.fixture
def term_setup(live_server, make_user, sshd_machine):
    """A user who owns a machine on the real sshd; returns (user, machine, base_url)."""
    user = make_user("termuser")
    machine = sshd_machine(user, name="sshd-box")
    return user, machine, live_server.url


def open_terminal(p, base: str, user, machine, query: str = "") -> None:
    watch_errors(p)
    sign_in(p, base, user.username, PASSWORD)
    p.goto(f"{base}/machines/{machine.agent_id}/terminal{query}")
    wait_connected(p)


def test_terminal_runs_a_command_and_the_page_looks_finished(term_setup, page):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    page.keyboard.type("echo $((6*7))\n")
    wait_line(page, "42")
    assert page.inner_text("[data-role=status-text]") == "connected"
    assert page.is_hidden("[data-role=status] [data-action=status-new]")
    # the terminal fills the window under the top bar
    box = page.locator(".term-app").bounding_box()
    assert box["width"] == 1280 and box["y"] + box["height"] == pytest.approx(800, abs=1)
    cols, rows = active(page, "[t.term.cols, t.term.rows]")
    assert cols > 100 and rows > 20
    page.keyboard.type("ls -la --color=always /usr/bin | head -30; echo listed\n")
    wait_line(page, "listed")
    shot(page, "terminal-1280.png")
    assert page.js_errors == []


def test_window_resize_refits_and_tells_the_server(term_setup, page, app):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    before = active(page, "[t.term.cols, t.term.rows]")
    page.set_viewport_size({"width": 900, "height": 600})
    page.wait_for_function("(c) => portalTerminals.active().term.cols < c", arg=before[0])
    cols, rows = active(page, "[t.term.cols, t.term.rows]")
    # the resize frame is debounced: ask the PTY until it reports the new size
    for attempt in range(20):
        page.keyboard.type(f"stty size; echo probe-{attempt}\n")
        wait_line(page, f"probe-{attempt}")
        if f"{rows} {cols}" in term_text(page).split("\n"):
            break
        time.sleep(0.2)
    assert f"{rows} {cols}" in term_text(page).split("\n")
    assert page.js_errors == []


def test_phone_key_bar_sends_ctrl_c_and_arrows(term_setup, phone):
    user, machine, base = term_setup
    open_terminal(phone, base, user, machine)
    assert phone.is_visible("[data-role=keybar]")
    # fits a 375 px screen: no sideways scrolling, the terminal inside the viewport
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    box = phone.locator(".term-host .xterm-screen").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    assert phone.locator("[data-role=keybar]").bounding_box()["y"] + 40 <= 740
    phone.tap(".term-host")
    phone.keyboard.type("sleep 100\n")
    wait_text(phone, "sleep 100")
    phone.tap("[data-mod=ctrl]")
    assert phone.get_attribute("[data-mod=ctrl]", "aria-pressed") == "true"
    phone.keyboard.type("c")  # sticky Ctrl: sent as ^C
    wait_text(phone, "^C")
    assert phone.get_attribute("[data-mod=ctrl]", "aria-pressed") == "false"
    phone.keyboard.type("echo back-$((2+3))\n")
    wait_line(phone, "back-5")  # the prompt came back: sleep was interrupted
    # Up arrow (the right CSI sequence) recalls the last command
    phone.tap("[data-key=up]")
    phone.wait_for_function("() => portalTerminals.text().split('echo back-$((2+3))').length === 3")
    phone.keyboard.press("Enter")
    phone.wait_for_function(
        "() => portalTerminals.text().split('\\n').filter(l => l.trim() === 'back-5').length === 2"
    )
    # the | key, typed through the key bar
    phone.keyboard.type("echo abc ")
    phone.tap("[data-char='|']")
    phone.keyboard.type(" tr a-z A-Z\n")
    wait_line(phone, "ABC")
    shot(phone, "terminal-375.png")
    assert phone.js_errors == []


def test_phone_key_bar_sends_the_right_bytes_for_every_key(term_setup, phone):
    """Esc, Tab, Alt (a prefix ESC), | ~ / - and the arrows, read back by `cat -A` on the
    real shell: each key's bytes, as the shell received them."""
    user, machine, base = term_setup
    open_terminal(phone, base, user, machine)
    phone.tap(".term-host")
    phone.keyboard.type("echo ready-$((1+2)); cat -A\n")
    wait_line(phone, "ready-3")  # the line runs: the terminal is back in canonical mode
    for sel in (
        "[data-key=esc]",
        "[data-key=tab]",
        "[data-mod=alt]",
        "[data-char='/']",  # Alt+/ -> ESC /
        "[data-char='|']",
        "[data-char='~']",
        "[data-char='-']",
        "[data-key=left]",
        "[data-key=down]",
        "[data-key=right]",
        "[data-key=up]",
        "[data-key=home]",
        "[data-key=end]",
        "[data-key=pgup]",
        "[data-key=pgdn]",
        "[data-mod=ctrl]",
        "[data-key=right]",  # Ctrl+Right -> CSI 1;5C
    ):
        phone.tap(sel)
    phone.keyboard.press("Enter")
    # cat -A shows ESC as ^[ and Tab as ^I and ends the line with $; the arrows, Home and
    # End are CSI (or SS3 when the application has asked for application cursor keys)
    phone.wait_for_function(
        """() => {
             // logical lines: the cat -A line is wider than 45 columns and wraps
             const b = portalTerminals.active().term.buffer.active, lines = [];
             for (let i = 0; i < b.length; i++) {
               const l = b.getLine(i), s = l ? l.translateToString(true) : '';
               if (l && l.isWrapped && lines.length) lines[lines.length - 1] += s;
               else lines.push(s);
             }
             return lines.some(l => new RegExp(
             '^\\\\^\\\\[\\\\^I\\\\^\\\\[/\\\\|~-'
             + '(\\\\^\\\\[[\\\\[O])D(\\\\^\\\\[[\\\\[O])B(\\\\^\\\\[[\\\\[O])C'
             + '(\\\\^\\\\[[\\\\[O])A(\\\\^\\\\[[\\\\[O])H(\\\\^\\\\[[\\\\[O])F'
             + '\\\\^\\\\[\\\\[5~\\\\^\\\\[\\\\[6~\\\\^\\\\[\\\\[1;5C\\\\$$').test(l.trim()));
           }"""
    )
    phone.tap("[data-mod=ctrl]")
    phone.keyboard.type("d")  # Ctrl-D ends cat
    phone.keyboard.type("echo done-$((1+1))\n")
    wait_line(phone, "done-2")
    assert phone.js_errors == []


def test_returning_from_the_background_reconnects_a_silently_dead_socket(
    term_setup, page, live_server
):
    """A phone back from the background: its socket looks open but nothing gets through
    (here a relay between the browser and the server holds what either side sends). The
    page pings on `visibilitychange`, hears nothing back, and re-attaches the same shell."""
    from urllib.parse import urlsplit

    from tests.fixtures.machines import PausableRelay

    user, machine, _base = term_setup
    u = urlsplit(live_server.url)
    relay = PausableRelay(u.hostname, u.port)
    try:
        base = f"http://127.0.0.1:{relay.port}"
        open_terminal(page, base, user, machine)
        page.keyboard.type("Z=back-$((6*7)); echo set-$((1+1))\n")
        wait_line(page, "set-2")  # typed, run and echoed: nothing in flight either way
        sid = active(page, "t.sessionId")
        connects = active(page, "t.connects")
        relay.pause(both=True)  # the connection goes silent both ways, without a close
        time.sleep(0.3)  # a prompt still on its way arrives before the page's ping goes out
        page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")
        # the page's probe gives up after 4 s without an answer; nothing else would notice
        # for 25 s (the keep-alive ping's period)
        page.wait_for_function(
            "() => portalTerminals.active().state === 'reconnecting'", timeout=10_000
        )
        relay.resume()
        wait_reconnected(page, connects)
        assert active(page, "t.sessionId") == sid
        page.keyboard.type("echo $Z\n")
        wait_line(page, "back-42")
        assert page.js_errors == []
    finally:
        relay.close()


def test_dropped_socket_reconnects_and_keeps_the_shell(term_setup, page, app):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    page.keyboard.type("X=kept-$((40+2)); echo set:$X\n")
    wait_line(page, "set:kept-42")
    sid = active(page, "t.sessionId")
    connects = active(page, "t.connects")
    drop_socket(app, sid)
    wait_reconnected(page, connects)
    assert active(page, "t.sessionId") == sid
    page.keyboard.type("echo again:$X\n")
    wait_line(page, "again:kept-42")
    # the screen was restored from the ring buffer, not duplicated
    assert term_text(page).count("set:kept-42") == 1
    # a reload re-attaches the same shell (session id kept in sessionStorage)
    page.reload()
    wait_connected(page)
    assert active(page, "t.sessionId") == sid
    page.keyboard.type("echo reload:$X\n")
    wait_line(page, "reload:kept-42")
    assert page.js_errors == []


def test_tabs_are_independent_sessions(term_setup, page, app):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    page.keyboard.type("T=one; echo tab:$T\n")
    wait_line(page, "tab:one", 0)
    page.click("[data-action=new-tab]")
    page.wait_for_function("() => portalTerminals.tabs.length === 2")
    wait_connected(page, 1)
    page.keyboard.type("echo tab:${T:-unset}\n")
    wait_line(page, "tab:unset", 1)
    sids = page.evaluate("() => portalTerminals.tabs.map(t => t.sessionId)")
    assert len(set(sids)) == 2
    page.click(".term-tab >> nth=0 >> .term-tab-main")
    page.keyboard.type("echo again:$T\n")
    wait_line(page, "again:one", 0)
    assert "again:one" not in term_text(page, 1)
    labels = page.eval_on_selector_all(".term-tab-label", "els => els.map(e => e.textContent)")
    assert labels == ["sshd-box 1", "sshd-box 2"]
    shot(page, "terminal-tabs-1280.png")
    # a reload re-attaches both tabs; the one in the background works once shown
    page.reload()
    page.wait_for_function("() => portalTerminals.tabs.length === 2")
    wait_connected(page, 0)
    wait_connected(page, 1)
    assert page.evaluate("() => portalTerminals.tabs.map(t => t.sessionId)") == sids
    page.click(".term-tab >> nth=1 >> .term-tab-main")
    assert page.evaluate("() => portalTerminals.tabs[1].term.cols") > 100
    page.keyboard.type("echo back-in-two\n")
    wait_line(page, "back-in-two", 1)
    # closing a tab asks first; "End the shell" closes its socket and ends its shell
    page.click(".term-tab >> nth=1 >> .term-tab-close")
    page.wait_for_selector("dialog.term-close-dialog[open]")
    shot(page, "terminal-close-dialog-1280.png")
    page.click("dialog.term-close-dialog [data-choice=end]")
    page.wait_for_function("() => portalTerminals.tabs.length === 1")
    reg = app.extensions["portal_terminal"]
    deadline = time.monotonic() + 10
    while reg.get(sids[1]) is not None and not reg.get(sids[1]).closed:
        assert time.monotonic() < deadline, "closing the tab did not end its session"
        time.sleep(0.1)
    assert not reg.get(sids[0]).closed
    assert page.js_errors == []


def test_theme_and_font_size_controls_persist(term_setup, page):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    size = active(page, "t.term.options.fontSize")
    cols = active(page, "t.term.cols")
    page.click("[data-action=font-inc]")
    page.click("[data-action=font-inc]")
    assert active(page, "t.term.options.fontSize") == size + 2
    page.wait_for_function("(c) => portalTerminals.active().term.cols < c", arg=cols)
    assert page.inner_text("[data-role=font-size]") == f"{size + 2}px"
    theme = page.get_attribute("#term-app", "data-term-theme")
    page.click("[data-action=theme]")
    other = "light" if theme == "dark" else "dark"
    assert page.get_attribute("#term-app", "data-term-theme") == other
    bg = active(page, "t.term.options.theme.background")
    page.reload()
    wait_connected(page)
    assert active(page, "t.term.options.fontSize") == size + 2
    assert page.get_attribute("#term-app", "data-term-theme") == other
    assert active(page, "t.term.options.theme.background") == bg
    page.keyboard.type("echo themed\n")
    wait_line(page, "themed")
    shot(page, f"terminal-{other}-1280.png")
    page.click("[data-action=font-dec]")
    assert active(page, "t.term.options.fontSize") == size + 1
    assert page.js_errors == []


def test_exit_shows_the_reason_and_offers_a_new_session(term_setup, page):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    first = active(page, "t.sessionId")
    page.keyboard.type("exit 3\n")
    page.wait_for_function("() => portalTerminals.active().state === 'closed'")
    status = page.inner_text("[data-role=status-text]")
    assert status.startswith("closed: ")
    assert page.is_visible(".term-ended [data-action=new-session]")
    shot(page, "terminal-closed-1280.png")
    time.sleep(1.2)  # no reconnect after an exit
    assert active(page, "t.state") == "closed"
    page.click("[data-role=status] [data-action=status-new]")
    wait_connected(page)
    assert active(page, "t.sessionId") != first
    page.keyboard.type("echo fresh\n")
    wait_line(page, "fresh")
    assert page.js_errors == []


def test_sessions_list_share_watch_close_and_recording(term_setup, page, browser):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    page.keyboard.type("echo $((6*7))\n")
    wait_line(page, "42")
    sid = active(page, "t.sessionId")

    other = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = watch_errors(other)
    sign_in(other, base, user.username, PASSWORD)
    other.goto(f"{base}/sessions")
    row = other.locator(f"#session-{sid}")
    assert "sshd-box" in row.inner_text()
    assert row.locator("[data-label=Status]").inner_text().strip() == "active"
    assert row.locator("[data-action=reattach]").get_attribute("href").endswith(f"session={sid}")
    shot(other, "sessions-1280.png")

    # share it read-only from the session page; the watch link appears
    other.goto(f"{base}/sessions/{sid}")
    assert other.is_hidden("[data-role=watch-link]")
    other.click("[data-action=share]")
    other.wait_for_selector("[data-role=watch-link]:visible")
    assert other.get_attribute("[data-action=share]", "aria-pressed") == "true"
    watch_url = other.get_attribute("[data-role=watch-link]", "href")

    # the watch page shows the current screen, then live output
    other.goto(base + watch_url)
    other.wait_for_function("() => window.portalWatch && window.portalWatch.text().includes('42')")
    page.bring_to_front()
    page.keyboard.type("echo live-$((3*5))\n")
    other.wait_for_function("() => window.portalWatch.text().includes('live-15')")
    shot(other, "watch-1280.png")

    # closing from the sessions list reaches the terminal (and the list refreshes itself)
    other.goto(f"{base}/sessions")
    other.on("dialog", lambda d: d.accept())
    other.click(f"#session-{sid} [data-action=close]")
    page.wait_for_function("() => portalTerminals.active().state === 'closed'")
    assert "closed" in page.inner_text("[data-role=status-text]")
    other.wait_for_function(
        "(sid) => document.getElementById('session-' + sid)"
        ".querySelector('[data-label=Status]').textContent.includes('closed')",
        arg=sid,
    )

    # the session page: commands typed, the recording plays, .cast download
    for _ in range(20):  # command lines are written off the request path
        other.goto(f"{base}/sessions/{sid}")
        if other.locator("#cmd-list .cmd").count() >= 2:
            break
        time.sleep(0.25)
    assert "echo $((6*7))" in other.inner_text("#cmd-list")
    other.wait_for_selector("#player[data-player]")
    if other.get_attribute("#player", "data-player") == "xterm":
        other.wait_for_function(
            "() => { const b = portalPlayer.term.buffer.active; for (let i = 0; i < b.length; i++)"
            " { if (b.getLine(i).translateToString(true).includes('live-15')) return true; }"
            " return false; }"
        )
    else:
        other.wait_for_selector("#player .ap-wrapper")
    assert other.get_attribute("a[download]", "href").endswith("?download=1")
    other.screenshot(path=os.path.join(SHOTS, "session-detail-1280.png"), full_page=True)
    other.close()

    # the same pages at phone width: no sideways scrolling
    ctx = browser.new_context(
        viewport={"width": 375, "height": 740},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    try:
        small = ctx.new_page()
        watch_errors(small)
        sign_in(small, base, user.username, PASSWORD)
        for path, name in (
            (f"/sessions/{sid}", "session-detail-375.png"),
            ("/sessions", "sessions-375.png"),
        ):
            small.goto(base + path)
            small.wait_for_load_state("networkidle")
            assert small.evaluate("document.documentElement.scrollWidth") <= 375, path
            small.screenshot(path=os.path.join(SHOTS, name), full_page=True)
        assert small.js_errors == []
    finally:
        ctx.close()
    assert errors == [] and page.js_errors == []


def test_copy_and_paste(term_setup, page, context):
    user, machine, base = term_setup
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    open_terminal(page, base, user, machine)
    page.keyboard.type("echo copy-$((20+3))\n")
    wait_line(page, "copy-23")
    # select the output line in xterm, Ctrl+Shift+C copies it
    page.evaluate(
        """() => { const t = portalTerminals.active().term; const b = t.buffer.active;
        for (let i = 0; i < b.length; i++) { if (b.getLine(i).translateToString(true).trim() === 'copy-23')
        { t.select(0, i, 7); return; } } }"""
    )
    page.keyboard.press("Control+Shift+C")
    page.wait_for_function("async () => (await navigator.clipboard.readText()) === 'copy-23'")
    # Ctrl+Shift+V pastes (the browser's paste event, bracketed by xterm)
    page.evaluate("() => navigator.clipboard.writeText('echo pasted-$((1+2))')")
    page.keyboard.press("Control+Shift+V")
    wait_text(page, "echo pasted-$((1+2))")
    page.keyboard.press("Enter")
    wait_line(page, "pasted-3")
    # right click without a selection pastes through the clipboard API
    page.evaluate("() => portalTerminals.active().term.clearSelection()")
    page.evaluate("() => navigator.clipboard.writeText('echo right-$((4+4))')")
    page.click(".term-host", button="right")
    wait_text(page, "echo right-$((4+4))")
    page.keyboard.press("Enter")
    wait_line(page, "right-8")
    assert page.js_errors == []


@pytest.mark.parametrize("flood", ["yes flood-line", "cat /dev/urandom | base64"])
def test_ctrl_c_stops_a_flood(term_setup, page, flood):
    """Output is acked as xterm renders it, so a flood stays interruptible."""
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    page.keyboard.type(flood + "\n")
    page.wait_for_function("() => portalTerminals.active().bytesIn > 256 * 1024")
    page.keyboard.press("Control+C")
    page.keyboard.type("echo after-$((50+1))\n")
    wait_line(page, "after-51")
    assert active(page, "t.state") == "connected"
    assert page.js_errors == []


def test_reload_after_the_session_ended_starts_a_new_one(term_setup, page, app):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    sid = active(page, "t.sessionId")
    page.goto(f"{base}/dashboard")  # the socket drops; the session is only detached
    reg = app.extensions["portal_terminal"]
    reg.close(sid, "ended while nobody was looking")
    page.goto(f"{base}/machines/{machine.agent_id}/terminal")
    page.wait_for_function(
        "(sid) => { const t = portalTerminals.active();"
        " return t.state === 'connected' && t.sessionId && t.sessionId !== sid; }",
        arg=sid,
    )
    wait_text(page, "previous session is gone")
    page.keyboard.type("echo new-$((9*9))\n")
    wait_line(page, "new-81")
    assert page.js_errors == []


def test_recording_plays_in_asciinema_player_under_the_real_csp(term_setup, browser, page):
    """The session page's CSP allows WebAssembly ('wasm-unsafe-eval', never JS eval), so the
    real asciinema-player runs, no CSP bypass."""
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    page.keyboard.type("echo rec-$((6*7))\n")
    wait_line(page, "rec-42")
    sid = active(page, "t.sessionId")
    page.keyboard.type("exit\n")
    page.wait_for_function("() => portalTerminals.active().state === 'closed'")
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        p = ctx.new_page()
        errors = watch_errors(p)
        csp_errors: list[str] = []
        p.on(
            "console",
            lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        sign_in(p, base, user.username, PASSWORD)
        resp = p.goto(f"{base}/sessions/{sid}")
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "unsafe-eval'" not in csp.replace(
            "'wasm-unsafe-eval'", ""
        )
        p.wait_for_selector("#player[data-player=asciinema] .ap-wrapper")
        # speed and the idle-gap limit re-create the player with them
        assert p.evaluate("() => portalPlayerOptions") == {"speed": 1, "idleTimeLimit": 2}
        p.select_option("[data-role=speed]", "4")
        p.select_option("[data-role=idle]", "5")
        assert p.evaluate("() => portalPlayerOptions") == {"speed": 4, "idleTimeLimit": 5}
        p.wait_for_selector("#player[data-player=asciinema] .ap-wrapper")
        assert p.locator("#player .ap-wrapper").count() == 1
        shot(p, "player-controls-1280.png")
        # a command's play button jumps the recording to its moment
        seek = p.locator("[data-seek]").last
        at = float(seek.get_attribute("data-seek"))
        p.select_option("[data-role=speed]", "1")
        p.wait_for_selector("#player[data-player=asciinema] .ap-wrapper")
        seek.click()
        t = p.evaluate("async () => { await portalSeeking; return portalPlayer.getCurrentTime(); }")
        assert abs(t - max(at - 0.5, 0)) < 0.4, (t, at)  # not played there from the start
        assert p.evaluate("() => portalPlayerOptions.idleTimeLimit") == 0
        assert errors == [] and csp_errors == []
        # other pages keep the strict policy
        strict = p.goto(f"{base}/sessions").headers["content-security-policy"]
        assert "wasm-unsafe-eval" not in strict
    finally:
        ctx.close()
    # a browser without WebAssembly gets the xterm.js fallback player
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.add_init_script("delete window.WebAssembly;")
    try:
        p = ctx.new_page()
        errors = watch_errors(p)
        sign_in(p, base, user.username, PASSWORD)
        p.goto(f"{base}/sessions/{sid}")
        p.wait_for_selector("#player[data-player=xterm]")
        p.wait_for_function(
            "() => { const b = portalPlayer.term.buffer.active; for (let i = 0; i < b.length; i++)"
            " { if (b.getLine(i).translateToString(true).includes('rec-42')) return true; }"
            " return false; }"
        )
        assert errors == []
    finally:
        ctx.close()


def test_a_tab_on_another_machine(term_setup, page, sshd_machine):
    user, machine, base = term_setup
    other = sshd_machine(user, auth="password", name="second-box")
    open_terminal(page, base, user, machine)
    page.click("[data-action=pick-machine]")
    page.wait_for_selector(f"[data-role=machine-menu] [data-agent-id='{other.agent_id}']")
    shot(page, "terminal-menu-1280.png")
    page.click(f"[data-role=machine-menu] [data-agent-id='{other.agent_id}']")
    page.wait_for_function("() => portalTerminals.tabs.length === 2")
    wait_connected(page, 1)
    assert page.evaluate("() => portalTerminals.tabs[1].agentId") == other.agent_id
    page.keyboard.type("echo other-$((2*21))\n")
    wait_line(page, "other-42", 1)
    labels = page.eval_on_selector_all(".term-tab-label", "els => els.map(e => e.textContent)")
    assert labels == ["sshd-box", "second-box"]
    assert page.js_errors == []


def test_signed_out_browser_stops_reconnecting(term_setup, page, context, app):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    sid = active(page, "t.sessionId")
    context.clear_cookies()
    drop_socket(app, sid)
    page.wait_for_function("() => portalTerminals.active().state === 'closed'")
    assert "signed out" in page.inner_text("[data-role=status-text]")
    assert page.js_errors == []


def test_reconnects_when_the_network_comes_back(term_setup, page, context, app):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    page.keyboard.type("Y=still-$((7*6))\n")
    sid = active(page, "t.sessionId")
    context.set_offline(True)
    drop_socket(app, sid)
    page.wait_for_function(
        "() => document.querySelector('[data-role=status-text]').textContent.includes('offline')"
    )
    assert active(page, "t.state") == "reconnecting"
    context.set_offline(False)  # the "online" event reconnects at once
    wait_connected(page)
    assert active(page, "t.sessionId") == sid
    page.keyboard.type("echo $Y\n")
    wait_line(page, "still-42")
    assert page.js_errors == []


def test_watch_page_follows_the_owners_resizes(term_setup, page, browser):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    page.keyboard.type("echo watched-$((2*4))\n")
    wait_line(page, "watched-8")
    sid = active(page, "t.sessionId")
    other = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        errors = watch_errors(other)
        sign_in(other, base, user.username, PASSWORD)  # its user may always watch
        other.goto(f"{base}/sessions/{sid}/watch")
        other.wait_for_function(
            "() => window.portalWatch && window.portalWatch.text().includes('watched-8')"
        )
        cols, rows = active(page, "[t.term.cols, t.term.rows]")
        other.wait_for_function(
            "([c, r]) => portalWatch.term.cols === c && portalWatch.term.rows === r",
            arg=[cols, rows],
        )
        page.bring_to_front()
        page.set_viewport_size({"width": 800, "height": 500})
        page.wait_for_function("(c) => portalTerminals.active().term.cols < c", arg=cols)
        cols2, rows2 = active(page, "[t.term.cols, t.term.rows]")
        other.wait_for_function(
            "([c, r]) => portalWatch.term.cols === c && portalWatch.term.rows === r",
            arg=[cols2, rows2],
        )
        assert errors == [] and page.js_errors == []
    finally:
        other.close()


def test_tab_close_asks_detach_or_end(term_setup, phone, app):
    """The ×: Cancel keeps the tab; Detach drops the socket and the shell keeps running."""
    user, machine, base = term_setup
    open_terminal(phone, base, user, machine)
    sid = phone.evaluate("() => portalTerminals.active().sessionId")
    phone.click(".term-tab >> nth=0 >> .term-tab-close")
    phone.wait_for_selector("dialog.term-close-dialog[open]")
    box = phone.locator("dialog.term-close-dialog").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    shot(phone, "terminal-close-dialog-375.png")
    phone.click("dialog.term-close-dialog [data-choice=cancel]")
    assert phone.evaluate("() => portalTerminals.tabs.length") == 1
    phone.click(".term-tab >> nth=0 >> .term-tab-close")
    phone.click("dialog.term-close-dialog [data-choice=detach]")
    phone.wait_for_function("() => portalTerminals.tabs.length === 0")
    reg = app.extensions["portal_terminal"]
    deadline = time.monotonic() + 10
    while reg.get(sid).status != "detached":
        assert time.monotonic() < deadline, "detaching did not detach the session"
        time.sleep(0.1)
    assert not reg.get(sid).closed
    assert phone.js_errors == []
