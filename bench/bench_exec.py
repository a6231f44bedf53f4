#!/usr/bin/env python3
"""Exec latency: OpenSSH client vs the portal's SSH layer, cold and warm.

    sudo .venv/bin/python bench/bench_exec.py [-n 50] [--command true] [--json]

Starts its own real sshd on a loopback port (tests/fixtures/sshd.py, needs root
for the test login user), then measures, interleaved round-robin so drift hits
every mode alike:

  openssh      `ssh -o BatchMode=yes ... host true`: a new process, TCP connection,
               key exchange and authentication every time (pinned known_hosts file)
  portal-cold  portal.ssh.run() on a new ConnectionPool every time: TCP connection,
               key exchange, host key check and authentication, then one channel
  portal-warm  portal.ssh.run() on one pool: one channel open per command

Prints p50/p95/mean in milliseconds as a Markdown table (or JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paramiko  # noqa: E402

from portal.ssh import ConnectionPool, run  # noqa: E402
from tests.fixtures.sshd import SshdServer, ensure_test_user  # noqa: E402

MODES = ("openssh", "portal-cold", "portal-warm")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summarise(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        mode: {
            "n": len(values),
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(percentile(values, 95), 2),
            "mean_ms": round(statistics.fmean(values), 2),
            "min_ms": round(min(values), 2),
            "max_ms": round(max(values), 2),
        }
        for mode, values in samples.items()
    }


def markdown(summary: dict, env: dict) -> str:
    lines = [
        f"exec of `{env['command']}` on loopback, {env['iterations']} iterations per mode "
        f"({env['openssh']}, paramiko {env['paramiko']}, Python {env['python']}, "
        f"{env['cpus']} CPUs)",
        "",
        "| mode | n | p50 ms | p95 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, s in summary.items():
        lines.append(
            f"| {mode} | {s['n']} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['mean_ms']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--iterations", type=int, default=50)
    parser.add_argument("--command", default="true", help="remote command (default: true)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")
    if os.geteuid() != 0:
        print("bench_exec needs root: it starts sshd with a dedicated test user", file=sys.stderr)
        return 2
    ssh = shutil.which("ssh")
    if ssh is None:
        print("the OpenSSH client (ssh) is not installed", file=sys.stderr)
        return 2

    with SshdServer(ensure_test_user(), name="bench") as server:
        known_hosts = server.workdir / "known_hosts"
        known_hosts.write_text("\n".join(server.known_hosts_lines()) + "\n")
        ssh_cmd = [
            ssh, "-F", "/dev/null",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "ControlMaster=no",
            "-o", "LogLevel=ERROR",
            "-i", str(server.client_key_path),
            "-p", str(server.port),
            "-l", server.username,
            server.host,
            args.command,
        ]  # fmt: skip
        target = server.target()
        warm_pool = ConnectionPool()

        def openssh() -> None:
            done = subprocess.run(ssh_cmd, stdin=subprocess.DEVNULL, capture_output=True)
            if done.returncode != 0:
                raise RuntimeError(f"ssh failed ({done.returncode}): {done.stderr.decode()}")

        def portal_cold() -> ConnectionPool:
            pool = ConnectionPool()
            run(target, args.command, pool=pool)
            return pool  # closed after the clock stops

        def portal_warm() -> None:
            run(target, args.command, pool=warm_pool)

        runners = {"openssh": openssh, "portal-cold": portal_cold, "portal-warm": portal_warm}
        for fn in runners.values():  # warm-up: page cache, imports, first pooled connection
            leftover = fn()
            if isinstance(leftover, ConnectionPool):
                leftover.close_all()

        samples: dict[str, list[float]] = {mode: [] for mode in MODES}
        try:
            for _ in range(args.iterations):
                for mode in MODES:
                    started = time.perf_counter()
                    leftover = runners[mode]()
                    samples[mode].append((time.perf_counter() - started) * 1000)
                    if isinstance(leftover, ConnectionPool):
                        leftover.close_all()
            handshakes_warm = warm_pool.handshakes
        finally:
            warm_pool.close_all()
        openssh_version = subprocess.run([ssh, "-V"], capture_output=True, text=True).stderr.strip()

    env = {
        "command": args.command,
        "iterations": args.iterations,
        "openssh": openssh_version.split(",")[0],
        "paramiko": paramiko.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "warm_pool_handshakes": handshakes_warm,
    }
    summary = summarise(samples)
    if args.json:
        print(json.dumps({"environment": env, "results": summary}, indent=2))
    else:
        print(markdown(summary, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
