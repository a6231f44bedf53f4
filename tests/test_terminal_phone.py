"""The terminal on a phone, in real Chromium against the real server and a real sshd: the
page goes full-screen and keeps 45x18 cells with the on-screen keyboard up (the visual
viewport shrunk to 375x440), landscape, the site menu; input typed while the socket is
reconnecting is held and sent on re-attach, or reported as not sent when the session
ended meanwhile; the navigation and the recording player fit a phone's width."""

from __future__ import annotations

import time

import pytest

from tests.conftest import PASSWORD
from tests.fixtures.browser import sign_in
from tests.fixtures.terminal import drop_socket
from tests.test_terminal_browser import (  # noqa: F401
    active,
    open_terminal,
    shot,
    term_setup,
    term_text,
    wait_line,
    wait_reconnected,
    watch_errors,
)

pytestmark = pytest.mark.timeout(90)

KEYBOARD = 300  # CSS px an on-screen keyboard takes from a 740 px high phone screen
RECONNECTING = "[data-role=reconnect][data-mode=reconnecting]"


def box(p, selector: str) -> dict:
    b = p.locator(selector).bounding_box()
    assert b, f"{selector} is not displayed"
    return b


def size(p) -> tuple[int, int]:
    return tuple(active(p, "[t.term.cols, t.term.rows]"))


def pty_size(p, cols: int, rows: int) -> None:
    """The shell's terminal has that size (the resize frame is debounced: ask until it has)."""
    for attempt in range(20):
        p.keyboard.type(f"stty size; echo probe-{attempt}\n")
        wait_line(p, f"probe-{attempt}")
        if f"{rows} {cols}" in term_text(p).split("\n"):
            return
        time.sleep(0.2)
    raise AssertionError(f"the PTY never became {cols}x{rows}")


def nav_fits(p, width: int, height: int | None = None) -> int:
    links = p.locator("#site-header nav.nav a")
    n = links.count()
    for i in range(n):
        b = links.nth(i).bounding_box()
        assert b and b["x"] >= 0 and b["x"] + b["width"] <= width + 0.5, (i, b)
        if height is not None:
            assert b["y"] >= 0 and b["y"] + b["height"] <= height + 0.5, (i, b)
        assert p.evaluate("(e) => e.scrollWidth <= e.clientWidth", links.nth(i).element_handle())
    assert p.evaluate("document.documentElement.scrollWidth") <= width
    return n


def test_phone_terminal_is_full_screen_and_keeps_18_rows_with_the_keyboard_up(
    term_setup,  # noqa: F811
    phone,
):
    user, machine, base = term_setup
    open_terminal(phone, base, user, machine)
    # full-screen: the site header waits behind the >_ button, the status line gives way
    assert phone.is_hidden("#site-header") and phone.is_hidden("[data-role=status]")
    assert phone.is_visible("[data-action=site-nav]")
    assert box(phone, ".term-app")["y"] == 0
    cols, rows = size(phone)
    assert cols >= 45 and rows >= 30

    # The keyboard opens: the visual viewport loses its lower 300 px.
    phone.set_viewport_size({"width": 375, "height": 740 - KEYBOARD})
    phone.wait_for_function("() => document.body.getAttribute('data-vv') === '375x440+0'")
    phone.wait_for_function("(r) => portalTerminals.active().term.rows < r", arg=rows)
    cols, rows = size(phone)
    assert cols >= 45 and rows >= 18, (cols, rows)
    keys = box(phone, "[data-role=keybar]")
    screen = box(phone, ".term-host .xterm-screen")
    assert keys["y"] + keys["height"] <= 440.5  # above the keyboard
    assert screen["y"] >= 0 and screen["y"] + screen["height"] <= keys["y"] + 0.5
    assert screen["x"] >= 0 and screen["x"] + screen["width"] <= 375
    phone.tap(".term-host")
    pty_size(phone, cols, rows)  # the shell was told
    # the key bar still types
    phone.keyboard.type("echo abc ")
    phone.tap("[data-char='|']")
    phone.keyboard.type(" tr a-z A-Z\n")
    wait_line(phone, "ABC")
    shot(phone, "terminal-keyboard-375x440.png")

    # The way back: the menu button shows the whole site header, every item in sight.
    phone.tap("[data-action=site-nav]")
    assert phone.is_visible("#site-header")
    assert phone.get_attribute("[data-action=site-nav]", "aria-expanded") == "true"
    assert nav_fits(phone, 375, 440) == 5
    assert phone.is_visible("#site-header form button:has-text('Sign out')")
    shot(phone, "terminal-menu-375x440.png")
    phone.tap("[data-action=site-nav]")
    assert phone.is_hidden("#site-header")

    # Landscape.
    phone.set_viewport_size({"width": 740, "height": 375})
    phone.wait_for_function("() => document.body.getAttribute('data-vv') === '740x375+0'")
    phone.wait_for_function("() => portalTerminals.active().term.cols >= 80")
    cols, rows = size(phone)
    assert cols >= 80 and rows >= 15, (cols, rows)
    assert phone.is_hidden("#site-header")
    keys = box(phone, "[data-role=keybar]")
    assert keys["y"] + keys["height"] <= 375.5 and keys["x"] + keys["width"] <= 740
    assert box(phone, ".term-host .xterm-screen")["y"] + 1 >= 0
    phone.tap(".term-host")  # the menu button had the focus
    phone.keyboard.type("echo wide-$((6*7))\n")
    wait_line(phone, "wide-42")
    shot(phone, "terminal-landscape-740x375.png")
    assert phone.js_errors == []


