"""N terminal sessions opened together on one selector loop (the client must not be the
bottleneck): minimal WebSocket client frames for the portal and webssh, PTYs for raw ssh."""

from __future__ import annotations

import base64
import json
import os
import pty
import random
import selectors
import socket
import subprocess
import termios
import time
from urllib.parse import urlsplit

PROMPT = b"$ "


_MASKS = bytearray()


def _frame(opcode: int, payload: bytes) -> bytes:
    # a fresh random mask per frame (RFC 6455), drawn 4 KiB at a time: a getrandom(2) per
    # keystroke would sit inside the measured echo of the WebSocket systems only
    if len(_MASKS) < 4:
        _MASKS[:] = os.urandom(4096)
    mask = bytes(_MASKS[-4:])
    del _MASKS[-4:]
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    # mask 4 bytes at a time
    pad = (-n) % 4
    p = payload + b"\0" * pad
    words = int.from_bytes(p, "big") ^ int.from_bytes(mask * ((n + pad) // 4), "big") if n else 0
    masked = words.to_bytes(n + pad, "big")[:n] if n else b""
    return head + mask + masked


class Conn:
    def __init__(self, kind: str, text_input: bool = False):
        self.kind = kind  # "ws" | "pty"
        self.text_input = text_input
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.tail = b""
        self.state = "connecting"
        self.ready = False
        self.failed: str | None = None
        self.pending: float | None = None
        self.rtts: list[float] = []
        self.keys_left = 0
        self.next_key = 0.0
        self.seq = 0
        self.fd = None
        self.sock = None
        self.proc = None
        self.opened_at = time.perf_counter()

    # ------------------------------------------------------------------ transports

    @classmethod
    def websocket(cls, url: str, text_input=False, first_text: str | None = None) -> Conn:
        c = cls("ws", text_input)
        parts = urlsplit(url)
        c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock.setblocking(False)
        try:
            c.sock.connect((parts.hostname, parts.port))
        except BlockingIOError:
            pass
        c.fd = c.sock.fileno()
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + ("?" + parts.query if parts.query else "")
        c.outbuf += (
            f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        c.state = "handshake"
        c.first_text = first_text
        return c

    @classmethod
    def ssh_pty(cls, argv: list[str], cols=120, rows=40) -> Conn:
        import fcntl
        import struct

        c = cls("pty")
        master, slave = pty.openpty()
        # cooked, like a real terminal: ssh sends these modes to the remote PTY, then goes raw itself
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        c.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, close_fds=True
        )
        os.close(slave)
        os.set_blocking(master, False)
        c.fd = master
        c.state = "open"
        return c

    def write_raw(self) -> None:
        if not self.outbuf:
            return
        try:
            n = self.sock.send(self.outbuf) if self.kind == "ws" else os.write(self.fd, self.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(f"write: {exc}")
            return
        del self.outbuf[:n]

    def read_raw(self) -> bytes | None:
        try:
            data = self.sock.recv(65536) if self.kind == "ws" else os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            self.fail(f"read: {exc}")
            return None
        if not data:
            self.fail("closed")
            return None
        return data

    def fail(self, why: str) -> None:
        if self.failed is None and not (self.keys_left == 0 and self.ready and not self.pending):
            self.failed = why
        self.state = "closed"

    # ------------------------------------------------------------------ protocol

    def on_readable(self) -> None:
        data = self.read_raw()
        if not data:
            return
        if self.kind == "pty":
            self.on_output(data)
            return
        self.inbuf += data
        if self.state == "handshake":
            end = self.inbuf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.inbuf[:end]).split(b"\r\n", 1)[0]
            del self.inbuf[: end + 4]
            if b" 101 " not in status:
                self.fail(status.decode(errors="replace"))
                return
            self.state = "open"
            if self.first_text:
                self.outbuf += _frame(1, self.first_text.encode())
        while self.state == "open" and len(self.inbuf) >= 2:
            b0, b1 = self.inbuf[0], self.inbuf[1]
            opcode, n, pos = b0 & 0x0F, b1 & 0x7F, 2
            if n == 126:
                if len(self.inbuf) < 4:
                    return
                n, pos = int.from_bytes(self.inbuf[2:4], "big"), 4
            elif n == 127:
                if len(self.inbuf) < 10:
                    return
                n, pos = int.from_bytes(self.inbuf[2:10], "big"), 10
            if len(self.inbuf) < pos + n:
                return
            payload = bytes(self.inbuf[pos : pos + n])
            del self.inbuf[: pos + n]
            if opcode == 2 or (opcode in (0, 1) and self.text_input):
                self.on_output(payload)
            elif opcode == 1:
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                if msg.get("type") in ("error", "exit"):
                    self.fail(f"{msg.get('type')}: {msg.get('message') or msg.get('reason')}")
            elif opcode == 8:
                self.fail("close frame")
            elif opcode == 9:
                self.outbuf += _frame(10, payload)

    def on_output(self, data: bytes) -> None:
        self.tail = (self.tail + data)[-256:]
        if not self.ready and self.tail.rstrip(b" ").endswith(b"$") and PROMPT in self.tail:
            self.ready = True
            self.opened_at = time.perf_counter() - self.opened_at
        if self.pending is not None:
            now = time.perf_counter()
            self.rtts.append(now - self.pending)
            self.pending = None

    def send_key(self) -> None:
        key = b"a" if self.seq % 2 == 0 else b"\x7f"
        self.seq += 1
        if self.kind == "pty":
            self.outbuf += key
        elif self.text_input:
            self.outbuf += _frame(1, json.dumps({"data": key.decode()}).encode())
        else:
            self.outbuf += _frame(2, key)
        self.pending = time.perf_counter()
        self.keys_left -= 1
        self.write_raw()

    def close(self) -> None:
        if self.kind == "ws":
            try:
                self.sock.close()
            except OSError:
                pass
        else:
            try:
                self.proc.terminate()
            except Exception:
                pass
            try:
                os.close(self.fd)
            except OSError:
                pass


def run_loop(conns: list[Conn], until, timeout: float) -> None:
    """Pump I/O for every connection until `until()` is true or `timeout` passes."""
    sel = selectors.DefaultSelector()
    for c in conns:
        if c.state != "closed":
            sel.register(c.fd, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    deadline = time.perf_counter() + timeout
    try:
        while time.perf_counter() < deadline and not until():
            for key, mask in sel.select(0.02):
                c = key.data
                if mask & selectors.EVENT_WRITE:
                    c.write_raw()
                if mask & selectors.EVENT_READ:
                    c.on_readable()
                if c.state == "closed":
                    sel.unregister(c.fd)
                else:
                    want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf else 0)
                    if want != key.events:
                        sel.modify(c.fd, want, c)
            now = time.perf_counter()
            for c in conns:
                if c.state == "closed" or not c.ready:
                    continue
                if c.pending is not None and now - c.pending > 10:
                    c.failed = "no echo within 10 s"
                    c.state = "closed"
                    try:
                        sel.unregister(c.fd)
                    except (KeyError, ValueError):
                        pass
                    continue
                if c.pending is None and c.keys_left > 0 and now >= c.next_key:
                    c.send_key()
                    if c.outbuf and c.state != "closed":
                        sel.modify(c.fd, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    finally:
        sel.close()


def echo_phase(conns: list[Conn], keys: int, gap: tuple[float, float]) -> None:
    now = time.perf_counter()
    ready = [c for c in conns if c.ready and c.state != "closed"]
    for c in ready:
        c.keys_left = keys
        c.next_key = now + random.uniform(0, gap[1])

    orig_on_output = Conn.on_output

    def done():
        return all(c.keys_left == 0 and c.pending is None or c.state == "closed" for c in ready)

    # schedule the next key a random gap after each echo
    def on_output(self, data, _orig=orig_on_output):
        had = self.pending is not None
        _orig(self, data)
        if had and self.pending is None:
            self.next_key = time.perf_counter() + random.uniform(*gap)

    Conn.on_output = on_output
    try:
        run_loop(ready, done, timeout=keys * gap[1] * 3 + 60)
    finally:
        Conn.on_output = orig_on_output
    for c in ready:
        if c.state != "closed" and (c.keys_left or c.pending is not None):
            c.failed = c.failed or "echo phase timed out"
