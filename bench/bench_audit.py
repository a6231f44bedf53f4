#!/usr/bin/env python3
"""Audit log costs with 1,000,000 events: what recording one costs the request, and how fast
the /audit page and GET /api/audit answer, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_audit.py                          # both engines, 1M rows
    .venv/bin/python bench/bench_audit.py --rows 200000 --repeat 20 --pg-url ''

Databases: SQLite /tmp/portal-bench-audit.db, PostgreSQL database portal_bench_audit on the
local server (created if missing); filled with generated events when they hold fewer than
--rows. "write" is `portal.audit.log.record()` inside a request context (the only cost the
request pays: building the row and a queue put; the writer thread's insert is timed apart
as "insert / event", batches of 500). Page rows: the full Flask request through the test
client, signed in as an admin (page) or with a JWT (API). p50 / p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ACTIONS = [
    "sign_in",
    "sign_out",
    "command_run",
    "terminal_opened",
    "terminal_closed",
    "machine_updated",
    "access_granted",
    "file_transferred",
    "api_key_created",
]
PAGES = [
    ("page, no filter", "/audit", {}),
    ("page, action", "/audit", {"action": "access_granted"}),
    ("page, machine", "/audit", {"machine": "17"}),
    ("page, actor", "/audit", {"actor": "bench-user-3"}),
    ("page, time range", "/audit", {"since": "2026-03-01", "until": "2026-03-02"}),
    ("page, full-text", "/audit", {"q": "nginx"}),
    ("page, full-text rare", "/audit", {"q": "req-424242"}),
    ("page 2 (cursor)", "/audit", {"cursor": "{cursor}"}),
    ("api, no filter", "/api/audit", {}),
    ("api, action+result", "/api/audit", {"action": "sign_in", "result": "failed"}),
]
WORDS = "nginx redis postgres deploy backup rotate docker journal certificate billing".split()


def pct(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def ensure_pg(url):
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def fill(app, rows: int) -> None:
    from sqlalchemy import func, insert, select

    from portal.accounts import users
    from portal.audit.models import AuditEvent
    from portal.extensions import db

    with app.app_context():
        if db.session.scalar(select(func.count()).select_from(users.User)) == 0:
            for i in range(10):
                users.create_user(
                    email=f"bench{i}@example.test",
                    username=f"bench-user-{i}",
                    password="bench-Password-1",
                    role="admin" if i == 0 else "user",
                    check_open=False,
                )
            db.session.commit()
        have = db.session.scalar(select(func.count(AuditEvent.id))) or 0
        if have >= rows:
            _analyze(db)
            return
        rnd = random.Random(have)
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        batch = []
        t0 = time.monotonic()
        for i in range(have, rows):
            action = ACTIONS[i % len(ACTIONS)]
            uid = 1 + i % 10
            details = {"command": f"systemctl restart {rnd.choice(WORDS)} # req-{i}"}
            batch.append(
                {
                    "at": start + dt.timedelta(seconds=i * 30),
                    "actor_id": uid,
                    "actor": f"bench-user-{uid - 1}",
                    "ip": f"10.0.0.{i % 250}",
                    "user_agent": "bench",
                    "action": action,
                    "target_type": "machine",
                    "target_id": str(i % 200),
                    "target_name": f"host-{i % 200}",
                    "machine_id": i % 200,
                    "result": "failed" if i % 13 == 0 else "ok",
                    "details": details,
                    "search": f"bench-user-{uid - 1} {action} machine host-{i % 200} "
                    + json.dumps(details),
                }
            )
            if len(batch) == 20000:
                db.session.execute(insert(AuditEvent), batch)
                db.session.commit()
                batch = []
        if batch:
            db.session.execute(insert(AuditEvent), batch)
            db.session.commit()
        print(f"  filled {rows - have} rows in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        _analyze(db)


def _analyze(db) -> None:
    """Planner statistics, as autovacuum would have gathered them after a bulk load."""
    from sqlalchemy import text

    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE audit_events"))
    else:
        db.session.execute(text("ANALYZE audit_events"))
        db.session.commit()


def measure(url: str, rows: int, repeat: int) -> dict:
    from portal import create_app
    from portal.accounts import tokens
    from portal.accounts.models import User
    from portal.audit import log as audit_log
    from portal.cli import upgrade_database
    from portal.extensions import db

    upgrade_database(url)
    app = create_app({"DATABASE_URL": url, "PORTAL_INSTANCE_PATH": "/tmp/portal-bench-instance"})
    fill(app, rows)
    out = {}
    with app.app_context():
        admin = db.session.get(User, 1)
        jwt, _ = tokens.issue_jwt(admin)
        ident = admin.get_id()
    # write cost, as a request pays it
    times = []
    with app.test_request_context("/x", headers={"User-Agent": "bench"}):
        for i in range(repeat * 50):
            t = time.perf_counter()
            audit_log.record(
                app,
                "command_run",
                actor=admin,
                target_type="machine",
                target_id=i,
                target_name="host",
                machine_id=1,
                details={"command": "uptime", "exit_status": 0},
            )
            times.append((time.perf_counter() - t) * 1000)
    out["write (record)"] = (pct(times, 0.5), pct(times, 0.95))
    writer = app.extensions["portal_audit"]
    t = time.perf_counter()
    n = writer.queue.qsize()
    writer.flush()
    per = (time.perf_counter() - t) * 1000 / max(n, 1)
    out["insert / event (writer)"] = (per, per)

    client = app.test_client()
    with client.session_transaction() as s:
        s["_user_id"] = ident
        s["_fresh"] = True
    first = client.get("/api/audit", headers={"Authorization": f"Bearer {jwt}"}).get_json()
    cursor = first["next_cursor"]
    for label, path, args in PAGES:
        args = {k: v.format(cursor=cursor) for k, v in args.items()}
        headers = {"Authorization": f"Bearer {jwt}"} if path.startswith("/api") else {}
        resp = client.get(path, query_string=args, headers=headers)
        assert resp.status_code == 200, (label, resp.status_code, resp.get_data()[:300])
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            resp = client.get(path, query_string=args, headers=headers)
            resp.get_data()
            times.append((time.perf_counter() - t) * 1000)
        out[label] = (pct(times, 0.5), pct(times, 0.95))
    from portal import signals

    signals.shutdown(app)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--sqlite-url", default="sqlite:////tmp/portal-bench-audit.db")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/portal_bench_audit")
    a = ap.parse_args()
    results = {}
    if a.sqlite_url:
        results["SQLite"] = measure(a.sqlite_url, a.rows, a.repeat)
    if a.pg_url:
        ensure_pg(a.pg_url)
        results["PostgreSQL"] = measure(a.pg_url, a.rows, a.repeat)
    engines = list(results)
    print(f"{a.rows:,} events, {a.repeat} runs per row; p50 / p95 ms\n")
    print("| | " + " | ".join(engines) + " |")
    print("|---|" + "---|" * len(engines))
    for label in results[engines[0]]:
        cells = [f"{results[e][label][0]:.2f} / {results[e][label][1]:.2f}" for e in engines]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
