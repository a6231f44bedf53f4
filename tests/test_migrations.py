"""The schema comes only from Alembic: migrations and models must agree (SQLite and PostgreSQL)."""

from __future__ import annotations

import re

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from portal import models_registry  # noqa: F401
from portal.cli import alembic_config
from portal.db import Base, make_engine

# Search structures live only in migrations (FTS5 virtual tables, tsvector/trigram indexes).
SEARCH_ONLY = re.compile(r"(fts|_tsv|trgm|search)", re.I)


def _include(obj, name, type_, reflected, compare_to):
    if reflected and compare_to is None and name and SEARCH_ONLY.search(name):
        return False
    return True


def test_migrations_match_models(migrated_db):
    engine = make_engine(migrated_db)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": _include}
            )
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        tables = set(inspect(engine).get_table_names())
        assert {t.name for t in Base.metadata.sorted_tables} <= tables
    finally:
        engine.dispose()


def test_every_migration_is_on_a_chain_from_the_first(migrated_db):
    script = ScriptDirectory.from_config(alembic_config(migrated_db))
    bases = script.get_bases()
    assert bases == ["0001_accounts"]
    for rev in script.walk_revisions():
        assert rev.doc, f"migration {rev.revision} has no message"


def test_one_head_and_a_full_downgrade_upgrade_round_trip(tmp_path):
    """A fresh database migrates to the single head, back to nothing, and up again."""
    from alembic import command

    from portal.cli import upgrade_database

    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    script = ScriptDirectory.from_config(alembic_config(url))
    assert len(script.get_heads()) == 1
    upgrade_database(url)
    command.downgrade(alembic_config(url), "base")
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade_database(url)
    engine = make_engine(url)
    try:
        assert "machines" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
