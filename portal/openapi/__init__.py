"""The API's own description: GET /api/openapi.json (the OpenAPI 3.1 document) and GET /api/docs
(a readable page rendered by the vendored Swagger UI). Both public: the document describes
routes, never data."""

from __future__ import annotations

from functools import lru_cache

from flask import Blueprint, current_app, jsonify, render_template

from portal.openapi.paths import PATHS
from portal.openapi.spec import build

bp = Blueprint("openapi", __name__)


@lru_cache(maxsize=1)
def document(version: str) -> dict:
    return build(version, PATHS)


@bp.get("/api/openapi.json")
def openapi_json():
    return jsonify(document(current_app.config["PORTAL_VERSION"]))


@bp.get("/api/docs")
def docs_page():
    return render_template("openapi/docs.html")


def register(app) -> None:
    app.register_blueprint(bp)
