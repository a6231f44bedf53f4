"""The OpenAPI 3.1 document of the JSON API, built from small per-feature tables.

Each feature's operations live in `portal/openapi/paths/<feature>.py` as
`PATHS[<flask rule>][<method>]` built with `op(...)`. `tests/test_openapi.py` walks `app.url_map` and fails when a JSON route has
no entry here or an entry names a route that does not exist: see docs/openapi.md.
"""

from __future__ import annotations

import re
from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
OBJ: dict[str, Any] = {"type": "object"}

# Status -> description of the shared error responses (`{"error", "code", "field"?}`).
ERRORS = {
    400: "Bad input (the body names the field)",
    401: "No or invalid authentication",
    403: "Not allowed",
    404: "Not found (also objects the caller may not see)",
    409: "Conflicts with existing data",
    410: "Gone (an upload that expired or was terminated)",
    412: "Precondition failed (tus: unsupported Tus-Resumable version)",
    413: "Too large",
    415: "Wrong content type",
    416: "Range not satisfiable",
    422: "Well-formed but not acceptable",
    429: "Rate limited (see Retry-After)",
    502: "The machine is unreachable or its host key does not match",
    504: "The machine did not answer in time",
    503: "A dependency (database, Redis) is unreachable",
    507: "The machine's disk is full",
}

# Every body that takes JSON also answers these.
BODY_ERRORS = (400, 415)
# Errors any authenticated operation can answer.
AUTH_ERRORS = (401, 403)


def obj(props: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> dict:
    """An object schema; extra properties are allowed (clients ignore what they do not know)."""
    schema: dict[str, Any] = {"type": "object"}
    if props:
        schema["properties"] = props
    if required:
        schema["required"] = list(required)
    return schema


def arr(items: dict | None = None) -> dict:
    return {"type": "array", "items": items or OBJ}


S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741 - a one-letter schema alias, like S
B = {"type": "boolean"}


def q(name: str, schema: dict | None = None, description: str = "") -> dict:
    """A query parameter."""
    p = {"name": name, "in": "query", "required": False, "schema": schema or S}
    if description:
        p["description"] = description
    return p


PAGE = [
    q("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size (default 50)"),
    q("offset", {"type": "integer", "minimum": 0}),
]


def op(
    summary: str,
    tag: str,
    *,
    ok: int = 200,
    out: dict | None = None,
    body: dict | None = None,
    multipart: dict | None = None,
    params: list | None = None,
    errors: tuple[int, ...] = (),
    public: bool = False,
    content_type: str | tuple[str, ...] = "application/json",
    plain_errors: tuple[int, ...] = (),
    description: str = "",
    empty: bool = False,
) -> dict:
    """One operation. `errors` adds to the ones every operation of its kind answers.
    `content_type` may name several (the success body is one of them); `plain_errors` are
    answered as text/plain instead of the JSON error (enroll.sh: its errors are a script too).
    `empty`: the success answer has no body (what it says is in its headers)."""
    operation: dict[str, Any] = {"summary": summary, "tags": [tag]}
    if description:
        operation["description"] = description
    if params:
        operation["parameters"] = params
    codes = set(errors)
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
        codes |= set(BODY_ERRORS)
    elif multipart is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": multipart}},
        }
        codes |= {400, 413, 415}
    if params:
        codes.add(400)
    if public:
        operation["security"] = []
    else:
        codes |= set(AUTH_ERRORS)
    responses: dict[str, Any] = {}
    types = (content_type,) if isinstance(content_type, str) else content_type
    if ok == 204 or empty:
        responses[str(ok)] = {"description": "Done, no body"}
    else:
        responses[str(ok)] = {
            "description": "Success",
            "content": {
                t: {"schema": (out or OBJ) if t == "application/json" else S} for t in types
            },
        }
    for code in sorted(codes | set(plain_errors)):
        if code in plain_errors:
            responses[str(code)] = {
                "description": ERRORS[code],
                "content": {"text/plain": {"schema": S}},
            }
        else:
            responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    operation["responses"] = responses
    return operation


_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")


def openapi_path(rule: str) -> str:
    """/api/machines/<agent_id> -> /api/machines/{agent_id}"""
    return _CONVERTER.sub(lambda m: "{" + m.group(2) + "}", rule)


def _path_params(rule: str) -> list[dict]:
    out = []
    for conv, name in _CONVERTER.findall(rule):
        schema = (
            {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
            if conv == "int"
            else {"type": "string", "pattern": "^[^/]+$"}
        )
        out.append({"name": name, "in": "path", "required": True, "schema": schema})
    return out


def build(version: str, table: dict[str, dict[str, dict]]) -> dict:
    """The document for `table` (`portal.openapi.paths.PATHS`, all features' tables)."""
    paths: dict[str, Any] = {}
    for rule, methods in table.items():
        item: dict[str, Any] = {}
        params = _path_params(rule)
        if params:
            item["parameters"] = params
        for method, operation in methods.items():
            operation = dict(operation)
            if params:
                responses = dict(operation["responses"])
                responses.setdefault("404", {"$ref": "#/components/responses/E404"})
                operation["responses"] = responses
            item[method.lower()] = operation
        paths[openapi_path(rule)] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Web terminal portal API",
            "version": version,
            "description": (
                "The WebXTerm Community 1.0 REST API plus the portal's additions. "
                "Errors are `{error, code, field?}`. See docs/api.md."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A JWT from /api/login, /api/signup or /api/auth/refresh, "
                    "or an API key (`wxt_...`) as the bearer token.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": {
                "Error": obj(
                    {"error": S, "code": S, "field": S},
                    required=("error",),
                )
            },
            "responses": {
                f"E{code}": {
                    "description": text,
                    "content": {"application/json": {"schema": ERROR}},
                }
                for code, text in ERRORS.items()
            },
        },
    }
