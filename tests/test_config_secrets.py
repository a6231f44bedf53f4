"""Secrets and the instance folder (issue 16): too short a secret stops the start; generated
secrets are written atomically, 0600, in a 0700 folder; the SQLite database is 0600."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from portal import create_app
from portal.config import ConfigError

ENV = (
    "SECRET_KEY",
    "PORTAL_VAULT_KEY",
    "DATABASE_URL",
    "PORTAL_RECORDINGS_DIR",
    "PORTAL_UPLOADS_DIR",
    "PORTAL_INSTANCE_PATH",
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def clean_env(monkeypatch):
    """The defaults an operator gets with nothing set, under the usual umask."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    old = os.umask(0o022)
    yield monkeypatch
    os.umask(old)


@pytest.fixture
def start(clean_env, migrated_db):
    """start(instance, **config) -> create_app on that instance folder; torn down after."""
    apps = []

    def _start(instance: Path, **config):
        cfg = {"TESTING": True, "PORTAL_INSTANCE_PATH": str(instance), **config}
        cfg.setdefault("DATABASE_URL", migrated_db)
        app = create_app(cfg)
        apps.append(app)
        return app

    yield _start
    from portal import signals
    from portal.extensions import db

    for app in apps:
        signals.shutdown(app)
    db.session.remove()
    if db.engine is not None:
        db.engine.dispose()


def test_short_secret_key_in_environment_refuses_to_start(start, clean_env, tmp_path):
    clean_env.setenv("SECRET_KEY", "s" * 31)
    with pytest.raises(ConfigError, match=r"SECRET_KEY is only 31 bytes.*at least 32 bytes"):
        start(tmp_path / "instance")
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_empty_instance_secret_key_file_refuses_to_start(start, tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "secret_key").write_text("\n")
    with pytest.raises(RuntimeError, match=r"instance/secret_key is empty"):
        start(instance)
    (instance / "secret_key").write_text("short-but-not-empty\n")
    with pytest.raises(RuntimeError, match=r"instance/secret_key is only 19 bytes"):
        start(instance)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY is empty"),
        ({"SECRET_KEY": "x" * 16}, "SECRET_KEY is only 16 bytes"),
        ({"PORTAL_VAULT_KEY": "passphrase"}, "PORTAL_VAULT_KEY is only 10 bytes"),
        ({"PORTAL_VAULT_KEY": " , "}, "PORTAL_VAULT_KEY is empty"),
    ],
)
def test_short_secret_from_any_source_refuses_to_start(start, tmp_path, setting, named):
    with pytest.raises(ConfigError, match=named):
        start(tmp_path / "instance", **{"SECRET_KEY": "k" * 32, **setting})


def test_short_vault_key_in_environment_refuses_to_start(start, clean_env, tmp_path):
    from cryptography.fernet import Fernet

    good = Fernet.generate_key().decode()
    clean_env.setenv("PORTAL_VAULT_KEY", f"{good},too-short")
    with pytest.raises(ConfigError, match=r"PORTAL_VAULT_KEY \(key 2\) is only 9 bytes"):
        start(tmp_path / "instance")


def test_fresh_instance_is_private(start, tmp_path):
    """Under umask 022 the instance folder used to be 0755 and the database 0644."""
    instance = tmp_path / "instance"
    db_path = instance / "portal.db"
    app = start(instance, DATABASE_URL=f"sqlite:///{db_path}")
    assert mode(instance) == 0o700
    for name in ("secret_key", "vault_key"):
        assert mode(instance / name) == 0o600, name
        assert len((instance / name).read_text().strip()) >= 32
    for name in ("recordings", "uploads"):
        assert Path(app.config[f"PORTAL_{name.upper()}_DIR"]) == instance / name
        assert mode(instance / name) == 0o700, name
    from portal.extensions import db

    with app.app_context():  # a first write: SQLite creates the WAL and shared-memory files
        db.session.execute(text("CREATE TABLE probe (x INTEGER)"))
        db.session.execute(text("INSERT INTO probe VALUES (1)"))
        db.session.commit()
        assert (instance / "portal.db-wal").exists() and (instance / "portal.db-shm").exists()
        for name in ("portal.db", "portal.db-wal", "portal.db-shm"):
            assert mode(instance / name) == 0o600, name
    assert [p.name for p in instance.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_racing_workers_generate_one_secret(tmp_path):
    """Workers starting together on a fresh instance all end up with the same, whole secret."""
    from portal.config import _instance_secret

    instance = tmp_path / "instance"
    n = 8
    barrier = threading.Barrier(n)
    got: list = [None] * n

    def worker(i: int) -> None:
        barrier.wait(timeout=30)
        got[i] = _instance_secret(instance, "secret_key", lambda: os.urandom(32).hex())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(set(got)) == 1 and len(got[0]) == 64
    assert (instance / "secret_key").read_text() == got[0] + "\n"
    assert mode(instance / "secret_key") == 0o600
    assert sorted(p.name for p in instance.iterdir()) == ["secret_key"]
