#!/usr/bin/env python3
"""The terminal, side by side: raw `ssh -tt`, the portal, webssh — one run, one sshd.

    sudo .venv/bin/python bench/bench_terminal.py [--sessions 500] [--no-webssh] [--no-write]

Starts its own sshd (tests/fixtures/sshd.py), the portal under gunicorn with
portal/gunicorn_conf.py on a free port (temp instance dir, SQLite, a user and a
machine made through the services), and webssh 1.6.3 from a separate venv
(/tmp/webssh-venv, created on first run with `pip install webssh==1.6.3`).
Measures:

  1. throughput: `cat` of a 25 MB text file, client reading as fast as it can;
  2. keystroke echo round trip at an idle bash prompt, p50/p99;
  3. Ctrl-C latency while `yes` floods and the client reads only 1 MB/s
     (the portal client acks what it "rendered", like the page); server RSS
     sampled every 100 ms during the flood;
  4. N sessions opened together, then each typing keys and timing the echo, at two
     rates (a key every 0.5-1.5 s per session, then every 0.2-0.4 s: 500 sessions give
     ~500 and ~1700 keys/s): failures, p50/p99, server CPU;
  5. server RSS per idle session (from the N-session run).

Prints a Markdown table and writes it to docs/benchmarks.md between
<!-- terminal:start --> and <!-- terminal:end -->.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.terminal.clients import Portal, RawSsh, WebSsh, read_until  # noqa: E402
from bench.terminal.many import Conn, echo_phase, run_loop  # noqa: E402
from tests.fixtures.sshd import SshdServer, _descendants, ensure_test_user  # noqa: E402

WEBSSH_VENV = Path("/tmp/webssh-venv")
WEBSSH_PIN = "webssh==1.6.3"
START, END = "<!-- terminal:start -->", "<!-- terminal:end -->"
NOTES = """How it is measured (all clients run on the same 2-core machine as the servers, so the
client's own work is inside every number):

- raw `ssh -tt`: OpenSSH's client on a local PTY that the bench reads. It is the floor:
  no server in the middle (so no server RSS) and C all the way.
- portal: gunicorn with `portal/gunicorn_conf.py`. Single sessions: websocket-client for
  the handshake, then frames written and read straight on the socket (one `sendall` per
  key, `select` + `recv` for output, acking every frame like the page does) — as lean as
  OpenSSH's client on the raw side; websocket-client's own `send()` alone cost ~0.2 ms per
  key here. A selector-based client for the N sessions.
- portal-2w: the same with `PORTAL_WORKERS=2` and `REDIS_URL` (`--workers N`, default 2;
  `--workers 1` leaves the column out): one worker per CPU, the deployment for hundreds of
  busy terminals. Its server CPU and RSS are both workers' together.
- webssh 1.6.3 from its own venv, `--policy=autoadd`, same clients (JSON text input).
- throughput: best and median of `--rounds` runs, systems alternating; echo: one keystroke per
  system per round (`--echo-samples`, 600), interleaved, so background load hits all three
  alike, in a new random order each round (in a fixed order the last system gained
  ~0.05 ms), once the machine is quiet (CPUs under 5 % busy for a second, at most 30 s).
- Ctrl-C: `yes` floods, the client reads 1 MB/s (and acks what it read), Ctrl-C then
  `echo CTRL$((1+1))C`: seconds until `CTRL2C` arrives; server RSS sampled every 100 ms.
- DELETE: a fresh session (at an idle prompt, then under `yes`), `DELETE
  /api/terminal/sessions/<id>` with the user's token, time until the socket has the `error`
  frame; five of each. With two workers the DELETE may land on the worker that does not
  hold the session and travel over Redis.
- N sessions: all opened at once, 5 s to settle, then every session types `a`/DEL at
  random intervals and times each echo; first the lighter rate, then the heavier one.
  Server CPU is the server process's CPU time over wall time (100 % = one core). After
  each system the bench waits until the sshd's per-connection processes are gone, so the
  next system does not pay for the previous one's teardown."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def rss_mb(pids) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def wait_http(url: str, timeout: float = 30) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


# --------------------------------------------------------------------------- servers


class PortalServer:
    name = "portal"

    def __init__(self, sshd, workers: int = 1):
        self.sshd = sshd
        self.workers = workers
        if workers > 1:
            self.name = f"portal-{workers}w"
        self.dir = Path(tempfile.mkdtemp(prefix="portal-bench-"))
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
            "PORTAL_INSTANCE_PATH": str(self.dir),
            "DATABASE_URL": f"sqlite:///{self.dir / 'portal.db'}",
            "PORTAL_MAX_SESSIONS_PER_USER": "0",
            "PORTAL_IDLE_TIMEOUT": "0",
            "PORTAL_ACCESS_LOG": "0",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "PORTAL_WORKERS": str(workers),
            # workers are measured pinned one to a CPU (the product's default for one
            # worker, opt-in for several; BENCH_PIN_WORKERS=0 measures them unpinned)
            "PORTAL_PIN_WORKERS": os.environ.get("BENCH_PIN_WORKERS", "1"),
        }
        if workers > 1:  # several workers share terminal events through Redis
            import uuid

            self.env["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
            self.env["PORTAL_TERMINAL_BUS_PREFIX"] = f"bench-{uuid.uuid4().hex[:12]}"
        self.proc = None

    def setup(self) -> None:
        code = f"""
import os, json
from portal import create_app
from portal.cli import upgrade_database
from portal.extensions import db
upgrade_database({self.env["DATABASE_URL"]!r})
app = create_app({{"DATABASE_URL": {self.env["DATABASE_URL"]!r}, "PORTAL_INSTANCE_PATH": {str(self.dir)!r}}})
from portal.accounts import tokens, users
from portal.machines import inventory
with app.test_request_context():
    u = users.create_user(email="bench@example.test", username="bench", password="bench-Pass-123456",
                          role="admin", check_open=False)
    db.session.commit()
    m, _ = inventory.create_machine(u, {{"name": "bench", "host": {self.sshd.host!r}, "port": {self.sshd.port},
        "username": {self.sshd.username!r}, "auth_method": "key",
        "private_key": {self.sshd.client_key_private_text!r},
        "host_key": {chr(10).join(self.sshd.host_key_lines)!r}}})
    db.session.commit()
    token, _ = tokens.issue_jwt(u)
    print(json.dumps({{"agent_id": m.agent_id, "token": token}}))
"""
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, cwd=ROOT, capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        info = json.loads(out.stdout.strip().splitlines()[-1])
        self.agent_id, self.token = info["agent_id"], info["token"]

    def start(self) -> None:
        self.setup()
        self.log = open(self.dir / "gunicorn.log", "wb")
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/gunicorn"), "-c", "python:portal.gunicorn_conf", "app:app"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(f"http://127.0.0.1:{self.port}/health")

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)] if self.proc else []

    def client(self, acks=True):
        return Portal(f"ws://127.0.0.1:{self.port}", self.agent_id, self.token, acks=acks)

    def ws_url(self) -> str:
        return (
            f"ws://127.0.0.1:{self.port}/api/terminal/{self.agent_id}/ws?token={self.token}"
            "&cols=120&rows=40"
        )

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class WebSshServer:
    name = "webssh"

    def __init__(self, sshd):
        self.sshd = sshd
        self.port = free_port()
        self.proc = None

    def start(self) -> None:
        wssh = WEBSSH_VENV / "bin/wssh"
        if not wssh.exists():
            subprocess.run([sys.executable, "-m", "venv", str(WEBSSH_VENV)], check=True)
            subprocess.run([str(WEBSSH_VENV / "bin/pip"), "install", "-q", WEBSSH_PIN], check=True)
        self.log = open(f"/tmp/webssh-bench-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(wssh),
                "--address=127.0.0.1",
                f"--port={self.port}",
                "--policy=autoadd",
                "--xsrf=False",
                "--maxconn=100000",
                "--delay=120",
                "--logging=warning",
                "--timeout=30",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(f"http://127.0.0.1:{self.port}/")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def client(self, acks=True):
        return WebSsh(f"http://127.0.0.1:{self.port}", self.sshd)

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.log.close()


class RawServer:
    name = "raw ssh -tt"

    def __init__(self, sshd, workdir: Path):
        self.sshd = sshd
        self.key = str(sshd.client_key_path)
        self.known_hosts = str(workdir / "known_hosts")
        Path(self.known_hosts).write_text("\n".join(sshd.known_hosts_lines()) + "\n")

    def start(self) -> None:
        pass

    def pids(self) -> list[int]:
        return []

    def client(self, acks=True):
        return RawSsh(self.sshd, self.key, self.known_hosts)

    def argv(self) -> list[str]:
        return [
            "ssh",
            "-tt",
            "-p",
            str(self.sshd.port),
            "-i",
            self.key,
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            f"{self.sshd.username}@{self.sshd.host}",
        ]

    def stop(self) -> None:
        pass


# --------------------------------------------------------------------------- measurements


def fresh_shell(server):
    c = server.client()
    read_until(c, b"$ ", 30)
    # a quiet, predictable prompt and no bracketed-paste noise
    c.send(b"export PS1='$ '; echo READY$((1+1))\r")
    tail, _ = read_until(c, b"READY2", 30)
    if not tail.split(b"READY2", 1)[1].endswith(b"$ "):
        read_until(c, b"$ ", 10)
    return c


def m_delete(server, rounds: int = 5) -> dict:
    """`DELETE /api/terminal/sessions/<id>` until the browser has the `error` frame, ms: at an
    idle prompt and while `yes` floods (the socket full of output). The issue: <= 1 s."""
    import requests

    out = {}
    for label, flood in (("idle", False), ("flood", True)):
        times = []
        for _ in range(rounds):
            c = fresh_shell(server)
            try:
                sid = next(m["session_id"] for m in c.controls if m.get("type") == "ready")
                if flood:
                    c.send(b"yes\r")
                    read_until(c, b"y\r\ny\r\n", 10)
                t0 = time.perf_counter()
                r = requests.delete(
                    f"http://127.0.0.1:{server.port}/api/terminal/sessions/{sid}",
                    headers={"Authorization": f"Bearer {server.token}"},
                    timeout=30,
                )
                r.raise_for_status()
                deadline = t0 + 30
                while time.perf_counter() < deadline:
                    data = c.recv(0.05)
                    if data:
                        c.ack(len(data))
                    if any(m.get("type") == "error" for m in c.controls):
                        times.append((time.perf_counter() - t0) * 1000)
                        break
            finally:
                c.close()
        out[label] = (statistics.median(times), max(times)) if times else None
    return out


def m_throughput(server, path: str, size: int) -> float:
    c = fresh_shell(server)
    try:
        c.send(f"cat {path}; echo DONE$((40+2))\r".encode())
        _tail, secs = read_until(c, b"DONE42", 300)
        return size / secs / 1e6
    finally:
        c.close()


def echo_rounds(clients: dict, samples: int) -> dict[str, tuple[float, float]]:
    """Keystroke round trips at an idle prompt, interleaved across `clients` (one key each
    per round), so load from anything else on the machine hits every system alike.
    Returns {name: (p50 ms, p99 ms)}."""
    rtts: dict[str, list[float]] = {name: [] for name in clients}
    time.sleep(0.3)
    for c in clients.values():
        while c.recv(0.05):
            pass
    # A new order each round: which system goes first or follows which shifts its echo by
    # more than the changes being measured (seen: the last in a fixed order ~0.05 ms faster).
    order = list(clients.items())
    shuffle = random.Random(4242).shuffle
    for i in range(samples):
        key = b"a" if i % 2 == 0 else b"\x7f"
        shuffle(order)
        for name, c in order:
            t0 = time.perf_counter()
            c.send(key)
            data = b""
            while not data:
                data = c.recv(5)
                if not data and time.perf_counter() - t0 > 5:
                    raise TimeoutError(f"{name}: no echo")
            rtts[name].append(time.perf_counter() - t0)
            c.ack(len(data))
            time.sleep(0.005)
            while more := c.recv(0.002):  # anything trailing
                c.ack(len(more))
    return {name: (statistics.median(v) * 1000, pct(v, 99) * 1000) for name, v in rtts.items()}


def m_echo_all(servers, samples: int) -> dict[str, tuple[float, float]]:
    """echo_rounds() over a fresh shell on each server."""
    clients = {s.name: fresh_shell(s) for s in servers}
    try:
        return echo_rounds(clients, samples)
    finally:
        for c in clients.values():
            c.close()


def m_ctrl_c(server, flood_secs: float = 3.0, rate: int = 1_000_000, limit: float = 60.0):
    """Seconds from Ctrl-C to the prompt's answer, reading at `rate` B/s; peak RSS growth."""
    c = fresh_shell(server)
    pids = server.pids()
    base = rss_mb(pids)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.1):
            peak[0] = max(peak[0], rss_mb(pids))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def read_limited(seconds: float, marker: bytes | None = None):
        t0 = time.perf_counter()
        got, tail = 0, b""
        while time.perf_counter() - t0 < seconds:
            allowed = rate * (time.perf_counter() - t0) - got
            if allowed < 16384:
                time.sleep(0.005)
                continue
            data = c.recv(0.1, max_bytes=int(min(allowed, 65536)))
            if data:
                got += len(data)
                c.ack(len(data))
                tail = (tail + data)[-64:]
                if marker and marker in tail:
                    return time.perf_counter() - t0
        return None

    try:
        c.send(b"yes\r")
        read_limited(flood_secs)
        c.send(b"\x03")
        c.send(b"echo CTRL$((1+1))C\r")
        secs = read_limited(limit, b"CTRL2C")
        return secs, (peak[0] - base) if pids else None
    finally:
        stop.set()
        sampler.join()
        c.close()


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of this machine's CPUs so far, from /proc/stat: busy is user,
    nice, system, irq and softirq (guest time is already in user; steal is the host's other
    tenants, which no waiting here changes, so it counts toward the total only)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = f + [0] * (8 - len(f))
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait + steal