def test_typed_while_reconnecting_is_held_and_sent_after_reattach(
    term_setup,  # noqa: F811
    phone,
    app,
):
    user, machine, base = term_setup
    open_terminal(phone, base, user, machine)
    phone.tap(".term-host")
    phone.keyboard.type("X=kept-$((40+2)); echo set:$X\n")
    wait_line(phone, "set:kept-42")
    sid = active(phone, "t.sessionId")
    connects = active(phone, "t.connects")
    assert phone.is_hidden("[data-role=reconnect]")

    phone.context.set_offline(True)
    drop_socket(app, sid)
    phone.wait_for_selector(RECONNECTING)  # over the terminal, not only in a status line
    assert "offline" in phone.inner_text(RECONNECTING)
    phone.keyboard.type("echo held:$X\n")  # 12 characters and Enter
    assert phone.inner_text("[data-role=held]") == (
        "13 characters typed: sent when the terminal is back."
    )
    # A paste that does not fit in what is held (4 KiB) is not kept, nor anything after it.
    phone.evaluate("() => portalTerminals.active().term.paste('x'.repeat(5000))")
    phone.keyboard.type("\n")
    held = phone.inner_text("[data-role=held]")
    assert held.startswith("Input limit reached (4 KiB): 13 characters will be sent"), held
    dropped = 5000 + len("\x1b[200~\x1b[201~") + 1  # bash asked for bracketed paste
    assert f"{dropped} characters typed after that will not" in held
    shot(phone, "terminal-reconnecting-375.png")

    phone.context.set_offline(False)
    wait_reconnected(phone, connects)
    assert active(phone, "t.sessionId") == sid
    wait_line(phone, "held:kept-42")  # run by the same shell, after the re-attach
    notice = "[data-role=reconnect][data-mode=warning]"
    phone.wait_for_selector(notice)
    assert phone.inner_text(f"{notice} .term-reconnect-title") == (
        f"Reconnected. Sent 13 characters typed meanwhile; the {dropped} characters typed "
        "after the 4 KiB limit were not sent."
    )
    shot(phone, "terminal-reconnected-375.png")
    phone.tap(f"{notice} [data-action=notice-ok]")
    assert phone.is_hidden("[data-role=reconnect]")
    phone.keyboard.type("echo after-$((1+1))\n")
    wait_line(phone, "after-2")
    assert "x" * 50 not in term_text(phone)  # the refused paste never reached the shell
    assert active(phone, "t.heldBytes") == 0
    assert phone.js_errors == []


