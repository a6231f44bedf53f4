"""Shared fixtures: a migrated database (SQLite, or PostgreSQL when DATABASE_URL says so),
the app, a client, user factories and auth helpers. Real sshd, OIDC provider and browser
fixtures live in tests/fixtures/ and are loaded as plugins."""

from __future__ import annotations

import os
import re
import uuid

import pytest
from sqlalchemy import text

pytest_plugins = [
    "tests.fixtures.sshd",
    "tests.fixtures.oidc_provider",
    "tests.fixtures.browser",
    "tests.fixtures.machines",
    "tests.fixtures.terminal",
]

PASSWORD = "pw-Portal-test-42"


def _pg_admin_url(url: str) -> str:
    return re.sub(r"^postgresql(\+psycopg)?://", "postgresql://", url)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """SQLite in a temp dir by default; with DATABASE_URL=postgresql://..., a dedicated
    database created for this run and dropped after it (never the one named)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgresql"):
        path = tmp_path_factory.mktemp("db") / "portal.db"
        yield f"sqlite:///{path}"
        return
    import psycopg

    admin = _pg_admin_url(url)
    name = f"portal_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        from portal.extensions import db

        if db.engine is not None:
            db.engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def migrated_db(database_url):
    from portal.cli import upgrade_database

    upgrade_database(database_url)
    return database_url


def _truncate_all(engine) -> None:
    from sqlalchemy import inspect

    from portal import models_registry  # noqa: F401
    from portal.db import Base

    existing = set(inspect(engine).get_table_names())
    tables = [t for t in reversed(Base.metadata.sorted_tables) if t.name in existing]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(t.delete())
            # FTS shadow tables and other raw tables added by migrations
            for name in conn.execute(
                text("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%_fts'")
            ).scalars():
                conn.execute(text(f'DELETE FROM "{name}"'))


@pytest.fixture
def app_config(migrated_db, tmp_path):
    return {
        "TESTING": True,
        "DATABASE_URL": migrated_db,
        "PORTAL_INSTANCE_PATH": str(tmp_path / "instance"),
        "SECRET_KEY": "test-secret-" + uuid.uuid4().hex,
        "PORTAL_AUTH_RATE_LIMIT": "1000 per minute",
        "PORTAL_ARGON2_PROFILE": "cheapest",  # honoured only with TESTING (production unchanged)
        "PORTAL_UPLOADS_DIR": str(tmp_path / "uploads"),
        "PORTAL_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "SERVER_NAME": None,
    }


@pytest.fixture
def app(app_config):
    from portal import create_app, signals
    from portal.extensions import db

    app = create_app(app_config)
    yield app
    db.session.remove()
    signals.shutdown(app)
    _truncate_all(db.engine)
    db.engine.dispose()


@pytest.fixture
def dbs(app):
    """The request-scoped session, usable directly in a test (inside an app context)."""
    from portal.extensions import db

    with app.app_context():
        yield db.session


@pytest.fixture
def make_user(app):
    """Factory: make_user("bob", role="admin") -> User (committed)."""
    from portal.accounts import users
    from portal.extensions import db

    counter = {"n": 0}

    def _make(
        username: str | None = None,
        *,
        role: str = "user",
        password: str = PASSWORD,
        email: str | None = None,
        active: bool = True,
    ):
        counter["n"] += 1
        username = username or f"user{counter['n']}"
        with app.app_context():
            user = users.create_user(
                email=email or f"{username}@example.test",
                username=username,
                password=password,
                role=role,
                check_open=False,
            )
            user.active = active
            db.session.commit()
            db.session.refresh(user)
            db.session.expunge(user)
            return user

    return _make


@pytest.fixture
def token_for(app):
    """token_for(user) -> a fresh JWT for that user."""
    from portal.accounts import tokens
    from portal.accounts.models import User
    from portal.extensions import db

    def _token(user) -> str:
        with app.app_context():
            u = db.session.get(User, user.id)
            token, _ = tokens.issue_jwt(u)
            return token

    return _token


@pytest.fixture
def auth(token_for):
    """auth(user) -> headers for the JSON API."""

    def _headers(user) -> dict:
        return {"Authorization": f"Bearer {token_for(user)}"}

    return _headers


@pytest.fixture
def open_signup(app):
    """Sign-up open to anyone after the first account, as with PORTAL_SIGNUP_OPEN=true
    (closed is the default: then only invite links make accounts)."""
    app.config["PORTAL_SIGNUP_OPEN"] = True
    return app


@pytest.fixture
def admin(make_user):
    return make_user("root-admin", role="admin")


@pytest.fixture
def login(client):
    """login(user) signs the test client in through the real form; returns the CSRF token."""

    def _login(user, password: str = PASSWORD) -> str:
        token = csrf_from(client.get("/login").get_data(as_text=True))
        resp = client.post(
            "/login", data={"login": user.username, "password": password, "csrf_token": token}
        )
        assert resp.status_code == 303, resp.get_data(as_text=True)[:500]
        return csrf_from(client.get("/profile").get_data(as_text=True))

    return _login


def csrf_from(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'"X-CSRFToken": "([^"]+)"', html
    )
    assert m, "no CSRF token in page"
    return m.group(1)


@pytest.fixture(autouse=True)
def _push_request_context():
    """pytest-flask pushes one request context around each test, so every test-client request
    would share one `g` and one app context. Tests here push contexts explicitly instead."""
    yield
