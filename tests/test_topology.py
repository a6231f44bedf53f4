"""The deployment of docs/operations.md, for real: Debian's nginx running
deploy/nginx/portal-proxy.conf (and the map of deploy/nginx/portal.conf) in front of TWO
gunicorn portal instances on one PostgreSQL database and one Redis.

PostgreSQL always: two instances cannot share a SQLite file across hosts, so when the suite
runs on SQLite this module still makes its own PostgreSQL database (on DATABASE_URL when that
is PostgreSQL, else postgresql://postgres@127.0.0.1:5432/postgres, which this machine and CI
always have), migrates it and drops it at the end. Redis is a redis-server of its own on a
free port (no persistence; its keys go with it), nginx runs as the current user with its
prefix, pid and logs in a temp folder, on free ports.

nginx listens on three ports: the balanced one (round robin over both instances, as in
production) and one per instance (the same rules, one upstream), so a test can force a
request onto the instance that does not own a terminal.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from tests.conftest import PASSWORD
from tests.fixtures.gunicorn import Gunicorn, start_portal, stop_portal, workers_of
from tests.fixtures.nginx import free_port, nginx_conf, start_nginx
from tests.fixtures.terminal import Term, wait_for

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def migrated_db():
    """A PostgreSQL database of this module's own (see the module docstring)."""
    import psycopg

    from portal.cli import upgrade_database

    given = os.environ.get("DATABASE_URL", "")
    admin = re.sub(
        r"^postgresql(\+psycopg)?://",
        "postgresql://",
        given if given.startswith("postgresql") else PG_DEFAULT,
    )
    name = f"portal_topo_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin.rsplit('/', 1)[0]}/{name}"
    try:
        upgrade_database(url)
        yield url
    finally:
        from portal.extensions import db

        if db.engine is not None:
            db.engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


class RedisServer:
    """A redis-server of this module's own, on a free port, nothing written to disk; a test
    can stop and start it again on the same port (a Redis restart)."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for(self._up, timeout=10), "redis-server did not start"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


class TcpRelay:
    """A TCP relay in front of the shared PostgreSQL: cut() drops every connection and stops
    listening (the database as the portal sees it is gone), restore() listens again on the
    same port. The machine's PostgreSQL itself is never touched."""

    def __init__(self, target: tuple[str, int]):
        import threading

        self.target = target
        self.port = free_port()
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.listener = None
        self.open = False

    def restore(self) -> None:
        import threading

        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        with self.lock:
            self.open = True
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                if not self.open:  # cut() ran while this one was being connected
                    client.close()
                    upstream.close()
                    continue
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            self.open = False
            conns, self.conns = self.conns, []
        # close() alone does not wake a thread blocked in accept() on Linux (it would go on
        # accepting); shutdown() does, with an error
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _start_instance(n: int, app, tmp_path, redis_url: str, extra_env: dict) -> Gunicorn:
    env = {
        "REDIS_URL": redis_url,
        "PORTAL_TRUSTED_PROXIES": "1",
        **extra_env,
    }
    return start_portal(app, tmp_path, f"instance-{n}", workers=1, threads=32, env=env)


def _nginx_conf(tmp: Path, backends: list[int], ports: dict[str, int]) -> str:
    site = (ROOT / "deploy/nginx/portal.conf").read_text()
    (connection_map,) = re.findall(r"^map \$http_upgrade .*?^}", site, re.S | re.M)
    snippet = ROOT / "deploy/nginx/portal-proxy.conf"
    upstreams = "\n".join(
        [f"upstream portal {{ {' '.join(f'server 127.0.0.1:{p};' for p in backends)} }}"]
        + [f"upstream portal_{i} {{ server 127.0.0.1:{p}; }}" for i, p in enumerate(backends)]
    )
    servers = "\n".join(
        f"server {{ listen 127.0.0.1:{port}; set $portal_upstream {name}; include {snippet}; }}"
        for name, port in ports.items()
    )
    return nginx_conf(tmp, "\n".join([connection_map, upstreams, servers]), worker_connections=512)


@pytest.fixture
def topology(app, tmp_path, redis_server, request):
    """Two portal instances (gunicorn, one worker each) behind nginx. Yields a namespace:
    `url` (balanced), `via[0]`/`via[1]` (nginx, forced onto instance 0 / 1), `instances`."""
    import redis

    redis_url = redis_server.url
    if redis_server.proc.poll() is not None:  # an earlier test left it stopped
        redis_server.start()
    redis.Redis.from_url(redis_url).flushall()  # rate-limit counters of an earlier test
    extra = dict(getattr(request, "param", {}) or {})
    if extra.get("DATABASE_URL") == "relay":  # through the pg_relay fixture's TCP relay
        relay = request.getfixturevalue("pg_relay")
        extra["DATABASE_URL"] = re.sub(
            r"@[^/]+/", f"@127.0.0.1:{relay.port}/", app.config["DATABASE_URL"]
        )
    instances = [_start_instance(n, app, tmp_path, redis_url, extra) for n in range(2)]
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    ports = {"portal": free_port(), "portal_0": free_port(), "portal_1": free_port()}
    nginx = start_nginx(nginx_dir, _nginx_conf(nginx_dir, [i.port for i in instances], ports))
    topo = SimpleNamespace(
        url=f"http://127.0.0.1:{ports['portal']}",
        via=[f"http://127.0.0.1:{ports['portal_0']}", f"http://127.0.0.1:{ports['portal_1']}"],
        instances=instances,
    )
    try:

        def up():
            for inst in instances:
                assert inst.proc.poll() is None, inst.logfile.read_text(errors="replace")
            try:
                return all(
                    requests.get(f"{u}/health", timeout=1).status_code == 200 for u in topo.via
                )
            except requests.RequestException:
                return False

        assert wait_for(up, timeout=40, interval=0.2), "the topology did not come up"
        for inst in instances:
            inst.worker = next(iter(workers_of(inst.proc.pid)), None)
        yield topo
    finally:
        nginx.terminate()
        nginx.wait(10)
        for inst in instances:
            stop_portal(inst)


