"""Engine, sessions and the declarative base. Services flush; the boundary commits.

One unit of work per request, CLI command or background job. Services only flush; the
request boundary (`Database.init_app`) commits once when the response succeeds (< 400) and
rolls back otherwise, and a CLI command or background job wraps its work in
`db.unit_of_work()`. Only three named helpers end a transaction early: `release()` (before
slow I/O outside the database), `commit_now(reason)` (work that must stick although the
request may still fail, or that must exist before an effect that cannot be undone) and
`fail_request(reason)` (a failure answered with a redirect). See docs/architecture.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from flask import g
from sqlalchemy import DateTime, MetaData, create_engine, event, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, scoped_session, sessionmaker
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every engine (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, as the API promises."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


_WRITE_SQL = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.I)


def _create_sqlite_file(url: str) -> None:
    """Create a new SQLite database file as mode 0600 before SQLite does (it would use 0644
    less the umask). Its -wal and -shm files take the database file's mode."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    if os.path.isdir(os.path.dirname(os.path.abspath(path))):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass


def make_engine(url: str, pool_timeout: float = 10) -> Engine:
    if url.startswith("sqlite"):
        _create_sqlite_file(url)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # A request waits at most `pool_timeout` s (PORTAL_DB_POOL_TIMEOUT, default 10) for a
    # pooled connection, then answers 503 (web._db_busy).
    kwargs: dict = {"pool_pre_ping": True, "future": True, "pool_timeout": pool_timeout}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs.update(pool_size=10, max_overflow=20, pool_recycle=1800)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # The driver's own implicit BEGIN is turned off; see _begin_immediate_on_write.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "before_cursor_execute")
        def _begin_immediate_on_write(conn, cursor, statement, params, context, executemany):
            # SQLite cannot upgrade a read snapshot to a write once another connection has
            # committed ("database is locked" at once, no busy wait). So reads run outside a
            # transaction and the first write of a unit of work takes the write lock up front:
            # writers then queue on busy_timeout instead of failing, readers never block.
            dbapi_conn = conn.connection.dbapi_connection
            if not dbapi_conn.in_transaction and _WRITE_SQL.match(statement):
                dbapi_conn.execute("BEGIN IMMEDIATE")

    return engine


_FAILED = "_portal_db_failed"  # flask.g key set by fail_request


class Database:
    """One engine per app; `session` is a thread-local scoped session."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.session = scoped_session(sessionmaker(expire_on_commit=False))

    def init_app(self, app) -> None:
        # One portal app per process: a new app (tests make many) replaces the old engine.
        if self.engine is not None:
            self.session.remove()
            self.engine.dispose()
        self.engine = make_engine(
            app.config["DATABASE_URL"], float(app.config.get("PORTAL_DB_POOL_TIMEOUT", 10))
        )
        self.session.configure(bind=self.engine)
        app.extensions["portal_db"] = self

        @app.after_request
        def _commit(response):
            # One commit per request; a failed request (>= 400, or a failure answered with a
            # redirect: fail_request) changes nothing.
            try:
                if response.status_code < 400 and not g.get(_FAILED):
                    self.session.commit()
                else:
                    self.session.rollback()
            except Exception:
                self.session.rollback()
                raise
            return response

        @app.teardown_appcontext
        def _remove(exc):
            if exc is not None:
                self.session.rollback()
            self.session.remove()

    def release(self) -> None:
        """Commit the request's work so far and give its DB connection back to the pool
        before slow work outside the database (an SSH handshake, a remote command).

        Holding it would let a handful of slow commands exhaust the pool (every other
        request then waits 30 s and fails), and on SQLite a flushed write would keep the
        database's write lock for the whole command. ORM objects stay usable
        (expire_on_commit=False); the next query takes a connection again.
        """
        self.session.commit()

    def commit_now(self, reason: str) -> None:
        """Commit the unit of work so far, now, instead of at the boundary. `reason` says why
        (it is logged at debug level); the only two good ones:

        - the work must stick although this request then fails (a reused refresh token
          revokes its whole family, and the request answers 401);
        - the rows must exist before an effect that no rollback can undo (`login_user` puts
          a new account's id in the session cookie, which is sent even when the boundary's
          commit fails: the id of a rolled-back row could later name someone else).

        The rest of the request is a new unit of work that the boundary commits or rolls
        back as usual.
        """
        log.debug("early commit: %s", reason)
        self.session.commit()

    def fail_request(self, reason: str) -> None:
        """This request failed although it answers with a success status (a redirect that
        reports the failure in a flash message): roll its work back now, and make the
        boundary roll back instead of committing. `reason` is logged at debug level."""
        log.debug("request failed: %s", reason)
        self.session.rollback()
        g.setdefault(_FAILED, reason)

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """The boundary of a CLI command or background job (inside an app context): commits
        when the block ends, rolls back when it raises (and re-raises)."""
        try:
            yield
            self.session.commit()
        except BaseException:
            self.session.rollback()
            raise

    def spend_once(self, model, row_id: int, *still_valid, **values) -> bool:
        """Mark a one-time row (an invite, a refresh or registration token) used: set `values`
        with one conditional UPDATE that matches only while `used_at` is NULL and
        `still_valid` holds. Of concurrent spenders exactly one matches (the others wait for
        its row lock, then find it used); True for that one."""
        done = self.session.execute(
            update(model)
            .where(model.id == row_id, model.used_at.is_(None), *still_valid)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return done.rowcount == 1

    def new_session(self):
        """A session outside the request cycle (threads, CLI); caller commits and closes."""
        return sessionmaker(bind=self.engine, expire_on_commit=False)()
