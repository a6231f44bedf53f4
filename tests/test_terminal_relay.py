"""Re-attach across workers over the terminal bus (portal/terminal/relay.py), under real
gunicorn with two workers and Redis: the shell is reached from the worker that does not hold
it, forged or replayed bus messages do nothing, a revoked account is refused, and no Unix
socket listens any more."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import redis
import requests
import websocket

from tests import test_terminal_gunicorn as _gunicorn
from tests.fixtures import terminal as _helpers
from tests.fixtures.gunicorn import workers_of
from tests.fixtures.terminal import Term, wait_for

start_gunicorn = _gunicorn.start_gunicorn  # the same fixture: gunicorn on the test database

pytestmark = pytest.mark.timeout(150)

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def app_config(app_config):
    return _helpers.redis_config(app_config)  # the test's app shares the workers' bus


class Tap:
    """Everything published under the bus's prefix, as Redis delivers it."""

    def __init__(self, prefix: str, secret: str):
        from portal.terminal import signing

        self.prefix = prefix
        self.ctl = signing.ControlSigner(signing.derive(secret, signing.BUS_LABEL))
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.msgs: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.ps = self.redis.pubsub()
        self.ps.psubscribe(f"{prefix}:*")
        confirmed = self.ps.get_message(timeout=5)  # from here on, nothing is missed
        assert confirmed and confirmed["type"] == "psubscribe", confirmed
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            try:
                msg = self.ps.get_message(timeout=0.2)
            except Exception:
                return
            if msg and msg["type"] == "pmessage":
                with self.lock:
                    self.msgs.append((msg["channel"].decode(), msg["data"]))

    def on(self, channel: str) -> list[bytes]:
        with self.lock:
            return [data for ch, data in self.msgs if ch == f"{self.prefix}:{channel}"]

    def requests(self, op: str, sid: str) -> list[dict]:
        out = []
        for data in self.on("ctl"):
            msg = json.loads(data).get("m") or {}  # the request inside its signed envelope
            if msg.get("op") == op and msg.get("sid") == sid:
                out.append(msg)
        return out

    def frames(self, channel: str) -> list[tuple[int, bytes, bytes]]:
        """(sequence number, kind, payload) of the relay frames seen on `channel`."""
        return [
            (int.from_bytes(d[32:40], "big"), d[40:41], d[41:]) for d in self.on(f"relay:{channel}")
        ]

    def publish(self, channel: str, data) -> None:
        self.redis.publish(f"{self.prefix}:{channel}", data)

    def signed(self, msg: dict) -> None:
        """Publish a control request in an envelope signed with the bus key, as workers do."""
        self.publish("ctl", self.ctl.wrap(msg))

    def close(self) -> None:
        self.stopped = True
        self.thread.join(2)
        self.ps.close()
        keys = list(self.redis.scan_iter(f"{self.prefix}:*"))
        if keys:
            self.redis.delete(*keys)
        self.redis.close()


@pytest.fixture
def tap(app):
    t = Tap(app.config["PORTAL_TERMINAL_BUS_PREFIX"], app.config["SECRET_KEY"])
    yield t
    t.close()


def _stopped(pid: int):
    """A context: `pid` is stopped (SIGSTOP) inside it, so connections land elsewhere."""

    class _Ctx:
        def __enter__(self):
            os.kill(pid, signal.SIGSTOP)

        def __exit__(self, *exc):
            os.kill(pid, signal.SIGCONT)

    return _Ctx()


def _server_id(app, sid: str) -> str:
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    with app.app_context():
        server_id = db.session.get(TerminalSession, sid).server_id
        db.session.remove()
    return server_id


