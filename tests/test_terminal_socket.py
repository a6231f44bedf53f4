"""The terminal socket contract against the real sshd: ready, echo, JSON input, resize, bad frames."""

from __future__ import annotations

import json
import time

import pytest
import websocket

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


def test_a_deeply_nested_json_frame_closes_with_1008_and_one_log_line(term_env, caplog):
    """'[' * 30000 fits in a frame but not in json's recursion limit: the socket is closed
    as a policy violation, logged in one line (no traceback), and the worker is fine."""
    import logging

    caplog.set_level(logging.INFO, logger="portal")
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.control("[" * 30000)
    msg = t.wait_control("error")
    assert "nested" in msg["message"]
    t.drain_close()
    assert t.closed and t.close_code == 1008
    lines = [r for r in caplog.records if "nested" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
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


# ---------------------------------------------------------------- frame parsing


def _frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    """A client frame, masked as RFC 6455 requires."""
    mask = b"\x5a\xc3\x0f\x99"
    n = len(payload)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    head = bytes((b0, 0x80 | n)) if n < 126 else bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def _dribble(t, raw: bytes, step: int) -> None:
    """Send `raw` in `step`-byte pieces (frames cut anywhere, several frames per piece)."""
    for i in range(0, len(raw), step):
        t.ws.sock.sendall(raw[i : i + step])
        time.sleep(0.002)


@pytest.mark.parametrize("step", [1, 5, 64, 4096])
def test_frames_cut_and_batched_anyhow_arrive_whole_and_in_order(term_env, step):
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    text = json.dumps({"type": "input", "data": "st-"}).encode()
    raw = (
        b"".join(_frame(0x2, bytes([c])) for c in b"echo fa")
        + _frame(0x1, text)
        + _frame(0x9, b"are you there")  # a ping between keystrokes
        + _frame(0x2, "p-é$((2+3))\r".encode())
    )
    _dribble(t, raw, step)
    out, pong = b"", None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (b"fast-p-\xc3\xa95" not in out or pong is None):
        opcode, data = t.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_PONG:
            pong = data
        elif opcode == websocket.ABNF.OPCODE_BINARY:
            out += data
    assert b"fast-p-\xc3\xa95" in out, out
    assert pong == b"are you there"
    t.run("echo still$((1+1))", r"still2")


def test_pongs_and_pings_keep_input_flowing(term_env):
    """Browsers answer the server's pings every 25 s: control frames between keystrokes are
    handled in order and typing keeps working."""
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    for i, part in enumerate([b"echo ", b"pi", b"ng$((", b"3*3", b"))\r"]):
        t.ws.sock.sendall(_frame(0xA, b"") + _frame(0x2, part) + _frame(0x9, bytes([i])))
        time.sleep(0.01)
    t.read_until(r"ping9")
    t.run("echo next$((2*2))", r"next4")


def test_a_fragmented_message_is_reassembled_and_the_socket_keeps_working(term_env):
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    msg = json.dumps({"type": "input", "data": "echo frag$((1+1))\r"}).encode()
    t.ws.sock.sendall(_frame(0x1, msg[:9], fin=False) + _frame(0x0, msg[9:20], fin=False))
    time.sleep(0.05)
    t.ws.sock.sendall(_frame(0x0, msg[20:]) + _frame(0x2, b"echo after$((2+2))\r"))
    t.read_until(r"frag2")
    t.read_until(r"after4")
    t.run("echo later$((3+3))", r"later6")


def test_invalid_utf8_in_a_text_frame_closes_with_1007(term_env):
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.ws.sock.sendall(_frame(0x1, b'{"type": "input", "data": "\xff\xfe"}'))
    t.drain_close()
    assert t.closed and t.close_code == 1007


def test_an_unmasked_client_frame_closes_the_socket(term_env):
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.ws.sock.sendall(bytes((0x82, 3)) + b"abc")
    t.drain_close()
    assert t.closed and t.close_code == 1002


def test_permessage_deflate_is_not_negotiated(term_env):
    _owner, _machine, open_term = term_env
    t = open_term(header=["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"])
    assert "sec-websocket-extensions" not in {k.lower() for k in t.ws.getheaders()}
    t.wait_control("ready")
    # a compressed frame (RSV1) without the extension is a protocol error, not input
    t.ws.sock.sendall(_frame(0x2, b"\x4a\x04\x00", rsv1=True))
    t.drain_close()
    assert t.closed and t.close_code == 1002


@pytest.mark.parametrize("stepped_aside", [False, True])
def test_a_quiet_socket_stays_open_and_keeps_answering(term_env, stepped_aside, monkeypatch):
    """A quiet spell longer than the receiver's wait for the next message must not read as
    a dropped socket, whether the socket has seen a fragmented message or not."""
    from portal.terminal import ws_input

    monkeypatch.setattr(ws_input.Receiver, "RECEIVE_WAIT", 1.0)  # the spell: 2.5 s
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    if stepped_aside:  # a fragmented message first
        msg = json.dumps({"type": "input", "data": "echo frag$((1+1))\r"}).encode()
        t.ws.sock.sendall(_frame(0x1, msg[:9], fin=False) + _frame(0x0, msg[9:]))
        t.read_until(r"frag2")
    time.sleep(2.5)
    t.ws.sock.sendall(_frame(0x9, b"still there?"))
    deadline = time.monotonic() + 10
    pong = None
    while pong is None and time.monotonic() < deadline:
        opcode, data = t.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_PONG:
            pong = data
    assert pong == b"still there?"
    for c in b"echo quiet$((1+2))\r":  # one key per frame, as a person types
        t.ws.sock.sendall(_frame(0x2, bytes([c])))
    t.read_until(r"quiet3")
    time.sleep(1.5)
    t.run("echo later$((2+2))", r"later4")


# ---------------------------------------------------------------- output framing and memory


def test_bulk_output_is_coalesced_into_large_frames(term_env):
    """`seq` writes ~1.9 MB: it reaches the browser as frames of up to 64 KiB, not one frame
    per SSH packet (or per line)."""
    _owner, _machine, open_term = term_env
    t = open_term()
    t.wait_control("ready")
    t.run("stty -echo", r"\$ $")
    t.out.clear()
    t.send("seq 1 300000; echo done$((5*5))\r")
    sizes = []
    deadline = time.monotonic() + 40
    while b"done25" not in bytes(t.out[-4096:]) and time.monotonic() < deadline:
        what, data = t.recv_one(10)
        if what == "data":
            sizes.append(len(data))
            del t.out[:-8192]
    assert b"done25" in bytes(t.out[-4096:])
    total = sum(sizes)
    assert total > 1_900_000
    assert max(sizes) <= 64 * 1024
    assert len(sizes) < total / 4096, f"{len(sizes)} frames for {total} bytes"


def test_the_pump_stops_at_the_high_watermark_and_resumes_under_the_low_one(app, term_env):
    """A client that acks, then reads a flood without acking: the server sends up to the
    high watermark (plus the frame that crossed it) and stops reading the channel; acks
    that bring the count under the low watermark start it again."""
    import websocket

    from portal.terminal.pump import FRAME_MAX, HIGH_WATER, LOW_WATER

    _owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    sess = app.extensions["portal_terminal"].get(sid)
    t.control({"type": "ack", "bytes": 0})  # this client acks (as the page does)
    t.send("yes\r")

    def read_for(seconds: float) -> int:
        got, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                what, data = t.recv_one(0.2)
            except (websocket.WebSocketTimeoutException, TimeoutError):
                continue
            if what == "data":
                got += len(data)
                del t.out[:]
        return got

    got = read_for(3.0)  # everything sent is read; nothing is acked
    # (the prompt, read before, counts as unacked too: a few bytes of slack below)
    assert HIGH_WATER - 4096 <= got <= HIGH_WATER + FRAME_MAX, got
    assert read_for(1.5) == 0  # paused: not one more byte while nothing is acked
    assert HIGH_WATER <= sess.client.unacked <= HIGH_WATER + FRAME_MAX
    t.control({"type": "ack", "bytes": got - LOW_WATER // 2})  # under the low watermark
    assert read_for(1.0) > 0  # flowing again
    t.send(b"\x03")


def test_a_client_that_never_reads_nor_acks_holds_the_server_to_a_bound(app, term_env):
    """No acks and no reads: TCP backpressure stops the pump, the pump stops reading the
    channel, the SSH window stops the remote `yes`. Nothing grows on the server meanwhile,
    and the shell answers once the client reads again."""
    _owner, _machine, open_term = term_env
    t = open_term()
    sid = t.wait_control("ready")["session_id"]
    sess = app.extensions["portal_terminal"].get(sid)
    t.send("yes\r")
    # Buffers fill (kernel, SSH window), then everything stands still; a loaded machine
    # takes longer to fill them, so wait for the standstill (it never comes without a bound).
    deadline = time.monotonic() + 30
    previous = sess.bytes_out
    while True:
        time.sleep(1.0)
        if sess.bytes_out - previous <= 64 * 1024:
            break
        assert time.monotonic() < deadline, "output kept flowing to a client that reads nothing"
        previous = sess.bytes_out
    before = sess.bytes_out
    time.sleep(2.0)
    grew = sess.bytes_out - before
    assert grew <= 64 * 1024, f"{grew} more bytes went out to a client that reads nothing"
    from portal.terminal.pump import WINDOW
    from portal.terminal.ring import DEFAULT_RING

    assert len(sess.channel.in_buffer) <= WINDOW  # at most what the SSH window lets in
    assert len(sess.ring) <= DEFAULT_RING
    t.send(b"\x03")
    t.send("echo back$((6*7))\r")
    deadline = time.monotonic() + 60
    while b"back42" not in bytes(t.out[-4096:]) and time.monotonic() < deadline:
        t.recv_one(10)
        del t.out[:-8192]
    assert b"back42" in bytes(t.out[-4096:])