def test_typed_while_reconnecting_is_reported_when_the_session_ended(
    term_setup,  # noqa: F811
    page,
    app,
    client,
    auth,
):
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    # a wide screen keeps the site header and the status line; no menu button
    assert page.is_visible("#site-header") and page.is_visible("[data-role=status]")
    assert page.is_hidden("[data-action=site-nav]")
    sid = active(page, "t.sessionId")
    page.context.set_offline(True)
    drop_socket(app, sid)
    page.wait_for_selector(RECONNECTING)
    page.keyboard.type("echo lost\n")
    page.wait_for_function(
        "() => document.querySelector('[data-role=held]').textContent.startsWith('10 characters')"
    )
    # Meanwhile the shell is ended (from another device, an admin, the grace period).
    assert client.delete(f"/api/terminal/sessions/{sid}", headers=auth(user)).status_code < 300
    page.context.set_offline(False)
    page.wait_for_function("() => portalTerminals.active().state === 'closed'")
    msg = page.inner_text(".term-ended-msg")
    assert "session has ended" in msg, msg
    assert msg.endswith("What you typed while reconnecting (10 characters) was not sent."), msg
    assert page.is_hidden("[data-role=reconnect]")
    shot(page, "terminal-not-sent-1280.png")
    assert page.js_errors == []


@pytest.mark.parametrize("width,height", [(375, 740), (740, 375)])
def test_navigation_shows_every_item_on_every_page(width, height, browser, live_server, make_user):
    make_user("root", role="admin")  # six items: Users too
    ctx = browser.new_context(
        viewport={"width": width, "height": height}, is_mobile=True, has_touch=True
    )
    try:
        p = ctx.new_page()
        errors = watch_errors(p)
        sign_in(p, live_server.url, "root", PASSWORD)
        for path in (
            "/dashboard",
            "/machines",
            "/machines/new",
            "/sessions",
            "/community",
            "/audit",
            "/profile",
            "/admin/users",
            "/no/such/page",
        ):
            p.goto(live_server.url + path)
            assert nav_fits(p, width) == 6, path
        shot(p, f"nav-{width}x{height}.png")
        assert errors == []
    finally:
        ctx.close()


def test_recording_fits_a_phone_screen(term_setup, page, browser):  # noqa: F811
    """A recording of a 1280 px wide terminal, on a 375 px phone: scaled to the width, in
    the asciinema-player and in the xterm.js fallback (a browser without WebAssembly)."""
    user, machine, base = term_setup
    open_terminal(page, base, user, machine)
    cols, _rows = size(page)
    assert cols > 120
    page.keyboard.type(f"printf '%0{cols - 2}d|\\n' 7; echo rec-$((6*7))\n")
    wait_line(page, "rec-42")
    sid = active(page, "t.sessionId")
    for kind in ("asciinema", "xterm"):
        ctx = browser.new_context(
            viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
        )
        if kind == "xterm":
            ctx.add_init_script("delete window.WebAssembly;")
        try:
            p = ctx.new_page()
            errors = watch_errors(p)
            sign_in(p, base, user.username, PASSWORD)
            p.goto(f"{base}/sessions/{sid}")
            inner = ".ap-wrapper .ap-player" if kind == "asciinema" else ".xterm-screen"
            p.wait_for_selector(f"#player[data-player={kind}] {inner}")
            if kind == "xterm":  # scaled once the recording is loaded
                p.wait_for_function("() => portalPlayer.events.length > 0")
            player = box(p, "#player")
            assert player["x"] >= 0 and player["x"] + player["width"] <= 375
            widest = p.evaluate(
                "() => Math.max(...[...document.querySelectorAll('#player *')]"
                ".map(e => e.getBoundingClientRect().right))"
            )
            assert widest <= player["x"] + player["width"] + 0.5, (kind, widest, player)
            assert p.evaluate("document.documentElement.scrollWidth") <= 375
            p.locator("#player").scroll_into_view_if_needed()
            shot(p, f"player-{kind}-375.png")
            assert errors == []
        finally:
            ctx.close()


ADD = ".term-tabs [data-action=new-tab]"
ON_TOP = """(sel) => {
  const el = document.querySelector(sel), b = el.getBoundingClientRect();
  return document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2) === el;
}"""