@pytest.fixture
def relayed(app, start_gunicorn, make_user, sshd_machine, token_for, tap):
    """A terminal held by one of two gunicorn workers, dropped and re-attached through the
    other (the holder is stopped while the browser reconnects, so the other accepts it)."""
    base, proc, logfile = start_gunicorn(workers=2, redis=True)
    owner = make_user("relayowner")
    machine = sshd_machine(owner)
    token = token_for(owner)
    url = f"{base.replace('http://', 'ws://')}/api/terminal/{machine.agent_id}/ws?token={token}"
    t = Term(url)
    sid = t.wait_control("ready")["session_id"]
    t.run("RELAYED=kept$((1+1)); echo set$((2+2))", r"set4")
    holder = int(_server_id(app, sid).split(":")[1])
    (other,) = [p for p in workers_of(proc.pid) if p != holder]
    t.drop()

    opened: dict = {}

    def reattach():
        try:
            opened["term"] = Term(f"{url}&session={sid}", timeout=30)
        except Exception as exc:  # reported below
            opened["error"] = exc

    th = threading.Thread(target=reattach)
    with _stopped(holder):
        th.start()
        # The other worker took the socket and asked the (stopped) holder over the bus.
        assert wait_for(lambda: tap.requests("relay", sid), timeout=20), "no relay request"
    th.join(30)
    assert "term" in opened, opened.get("error")
    t2 = opened["term"]
    assert t2.wait_control("ready") == {"type": "ready", "session_id": sid, "resumed": True}
    (request,) = tap.requests("relay", sid)
    yield SimpleNamespace(
        base=base,
        url=url,
        sid=sid,
        owner=owner,
        token=token,
        holder=holder,
        other=other,
        term=t2,
        request=request,
        logfile=logfile,
    )
    t2.close()


def _row_status(app, sid: str) -> str:
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    with app.app_context():
        status = db.session.get(TerminalSession, sid).status
        db.session.remove()
    return status


def test_a_reattach_on_the_other_worker_reaches_the_same_shell(app, relayed):
    t = relayed.term
    t.read_until(r"set4")  # the screen, replayed by the holder
    t.run("echo V=$RELAYED", r"V=kept2")  # the same shell: its variable is there
    t.control({"type": "input", "data": "echo J$((3*3))\r"})
    t.read_until(r"J9")
    t.control({"type": "resize", "cols": 101, "rows": 33})
    t.run("stty size; echo sized$((1+2))", r"33 101\r\nsized3")
    t.control({"type": "ping"})
    t.wait_control("pong")
    t.control({"type": "ack", "bytes": 100})  # taken (to the owner), changes nothing visible
    t.run("echo after$((2*4))", r"after8")
    assert wait_for(lambda: _row_status(app, relayed.sid) == "active")
    assert f"re-attach to {relayed.sid} relayed" in relayed.logfile.read_text(errors="replace")


def test_a_relayed_socket_that_drops_detaches_the_session(app, relayed):
    relayed.term.drop()
    assert wait_for(lambda: _row_status(app, relayed.sid) == "detached", timeout=15)


def test_output_floods_through_the_relay_with_and_without_acks(relayed):
    t = relayed.term
    t.run("seq 1 150000; echo flood$((1+1))", r"150000\r\nflood2", timeout=60)
    # Now as the browser does: ack what was rendered (the relay credits acks from then on).
    t.send("seq 1 150000; echo again$((2+2))\r")
    deadline = time.monotonic() + 60
    while b"again4" not in t.out[-4000:]:
        assert time.monotonic() < deadline, bytes(t.out[-300:])
        what, data = t.recv_one(10)
        if what == "data":
            t.control({"type": "ack", "bytes": len(data)})


@pytest.mark.parametrize("via", ["holder", "other"])
def test_delete_from_either_worker_ends_the_relayed_terminal(app, relayed, tap, auth, via):
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    t = relayed.term
    t.read_until(r"set4")
    result: dict = {}

    def delete():
        result["r"] = requests.delete(
            f"{relayed.base}/api/terminal/sessions/{relayed.sid}",
            headers=auth(relayed.owner),
            timeout=30,
        )

    th = threading.Thread(target=delete)
    if via == "other":  # the holder is stopped: the other worker takes the DELETE
        with _stopped(relayed.holder):
            th.start()
            assert wait_for(lambda: tap.requests("close", relayed.sid), timeout=20)
        th.join(30)
    else:  # the relaying worker is stopped: the holder takes the DELETE
        with _stopped(relayed.other):
            th.start()
            th.join(30)
    assert result["r"].status_code == 204, result["r"].text
    assert t.wait_control("error", timeout=20)["message"] == "closed by its user"
    t.drain_close()
    assert t.closed
    with app.app_context():
        row = db.session.get(TerminalSession, relayed.sid)
        assert row.status == "closed" and row.close_reason == "closed by its user"
        db.session.remove()


