#!/usr/bin/env python3
"""Command-log search latency over 1,000,000 rows: SQLite (FTS5) and PostgreSQL (tsvector
GIN) side by side, through the portal's own code path (portal.machines.logs.search_logs: ORM query,
filters, keyset page of 50).

    .venv/bin/python bench/bench_search.py                      # both engines, 1M rows
    .venv/bin/python bench/bench_search.py --rows 200000 --repeat 10
    .venv/bin/python bench/bench_search.py --sqlite-url sqlite:////tmp/b.db --pg-url ''

The databases are filled by bench/gen_logs.py when they hold fewer rows than --rows
(SQLite: /tmp/portal-bench-search.db; PostgreSQL: a database named portal_bench on the
local server, created if missing). Each query runs --repeat times after one warm-up;
the table shows p50 / p95 in milliseconds. Target: <= 100 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gen_logs import count, generate  # noqa: E402

# (label, query args). Terms span frequent (nginx: ~1 row in 15), medium, rare, unique-ish,
# prefixes, two-term AND, filters (exit code, user, time range), no match, and page 2.
QUERIES = [
    ("frequent term", {"q": "nginx"}),
    ("two terms", {"q": "restart nginx"}),
    ("medium term", {"q": "deadlock"}),
    ("rare combo", {"q": "certificate expired billing"}),
    ("prefix", {"q": "journ"}),
    ("failed only", {"q": "timeout", "exit_code": "failed"}),
    ("user filter", {"q": "postgres", "user": "bench"}),
    (
        "time range",
        {"q": "docker", "since": "2026-06-01T00:00:00Z", "until": "2026-07-01T00:00:00Z"},
    ),
    ("no match", {"q": "zzzznotthere"}),
    ("unique id", {"q": "req-{rid}"}),
    ("page 2 (cursor)", {"q": "redis", "cursor": "{cursor}"}),
]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def measure(url: str, repeat: int) -> dict[str, tuple[float, float, int]]:
    from sqlalchemy import select

    from portal import create_app
    from portal.extensions import db
    from portal.machines import logs as machine_logs
    from portal.machines.models import CommandLog, Machine

    app = create_app({"DATABASE_URL": url, "PORTAL_INSTANCE_PATH": "/tmp/portal-bench-instance"})
    results = {}
    with app.app_context():
        machine = db.session.scalar(select(Machine).where(Machine.name == "bench-0"))
        owner = machine.owner  # the bench user (gen_logs.py); searches run as them
        some = db.session.scalar(
            select(CommandLog.output)
            .where(CommandLog.output.like("%req-%"), CommandLog.machine_id == machine.id)
            .limit(1)
        )
        rid = some.split("req-", 1)[1].split()[0] if some else "0"
        _, cursor = machine_logs.search_logs(owner, machine, {"q": "redis"})
        for label, args in QUERIES:
            args = {k: v.format(rid=rid, cursor=cursor or "") for k, v in args.items()}
            times, n = [], 0
            for i in range(repeat + 1):
                t0 = time.perf_counter()
                rows, _ = machine_logs.search_logs(owner, machine, args)
                elapsed = (time.perf_counter() - t0) * 1000
                db.session.rollback()
                if i:  # the first run warms caches
                    times.append(elapsed)
                n = len(rows)
            results[label] = (pct(times, 0.5), pct(times, 0.95), n)
    db.engine.dispose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--machines", type=int, default=10)
    ap.add_argument("--sqlite-url", default="sqlite:////tmp/portal-bench-search.db")
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/portal_bench"),
    )
    args = ap.parse_args()

    engines = []
    if args.sqlite_url:
        engines.append(("SQLite FTS5", args.sqlite_url))
    if args.pg_url:
        try:
            import psycopg

            base, name = args.pg_url.rsplit("/", 1)
            with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
                if not conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                ).fetchone():
                    conn.execute(f'CREATE DATABASE "{name}"')
            engines.append(("PostgreSQL tsvector", args.pg_url))
        except Exception as exc:  # no server: SQLite only
            print(f"(PostgreSQL skipped: {exc})", file=sys.stderr)

    results = {}
    sizes = {}
    for label, url in engines:
        took = generate(url, args.rows, args.machines)
        if took:
            print(f"{label}: generated rows in {took:.0f} s", file=sys.stderr)
        sizes[label] = count(url)
        results[label] = measure(url, args.repeat)

    print(
        f"\nCommand-log search, p50 / p95 ms over {args.repeat} runs, page of 50, one machine's "
        f"log ({args.machines} machines)"
    )
    print(
        f"Rows: {', '.join(f'{k} {v:,}' for k, v in sizes.items())}. Host: {platform.node()}, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}\n"
    )
    header = "| query | " + " | ".join(f"{e} p50 | p95 | hits" for e in results) + " |"
    print(header)
    print("|" + "---|" * (1 + 3 * len(results)))
    for qlabel, _ in QUERIES:
        cells = []
        for e in results:
            p50, p95, n = results[e][qlabel]
            cells.append(f"{p50:.1f} | {p95:.1f} | {n}")
        print(f"| {qlabel} | " + " | ".join(cells) + " |")
    for e in results:
        worst = max(v[1] for v in results[e].values())
        allp50 = statistics.median(v[0] for v in results[e].values())
        print(
            f"\n{e}: median of p50s {allp50:.1f} ms, worst p95 {worst:.1f} ms "
            f"({'within' if worst <= 100 else 'OVER'} the 100 ms target)"
        )


if __name__ == "__main__":
    main()
