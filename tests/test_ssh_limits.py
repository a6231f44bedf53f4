"""What a machine's sshd may send the portal (issue 16): a server that ignores the SSH window
or announces a huge packet is cut off before the worker's memory grows with it; the paramiko
internals chansend relies on are pinned to one paramiko release.

The misbehaving servers are written here: a paramiko SSH server on a loopback port (host
key pinned by the portal like any machine's) whose shell floods the channel without waiting
for window credit, and a raw TCP server that announces a 2 GiB packet.
"""

from __future__ import annotations

import resource
import socket
import threading

import paramiko
import pytest
from paramiko.common import cMSG_CHANNEL_DATA

from portal.ssh import chansend
from tests.fixtures import terminal as _helpers

wait_for = _helpers.wait_for

pytestmark = pytest.mark.timeout(120)

FLOOD_MAX = 96 * 1024 * 1024  # what the flooding server sends at most (unless cut off)
FLOOD_USER, FLOOD_PASSWORD = "flood", "flood-password-1"


def test_paramiko_is_the_pinned_version():
    """portal/ssh/chansend.py uses paramiko internals checked against one release only."""
    assert paramiko.__version__ == chansend.PINNED, (
        f"paramiko is {paramiko.__version__}, but portal/ssh/chansend.py's internals were "
        f"verified against {chansend.PINNED}: re-verify chansend's internals (Transport's "
        "clear_to_send lock and _send_message, Channel._send_eof/_wait_for_send_window, "
        "Packetizer.read_all, the channel's in_buffer pipes and window fields) against the "
        "new paramiko, then update chansend.PINNED (until then the public fallbacks run)"
    )
    assert chansend.INTERNALS


# --------------------------------------------------------------------------- servers


class _Shell(paramiko.ServerInterface):
    def __init__(self):
        self.shell = threading.Event()

    def get_allowed_auths(self, username):
        return "password"

    def check_auth_password(self, username, password):
        if (username, password) == (FLOOD_USER, FLOOD_PASSWORD):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, *args):
        return True

    def check_channel_window_change_request(self, *args):
        return True

    def check_channel_shell_request(self, channel):
        self.shell.set()
        return True


class FloodServer:
    """An SSH server whose shell sends FLOOD_MAX bytes as fast as it can, never waiting for
    the client's window: SSH_MSG_CHANNEL_DATA packets written straight to the transport (what
    a hostile sshd does; paramiko's own Channel.send would respect the window)."""

    CHUNK = b"A" * 32767 + b"\n"  # within the client's maximum packet size

    def __init__(self):
        from portal.ssh import generate_ed25519, parse_private_key

        self.key = parse_private_key(generate_ed25519()[0])
        self.host_key_line = f"{self.key.get_name()} {self.key.get_base64()}"
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.host, self.port = self.sock.getsockname()
        self.sent = 0
        self.go = threading.Event()  # the flood starts once set (set from the start)
        self.go.set()
        self.done = threading.Event()
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        t = paramiko.Transport(conn)
        self.transports.append(t)
        t.add_server_key(self.key)
        iface = _Shell()
        try:
            t.start_server(server=iface)
            chan = t.accept(30)
            if chan is None or not iface.shell.wait(30) or not self.go.wait(60):
                return
            while self.sent < FLOOD_MAX and t.is_active():
                m = paramiko.Message()
                m.add_byte(cMSG_CHANNEL_DATA)
                m.add_int(chan.remote_chanid)
                m.add_string(self.CHUNK)
                t._send_user_message(m)  # the attacker's side: no window check
                self.sent += len(self.CHUNK)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            self.done.set()
            t.close()

    def target(self):
        from portal.ssh import Target

        return Target(
            host=self.host,
            port=self.port,
            username=FLOOD_USER,
            password=FLOOD_PASSWORD,
            host_keys=(self.host_key_line,),
        )

    def close(self) -> None:
        self.sock.close()
        for t in self.transports:
            t.close()


@pytest.fixture
def flood_server():
    server = FloodServer()
    yield server
    server.close()


def _flood_machine(app, owner, server: FloodServer):
    from portal.accounts.models import User
    from portal.extensions import db
    from portal.machines import inventory

    with app.test_request_context():
        user = db.session.get(User, owner.id)
        machine, _ = inventory.create_machine(
            user,
            {
                "name": "flooder",
                "host": server.host,
                "port": server.port,
                "username": FLOOD_USER,
                "auth_method": "password",
                "password": FLOOD_PASSWORD,
                "host_key": server.host_key_line,
                "verify": False,
            },
        )
        db.session.commit()
        db.session.refresh(machine)
        db.session.expunge(machine)
        return machine


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


# --------------------------------------------------------------------------- window


