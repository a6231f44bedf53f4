"""Blocking terminal clients with one interface (send / recv / close) for the bench:
raw `ssh -tt` on a local PTY, the portal's socket, and webssh's socket."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import termios
import time

import websocket

from bench.terminal.many import _frame


class RawSsh:
    """`ssh -tt` with its stdin/stdout on a PTY we hold the master of (like a terminal)."""

    name = "raw ssh -tt"

    def __init__(self, sshd, key_path: str, known_hosts: str, cols=120, rows=40):
        master, slave = pty.openpty()
        # cooked, like a real terminal: ssh sends these modes to the remote PTY, then goes raw itself
        import fcntl
        import struct

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(
            [
                "ssh",
                "-tt",
                "-p",
                str(sshd.port),
                "-i",
                key_path,
                "-o",
                f"UserKnownHostsFile={known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                f"{sshd.username}@{sshd.host}",
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self.fd = master
        os.set_blocking(master, False)

    def fileno(self):
        return self.fd

    def send(self, data: bytes) -> None:
        while data:
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:  # only then wait: a keystroke is one write(2)
                select.select([], [self.fd], [], 5)
                continue
            data = data[n:]

    def recv(self, timeout: float, max_bytes: int = 1 << 20) -> bytes:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return b""
        try:
            return os.read(self.fd, max_bytes)
        except (BlockingIOError, OSError):
            return b""

    def ack(self, n: int) -> None:
        pass

    def server_pids(self) -> list[int]:
        return []

    def close(self) -> None:
        try:
            self.proc.terminate()
            self.proc.wait(5)
        except Exception:
            self.proc.kill()
        try:
            os.close(self.fd)
        except OSError:
            pass


class _WsClient:
    """websocket-client for the handshake, then frames straight on the socket: a lean client
    (one sendall per key, select + recv for output) like OpenSSH's on the raw side, so the
    numbers are the server's and not a pure-Python client's (websocket-client spent ~0.2 ms
    in send() per key here). The same client is used for the portal and for webssh."""

    def __init__(self, url: str):
        self.ws = websocket.WebSocket(skip_utf8_validation=True)
        self.ws.connect(url, suppress_origin=True, timeout=30)
        self.sock = self.ws.sock
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False

    def fileno(self):
        return self.sock.fileno()

    def send_frame(self, opcode: int, payload: bytes) -> None:
        try:
            self.sock.sendall(_frame(opcode, payload))
        except OSError:
            self.closed = True

    def _parse(self):
        """One whole frame off the buffer: (opcode, payload), or None."""
        b = self.buf
        if len(b) < 2:
            return None
        n, at = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = int.from_bytes(b[2:4], "big"), 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = int.from_bytes(b[2:10], "big"), 10
        if len(b) < at + n:
            return None
        opcode, payload = b[0] & 0x0F, bytes(b[at : at + n])
        del b[: at + n]
        return opcode, payload

    def recv(self, timeout: float, max_bytes: int = 0) -> bytes:
        """The next data frame's payload (b"" after `timeout` s or at the end)."""
        ready = False
        if not self.buf and not self.closed:
            # Nothing buffered (an echo is awaited): wait first, as RawSsh.recv does. After
            # a send, the server's thread is woken on this CPU and runs once this client
            # sleeps (a socket write is a "sync" wake-up): every client step before the wait
            # would count against the server's echo, and a remote browser has none of them.
            if not select.select([self.sock], [], [], max(timeout, 0.0))[0]:
                return b""
            ready = True
        deadline = None
        while not self.closed:
            frame = self._parse() if self.buf else None
            if frame is not None:
                opcode, payload = frame
                if opcode == 0x8:
                    self.closed = True
                    return b""
                if opcode == 0x9:
                    self.send_frame(0xA, payload)
                    continue
                if opcode in (0x1, 0x2):
                    data = self.on_frame(opcode, payload)
                    if data:
                        return data
                continue
            if not ready:
                if deadline is None:  # (after a first wait, the limit starts again: fine here)
                    deadline = time.perf_counter() + max(timeout, 0.0)
                left = deadline - time.perf_counter()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    return b""
            ready = False
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return b""
            if not self.buf and data[0] == 0x82 and data[1] == len(data) - 2:
                # exactly one small binary frame (an echo): its payload, as _parse gives it
                payload = self.on_frame(0x2, data[2:])
                if payload:
                    return payload
                continue
            self.buf += data
        return b""

    def on_frame(self, opcode, data) -> bytes:
        return data

    def close(self) -> None:
        if not self.closed:
            self.send_frame(0x8, (1000).to_bytes(2, "big"))
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class Portal(_WsClient):
    """The portal's socket: binary input, binary output, acks like the page does."""

    name = "portal"

    def __init__(self, base: str, agent_id: str, token: str, cols=120, rows=40, acks=True):
        super().__init__(f"{base}/api/terminal/{agent_id}/ws?token={token}&cols={cols}&rows={rows}")
        self.acks = acks
        self.controls: list[dict] = []

    def on_frame(self, opcode, data) -> bytes:
        if opcode == 0x1:
            try:
                self.controls.append(json.loads(data))
            except ValueError:
                pass
            return b""
        return data

    def ack(self, n: int) -> None:
        if self.acks and n:
            self.send_frame(0x1, json.dumps({"type": "ack", "bytes": n}).encode())

    def send(self, data: bytes) -> None:
        self.send_frame(0x2, data)


class WebSsh(_WsClient):
    """webssh 1.6.3: POST the form to get a worker id, then /ws?id=...; JSON text input."""

    name = "webssh"

    def __init__(self, base_http: str, sshd, cols=120, rows=40):
        import requests

        r = requests.post(
            base_http + "/",
            data={
                "hostname": sshd.host,
                "port": str(sshd.port),
                "username": sshd.username,
                "password": sshd.password,
                "term": "xterm-256color",
            },
            timeout=60,
        )
        body = r.json()
        if not body.get("id"):
            raise RuntimeError(f"webssh refused: {body.get('status')}")
        super().__init__(base_http.replace("http://", "ws://") + f"/ws?id={body['id']}")
        self.send_frame(0x1, json.dumps({"resize": [cols, rows]}).encode())

    def ack(self, n: int) -> None:
        pass

    def send(self, data: bytes) -> None:
        self.send_frame(0x1, json.dumps({"data": data.decode("utf-8", "replace")}).encode())


def read_until(client, marker: bytes, timeout: float, ack=True) -> tuple[bytes, float]:
    """Read (acking) until `marker` appears; returns (tail, seconds)."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    buf = b""
    while time.perf_counter() < deadline:
        data = client.recv(0.5)
        if data:
            if ack:
                client.ack(len(data))
            buf = (buf + data)[-4096:]
            if marker in buf:
                return buf, time.perf_counter() - t0
    raise TimeoutError(f"{client.name}: {marker!r} not seen in {timeout} s; tail {buf[-200:]!r}")
