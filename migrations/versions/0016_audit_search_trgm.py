"""PostgreSQL: a trigram index for the audit log's full-text filter

Revision ID: 0016_audit_search_trgm
Revises: 0015_refresh_mfa
Create Date: 2026-12-06 21:05:00

The audit page's "full text" filter is `search LIKE '%word%'` per word (portal.audit.services),
which no b-tree can serve: with a million events a rare word read every row (3.4 s). On
PostgreSQL a GIN index with pg_trgm's operator class serves LIKE '%word%' directly. pg_trgm is
a trusted contrib extension (PostgreSQL 13+: the database's owner may create it); where it
cannot be created the index is left out and the filter works as before, only slower. SQLite
keeps the plain scan (docs/audit.md).
"""

from alembic import op

revision = "0016_audit_search_trgm"
down_revision = "0015_refresh_mfa"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
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


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_audit_events_search_trgm")
