"""Re-attach across gunicorn workers on one host.

With several workers (PORTAL_WORKERS > 1), a `?session=<id>` re-attach may be accepted by a
worker that does not hold that terminal. That worker authenticates the request as usual,
then passes the client's TCP socket (SCM_RIGHTS over a Unix socket) to the worker that
does, before any WebSocket byte is exchanged; the owner answers the upgrade and serves the
session as if it had accepted the connection itself. The accepting worker swaps a dummy
socket in under its own file descriptor, so the WSGI server's clean-up cannot touch the
connection it gave away.

Each registry listens on an abstract Unix socket named after its server id (no file to
clean up). Only processes of the same user may hand over (SO_PEERCRED): such a process can
read the database and the secrets anyway, so nothing is trusted that it could not take.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time

log = logging.getLogger(__name__)

ACK_WAIT = 3.0  # seconds the accepting worker waits for the owner to take the socket
INFO_MAX = 64 * 1024


def address(server_id: str) -> str:
    return "\0portal-terminal-" + hashlib.sha256(server_id.encode()).hexdigest()[:40]


def hand_over(server_id: str, fd: int, info: dict) -> str:
    """Give the connection on `fd` to the worker `server_id`.

    "taken": it has the socket. "sent": it was sent but not acknowledged in time (the owner
    will still get it from the Unix socket's buffer, or the kernel closes it if the owner
    dies), so the caller must give the connection up all the same. "unreachable": nothing
    was sent (no listener, or the listener is not that worker: a name squatted by another
    process is never sent a connection)."""
    payload = json.dumps(info, separators=(",", ":")).encode()
    try:
        pid = int(server_id.rsplit(":", 2)[1])
    except (ValueError, IndexError):
        return "unreachable"
    if len(payload) > INFO_MAX:
        return "unreachable"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as us:
            us.settimeout(ACK_WAIT)
            us.connect(address(server_id))
            peer_pid, peer_uid = _peer(us)
            if peer_uid != os.getuid() or peer_pid != pid:
                log.error(
                    "terminal: the handoff socket of %s is held by pid %d uid %d, not that"
                    " worker: nothing sent",
                    server_id,
                    peer_pid,
                    peer_uid,
                )
                return "unreachable"
            socket.send_fds(us, [struct.pack("!I", len(payload)) + payload], [fd])
            try:
                return "taken" if us.recv(1) == b"1" else "sent"
            except OSError:
                return "sent"
    except OSError as exc:
        log.warning("terminal: handing a re-attach to %s failed: %s", server_id, exc)
        return "unreachable"


def give_up_fd(sock, dummy) -> None:
    """Put `dummy` (a fresh, unconnected socket made before the handoff) under `sock`'s
    descriptor: whatever the WSGI server does to it now (shutdown, close) no longer reaches
    the handed-over connection."""
    try:
        os.dup2(dummy.fileno(), sock.fileno(), inheritable=False)
    finally:
        dummy.close()


def _peer(sock) -> tuple[int, int]:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


_listener = None
_listener_lock = threading.Lock()


def listen(server_id: str, serve) -> None:
    """This process's listener (one, whatever the number of apps in it): idempotent."""
    global _listener
    with _listener_lock:
        if _listener is not None and not _listener.closed:
            return
        try:
            _listener = Listener(server_id, serve)
        except OSError as exc:
            log.error(
                "terminal: cannot take re-attaches from other workers (%s): another process"
                " holds this worker's handoff name",
                exc,
            )


def stop_listening() -> None:
    global _listener
    with _listener_lock:
        if _listener is not None:
            _listener.close()
            _listener = None


class Listener:
    """Takes handed-over connections for one registry and serves each in its own thread."""

    def __init__(self, server_id: str, serve):
        self.serve = serve  # serve(sock, info) - runs in a new thread
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(address(server_id))  # OSError if the name is taken
            self.sock.listen(64)
        except OSError:
            self.sock.close()
            raise
        self.closed = False
        threading.Thread(target=self._accept_loop, name="terminal-handoff", daemon=True).start()

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self.closed:
                    return
                time.sleep(0.1)  # e.g. out of file descriptors: do not spin
                continue
            threading.Thread(
                target=self._take, args=(conn,), name="terminal-handoff-take", daemon=True
            ).start()

    def _take(self, conn) -> None:
        fds: list[int] = []
        try:
            with conn:
                conn.settimeout(ACK_WAIT)
                _pid, uid = _peer(conn)
                if uid != os.getuid():
                    log.warning("terminal: a handoff from uid %d refused", uid)
                    return
                data, fds = _recv_with_fds(conn)
                for fd in fds:
                    os.set_inheritable(fd, False)
                if len(fds) != 1 or len(data) < 4:
                    return
                size = struct.unpack("!I", data[:4])[0]
                while len(data) < 4 + size <= 4 + INFO_MAX:
                    more = conn.recv(4 + size - len(data))
                    if not more:
                        return
                    data += more
                info = json.loads(data[4 : 4 + size])
                if not isinstance(info, dict):
                    return
                client = socket.socket(fileno=fds[0])  # raises for a non-socket: closed below
                fds.clear()
                client.settimeout(None)
                try:
                    conn.sendall(b"1")
                except OSError:  # the sender gave up waiting: it gives the connection up anyway
                    pass
        except (OSError, ValueError) as exc:
            log.warning("terminal: a handoff could not be taken: %s", exc)
            return
        finally:
            for fd in fds:
                os.close(fd)
        try:
            self.serve(client, info)
        except Exception:
            log.exception("terminal: serving a handed-over connection failed")
            client.close()


def _recv_with_fds(conn) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    msg, ancdata, _flags, _addr = conn.recvmsg(INFO_MAX + 4, socket.CMSG_SPACE(fds.itemsize * 4))
    out: list[int] = []
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(cdata[: len(cdata) - (len(cdata) % arr.itemsize)])
            out.extend(arr)
    return msg, out