def quiet(limit: float = 30.0, below: float = 0.05, window: float = 1.0) -> tuple[float, bool]:
    """Wait (at most `limit` s) until the machine's CPUs were busy less than `below` of a
    `window`: "an idle prompt" on an idle machine, not one still writing the throughput
    rounds' recordings or reaping their shells. Returns (seconds waited, quiet reached)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        b0, a0 = machine_busy()
        time.sleep(window)
        b1, a1 = machine_busy()
        if a1 > a0 and (b1 - b0) / (a1 - a0) < below:
            return time.monotonic() - t0, True
    return time.monotonic() - t0, False


def settle(sshd, limit: float = 90.0) -> None:
    """Wait until the 500 closed sessions are gone from the sshd (their per-connection
    processes and shells exit over several seconds, using CPU), so the next system's run
    does not pay for the previous one's teardown."""
    deadline = time.monotonic() + limit
    last, steady_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(_descendants(sshd.pid))
        if count != last:
            last, steady_since = count, time.monotonic()
        elif count <= 4 or time.monotonic() - steady_since >= 3:
            break  # gone, or only idle pooled connections left
        time.sleep(0.5)
    time.sleep(2)


def m_many(server, n: int, keys: int, kind: str, gaps=((0.2, 0.4),)):
    """Open n sessions together; echo keys; returns dict."""
    pids = server.pids()
    base = rss_mb(pids) if pids else None
    conns: list[Conn] = []
    t0 = time.perf_counter()
    if kind == "portal":
        conns = [Conn.websocket(server.ws_url()) for _ in range(n)]
    elif kind == "webssh":

        def post(_):
            import requests

            try:
                r = requests.post(
                    f"http://127.0.0.1:{server.port}/",
                    data={
                        "hostname": server.sshd.host,
                        "port": str(server.sshd.port),
                        "username": server.sshd.username,
                        "password": server.sshd.password,
                        "term": "xterm-256color",
                    },
                    timeout=120,
                )
                return r.json().get("id")
            except Exception:
                return None

        # webssh keeps its workers in a dict per client IP that concurrent first POSTs race
        # to create (all but one lose their worker): one POST first, then the rest together.
        ids = [post(0)]
        with ThreadPoolExecutor(64) as ex:
            ids += list(ex.map(post, range(n - 1)))
        for wid in ids:
            if wid:
                conns.append(
                    Conn.websocket(
                        f"ws://127.0.0.1:{server.port}/ws?id={wid}",
                        text_input=True,
                        first_text=json.dumps({"resize": [120, 40]}),
                    )
                )
    else:
        conns = [Conn.ssh_pty(server.argv()) for _ in range(n)]
    run_loop(conns, lambda: all(c.ready or c.state == "closed" for c in conns), timeout=180)
    open_secs = time.perf_counter() - t0
    time.sleep(5)  # let the new shells settle (same for every system)
    run_loop(conns, lambda: False, timeout=1.0)  # drain
    idle = rss_mb(pids) if pids else None
    rates = []
    for gap in gaps:  # the same sessions type at each rate in turn
        for c in conns:
            c.rtts = []
        cpu0, t_echo = cpu_seconds(pids), time.perf_counter()
        echo_phase(conns, keys, gap)
        elapsed = time.perf_counter() - t_echo
        rtts = [r for c in conns for r in c.rtts]
        rates.append(
            {
                "gap": gap,
                "p50_ms": statistics.median(rtts) * 1000 if rtts else float("nan"),
                "p99_ms": pct(rtts, 99) * 1000 if rtts else float("nan"),
                "keys_per_s": len(rtts) / max(1e-9, elapsed),
                "server_cpu_pct": (cpu_seconds(pids) - cpu0) / elapsed * 100 if pids else None,
            }
        )
    ok = [c for c in conns if c.ready and not c.failed]
    failures = n - len(ok)
    for c in conns:
        c.close()
    settle(server.sshd)
    return {
        "open_s": open_secs,
        "failures": failures,
        "rates": rates,
        "rss_per_session_mb": ((idle - base) / max(1, n - failures)) if pids else None,
        "failure_reasons": sorted(
            {
                c.failed or f"never ready ({c.state}: {bytes(c.tail[-40:])!r})"
                for c in conns
                if c not in ok
            }
        )[:5],
    }