def _signed_attach(app, relayed, **changes) -> dict:
    from portal.terminal import signing

    msg = {**relayed.request, "aid": uuid.uuid4().hex, "ts": int(time.time()), **changes}
    msg.pop("sig", None)
    msg["sig"] = signing.attach_mac(signing.relay_key(app), msg)
    return msg


def test_forged_and_replayed_bus_messages_are_ignored(app, relayed, tap):
    """Whoever can publish on Redis (a sidecar, a neighbour on the host network) gets no
    shell: attach requests and input frames that are not signed with the key derived from
    SECRET_KEY, or that replay genuine ones, are dropped by the holder."""
    from portal.terminal import signing

    t = relayed.term
    aid = relayed.request["aid"]
    t.run("echo R$((40+2))", r"R42")
    typed = [f for f in tap.frames(f"{aid}:i") if f[1] == b"d" and b"R$((40+2))" in f[2]]
    assert len(typed) == 1  # the genuine input frame, as it went over Redis

    # Attach requests: unsigned (the old handoff's {user_id, tv: null}), a bad signature,
    # and the genuine request replayed. None gets an answer, whether it comes bare (no
    # control envelope) or inside a validly signed envelope (the attach's own check).
    unsigned = {**relayed.request, "aid": uuid.uuid4().hex, "tv": None, "ts": int(time.time())}
    unsigned.pop("sig")
    forged = {**unsigned, "aid": uuid.uuid4().hex, "sig": "0" * 64}
    for msg in (unsigned, forged, relayed.request):
        tap.publish("ctl", json.dumps(msg))
        tap.signed(msg)
    envelope = next(d for d in tap.on("ctl") if json.loads(d).get("m") == relayed.request)
    tap.publish("ctl", envelope)  # the genuine envelope replayed as it was
    # Input frames: no valid MAC, signed with another key, and the genuine frame replayed.
    evil = b"echo F$((6*7))\r"
    head = (10**6).to_bytes(8, "big") + b"d"
    bad_mac = b"\0" * 32 + head + evil
    other_key = signing.frame_mac(b"k" * 32, f"{aid}:i", head, evil) + head + evil
    for frame in (bad_mac, other_key):
        tap.publish(f"relay:{aid}:i", frame)
    (genuine,) = [d for d in tap.on(f"relay:{aid}:i") if b"R$((40+2))" in d]
    tap.publish(f"relay:{aid}:i", genuine)

    # A signed request after them is answered: the holder has read what came before.
    barrier = _signed_attach(app, relayed, tv=relayed.request["tv"] + 1)
    tap.signed(barrier)
    assert wait_for(lambda: tap.frames(f"{barrier['aid']}:o"), timeout=15)
    for msg in (unsigned, forged):
        assert tap.frames(f"{msg['aid']}:o") == []
    # The replayed request attached nothing: this socket was not replaced.
    t.run("echo done$((5+5))", r"done10")
    out = bytes(t.out)
    assert b"F42" not in out
    assert out.count(b"R42") == 1  # the replayed keystrokes did not run again
    assert not [c for c in t.controls if c.get("type") == "error"]
    assert [f[1] for f in tap.frames(f"{aid}:o") if b'"ready"' in f[2]] == [b"t"]