@pytest.mark.parametrize("viewer,width", [("phone", 375), ("page", 1280)])
def test_the_new_tab_button_stays_in_view_and_clickable(
    term_setup,  # noqa: F811
    request,
    viewer,
    width,
):
    """However many tabs there are, "+" stays inside the window, on top (not under a tab or a
    toolbar button) and opens a tab; at 1280 px it still follows the last tab."""
    p = request.getfixturevalue(viewer)
    user, machine, base = term_setup
    open_terminal(p, base, user, machine)
    for n in (1, 2, 3):
        p.wait_for_function(f"() => portalTerminals.tabs.length === {n}")
        add = box(p, ADD)
        assert add["x"] >= 0 and add["x"] + add["width"] <= width + 0.5, (n, add)
        assert add["width"] >= 24 and add["height"] >= 24, add
        assert p.evaluate(ON_TOP, ADD), f"something covers + with {n} tab(s)"
        if width > 640:
            last = box(p, ".term-tab:last-of-type")
            assert add["x"] == pytest.approx(last["x"] + last["width"], abs=1), (last, add)
        if n == 3:
            shot(p, f"terminal-tabs-{width}.png")
        (p.tap if viewer == "phone" else p.click)(ADD)
    p.wait_for_function("() => portalTerminals.tabs.length === 4")
    assert p.evaluate("document.documentElement.scrollWidth") <= width
    assert p.js_errors == []


VIEW = "[data-action=view]"
HIT = """(sel) => {
  const el = document.querySelector(sel), b = el.getBoundingClientRect();
  return el.contains(document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2));
}"""


def visible_and_on_top(p, selector: str, width: int) -> dict:
    b = box(p, selector)
    assert b["x"] >= 0 and b["x"] + b["width"] <= width + 0.5, (selector, b)
    assert p.evaluate(HIT, selector), f"something covers {selector}"
    return b


@pytest.mark.parametrize("viewer,width", [("phone", 375), ("page", 1280)])
def test_a_tab_s_name_and_close_button_are_not_under_the_new_tab_button(
    term_setup,  # noqa: F811
    request,
    viewer,
    width,
):
    """At 375 px the text-size and theme buttons fold into an "Aa" menu, so a tab's name and
    its close button sit whole beside "+" (they were under it); the menu opens, changes the
    text size, and closes on a tap elsewhere or Esc. At 1280 px those buttons stay in the
    toolbar and there is no "Aa"."""
    p = request.getfixturevalue(viewer)
    user, machine, base = term_setup
    open_terminal(p, base, user, machine)
    label = visible_and_on_top(p, ".term-tab.active .term-tab-label", width)
    assert p.evaluate(
        "(e) => e.scrollWidth <= e.clientWidth",
        p.locator(".term-tab.active .term-tab-label").element_handle(),
    ), "the tab's name is cut"
    close = visible_and_on_top(p, ".term-tab.active .term-tab-close", width)
    add = box(p, ADD)
    assert label["x"] + label["width"] <= close["x"] + 0.5 <= add["x"], (label, close, add)
    for n in (2, 3):  # a new tab is scrolled into view clear of "+" too
        (p.tap if viewer == "phone" else p.click)(ADD)
        p.wait_for_function(f"() => portalTerminals.tabs.length === {n}")
        last = n - 1
        p.wait_for_function(
            f"() => document.querySelectorAll('.term-tab')[{last}].classList.contains('active')"
        )
        visible_and_on_top(p, ".term-tab.active .term-tab-close", width)
        visible_and_on_top(p, ".term-tab.active .term-tab-label", width)
    font = active(p, "t.term.options.fontSize")
    if width > 640:
        assert not p.locator(VIEW).is_visible()
        p.click("[data-action=font-inc]")
        p.wait_for_function(f"() => portalTerminals.active().term.options.fontSize === {font + 1}")
        assert p.js_errors == []
        return
    assert not p.locator("[data-action=font-inc]").is_visible()
    assert not p.locator("[data-action=theme]").is_visible()
    p.tap(VIEW)
    assert p.get_attribute(VIEW, "aria-expanded") == "true"
    for sel in ("[data-action=font-dec]", "[data-action=font-inc]", "[data-action=theme]"):
        visible_and_on_top(p, sel, width)
    shot(p, "terminal-view-menu-375.png")
    p.tap("[data-action=font-inc]")
    p.wait_for_function(f"() => portalTerminals.active().term.options.fontSize === {font + 1}")
    assert p.locator("[data-role=font-size]").inner_text() == f"{font + 1}px"
    p.locator(".xterm-screen >> visible=true").tap()  # a tap on the terminal closes the menu
    assert not p.locator("[data-action=font-inc]").is_visible()
    assert p.get_attribute(VIEW, "aria-expanded") == "false"
    p.tap(VIEW)
    assert p.locator("[data-action=theme]").is_visible()
    p.keyboard.press("Escape")
    assert not p.locator("[data-action=theme]").is_visible()
    assert p.js_errors == []