# --------------------------------------------------------------------------- main


def make_text_file(user, size: int) -> str:
    path = Path(user.home) / "bench-25m.txt"
    if not path.exists() or path.stat().st_size != size:
        line = (
            "The quick brown fox jumps over the lazy dog; terminal throughput line {:09d} "
            "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
        )
        with open(path, "w") as fh:
            written, i = 0, 0
            while written < size:
                s = line.format(i)
                if written + len(s) > size:
                    s = s[: size - written - 1] + "\n"
                fh.write(s)
                written += len(s)
                i += 1
        os.chown(path, user.uid, user.gid)
    return str(path)


def fmt(v, spec=".1f", unit=""):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:{spec}}{unit}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--keys", type=int, default=10, help="keystrokes per session in the N test")
    ap.add_argument(
        "--key-gaps",
        default="0.5-1.5,0.2-0.4",
        help="seconds between a session's keystrokes, lo-hi, one N-test phase per pair",
    )
    ap.add_argument("--echo-samples", type=int, default=600)
    ap.add_argument("--size-mb", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=5, help="throughput runs per system")
    ap.add_argument("--no-webssh", action="store_true")
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run the portal with this many gunicorn workers + Redis (1: only the default)",
    )
    ap.add_argument("--no-raw-many", action="store_true", help="skip N raw ssh processes")
    ap.add_argument("--only", default="", help="comma list: throughput,echo,ctrlc,delete,many")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    gaps = tuple(
        tuple(float(x) for x in pair.split("-")) for pair in args.key_gaps.split(",") if pair
    )

    def want(x):
        return not only or x in only

    user = ensure_test_user()
    size = args.size_mb * 1_000_000
    results: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-terminal-"))
    sshd = SshdServer(
        user, name="bench", config={"MaxSessions": "1000", "MaxStartups": "4000:30:8000"}
    ).start()
    servers = [RawServer(sshd, work), PortalServer(sshd)]
    if args.workers > 1:
        servers.append(PortalServer(sshd, workers=args.workers))
    if not args.no_webssh:
        servers.append(WebSshServer(sshd))
    try:
        path = make_text_file(user, size)
        for s in servers:
            s.start()
        if want("throughput"):
            for _round in range(args.rounds):  # best of N, systems alternating
                for s in servers:
                    r = results.setdefault(s.name, {})
                    mbps = m_throughput(s, path, size)
                    r["throughput"] = max(r.get("throughput", 0), mbps)
                    r.setdefault("throughput_runs", []).append(mbps)
                    print(f"{s.name}: throughput {mbps:.1f} MB/s", flush=True)
        if want("echo"):
            waited, calm = quiet()
            state = "quiet" if calm else "still busy: measuring anyway"
            print(f"echo: waited {waited:.1f} s for a quiet machine ({state})", flush=True)
            for name, value in m_echo_all(servers, args.echo_samples).items():
                results.setdefault(name, {})["echo"] = value
                print(f"{name}: echo p50 {value[0]:.2f} ms p99 {value[1]:.2f}", flush=True)
        for s in servers:
            r = results.setdefault(s.name, {})
            if want("ctrlc"):
                r["ctrlc"] = m_ctrl_c(s)
                print(f"{s.name}: ctrl-c {r['ctrlc']}", flush=True)
        if want("delete"):
            for s in servers:
                if s.name.startswith("portal"):
                    r = results.setdefault(s.name, {})
                    r["delete"] = m_delete(s)
                    print(f"{s.name}: delete -> browser {r['delete']}", flush=True)
        if want("many"):
            for s in servers:
                kind = "portal" if s.name.startswith("portal") else s.name
                kind = kind if kind in ("portal", "webssh") else "raw"
                if kind == "raw" and args.no_raw_many:
                    continue
                r = results.setdefault(s.name, {})
                r["many"] = m_many(s, args.sessions, args.keys, kind, gaps)
                print(f"{s.name}: {args.sessions} sessions {r['many']}", flush=True)
    finally:
        for s in servers:
            try:
                s.stop()
            except Exception as exc:
                print(f"stopping {s.name}: {exc}", file=sys.stderr)
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)

    table = render(results, args)
    print(table)
    if not args.no_write:
        write_doc(table)
    return 0