def test_a_machine_that_ignores_the_ssh_window_ends_only_its_own_session(
    app, term_env, flood_server
):
    """The browser never reads nor acks while the machine floods its shell channel past the
    window the portal granted: the portal holds at most the window (plus its grace) of it,
    ends that session with an error and drops the connection; a terminal on another machine
    (the real sshd) keeps working throughout."""
    from portal.extensions import db
    from portal.terminal.live import WINDOW_IGNORED
    from portal.terminal.models import TerminalSession

    owner, _machine, open_term = term_env
    other = open_term()
    other.wait_control("ready")
    registry = app.extensions["portal_terminal"]
    flooder = _flood_machine(app, owner, flood_server)
    flood_server.go.clear()  # the shell floods once the test holds its session
    rss_before = _max_rss()

    t = open_term(agent_id=flooder.agent_id)  # and then reads nothing
    sess = wait_for(lambda: next((s for s in registry.live() if s.machine_id == flooder.id), None))
    assert sess is not None
    flood_server.go.set()
    assert flood_server.done.wait(90)

    # Cut off by the portal long before the flood's end, holding at most the window
    assert flood_server.sent < FLOOD_MAX // 3, flood_server.sent
    limit = chansend.window_limit(sess.channel)
    assert len(sess.channel.in_buffer) + len(sess.channel.in_stderr_buffer) <= limit
    assert _max_rss() - rss_before < FLOOD_MAX // 3
    assert wait_for(lambda: sess.closed)
    assert sess.close_reason == WINDOW_IGNORED
    assert wait_for(lambda: not sess.channel.get_transport().is_active())

    # The browser, once it reads, gets the session's output so far, then the error
    assert t.wait_control("error", timeout=60)["message"] == WINDOW_IGNORED
    t.drain_close()
    assert t.closed

    def row():
        with app.app_context():
            r = db.session.get(TerminalSession, sess.sid)
            status, reason = r.status, r.close_reason
            db.session.remove()
            return (status, reason) if status == "closed" else None

    assert wait_for(row) == ("closed", WINDOW_IGNORED)

    # Only that session: the other terminal answers as before
    other.run("echo still$((6*7))", "still42")
    assert [s.machine_id for s in registry.live()] == [_machine.id]


@pytest.mark.parametrize("internals", [True, False], ids=["pinned", "public-fallback"])
def test_window_guard_caps_what_a_channel_holds(ssh_pool, flood_server, monkeypatch, internals):
    """chansend.guard_window on a channel nobody reads: the pinned path refuses every packet
    past the limit (the buffer never exceeds it); another paramiko's public fallback polls
    the buffer's length and cuts the connection too, only later."""
    monkeypatch.setattr(chansend, "INTERNALS", internals)
    channel = ssh_pool.open_session(flood_server.target())
    exceeded = threading.Event()
    chansend.guard_window(channel, exceeded.set)
    channel.get_pty()
    channel.invoke_shell()
    assert exceeded.wait(60)
    assert flood_server.done.wait(60)
    # polling lets more through than the per-packet check, but the flood is cut off too
    assert flood_server.sent < (FLOOD_MAX // 3 if internals else FLOOD_MAX), flood_server.sent
    assert wait_for(lambda: not channel.get_transport().is_active())
    if internals:
        held = len(channel.in_buffer) + len(channel.in_stderr_buffer)
        assert held <= chansend.window_limit(channel)


# --------------------------------------------------------------------------- packets


def test_a_huge_packet_is_refused_before_it_is_read(monkeypatch):
    """A server announces a 2 GiB packet and streams it: paramiko alone reads it all into
    memory; the portal ends the handshake at the length field."""
    from portal.errors import MachineUnreachable
    from portal.ssh.connect import handshake

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    result: dict = {"sent": 0}

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"SSH-2.0-Hostile_1.0\r\n")
            length = 0x7FFFFFFC  # (length - 4) is a multiple of the 8-byte block
            conn.sendall(length.to_bytes(4, "big") + bytes([4]))
            chunk = bytes(64 * 1024)
            try:
                while result["sent"] < FLOOD_MAX:
                    conn.sendall(chunk)
                    result["sent"] += len(chunk)
            except OSError:
                result["cut"] = True

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        with pytest.raises(MachineUnreachable):
            handshake(sock, "127.0.0.1", port, timeout=60)
    finally:
        sock.close()
        server.join(60)
        listener.close()
    assert result.get("cut") and result["sent"] < FLOOD_MAX // 3, result


# --------------------------------------------------------------------------- fallbacks


def test_public_fallbacks_on_another_paramiko(sshd, ssh_pool, monkeypatch):
    """With the version guard off, chansend's sends take paramiko's public calls: resize,
    input and EOF still work (a signal request has no public call: not sent)."""
    from portal.ssh import open_shell

    monkeypatch.setattr(chansend, "INTERNALS", False)
    target = sshd.target()
    assert not chansend.limit_packets(ssh_pool.connection(target).transport)

    channel = open_shell(target, pool=ssh_pool)
    assert chansend.send_request(channel, "window-change", 111, 33, 0, 0)
    assert not chansend.send_request(channel, "signal", "INT")
    chansend.sendall(channel, b"stty size; exit\n")
    out = b""
    channel.settimeout(20)
    while chunk := channel.recv(65536):
        out += chunk
    assert b"33 111" in out
    assert not chansend.send_request(channel, "window-change", 80, 24, 0, 0)  # closed
    channel.close()

    channel = ssh_pool.open_session(target)
    channel.exec_command("cat")
    chansend.sendall(channel, b"through cat\n")
    assert chansend.send_eof(channel)
    assert channel.recv_exit_status() == 0
    assert channel.recv(100) == b"through cat\n"
    channel.close()
    with pytest.raises(NotImplementedError):
        chansend.send_if_open(channel, lambda ch: None)

    # exec requests take exec_command; channel counting falls back to the pool's own
    from portal.ssh import run

    assert chansend.open_channels(ssh_pool.connection(target).transport) == 0
    result = run(target, "echo fallback-$((6*7))", timeout=20, pool=ssh_pool)
    assert result.exit_code == 0 and result.stdout == "fallback-42\n"
