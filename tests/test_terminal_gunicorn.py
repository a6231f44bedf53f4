"""The portal as it is deployed (gunicorn with portal/gunicorn_conf.py, app:app) and a real
SIGTERM: live terminals hear why they end, and their rows are closed, not left as ghosts."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
import requests

from tests.fixtures import terminal as _helpers
from tests.fixtures.gunicorn import start_portal, stop_portal, wait_until_up, workers_of
from tests.fixtures.terminal import Term, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def start_gunicorn(app, tmp_path):
    """start_gunicorn(workers=1, redis=False) -> (base_url, process, log path): the portal under
    gunicorn on the test database (same secrets as `app`, so its tokens and stored machine
    credentials are valid there). Stopped after the test."""
    started: list = []

    def _start(workers: int = 1, redis: bool = False, env: dict[str, str] | None = None):
        env = dict(env or {})
        if redis:  # the same bus as `app` when it has one (it can then talk to the workers)
            env["REDIS_URL"] = "redis://127.0.0.1:6379/0"
            env["PORTAL_TERMINAL_BUS_PREFIX"] = (
                app.config["PORTAL_TERMINAL_BUS_PREFIX"]
                if app.config.get("REDIS_URL")
                else f"test-term-{uuid.uuid4().hex[:12]}"
            )
        portal = start_portal(app, tmp_path, f"gunicorn-{len(started)}", workers=workers, env=env)
        started.append(portal)
        wait_until_up(portal, workers)
        return portal.base, portal.proc, portal.logfile

    yield _start
    for portal in started:
        stop_portal(portal)


def test_sigterm_closes_live_terminals_with_a_reason(
    app, start_gunicorn, make_user, sshd_machine, token_for
):
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    base, proc, _log = start_gunicorn()
    owner = make_user("sigtermowner")
    machine = sshd_machine(owner)
    ws = base.replace("http://", "ws://")
    t = Term(f"{ws}/api/terminal/{machine.agent_id}/ws?token={token_for(owner)}")
    sid = t.wait_control("ready")["session_id"]
    t.run("echo up$((2+3))", r"up5")

    proc.send_signal(signal.SIGTERM)
    msg = t.wait_control("error", timeout=20)
    assert "restarting" in msg["message"] or "shutting down" in msg["message"]
    t.drain_close()
    t.close()
    assert proc.wait(30) == 0  # a graceful exit, not a kill

    with app.app_context():
        row = db.session.get(TerminalSession, sid)
        assert row.status == "closed"
        assert "restarting" in row.close_reason or "shutting down" in row.close_reason
        assert row.ended_at is not None
        db.session.remove()
    # The server is gone, and nothing of it holds the port.
    with pytest.raises(requests.RequestException):
        requests.get(f"{base}/health", timeout=2)


def test_the_server_closes_rows_another_host_left_when_there_is_no_redis(
    app, start_gunicorn, make_user, make_machine
):
    """A terminal server that comes back under a new hostname (a recreated container) closes
    the live rows its earlier incarnation left: without Redis no other terminal server
    shares the database. A plain app start leaves them (a `flask` command elsewhere)."""
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    owner = make_user("oldhostowner")
    sid = _helpers.live_row(app, make_machine(owner), owner, "old-container-hostname:7:12345")
    start_gunicorn()

    def closed():
        with app.app_context():
            row = db.session.get(TerminalSession, sid)
            done = row.status == "closed" and row.close_reason == "server restarted"
            db.session.remove()
            return done

    assert wait_for(closed, timeout=10)


class TestWithTheSameBus:
    @pytest.fixture
    def app_config(self, app_config):
        return _helpers.redis_config(app_config)

    def test_a_row_its_live_worker_no_longer_holds_is_closed_by_that_worker(
        self, app, start_gunicorn, live_server, make_user, make_machine, auth
    ):
        """A row names a running worker that holds no such session (its end was never
        written). A DELETE elsewhere asks that worker over Redis, and it closes the row:
        not a 503 for ever."""
        from portal.extensions import db
        from portal.terminal.models import TerminalSession

        _base, proc, _log = start_gunicorn(workers=1, redis=True)
        from portal.terminal.registry import server_id_for

        (worker,) = workers_of(proc.pid)
        owner = make_user("staleowner")
        sid = _helpers.live_row(app, make_machine(owner), owner, server_id_for(worker))
        r = requests.delete(
            f"{live_server.url}/api/terminal/sessions/{sid}", headers=auth(owner), timeout=15
        )
        assert r.status_code == 204, r.text
        with app.app_context():
            row = db.session.get(TerminalSession, sid)
            assert row.status == "closed" and row.close_reason == "closed by its user"
            db.session.remove()


def _cpus(pid: int) -> set[int]:
    return os.sched_getaffinity(pid)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_two_workers_run_on_a_cpu_each_and_a_replacement_takes_the_free_one(start_gunicorn):
    """With PORTAL_PIN_WORKERS=1 workers are pinned one to a CPU (docs/terminal.md "Worker
    model"); a worker that dies is replaced on the CPU it left, not beside the survivor.
    By default (auto) several workers are left to the scheduler."""
    mine = os.sched_getaffinity(0)
    _base, proc, _log = start_gunicorn(workers=2, redis=True, env={"PORTAL_PIN_WORKERS": "1"})
    first = workers_of(proc.pid)
    pinned = [_cpus(w) for w in first]
    assert all(len(c) == 1 and c <= mine for c in pinned), pinned
    assert pinned[0] != pinned[1]
    assert _cpus(proc.pid) == mine  # the arbiter itself is not pinned

    gone = first[1]
    os.kill(gone, signal.SIGKILL)
    assert wait_for(
        lambda: len(w := workers_of(proc.pid)) == 2 and gone not in w, timeout=30, interval=0.2
    )
    now = {w: _cpus(w) for w in workers_of(proc.pid)}
    assert now[first[0]] == pinned[0]
    (new,) = [w for w in now if w != first[0]]
    assert now[new] == pinned[1]

    _base, default, _log = start_gunicorn(workers=2, redis=True)
    assert [_cpus(w) for w in workers_of(default.pid)] == [mine, mine]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_single_worker_keeps_to_one_cpu_unless_told_not_to(start_gunicorn):
    """One worker serialises its Python on the GIL: by default it is pinned to one CPU (its
    threads stop chasing the GIL across CPUs; docs/terminal.md "Worker model"), and a worker
    that dies is replaced on the same CPU. PORTAL_PIN_WORKERS=0 leaves it every CPU; a value
    that means nothing is reported and treated as the default."""
    mine = os.sched_getaffinity(0)
    _base, single, _log = start_gunicorn(workers=1)
    (worker,) = workers_of(single.pid)
    cpus = _cpus(worker)
    assert len(cpus) == 1 and cpus <= mine
    assert _cpus(single.pid) == mine  # the arbiter itself is not pinned
    os.kill(worker, signal.SIGKILL)
    assert wait_for(
        lambda: len(w := workers_of(single.pid)) == 1 and worker not in w,
        timeout=30,
        interval=0.2,
    )
    (again,) = workers_of(single.pid)
    assert _cpus(again) == cpus

    _base, unpinned, _log = start_gunicorn(workers=1, env={"PORTAL_PIN_WORKERS": "0"})
    assert [_cpus(w) for w in workers_of(unpinned.pid)] == [mine]

    _base, odd, log_path = start_gunicorn(workers=1, env={"PORTAL_PIN_WORKERS": "yes"})
    (w,) = workers_of(odd.pid)
    assert len(_cpus(w)) == 1
    assert "PORTAL_PIN_WORKERS='yes' ignored" in Path(log_path).read_text()