def test_a_revoked_users_reattach_is_refused(
    app, start_gunicorn, make_user, sshd_machine, token_for, tap
):
    """The account's token version moved on (a sign-out everywhere whose close request did
    not reach the holder): an attach request signed with the old version is refused by the
    holder, the old credential opens no socket, and one with the current version works."""
    from portal.extensions import db
    from portal.terminal import signing

    base, _proc, _log = start_gunicorn(workers=1, redis=True)
    owner = make_user("relayrevoked")
    machine = sshd_machine(owner)
    url = f"{base.replace('http://', 'ws://')}/api/terminal/{machine.agent_id}/ws"
    t = Term(f"{url}?token={token_for(owner)}")
    sid = t.wait_control("ready")["session_id"]
    old_token = token_for(owner)
    t.drop()
    with app.app_context():
        from portal.accounts.models import User

        user = db.session.get(User, owner.id)
        old_tv = user.token_version
        user.token_version = old_tv + 1  # no hooks run: the session lives on
        db.session.commit()
        db.session.remove()

    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        Term(f"{url}?token={old_token}&session={sid}")
    assert exc.value.status_code == 401

    key = signing.relay_key(app)

    def attach(**fields) -> str:
        msg = {
            "op": "relay",
            "sid": sid,
            "aid": uuid.uuid4().hex,
            "user_id": owner.id,
            "tv": old_tv,
            "server": _server_id(app, sid),
            "cols": 80,
            "rows": 24,
            "peer": "",
            "ts": int(time.time()),
            **fields,
        }
        msg["sig"] = signing.attach_mac(key, msg)
        tap.signed(msg)
        return msg["aid"]

    def answer(aid: str) -> tuple[bytes, bytes]:
        assert wait_for(lambda: tap.frames(f"{aid}:o"), timeout=15), "no answer"
        return tap.frames(f"{aid}:o")[0][1:]

    kind, payload = answer(attach())
    assert (kind, json.loads(payload)) == (
        b"e",
        {"type": "error", "message": "you were signed out everywhere"},
    )
    kind, payload = answer(attach(tv=None))  # the old handoff message's shape
    assert (kind, json.loads(payload)["type"]) == (b"e", "error")
    kind, payload = answer(attach(user_id=owner.id + 1000, tv=old_tv + 1))
    assert (kind, json.loads(payload)) == (b"e", {"type": "error", "message": "no such session"})
    current = attach(tv=old_tv + 1)
    kind, payload = answer(current)
    assert (kind, json.loads(payload)) == (
        b"t",
        {"type": "ready", "session_id": sid, "resumed": True},
    )
    assert wait_for(lambda: _row_status(app, sid) == "active", timeout=15)
    # Detach that attachment (signed, first frame of its channel).
    head = (1).to_bytes(8, "big") + b"x"
    tap.publish(f"relay:{current}:i", signing.frame_mac(key, f"{current}:i", head, b"") + head)
    assert wait_for(lambda: _row_status(app, sid) == "detached", timeout=15)


def _listening_unix_inodes() -> dict[str, str]:
    """inode -> path of the Unix sockets listening on this host (/proc/net/unix)."""
    out = {}
    with open("/proc/net/unix") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            flags, state, inode = int(parts[3], 16), parts[5], parts[6]
            if flags & 0x10000 and state == "01":  # __SO_ACCEPTCON: listening
                out[inode] = parts[7] if len(parts) > 7 else ""
    return out


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def test_no_unix_socket_listens_in_the_workers(
    app, start_gunicorn, make_user, sshd_machine, token_for
):
    """The old handoff listened on an abstract Unix socket in every worker, and any process
    of the same user could hand it a connection with an unsigned message naming a user id:
    nothing listens there any more (nor on gunicorn's control socket, which is off)."""
    base, proc, _log = start_gunicorn(workers=2, redis=True)
    owner = make_user("nolistener")
    machine = sshd_machine(owner)
    ws = base.replace("http://", "ws://")
    t = Term(f"{ws}/api/terminal/{machine.agent_id}/ws?token={token_for(owner)}")
    try:
        t.wait_control("ready")
        t.run("echo up$((2+3))", r"up5")
        listening = _listening_unix_inodes()
        for pid in [proc.pid, *workers_of(proc.pid)]:
            names = {listening[i] for i in _socket_inodes(pid) if i in listening}
            assert not names, f"process {pid} listens on Unix sockets {names}"
    finally:
        t.close()
