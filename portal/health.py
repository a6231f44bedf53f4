"""GET /health: public liveness and database check. GET /health/ready: readiness (database, and
Redis when REDIS_URL is set) for a load balancer or an orchestrator."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from portal.extensions import db

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    try:
        db.session.execute(text("SELECT 1"))
        database = "ok"
    except Exception:  # noqa: BLE001 - any failure means unreachable (503: rolled back)
        database = "unreachable"
    status = 200 if database == "ok" else 503
    body = {
        "status": "ok" if status == 200 else "degraded",
        "database": database,
        "version": current_app.config["PORTAL_VERSION"],
    }
    return jsonify(body), status


def _check_redis(url: str) -> str:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return "ok"
    except Exception:  # noqa: BLE001 - any failure means not ready
        return "unreachable"


@bp.get("/health/ready")
def ready():
    """200 when every dependency answers; 503 with the failing one named otherwise."""
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # noqa: BLE001 - any failure means unreachable (503: rolled back)
        db.session.rollback()
        checks["database"] = "unreachable"
    url = current_app.config.get("REDIS_URL")
    checks["redis"] = _check_redis(url) if url else "not_configured"
    failing = [name for name, state in checks.items() if state == "unreachable"]
    body: dict = {"status": "ready" if not failing else "not_ready", **checks}
    if failing:
        body["error"] = "not ready: " + ", ".join(f"{name} unreachable" for name in failing)
    return jsonify(body), 503 if failing else 200
