"""Full-text search over command logs: SQLite FTS5, PostgreSQL tsvector (GIN index).

Both engines see the same tokens: runs of letters and digits (SQLite's unicode61
tokenizer; on PostgreSQL punctuation is folded to spaces before to_tsvector). Every
query token must match; the last one also matches as a prefix when it has 3+ chars.
The schema (FTS table, triggers, GIN index) comes from migration 0002_machines.
"""

from __future__ import annotations

import re

from sqlalchemy import column, func, literal_column, table, text

from portal.extensions import db
from portal.machines.models import CommandLog

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
MAX_TOKENS = 12

# Must equal the indexed expression in migrations/versions/0002_machines.py (PG_TSV).
PG_TSV = (
    "to_tsvector('simple'::regconfig, regexp_replace(command_logs.command || ' ' || "
    "command_logs.output, '[^[:alnum:]]+', ' ', 'g'))"
)

_fts = table("command_logs_fts", column("rowid"))


def tokens(q: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(q or "")][:MAX_TOKENS]


def sqlite_match(words: list[str], machine_id: int | None) -> str:
    parts = [f'"{w}"' for w in words]
    if words and len(words[-1]) >= 3:
        parts[-1] += "*"
    expr = " AND ".join(parts)
    if machine_id is not None:
        expr = f"scope:m{int(machine_id)} AND ({expr})"
    return expr


def pg_tsquery(words: list[str]) -> str:
    parts = list(words)
    if words and len(words[-1]) >= 3:
        parts[-1] += ":*"
    return " & ".join(parts)


def apply_search(stmt, q: str, machine_id: int | None):
    """(statement narrowed to matches, column to order and page on), or None for no tokens."""
    words = tokens(q)
    if not words:
        return None
    dialect = db.session.get_bind().dialect.name
    if dialect == "sqlite":
        stmt = stmt.join(_fts, _fts.c.rowid == CommandLog.id).where(
            text("command_logs_fts MATCH :fts_q").bindparams(fts_q=sqlite_match(words, machine_id))
        )
        if machine_id is not None:
            stmt = stmt.where(CommandLog.machine_id == machine_id)
        return stmt, _fts.c.rowid
    if dialect == "postgresql":
        stmt = stmt.where(
            literal_column(PG_TSV).op("@@")(
                func.to_tsquery(literal_column("'simple'::regconfig"), pg_tsquery(words))
            )
        )
        if machine_id is not None:
            stmt = stmt.where(CommandLog.machine_id == machine_id)
        return stmt, CommandLog.id
    like = f"%{q}%"  # other engines: a plain substring match
    stmt = stmt.where(CommandLog.command.like(like) | CommandLog.output.like(like))
    if machine_id is not None:
        stmt = stmt.where(CommandLog.machine_id == machine_id)
    return stmt, CommandLog.id
