"""Where a keystroke's echo waits: the kernel scheduler's view, raw `ssh -tt` next to the portal.

    sudo .venv/bin/python bench/trace_echo_sched.py [--keys 200]

One sshd, raw `ssh -tt` and the portal (this tree, under gunicorn), one keystroke each in
turn (shuffled, as bench_terminal.py's echo). While it runs, the kernel's `sched_waking` and
`sched_switch` events are recorded (tracefs, clock `mono` = Python's perf_counter). For every
echo, each wake-up inside it (waker process > woken process) is matched with the moment the
woken task got a CPU. Printed per system: how long each kind of wake-up waited for a CPU
and how often it ran on the waker's CPU, CPU time per process per echo, echo p50.

It answers questions the echo's p50 cannot: is a thread waiting for a CPU that another task
holds, is it woken on an idle CPU (on this VM, a halted vCPU takes ~50-70 us to run again),
how much CPU each process spends per keystroke. Needs root (tracefs); writes nothing to docs/.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_terminal as bt  # noqa: E402

from tests.fixtures.sshd import SshdServer, ensure_test_user  # noqa: E402

TRACEFS = Path("/sys/kernel/tracing")
EVENTS = ("sched/sched_waking", "sched/sched_switch")
LINE = re.compile(r"\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+): (.*)")


def _w(name: str, value: str) -> None:
    (TRACEFS / name).write_text(value)


def tracefs_ready() -> str | None:
    """None when tracefs can be used, else why not."""
    if os.geteuid() != 0:
        return "needs root (tracefs)"
    if not (TRACEFS / "trace").exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True)
    if not (TRACEFS / "trace").exists():
        return f"tracefs is not available at {TRACEFS}"
    return None


def rounds(clients: dict, samples: int) -> dict[str, list[tuple[int, int]]]:
    """(start, end) in perf_counter ns of each echo, per client; the pacing of echo_rounds."""
    marks: dict[str, list[tuple[int, int]]] = {name: [] for name in clients}
    time.sleep(0.3)
    for c in clients.values():
        while c.recv(0.05):
            pass
    order = list(clients.items())
    shuffle = random.Random(4242).shuffle
    now = time.perf_counter_ns
    for i in range(samples):
        key = b"a" if i % 2 == 0 else b"\x7f"
        shuffle(order)
        for name, c in order:
            t0 = now()
            c.send(key)
            data = b""
            while not data:
                data = c.recv(5)
                if not data and now() - t0 > 5e9:
                    raise TimeoutError(f"{name}: no echo")
            marks[name].append((t0, now()))
            c.ack(len(data))
            time.sleep(0.005)
            while more := c.recv(0.002):
                c.ack(len(more))
    return marks


def parse(text: str) -> list[tuple]:
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            comm, pid, cpu, ts, name, rest = m.groups()
            out.append((int(float(ts) * 1e9), comm, int(pid), int(cpu), name, rest))
    return out


def _short(comm: str) -> str:
    return comm.split("/")[0][:10]


def analyse(events: list[tuple], marks: list[tuple[int, int]]) -> dict:
    """Wake-up waits and CPU time inside the given echoes."""
    stamps = [e[0] for e in events]
    waits: dict[str, list[int]] = collections.defaultdict(list)
    same: dict[str, list[bool]] = collections.defaultdict(list)
    cpu: dict[str, int] = collections.defaultdict(int)
    for t0, t1 in marks:
        pending: dict[int, tuple[int, str, int]] = {}
        running: dict[int, tuple[int, str]] = {}
        for t, comm, _pid, on, name, rest in events[
            bisect.bisect_left(stamps, t0) : bisect.bisect_right(stamps, t1)
        ]:
            if name == "sched_waking":
                m = re.search(r"comm=(\S+) pid=(\d+)", rest)
                if m:
                    pending[int(m.group(2))] = (t, f"{_short(comm)} > {_short(m.group(1))}", on)
            elif name == "sched_switch":
                prev = re.search(r"prev_comm=(\S+) prev_pid=(\d+)", rest)
                nxt = re.search(r"next_comm=(\S+) next_pid=(\d+)", rest)
                if not (prev and nxt):
                    continue
                ppid, npid = int(prev.group(2)), int(nxt.group(2))
                if ppid in running:
                    start, who = running.pop(ppid)
                    cpu[who] += t - start
                if npid in pending:
                    tw, key, waker_cpu = pending.pop(npid)
                    waits[key].append(t - tw)
                    same[key].append(waker_cpu == on)
                if npid:
                    running[npid] = (t, _short(nxt.group(1)))
    n = max(len(marks), 1)
    return {
        "echo_p50_us": statistics.median([(b - a) / 1e3 for a, b in marks]) if marks else 0,
        "waits": {
            k: (len(v) / n, statistics.median(v) / 1e3, sum(same[k]) / len(v))
            for k, v in waits.items()
            if len(v) >= 0.3 * n
        },
        "cpu_us_per_echo": {k: v / n / 1e3 for k, v in cpu.items() if k != "swapper"},
    }


def render(name: str, a: dict) -> str:
    lines = [f"### {name}: echo p50 {a['echo_p50_us']:.0f} us", ""]
    lines += [
        "| wake-up (waker > woken) | per echo | wait for a CPU, p50 us | on the waker's CPU |"
    ]
    lines += ["|---|---|---|---|"]
    for k, (per, p50, on_same) in sorted(a["waits"].items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| {k} | {per:.2f} | {p50:.0f} | {on_same:.0%} |")
    lines += ["", "| process | CPU per echo, us |", "|---|---|"]
    for k, v in sorted(a["cpu_us_per_echo"].items(), key=lambda kv: -kv[1]):
        if v >= 1:
            lines.append(f"| {k} | {v:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=200)
    args = ap.parse_args()
    why = tracefs_ready()
    if why:
        print(f"trace_echo_sched: {why}", file=sys.stderr)
        return 2
    # buffer_size_kb reads "N (expanded: M)" until the buffer is first used: keep the number only
    saved = {n: (TRACEFS / n).read_text().split()[0] for n in ("tracing_on", "buffer_size_kb")}
    clock = re.search(r"\[(\w+)\]", (TRACEFS / "trace_clock").read_text())
    sshd = SshdServer(ensure_test_user(), name="sched").start()
    portal = bt.PortalServer(sshd)
    clients: dict = {}
    try:
        portal.start()
        raw = bt.RawServer(sshd, Path(tempfile.mkdtemp(prefix="bench-sched-")))
        clients = {"raw ssh -tt": bt.fresh_shell(raw), "portal": bt.fresh_shell(portal)}
        _w("tracing_on", "0")
        _w("trace", "")
        _w("trace_clock", "mono")
        _w("buffer_size_kb", "20000")
        for e in EVENTS:
            _w(f"events/{e}/enable", "1")
        _w("tracing_on", "1")
        try:
            marks = rounds(clients, args.keys)
        finally:
            _w("tracing_on", "0")
            for e in EVENTS:
                _w(f"events/{e}/enable", "0")
        events = parse((TRACEFS / "trace").read_text())
    finally:
        for c in clients.values():
            c.close()
        portal.stop()
        sshd.stop()
        _w("trace", "")
        if clock:
            _w("trace_clock", clock.group(1))
        for n, v in saved.items():
            _w(n, v)
    for name, m in marks.items():
        print(render(name, analyse(events, m)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
