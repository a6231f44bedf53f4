#!/usr/bin/env python3
"""Generate N realistic command-log rows, fast, into a portal database.

    .venv/bin/python bench/gen_logs.py --url sqlite:////tmp/bench.db -n 1000000
    .venv/bin/python bench/gen_logs.py --url postgresql://postgres@127.0.0.1/bench -n 1000000

Migrates the database first (Alembic, so the FTS5 table + triggers / the GIN index
exist exactly as in production), creates one user and --machines machines, then
inserts rows: SQLite with executemany in large transactions (the FTS triggers fire per
row, as in production); PostgreSQL with COPY (the GIN index is dropped during the load
and rebuilt after, then ANALYZE).

Rows look like an ops team's history: ~60 command templates over services, paths and
namespaces; outputs with status lines, errors and a per-row request id (so there are
frequent, medium and unique terms to search for).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVICES = [
    "nginx",
    "postgres",
    "redis",
    "sshd",
    "docker",
    "kubelet",
    "haproxy",
    "cron",
    "rsyslog",
    "grafana",
    "prometheus",
    "node-exporter",
    "gunicorn",
    "celery",
    "vault",
]
NAMESPACES = ["default", "kube-system", "monitoring", "payments", "search", "staging", "ingress"]
APPS = ["shop", "billing", "auth", "catalog", "mailer", "reports", "gateway", "cdn"]
WORDS = [
    "timeout",
    "refused",
    "permission",
    "denied",
    "restarted",
    "degraded",
    "healthy",
    "upstream",
    "certificate",
    "expired",
    "disk",
    "memory",
    "oom",
    "latency",
    "retry",
    "backup",
    "snapshot",
    "rotated",
    "migration",
    "deadlock",
    "replica",
    "lag",
    "quota",
]
COMMANDS = [
    "systemctl restart {svc}",
    "systemctl status {svc}",
    "journalctl -u {svc} --since today",
    "tail -n 100 /var/log/{svc}/error.log",
    "df -h",
    "free -m",
    "uptime",
    "docker ps",
    "docker logs --tail 50 {app}",
    "kubectl get pods -n {ns}",
    "kubectl describe pod {app}-{n}",
    "kubectl rollout restart deployment/{app} -n {ns}",
    "ls -la /srv/{app}",
    "cat /etc/os-release",
    "ps aux | grep {svc}",
    "grep -ri {word} /etc/{svc}",
    "apt-get update",
    "apt-get install -y {svc}",
    "curl -sI https://{app}.internal/health",
    "du -sh /var/lib/{svc}",
    "git -C /srv/{app} pull",
    "./deploy.sh {app} {ns}",
    "pg_dump {app} > /backups/{app}.sql",
    "redis-cli info replication",
    "openssl x509 -enddate -noout -in /etc/ssl/{app}.pem",
    "ss -tlnp",
    "ip a",
    "uname -a",
    "find /var/log -name '*.gz' -mtime +30 -delete",
    "crontab -l",
    "nginx -t",
    "id",
    "tar czf /tmp/{app}.tgz /srv/{app}",
    "rsync -a /srv/{app} backup:/srv/",
    "whoami",
]
OUTPUTS_OK = [
    "active (running) since {date}; {svc}.service - {svc} daemon",
    "Filesystem Size Used Avail Use% Mounted on /dev/vda1 50G {n}G {m}G {p}% /",
    "{app}-{n} 1/1 Running 0 {n}d",
    "load average: 0.{n}, 0.{m}, 0.{p}",
    "HTTP/2 200 content-type: application/json x-request-id: req-{rid}",
    "ok: {svc} configuration test is successful",
    "Already up to date.",
    "{n} packages can be upgraded. request req-{rid}",
    "",
]
OUTPUTS_FAIL = [
    "Job for {svc}.service failed because the control process exited with error code. req-{rid}",
    "{word}: connection {word2} while connecting to upstream {app}:{n}",
    'Error from server (NotFound): pods "{app}-{n}" not found in namespace {ns}',
    "E: Unable to locate package {svc}-{word}",
    "curl: (28) Operation timed out after 10000 milliseconds req-{rid}",
    "permission denied: /var/lib/{svc}/{word}.lock",
    "certificate has expired: notAfter={date} for {app}.internal",
]


def fake_rows(n: int, machine_ids: list[int], user_id: int, seed: int = 42):
    rnd = random.Random(seed)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    step = dt.timedelta(seconds=max(1, int(300 * 24 * 3600 / max(n, 1))))
    for i in range(n):
        ctx = {
            "svc": rnd.choice(SERVICES),
            "ns": rnd.choice(NAMESPACES),
            "app": rnd.choice(APPS),
            "word": rnd.choice(WORDS),
            "word2": rnd.choice(WORDS),
            "n": rnd.randint(1, 99),
            "m": rnd.randint(1, 99),
            "p": rnd.randint(1, 99),
            "rid": f"{rnd.getrandbits(40):010x}",
            "date": (start + step * i).strftime("%Y-%m-%d"),
        }
        failed = rnd.random() < 0.12
        command = rnd.choice(COMMANDS).format(**ctx)
        output = rnd.choice(OUTPUTS_FAIL if failed else OUTPUTS_OK).format(**ctx)
        exit_code = rnd.choice([1, 2, 127, 255]) if failed else 0
        yield (
            machine_ids[i % len(machine_ids)],
            user_id,
            None,
            rnd.choice(["api", "terminal", "broadcast"]),
            command,
            exit_code,
            output,
            rnd.randint(3, 4000),
            start + step * i,
        )


def setup(url: str, machines: int) -> tuple[list[int], int]:
    from sqlalchemy import select

    from portal.cli import upgrade_database
    from portal.db import make_engine
    from portal.machines.models import Machine

    upgrade_database(url)
    engine = make_engine(url)
    from sqlalchemy.orm import Session

    from portal.accounts.models import User

    with Session(engine) as s:
        user = s.scalar(select(User).where(User.username == "bench"))
        if user is None:
            user = User(
                email="bench@example.test", username="bench", username_key="bench", role="admin"
            )
            s.add(user)
            s.flush()
        ids = list(
            s.scalars(select(Machine.id).where(Machine.owner_id == user.id).order_by(Machine.id))
        )
        for i in range(len(ids), machines):
            m = Machine(
                name=f"bench-{i}",
                host=f"10.0.0.{i + 1}",
                username="ops",
                owner_id=user.id,
                auth_method="password",
                status="online",
            )
            s.add(m)
            s.flush()
            ids.append(m.id)
        s.commit()
        uid = user.id
    engine.dispose()
    return ids[:machines], uid


def load_sqlite(url: str, rows, batch: int = 50_000) -> None:
    import sqlite3

    path = url.split("sqlite:///", 1)[1]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    sql = (
        "INSERT INTO command_logs (machine_id, user_id, session_id, source, command, exit_code, "
        "output, duration_ms, created_at) VALUES (?,?,?,?,?,?,?,?,?)"
    )
    buf = []
    for r in rows:
        buf.append(r[:8] + (r[8].replace(tzinfo=None).isoformat(sep=" "),))
        if len(buf) >= batch:
            conn.executemany(sql, buf)
            conn.commit()
            buf.clear()
    if buf:
        conn.executemany(sql, buf)
        conn.commit()
    conn.execute("INSERT INTO command_logs_fts(command_logs_fts) VALUES('optimize')")
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


def load_postgres(url: str, rows) -> None:
    import re

    import psycopg

    plain = re.sub(r"^postgresql(\+psycopg)?://", "postgresql://", url)
    with psycopg.connect(plain) as conn:
        # Rebuilt after the load exactly as the migration defined it (faster than per row).
        indexdef = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_command_logs_search'"
        ).fetchone()[0]
        conn.execute("DROP INDEX IF EXISTS ix_command_logs_search")
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY command_logs (machine_id, user_id, session_id, source, command, exit_code, "
                "output, duration_ms, created_at) FROM STDIN"
            ) as copy,
        ):
            for r in rows:
                copy.write_row(r)
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(indexdef)
        conn.execute("ANALYZE command_logs")
        conn.commit()


def count(url: str) -> int:
    from sqlalchemy import func, select

    from portal.db import make_engine
    from portal.machines.models import CommandLog

    engine = make_engine(url)
    with engine.connect() as c:
        n = c.scalar(select(func.count(CommandLog.id)))
    engine.dispose()
    return n


def generate(url: str, n: int, machines: int = 10, seed: int = 42) -> float:
    ids, uid = setup(url, machines)
    have = count(url)
    if have >= n:
        return 0.0
    started = time.perf_counter()
    rows = fake_rows(n - have, ids, uid, seed=seed + have)
    if url.startswith("sqlite"):
        load_sqlite(url, rows)
    else:
        load_postgres(url, rows)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="DATABASE_URL (sqlite:///... or postgresql://...)")
    ap.add_argument("-n", type=int, default=1_000_000, help="rows wanted in total (default 1M)")
    ap.add_argument("--machines", type=int, default=10)
    args = ap.parse_args()
    took = generate(args.url, args.n, args.machines)
    print(f"{count(args.url)} rows in {args.url} (this run: {took:.1f} s)")


if __name__ == "__main__":
    main()
