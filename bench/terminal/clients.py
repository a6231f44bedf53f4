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
            select.select([], [self.fd], [], 5)
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
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
    def __init__(self, url: str):
        self.ws = websocket.WebSocket(skip_utf8_validation=True)
        self.ws.connect(url, suppress_origin=True, timeout=30)
        self.ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = False

    def fileno(self):
        return self.ws.sock.fileno()

    def recv(self, timeout: float, max_bytes: int = 0) -> bytes:
        if self.closed:
            return b""
        self.ws.settimeout(max(timeout, 0.001))
        try:
            opcode, data = self.ws.recv_data(control_frame=False)
        except websocket.WebSocketTimeoutException:
            return b""
        except (websocket.WebSocketConnectionClosedException, OSError):
            self.closed = True
            return b""
        return self.on_frame(opcode, data)

    def on_frame(self, opcode, data) -> bytes:
        return data if opcode == websocket.ABNF.OPCODE_BINARY else data

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass
        try:
            self.ws.shutdown()
        except Exception:
            pass


class Portal(_WsClient):
    """The portal's socket: binary input, binary output, acks like the page does."""

    name = "portal"

    def __init__(self, base: str, agent_id: str, token: str, cols=120, rows=40, acks=True):
        super().__init__(f"{base}/api/terminal/{agent_id}/ws?token={token}&cols={cols}&rows={rows}")
        self.acks = acks
        self.controls: list[dict] = []

    def on_frame(self, opcode, data) -> bytes:
        if opcode == websocket.ABNF.OPCODE_TEXT:
            try:
                self.controls.append(json.loads(data))
            except ValueError:
                pass
            return b""
        return data

    def ack(self, n: int) -> None:
        if self.acks and n:
            self.ws.send(json.dumps({"type": "ack", "bytes": n}))

    def send(self, data: bytes) -> None:
        self.ws.send_binary(data)


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
        self.ws.send(json.dumps({"resize": [cols, rows]}))

    def ack(self, n: int) -> None:
        pass

    def send(self, data: bytes) -> None:
        self.ws.send(json.dumps({"data": data.decode("utf-8", "replace")}))


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