def _login(base: str, user) -> str:
    r = requests.post(
        f"{base}/api/login", json={"login": user.username, "password": PASSWORD}, timeout=10
    )
    assert r.status_code == 200, r.text
    return r.json()["token"]


def _ws(base: str) -> str:
    return base.replace("http://", "ws://")


def _row(app, sid: str):
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    with app.app_context():
        row = db.session.get(TerminalSession, sid)
        facts = SimpleNamespace(status=row.status, server_id=row.server_id, reason=row.close_reason)
        db.session.remove()
    return facts


def _holder_pid(app, sid: str) -> int:
    return int(_row(app, sid).server_id.split(":")[1])


def test_a_terminal_lives_on_whichever_instance_the_proxy_picks(
    app, topology, make_user, sshd_machine
):
    owner = make_user("topoowner")
    machine = sshd_machine(owner)
    # Signed in through the proxy (the balanced port); the token works on both instances.
    token = _login(topology.url, owner)
    for base in topology.via:
        r = requests.get(f"{base}/api/machines", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text

    path = f"/api/terminal/{machine.agent_id}/ws?token={token}"
    t = Term(_ws(topology.via[0]) + path)
    sid = t.wait_control("ready")["session_id"]
    t.run("TOPO=kept$((20+22)); echo set$((2+2))", r"set4")
    workers = [inst.worker for inst in topology.instances]
    assert _holder_pid(app, sid) == workers[0]

    # A watcher on the other instance sees the owner's live output (over the bus).
    watch = Term(_ws(topology.via[1]) + f"/api/terminal/sessions/{sid}/watch/ws?token={token}")
    t.run("echo live$((3*3))", r"live9")
    watch.read_until(r"live9")
    watch.close()

    # Dropped, then re-attached on the instance that does not own it: relayed to the owner.
    for base in [topology.via[1], topology.url, topology.url, topology.via[0]]:
        t.drop()
        assert wait_for(lambda: _row(app, sid).status == "detached", timeout=15)
        t = Term(_ws(base) + path + f"&session={sid}", timeout=30)
        assert t.wait_control("ready") == {"type": "ready", "session_id": sid, "resumed": True}
        t.run("echo V=$TOPO", r"V=kept42")  # the same shell
        assert _holder_pid(app, sid) == workers[0]  # still held where it was opened
    t.close()


def test_delete_from_either_instance_ends_the_terminal(app, topology, make_user, sshd_machine):
    owner = make_user("topodelete")
    machine = sshd_machine(owner)
    token = _login(topology.url, owner)
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/api/terminal/{machine.agent_id}/ws?token={token}"
    for base in topology.via:  # owned by instance 0, deleted through 0, then through 1
        t = Term(_ws(topology.via[0]) + path)
        sid = t.wait_control("ready")["session_id"]
        t.run("echo up$((1+1))", r"up2")
        r = requests.delete(f"{base}/api/terminal/sessions/{sid}", headers=headers, timeout=15)
        assert r.status_code in (200, 204), r.text
        msg = t.wait_control("error", timeout=15)
        assert "closed" in msg["message"]
        t.drain_close()
        t.close()
        assert wait_for(lambda sid=sid: _row(app, sid).status == "closed", timeout=10)


@pytest.mark.parametrize("topology", [{"PORTAL_AUTH_RATE_LIMIT": "4 per minute"}], indirect=True)
def test_sign_in_limits_are_shared_by_the_instances(app, topology, make_user):
    """Failed sign-ins spread over both instances count against one limit (Redis), per
    client address as nginx reports it (X-Forwarded-For through ProxyFix)."""
    user = make_user("topolimited")
    codes = []
    for i in range(4):
        r = requests.post(
            f"{topology.via[i % 2]}/api/login",
            json={"login": user.username, "password": "wrong-password-1"},
            timeout=10,
        )
        codes.append(r.status_code)
    assert codes == [401, 401, 401, 401]
    for base in topology.via:  # the fifth, on either instance, is refused
        r = requests.post(
            f"{base}/api/login", json={"login": user.username, "password": PASSWORD}, timeout=10
        )
        assert r.status_code == 429, r.text
        assert "error" in r.json()


@pytest.mark.parametrize("topology", [{"PORTAL_SERVER_LEASE": "3"}], indirect=True)
def test_a_killed_instance_s_sessions_are_closed_by_the_survivor(
    app, topology, make_user, sshd_machine
):
    """SIGKILL (no goodbye, no row written): the surviving instance finds the holder gone
    and closes its sessions as "server lost" after the lease (3 s here, 35 s by default);
    a client of the dead instance that reconnects through the proxy is told it ended."""
    owner = make_user("topokilled")
    machine = sshd_machine(owner)
    token = _login(topology.url, owner)
    path = f"/api/terminal/{machine.agent_id}/ws?token={token}"
    t = Term(_ws(topology.via[1]) + path)
    sid = t.wait_control("ready")["session_id"]
    t.run("echo up$((1+1))", r"up2")
    victim = topology.instances[1]
    assert _holder_pid(app, sid) == victim.worker

    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    t.drain_close()  # nginx lost its upstream: the socket ends
    t.close()
    assert wait_for(lambda: _row(app, sid).status == "closed", timeout=30)
    assert _row(app, sid).reason == "server lost"

    # The balanced port still works (nginx passes over the dead instance), and the
    # re-attach is refused with the reason.
    again = Term(_ws(topology.url) + path + f"&session={sid}", timeout=30)
    msg = again.wait_control("error")
    assert "ended" in msg["message"] or "closed" in msg["message"], msg
    again.close()


def test_a_redis_restart_leaves_terminals_running(
    app, topology, redis_server, make_user, sshd_machine
):
    """Redis down: terminals keep working, pages and sign-in keep answering (the rate limits
    fall back to per-process memory: a documented choice, not a 500 storm). Redis back: the
    bus reconnects by itself and a watcher on the other instance sees output again."""
    owner = make_user("toporedis")
    machine = sshd_machine(owner)
    token = _login(topology.url, owner)
    headers = {"Authorization": f"Bearer {token}"}
    t = Term(_ws(topology.via[0]) + f"/api/terminal/{machine.agent_id}/ws?token={token}")
    sid = t.wait_control("ready")["session_id"]
    watch = Term(_ws(topology.via[1]) + f"/api/terminal/sessions/{sid}/watch/ws?token={token}")
    t.run("echo before$((1+1))", r"before2")
    watch.read_until(r"before2")

    redis_server.stop()
    t.run("echo during$((2+2))", r"during4")  # the terminal does not need Redis
    for base in topology.via:
        assert requests.get(f"{base}/api/machines", headers=headers, timeout=10).ok
        r = requests.post(
            f"{base}/api/login",
            json={"login": owner.username, "password": PASSWORD},
            timeout=10,
        )
        assert r.status_code == 200, r.text

    redis_server.start()
    n = 0

    def watcher_sees_output():
        nonlocal n
        n += 1
        t.run(f"echo after$(({n}*1000+1))", rf"after{n * 1000 + 1}")
        try:
            watch.read_until(rf"after{n * 1000 + 1}", timeout=0.5)
            return True
        except Exception:
            return False

    assert wait_for(watcher_sees_output, timeout=5, interval=0.1)
    assert _row(app, sid).status == "active"
    watch.close()
    t.close()


@pytest.fixture
def pg_relay(app):
    from sqlalchemy.engine import make_url

    url = make_url(app.config["DATABASE_URL"])
    relay = TcpRelay((url.host or "127.0.0.1", url.port or 5432))
    relay.restore()
    yield relay
    relay.cut()


@pytest.mark.parametrize("topology", [{"DATABASE_URL": "relay"}], indirect=True)
def test_a_database_outage_is_a_503_and_passes_by_itself(
    app, topology, pg_relay, make_user, sshd_machine
):
    owner = make_user("topodb")
    machine = sshd_machine(owner)
    token = _login(topology.url, owner)
    headers = {"Authorization": f"Bearer {token}"}
    t = Term(_ws(topology.via[0]) + f"/api/terminal/{machine.agent_id}/ws?token={token}")
    sid = t.wait_control("ready")["session_id"]
    t.run("echo before$((1+1))", r"before2")

    pg_relay.cut()
    for base in topology.via:
        r = requests.get(f"{base}/api/machines", headers=headers, timeout=20)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "the database is unreachable; try again in a moment"
        assert r.headers["Retry-After"] == "5"
    t.run("echo during$((2+2))", r"during4")  # the live terminal does not need it

    pg_relay.restore()
    assert wait_for(
        lambda: all(
            requests.get(f"{b}/api/machines", headers=headers, timeout=5).status_code == 200
            for b in topology.via
        ),
        timeout=5,
        interval=0.2,
    )
    t.run("echo after$((3+3))", r"after6")
    assert _row(app, sid).status == "active"
    t.send("exit\r")  # the shell ends: its row is written on the database that came back
    t.wait_control("exit")
    t.close()
    assert wait_for(lambda: _row(app, sid).status == "closed", timeout=10)
