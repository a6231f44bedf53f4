"""The terminal socket contract against the real sshd: ready, echo, JSON input, resize, bad frames."""

from __future__ import annotations

import json

import pytest

from tests import test_terminal_helpers as _helpers

term_env = _helpers.term_env  # the fixture

pytestmark = pytest.mark.timeout(60)


def test_ready_then_binary_echo(term_env):
    _owner, _machine, open_term = term_env
    t = open_term("cols=100&rows=30")
    ready = t.wait_control("ready")
    assert ready["resumed"] is False and len(ready["session_id"]) == 36
    t.run("echo $((6*7))", r"42\r\n")


def test_json_input_and_resize_changes_stty_size(term_env):
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.control({"type": "input", "data": "stty size\r"})
    t.read_until(r"24 80")
    t.control({"type": "resize", "cols": 132, "rows": 43})
    t.control({"type": "input", "data": "stty size\r"})
    t.read_until(r"43 132")


def test_ping_pong(term_env):
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.control({"type": "ping"})
    assert t.wait_control("pong") == {"type": "pong"}


@pytest.mark.parametrize(
    "frame",
    [
        "not json {",
        "[1, 2]",
        '"just a string"',
        json.dumps({"type": "nope"}),
        json.dumps({"type": "resize", "cols": 0, "rows": 0}),
        json.dumps({"type": "resize", "cols": 100000, "rows": 100000}),
        json.dumps({"type": "resize", "cols": "80", "rows": None}),
        json.dumps({"type": "ack", "bytes": -5}),
        json.dumps({"type": "input", "data": 42}),
        json.dumps({"no": "type"}),
    ],
)
def test_bad_frames_are_ignored_and_the_session_keeps_working(term_env, frame):
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.control(frame)
    t.control({"type": "input", "data": "stty size; echo ok$((1+1))\r"})
    t.read_until(r"24 80\r\n(\x1b\[\?2004l)?\r?ok2")


def test_huge_frame_closes_cleanly_with_1009(term_env):
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.send(b"x" * (200 * 1024))
    t.drain_close()
    assert t.closed and t.close_code == 1009
    # the worker is fine: a new terminal works
    t2 = open_term()
    t2.wait_control("ready")
    t2.run("echo $((7*6))", r"42\r\n")


def test_shell_exit_sends_exit_frame(term_env):
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.send("exit 3\r")
    msg = t.wait_control("exit")
    assert msg["code"] == 3
    t.drain_close()
    assert t.closed


def test_ctrl_c_answers_under_a_flood_with_a_slow_acking_client(term_env):
    """`yes` floods; the client reads slowly and acks what it read: flow control keeps
    the backlog small, so Ctrl-C and the next command come back (no timing assertion)."""
    import time

    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.send("yes\r")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        what, data = t.recv_one(5)
        if what == "data":
            t.control({"type": "ack", "bytes": len(data)})
            del t.out[:-64]
        time.sleep(0.02)  # a slow reader
    t.send(b"\x03")
    t.send("echo after$((6*7))\r")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        what, data = t.recv_one(5)
        if what == "data":
            t.control({"type": "ack", "bytes": len(data)})
            if b"after42" in bytes(t.out[-4096:]):
                break
            del t.out[:-64]
    assert b"after42" in bytes(t.out[-4096:])
