"""Schemas and names the feature tables share."""

from __future__ import annotations

from portal.openapi.spec import OBJ, B, I, S, arr, obj

TOKENS = obj(
    {"token": S, "refresh_token": S, "expires_in": I, "user": OBJ},
    required=("token", "refresh_token"),
)
MACHINE = obj({"machine": OBJ}, required=("machine",))
ISSUE = obj({"issue": OBJ}, required=("issue",))
FIX = obj({"fix": OBJ}, required=("fix",))
LIKE = obj({"likes": I, "liked": B}, required=("likes", "liked"))
NSTR = {"type": ["string", "null"]}
#: API.md `session`; bytes_in/bytes_out are live for a session the answering process holds,
#: else as last written by its holder (every 5 s, and the totals on close).
SESSION = obj(
    {
        "id": S,
        "machine": {"type": ["object", "null"]},
        "user": {"type": ["object", "null"]},
        "status": {"type": "string", "enum": ["active", "detached", "closed"]},
        "started_at": S,
        "ended_at": NSTR,
        "close_reason": NSTR,
        "cols": I,
        "rows": I,
        "bytes_in": {"type": "integer", "description": "bytes typed (sent to the machine)"},
        "bytes_out": {"type": "integer", "description": "bytes received from the machine"},
        "shared": B,
        "last_activity_at": NSTR,
    },
    ("id", "status", "bytes_in", "bytes_out"),
)
SESSIONS = obj({"sessions": arr(SESSION)}, required=("sessions",))
LOGS = obj({"logs": arr(), "next_cursor": {"type": ["string", "null"]}}, required=("logs",))
USER_REF = obj({"user": {"type": ["string", "integer"]}}, required=("user",))
ROLE = {"type": "string", "enum": ["viewer", "operator", "admin"]}
ISSUE_BODY = obj({"title": S, "body": S, "tags": {"type": ["array", "string"]}})
RATE = (429,)
PASSKEY = obj(
    {"id": I, "name": S, "transports": arr(S), "created_at": S, "last_used_at": S},
    required=("id", "name"),
)
WEBAUTHN_OPTIONS = obj({"options": OBJ}, required=("options",))

A, U, M, T, D, C, H = ("auth", "users", "machines", "terminal", "dashboard", "community", "health")


def header(name: str, schema: dict | None = None, required: bool = False) -> dict:
    return {"name": name, "in": "header", "required": required, "schema": schema or S}
