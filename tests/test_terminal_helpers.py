"""Shared helpers for the terminal tests (a websocket-client wrapper, fixtures). No tests here."""

from __future__ import annotations

import json
import re
import time

import pytest
import websocket


class Term:
    """A terminal socket client: collects output, answers helpers like read_until()."""

    def __init__(self, url: str, *, header=None, cookie=None, origin=None, timeout=15):
        self.ws = websocket.WebSocket()
        self.ws.settimeout(timeout)
        kwargs = {}
        if header:
            kwargs["header"] = header
        if cookie:
            kwargs["cookie"] = cookie
        if origin is not None:
            kwargs["origin"] = origin
        else:
            kwargs["suppress_origin"] = True
        self.ws.connect(url, **kwargs)
        self.out = bytearray()
        self.controls: list[dict] = []
        self.closed = False
        self.close_code = None

    def recv_one(self, timeout: float = 10.0):
        self.ws.settimeout(timeout)
        opcode, data = self.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_BINARY:
            self.out += data
            return ("data", data)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            msg = json.loads(data)
            self.controls.append(msg)
            return ("control", msg)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.closed = True
            if len(data) >= 2:
                self.close_code = int.from_bytes(data[:2], "big")
            return ("close", self.close_code)
        return ("other", data)

    def wait_control(self, kind: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        for c in self.controls:
            if c.get("type") == kind:
                return c
        while time.monotonic() < deadline and not self.closed:
            try:
                what, msg = self.recv_one(max(deadline - time.monotonic(), 0.05))
            except (websocket.WebSocketTimeoutException, TimeoutError):
                break
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                self.closed = True
                break
            if what == "control" and msg.get("type") == kind:
                return msg
        raise AssertionError(f"no {kind!r} frame; got {self.controls} / {bytes(self.out[-300:])!r}")

    def read_until(self, pattern: str | bytes, timeout: float = 15.0) -> bytes:
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            m = rx.search(self.out, start)
            if m:
                return bytes(self.out[: m.end()])
            if time.monotonic() >= deadline or self.closed:
                raise AssertionError(f"{pattern!r} not seen; got {bytes(self.out[-500:])!r}")
            try:
                self.recv_one(max(deadline - time.monotonic(), 0.05))
            except (websocket.WebSocketTimeoutException, TimeoutError):
                continue
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                self.closed = True

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.ws.send_binary(data)

    def control(self, obj) -> None:
        self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def run(self, command: str, marker: str, timeout: float = 15.0) -> bytes:
        """Type `command` and wait for `marker` in the output (use $((..)) so the echo differs)."""
        self.send(command + "\r")
        return self.read_until(marker, timeout)

    def drain_close(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            try:
                self.recv_one(max(deadline - time.monotonic(), 0.05))
            except (websocket.WebSocketTimeoutException, TimeoutError):
                continue
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                self.closed = True

    def drop(self) -> None:
        """Kill the TCP connection without a close handshake (a phone losing its network)."""
        try:
            self.ws.sock.shutdown(2)
        except OSError:
            pass
        self.ws.sock.close()

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass
        try:
            self.ws.shutdown()
        except Exception:
            pass


def ws_base(live_server) -> str:
    return live_server.url.replace("http://", "ws://")


@pytest.fixture
def term_env(app, live_server, make_user, sshd_machine, token_for):
    """(owner, machine, open_term(**query) -> Term) on the real sshd through the live server."""
    owner = make_user("termowner")
    machine = sshd_machine(owner)
    token = token_for(owner)
    opened: list[Term] = []

    def open_term(query: str = "", token_=None, agent_id=None, **kw) -> Term:
        t = token_ or token
        url = f"{ws_base(live_server)}/api/terminal/{agent_id or machine.agent_id}/ws?token={t}"
        if query:
            url += "&" + query
        term = Term(url, **kw)
        opened.append(term)
        return term

    yield owner, machine, open_term
    for term in opened:
        term.close()


def wait_for(pred, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    return pred()


def drop_socket(app, sid: str, timeout: float = 5.0) -> None:
    """Cut the TCP connection under the session's attached WebSocket (no close handshake),
    leaving the SSH channel alone: what a phone going to sleep or a Wi-Fi change does."""
    from portal.terminal.live import cut_socket

    reg = app.extensions["portal_terminal"]

    def attached():
        sess = reg.get(sid)
        return sess.client if sess is not None else None

    client = wait_for(attached, timeout=timeout)
    assert client is not None, f"{sid} has no attached socket"
    cut_socket(client)


def live_row(app, machine, owner, server_id: str) -> str:
    """A TerminalSession row, status "active", that names `server_id` as its holder (no
    shell behind it): what a server left, or holds, somewhere else. Returns its id."""
    import uuid

    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    sid = str(uuid.uuid4())
    with app.app_context():
        db.session.add(
            TerminalSession(
                id=sid,
                machine_id=machine.id,
                user_id=owner.id,
                status="active",
                server_id=server_id,
            )
        )
        db.session.commit()
        db.session.remove()
    return sid


def redis_config(app_config: dict) -> dict:
    """`app_config` with the terminal bus on the local Redis, under a prefix of its own."""
    import uuid

    return {
        **app_config,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "PORTAL_TERMINAL_BUS_PREFIX": f"test-term-{uuid.uuid4().hex[:12]}",
    }
