"""GET /health/ready: database and Redis (when configured) checked for real; 503 names the one
that is down."""

from __future__ import annotations

import pytest

from portal import create_app, signals
from tests.fixtures.net import free_port
from tests.fixtures.terminal import redis_config


@pytest.fixture
def make_app():
    made = []

    def make(config):
        made.append(create_app(config))
        return made[-1]

    yield make
    for app in made:
        signals.shutdown(app)


def test_ready_without_redis(client):
    resp = client.get("/health/ready")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ready", "database": "ok", "redis": "not_configured"}


def test_ready_with_live_redis(app_config, make_app):
    app = make_app(redis_config(app_config))
    resp = app.test_client().get("/health/ready")
    assert resp.status_code == 200
    assert resp.get_json()["redis"] == "ok"


def test_redis_down_is_503_with_a_clear_body(app_config, make_app):
    # A port nobody listens on: the Redis the portal was told about is down.
    app = make_app({**app_config, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    resp = app.test_client().get("/health/ready")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["status"] == "not_ready" and body["redis"] == "unreachable"
    assert body["database"] == "ok" and "redis unreachable" in body["error"]
    # /health stays a liveness check: it does not look at Redis.
    assert app.test_client().get("/health").status_code == 200


def test_database_down_is_503(app_config, make_app, tmp_path):
    # A database file in a folder that does not exist cannot be opened.
    url = f"sqlite:///{tmp_path}/missing/dir/portal.db"
    app = make_app({**app_config, "DATABASE_URL": url})
    resp = app.test_client().get("/health/ready")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["database"] == "unreachable" and "database unreachable" in body["error"]
