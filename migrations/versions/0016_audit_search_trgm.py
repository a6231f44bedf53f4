"""A trigram index for the audit log's full-text filter (PostgreSQL and SQLite)

Revision ID: 0016_audit_search_trgm
Revises: 0015_refresh_mfa
Create Date: 2026-12-06 21:05:00

The audit page's "full text" filter is `search LIKE '%word%'` per word (portal.audit.services),
which no b-tree can serve: with a million events a rare word read every row (3.4 s). On
PostgreSQL a GIN index with pg_trgm's operator class serves LIKE '%word%' directly. pg_trgm is
a trusted contrib extension (PostgreSQL 13+: the database's owner may create it); where it
cannot be created the index is left out and the filter works as before, only slower.
SQLite: an external-content FTS5 table with the trigram tokenizer (SQLite 3.34+), kept in
step by triggers; portal.audit.services asks it for words of three characters or more.
"""

from alembic import op

revision = "0016_audit_search_trgm"
down_revision = "0015_refresh_mfa"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _sqlite_up()
        return
    if bind.dialect.name != "postgresql":
        return
    available = bind.exec_driver_sql(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'"
    ).first()
    if not available:
        return
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except Exception:  # no permission to create extensions: no index, a slower filter
        return
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_audit_events_search_trgm "
        "ON audit_events USING gin (search gin_trgm_ops)"
    )


def _sqlite_up() -> None:
    op.execute(
        "CREATE VIRTUAL TABLE audit_events_fts USING fts5(search, content='audit_events', "
        "content_rowid='id', tokenize='trigram')"
    )
    op.execute(
        "CREATE TRIGGER audit_events_fts_ai AFTER INSERT ON audit_events BEGIN "
        "INSERT INTO audit_events_fts(rowid, search) VALUES (new.id, new.search); END"
    )
    op.execute(
        "CREATE TRIGGER audit_events_fts_ad AFTER DELETE ON audit_events BEGIN "
        "INSERT INTO audit_events_fts(audit_events_fts, rowid, search) "
        "VALUES ('delete', old.id, old.search); END"
    )
    op.execute(
        "CREATE TRIGGER audit_events_fts_au AFTER UPDATE OF search ON audit_events BEGIN "
        "INSERT INTO audit_events_fts(audit_events_fts, rowid, search) "
        "VALUES ('delete', old.id, old.search); "
        "INSERT INTO audit_events_fts(rowid, search) VALUES (new.id, new.search); END"
    )
    op.execute("INSERT INTO audit_events_fts(audit_events_fts) VALUES ('rebuild')")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_audit_events_search_trgm")
    elif bind.dialect.name == "sqlite":
        for trigger in ("audit_events_fts_ai", "audit_events_fts_ad", "audit_events_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS audit_events_fts")
