"""Dashboard and command-log pages with a large history, SQLite and PostgreSQL side by side.

    .venv/bin/python bench/bench_pages.py                      # 1,000 machines, 1,000,000 logs
    .venv/bin/python bench/bench_pages.py --rows 200000 -n 50  # quicker
    .venv/bin/python bench/bench_pages.py --engines sqlite     # no PostgreSQL at hand
    .venv/bin/python bench/bench_pages.py --proposed-indexes   # add the indexes proposed in docs

Each engine gets a fresh database migrated to every head (SQLite in a temp dir; PostgreSQL: a
throwaway database created next to DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/
postgres, dropped afterwards). Rows go in with bulk inserts (executemany / COPY), logs spread
over 90 days in time order, about 5% failing. Requests run in-process through Flask's test
client (app + database cost; no network), as a global admin and as a user who sees 12
machines, after a warm-up. Prints a Markdown table of p50 / p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PASSWORD = "bench-Password-123"
DAYS = 90

# Indexes this benchmark motivates on command_logs (owned by the machines migration).
PROPOSED_INDEXES = [
    "CREATE INDEX IF NOT EXISTS ix_command_logs_created_at_exit_code ON command_logs (created_at, exit_code)",
    "CREATE INDEX IF NOT EXISTS ix_command_logs_machine_id_created_at ON command_logs (machine_id, created_at, exit_code)",
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- databases


def sqlite_db(tmp: str) -> tuple[str, callable]:
    return f"sqlite:///{os.path.join(tmp, 'bench.db')}", lambda: None


def postgres_db(base_url: str) -> tuple[str, callable]:
    import psycopg

    admin = re.sub(r"^postgresql(\+psycopg)?://", "postgresql://", base_url)
    name = f"portal_pagebench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        from portal.extensions import db

        if db.engine is not None:
            db.engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')

    return admin.rsplit("/", 1)[0] + "/" + name, drop


# ---------------------------------------------------------------- data


def fmt_ts(value: dt.datetime, engine: str):
    # What portal.db.UTCDateTime stores: naive UTC text on SQLite, timestamptz on PostgreSQL.
    if engine == "sqlite":
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


COMMANDS = ["uptime", "df -h", "systemctl status nginx", "journalctl -u app -n 50", "ls -la /var/log",
            "docker ps", "apt-get update", "free -m", "cat /etc/os-release", "git pull"]  # fmt: skip


def generate(app, url: str, engine: str, machines: int, rows: int, seed: int = 7) -> dict:
    from portal.accounts import users as accounts
    from portal.extensions import db

    rnd = random.Random(seed)
    with app.app_context():
        admin = accounts.create_user(email="admin@bench.test", username="benchadmin", password=PASSWORD,
                                     role="admin", check_open=False)  # fmt: skip
        user = accounts.create_user(email="user@bench.test", username="benchuser", password=PASSWORD,
                                    role="user", check_open=False)  # fmt: skip
        others = [
            accounts.create_user(
                email=f"u{i}@bench.test",
                username=f"benchu{i}",
                password=PASSWORD,
                role="user",
                check_open=False,
            )  # fmt: skip
            for i in range(3)
        ]
        db.session.commit()
        uids = [admin.id, user.id] + [o.id for o in others]
        admin_id, user_id = admin.id, user.id

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    start = now - dt.timedelta(days=DAYS)
    t0 = time.perf_counter()
    machine_rows = []
    for i in range(machines):
        owner = user_id if i < 2 else rnd.choice([u for u in uids if u != user_id])
        machine_rows.append((
            secrets.token_urlsafe(16), f"host-{i:04d}", f"10.{i // 250}.{i % 250}.10", 22, "deploy",
            "password", "", rnd.choice(["online", "online", "offline", "error"]), "bench", owner,
            fmt_ts(start, engine), fmt_ts(now - dt.timedelta(minutes=rnd.randint(0, 60 * 24 * 30)), engine),
        ))  # fmt: skip
    # Log times in order (ids follow time, as in real use); machine popularity is skewed.
    weights = [1.0 / (1 + i) ** 0.6 for i in range(machines)]
    span = (now - start).total_seconds()
    stamps = sorted(rnd.random() * span for _ in range(rows))
    mids = rnd.choices(range(1, machines + 1), weights=weights, k=rows)

    def log_rows():
        for k in range(rows):
            code = 0 if rnd.random() > 0.05 else rnd.choice([1, 2, 127])
            cmd = COMMANDS[k % len(COMMANDS)]
            yield (mids[k], uids[k % len(uids)], "api" if k % 3 else "terminal", cmd, code,
                   f"{cmd}: ok\n" if code == 0 else f"{cmd}: failed\n", rnd.randint(3, 900),
                   fmt_ts(start + dt.timedelta(seconds=stamps[k]), engine))  # fmt: skip

    mcols = ("agent_id, name, host, port, username, auth_method, host_keys, status, tags, owner_id, "
             "created_at, last_seen_at")  # fmt: skip
    lcols = "machine_id, user_id, source, command, exit_code, output, duration_ms, created_at"
    if engine == "sqlite":
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///") :])
        conn.execute("PRAGMA synchronous=OFF")
        conn.executemany(
            f"INSERT INTO machines ({mcols}) VALUES ({','.join('?' * 12)})", machine_rows
        )
        conn.executemany(
            f"INSERT INTO command_logs ({lcols}) VALUES ({','.join('?' * 8)})", log_rows()
        )
        _extras_sqlite(conn, user_id, machines, now, rnd)
        conn.commit()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            with conn.cursor() as cur:
                with cur.copy(f"COPY machines ({mcols}) FROM STDIN") as cp:
                    for r in machine_rows:
                        cp.write_row(r)
                with cur.copy(f"COPY command_logs ({lcols}) FROM STDIN") as cp:
                    for r in log_rows():
                        cp.write_row(r)
                _extras_pg(cur, user_id, machines, now, rnd)
            conn.commit()
    log(f"  {engine}: {machines} machines + {rows:,} logs in {time.perf_counter() - t0:.1f} s")
    return {"admin_id": admin_id, "user_id": user_id}


def _access_rows(user_id, machines, rnd):
    return [
        (m, user_id, "operator" if m % 2 else "viewer")
        for m in rnd.sample(range(3, machines + 1), 10)
    ]


def _session_rows(machines, now, rnd, engine):
    return [(str(uuid.uuid4()), rnd.randint(1, machines), 1 + (i % 5), rnd.choice(["active", "detached", "closed"]),
             80, 24, 0, 0, False, fmt_ts(now - dt.timedelta(minutes=i), engine)) for i in range(300)]  # fmt: skip


SCOLS = "id, machine_id, user_id, status, cols, rows, bytes_in, bytes_out, shared, started_at"


def _extras_sqlite(conn, user_id, machines, now, rnd):
    conn.executemany("INSERT INTO machine_access (machine_id, user_id, role, granted_at) VALUES (?,?,?,CURRENT_TIMESTAMP)",
                     _access_rows(user_id, machines, rnd))  # fmt: skip
    if _has_table(conn, "terminal_sessions"):
        conn.executemany(f"INSERT INTO terminal_sessions ({SCOLS}) VALUES ({','.join('?' * 10)})",
                         _session_rows(machines, now, rnd, "sqlite"))  # fmt: skip


def _extras_pg(cur, user_id, machines, now, rnd):
    cur.executemany("INSERT INTO machine_access (machine_id, user_id, role, granted_at) VALUES (%s,%s,%s,now())",
                    _access_rows(user_id, machines, rnd))  # fmt: skip
    cur.execute("SELECT to_regclass('terminal_sessions')")
    if cur.fetchone()[0]:
        cur.executemany(f"INSERT INTO terminal_sessions ({SCOLS}) VALUES ({','.join(['%s'] * 10)})",
                        _session_rows(machines, now, rnd, "postgresql"))  # fmt: skip


def _has_table(conn, name) -> bool:
    return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone())


# ---------------------------------------------------------------- measuring


def sign_in(client, username: str) -> None:
    html = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    r = client.post("/login", data={"login": username, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303, r.status_code


def measure(client, path: str, n: int, headers=None) -> dict:
    t = time.perf_counter()
    r = client.get(path, headers=headers or {})
    cold = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        return {"error": r.status_code}
    for _ in range(3):
        client.get(path, headers=headers or {})
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path, headers=headers or {})
        samples.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(round(0.95 * len(samples))) - 1)]
    return {"p50": statistics.median(samples), "p95": p95, "cold": cold}


def run_engine(engine: str, args) -> dict:
    from portal import create_app
    from portal.cli import upgrade_database

    tmp = tempfile.mkdtemp(prefix="portal-pagebench-")
    url, drop = sqlite_db(tmp) if engine == "sqlite" else postgres_db(args.pg_url)
    results: dict = {}
    try:
        upgrade_database(url)
        app = create_app({
            "DATABASE_URL": url, "PORTAL_INSTANCE_PATH": os.path.join(tmp, "instance"),
            "SECRET_KEY": "bench-" + "0" * 40, "PORTAL_AUTH_RATE_LIMIT": "10000 per minute",
            "RATELIMIT_ENABLED": False,
        })  # fmt: skip
        ids = generate(app, url, engine, args.machines, args.rows)
        from sqlalchemy import text

        from portal.extensions import db

        with app.app_context():
            if args.proposed_indexes:
                for ddl in PROPOSED_INDEXES:
                    db.session.execute(text(ddl))
            db.session.commit()
        # What a running database has after autovacuum: statistics, and on PostgreSQL a set
        # visibility map (index-only scans) and hint bits.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE" if engine == "postgresql" else "ANALYZE"))
        with app.app_context():
            busy = db.session.execute(text(
                "SELECT m.agent_id FROM machines m JOIN command_logs l ON l.machine_id = m.id "
                "WHERE m.id = 1 LIMIT 1")).scalar()  # fmt: skip
            mine = db.session.execute(
                text("SELECT agent_id FROM machines WHERE owner_id = :u ORDER BY id LIMIT 1"),
                {"u": ids["user_id"]},
            ).scalar()
        paths = [
            ("GET /dashboard (page)", "/dashboard"),
            ("GET /dashboard/live (10 s poll)", "/dashboard/live"),
            ("GET /api/dashboard/stats", "/api/dashboard/stats"),
            ("GET /api/dashboard/recent-machines", "/api/dashboard/recent-machines"),
            ("GET /api/dashboard/recent-activity", "/api/dashboard/recent-activity"),
        ]
        endpoints = set(app.view_functions)
        log_paths = []
        if "machines_api.logs" in endpoints:
            log_paths.append(("GET /api/machines/:id/logs", "/api/machines/{a}/logs"))
        if "machines_api.logs_search" in endpoints:
            log_paths.append(
                (
                    "GET /api/machines/:id/logs/search?q=nginx",
                    "/api/machines/{a}/logs/search?q=nginx",
                )
            )
        if "machines.logs" in endpoints:
            log_paths.append(("GET /machines/:id/logs (page part)", "/machines/{a}/logs"))
        if "machines.detail" in endpoints:
            log_paths.append(("GET /machines/:id (page)", "/machines/{a}"))
        for who, username, agent in (("admin", "benchadmin", busy), ("user", "benchuser", mine)):
            client = app.test_client()
            sign_in(client, username)
            for label, path in paths + [(lbl, p.format(a=agent)) for lbl, p in log_paths]:
                results[(label, who)] = measure(client, path, args.n)
                log(f"  {engine} {who:5} {label}: {results[(label, who)]}")
        from portal.dashboard import services as dash

        dash.clear_cache()
    finally:
        from portal.extensions import db

        db.session.remove()
        if db.engine is not None:
            db.engine.dispose()
        drop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--machines", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("-n", type=int, default=100, help="timed requests per endpoint and user")
    ap.add_argument("--engines", default="sqlite,postgresql")
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    ap.add_argument("--proposed-indexes", action="store_true", help="also create PROPOSED_INDEXES")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    all_results = {}
    for engine in engines:
        log(f"{engine}: generating and measuring ...")
        all_results[engine] = run_engine(engine, args)
    keys = list(dict.fromkeys(k for res in all_results.values() for k in res))
    head = (
        "| endpoint | as | " + " | ".join(f"{e} p50 | {e} p95 | {e} first" for e in engines) + " |"
    )
    print(f"\n{args.machines:,} machines, {args.rows:,} command logs, n={args.n}, in-process test client, ms"
          f"{' (+ proposed indexes)' if args.proposed_indexes else ''}\n")  # fmt: skip
    print(head)
    print("|---|---|" + "---:|" * (3 * len(engines)))
    for label, who in keys:
        cells = []
        for e in engines:
            r = all_results[e].get((label, who), {})
            if "p95" in r:
                cells += [
                    f"{r['p50']:.1f}",
                    f"**{r['p95']:.1f}**" if r["p95"] > 30 else f"{r['p95']:.1f}",
                    f"{r['cold']:.0f}",
                ]
            else:
                cells += [str(r.get("error", "-"))] * 3
        print(f"| {label} | {who} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
