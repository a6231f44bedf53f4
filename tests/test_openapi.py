"""The OpenAPI document matches the app: every JSON route has an entry, every entry a route, and
it is served at /api/openapi.json with a readable page at /api/docs under the strict CSP."""

from __future__ import annotations

from portal.openapi.paths import PATHS
from portal.openapi.spec import openapi_path

# Routes that are not JSON operations: pages, static files, WebSockets (docs/terminal.md).
NOT_JSON = {"/api/docs"}
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def _json_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if getattr(rule, "websocket", False) or rule.rule in NOT_JSON:
            continue
        if not (rule.rule.startswith("/api/") or rule.rule.startswith("/health")):
            continue
        for method in rule.methods & METHODS:
            routes.add((rule.rule, method))
    return routes


def test_every_json_route_has_a_spec_entry_and_back(app):
    served = _json_routes(app)
    described = {(rule, method) for rule, methods in PATHS.items() for method in methods}
    missing = sorted(served - described)
    stale = sorted(described - served)
    assert not missing, f"JSON routes without an entry in portal/openapi/paths/: {missing}"
    assert not stale, f"entries in portal/openapi/paths/ with no such route: {stale}"


def test_document_is_served_and_well_formed(client):
    resp = client.get("/api/openapi.json")
    assert resp.status_code == 200 and resp.is_json
    doc = resp.get_json()
    assert doc["openapi"] == "3.1.0"
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert openapi_path("/api/machines/<agent_id>/command") in doc["paths"]
    command = doc["paths"]["/api/machines/{agent_id}/command"]["post"]
    assert {"200", "400", "401", "403", "404", "502", "504"} <= set(command["responses"])
    assert command["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "command"
    ]
    # Public operations say so; the rest inherit both auth schemes.
    assert doc["paths"]["/api/login"]["post"]["security"] == []
    assert "security" not in doc["paths"]["/api/profile"]["get"]
    # Every $ref resolves.
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc["paths"])
    for ref in refs:
        target = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]


def test_docs_page_loads_vendored_swagger_ui_under_strict_csp(client):
    resp = client.get("/api/docs")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert "<script>" not in html  # no inline script: the CSP forbids it
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200


def test_docs_page_renders_every_tag_in_chromium(live_server, page):
    violations: list[str] = []
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    page.goto(f"{live_server.url}/api/docs")
    page.wait_for_selector(".opblock-tag-section")
    tags = page.locator(".opblock-tag").all_inner_texts()
    for tag in ("auth", "machines", "terminal", "community", "health"):
        assert any(t.strip().startswith(tag) for t in tags), tags
    page.screenshot(path="/tmp/openapi_docs_1280.png")
    assert not page.js_errors and not violations, (page.js_errors, violations)


def _documented(doc, path, method, status):
    """The response object the document gives for that status ($ref followed)."""
    response = doc["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response


def test_what_schemathesis_found_is_described_as_it_is_answered(
    app, client, make_user, make_machine, auth
):
    """Issue 19: answers tests/test_fuzz_api.py found outside the document, each made for
    real here and looked up in it (status, content type, body type)."""
    doc = client.get("/api/openapi.json").get_json()
    admin = make_user("specadmin", role="admin")
    headers = auth(admin)

    # enroll.sh is piped to sh: its errors are a script too (text/plain), not JSON.
    resp = client.get("/api/machines/enroll.sh", headers={"X-Registration-Token": "nope"})
    assert resp.status_code == 401 and resp.mimetype == "text/plain"
    assert "exit 1" in resp.get_data(as_text=True)
    assert resp.mimetype in _documented(doc, "/api/machines/enroll.sh", "get", 401)["content"]

    # The audit cursor is an event id: an integer.
    for name in ("first", "second"):
        client.post(
            "/api/users", headers=headers, json={"email": f"{name}@x.test", "username": name}
        )
    app.extensions["portal_audit"].flush()
    body = client.get("/api/audit?limit=1", headers=headers).get_json()
    assert isinstance(body["next_cursor"], int)
    schema = _documented(doc, "/api/audit", "get", 200)["content"]["application/json"]["schema"]
    assert "integer" in schema["properties"]["next_cursor"]["type"]

    # The export is JSON Lines or CSV, as asked.
    for fmt in ("jsonl", "csv"):
        resp = client.get(f"/api/audit/export?format={fmt}", headers=headers)
        assert resp.status_code == 200 and "specadmin" in resp.get_data(as_text=True)
        assert resp.mimetype in _documented(doc, "/api/audit/export", "get", 200)["content"]

    # tus creation with a bad Upload-Length: 400, documented, as are the tus headers.
    box = make_machine(admin)
    resp = client.post(
        f"/api/machines/{box.agent_id}/files/tus",
        headers={**headers, "Tus-Resumable": "1.0.0", "Upload-Length": "lots"},
    )
    assert resp.status_code == 400 and resp.is_json
    create = doc["paths"]["/api/machines/{agent_id}/files/tus"]["post"]
    assert "400" in create["responses"]
    assert {"Upload-Length", "Upload-Metadata", "Tus-Resumable"} <= {
        p["name"] for p in create["parameters"]
    }