def render(results: dict, args) -> str:
    import portal.gunicorn_conf as gconf

    n = args.sessions
    names = list(results)
    head = "| measurement | " + " | ".join(names) + " |"
    sep = "|---|" + "---|" * len(names)
    rows = []

    def row(label, fn):
        rows.append(f"| {label} | " + " | ".join(fn(results[k]) for k in names) + " |")

    row(f"`cat` {args.size_mb} MB, MB/s, best of {args.rounds}", lambda r: fmt(r.get("throughput")))
    row(
        f"`cat` {args.size_mb} MB, MB/s, median of {args.rounds}",
        lambda r: fmt(
            statistics.median(r["throughput_runs"]) if r.get("throughput_runs") else None
        ),
    )
    row("echo p50, ms", lambda r: fmt((r.get("echo") or (None,))[0], ".2f"))
    row("echo p99, ms", lambda r: fmt((r.get("echo") or (None, None))[1], ".2f"))
    row(
        "Ctrl-C under `yes` at 1 MB/s, s",
        lambda r: (
            fmt((r.get("ctrlc") or (None,))[0], ".2f")
            if r.get("ctrlc") and r["ctrlc"][0] is not None
            else ("> 60" if r.get("ctrlc") else "—")
        ),
    )
    row(
        "server RSS growth during the flood, MB", lambda r: fmt((r.get("ctrlc") or (None, None))[1])
    )
    for label in ("idle", "flood"):
        row(
            f"DELETE -> `error` in the browser, {label}, median / max of 5, ms",
            lambda r, label=label: (
                "/".join(fmt(v, ".0f") for v in r["delete"][label])
                if r.get("delete") and r["delete"].get(label)
                else "—"
            ),
        )
    row(
        f"{n} sessions together: failures",
        lambda r: str(r["many"]["failures"]) if r.get("many") else "—",
    )
    some = next((r["many"] for r in results.values() if r.get("many")), None)
    for i, rate in enumerate(some["rates"] if some else []):
        lo, hi = rate["gap"]
        label = f"{n} sessions, each a key every {lo:g}-{hi:g} s"

        def pick(r, key, spec=".1f", i=i):
            return fmt(r["many"]["rates"][i][key], spec) if r.get("many") else "—"

        row(f"{label}: keys/s", lambda r, pick=pick: pick(r, "keys_per_s", ".0f"))
        row(f"{label}: echo p50, ms", lambda r, pick=pick: pick(r, "p50_ms"))
        row(f"{label}: echo p99, ms", lambda r, pick=pick: pick(r, "p99_ms"))
        row(f"{label}: server CPU, %", lambda r, pick=pick: pick(r, "server_cpu_pct", ".0f"))
    row(
        f"{n} sessions: time to open all, s",
        lambda r: fmt(r["many"]["open_s"]) if r.get("many") else "—",
    )
    row(
        "server RSS per idle session, MB",
        lambda r: fmt(r["many"]["rss_per_session_mb"], ".2f") if r.get("many") else "—",
    )
    env = (
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"gunicorn worker_class={gconf.worker_class} threads={getattr(gconf, 'threads', '-')}; "
        f"portal: 1 worker (the default), portal-Nw: PORTAL_WORKERS=N with REDIS_URL, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    return "\n".join([head, sep, *rows, "", env])


def write_doc(table: str) -> None:
    doc = ROOT / "docs/benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    section = (
        f"{START}\n## Terminal\n\nRun: `sudo .venv/bin/python bench/bench_terminal.py` "
        "(raw `ssh -tt` vs the portal with one and with two workers vs webssh 1.6.3, same sshd, "
        "loopback).\n\n"
        f"{table}\n\n{NOTES}\n{END}"
    )
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
