"""Installable on a phone: the web app manifest and the service worker, served from the root
so that the worker's scope is the whole portal. The worker caches only the static shell and
the offline page; pages and API answers always go to the network (docs/operations.md, "PWA")."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, send_from_directory, url_for

bp = Blueprint("pwa", __name__)


@bp.get("/manifest.webmanifest")
def manifest():
    def icon(name: str, size: int, purpose: str = "any") -> dict:
        return {
            "src": url_for("static", filename=f"pwa/{name}"),
            "sizes": f"{size}x{size}",
            "type": "image/png",
            "purpose": purpose,
        }

    body = {
        "id": "/",
        "name": "Web Terminal Portal",
        "short_name": "Portal",
        "description": "Browser terminals to your team's machines.",
        "start_url": "/",
        "scope": "/",
        "display": "standalone",
        "background_color": "#0f172a",
        "theme_color": "#0f172a",
        "icons": [
            icon("icon-192.png", 192),
            icon("icon-512.png", 512),
            icon("icon-maskable-512.png", 512, "maskable"),
        ],
    }
    resp = jsonify(body)
    resp.mimetype = "application/manifest+json"
    return resp


@bp.get("/sw.js")
def service_worker():
    resp = send_from_directory(current_app.static_folder, "pwa/sw.js", max_age=0)
    resp.mimetype = "text/javascript"
    resp.headers["Cache-Control"] = "no-cache"  # a new worker is picked up at once
    return resp
