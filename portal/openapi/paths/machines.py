"""Machines: inventory, commands, logs, access, enrollment."""

from __future__ import annotations

from portal.openapi.paths.common import LOGS, MACHINE, RATE, ROLE, SESSIONS, USER_REF, M, T
from portal.openapi.spec import OBJ, PAGE, B, I, S, arr, obj, op, q

PATHS: dict[str, dict[str, dict]] = {
    # ---------------------------------------------------------------- machines
    "/api/machines": {
        "GET": op(
            "Machines the caller may see",
            M,
            out=obj({"machines": arr(), "total": I}, ("machines", "total")),
            params=[q("q"), q("tag"), q("status"), *PAGE],
        ),
        "POST": op(
            "Add a machine (direct or pending enrollment)",
            M,
            ok=201,
            out=MACHINE,
            body=obj(
                {
                    "name": S,
                    "host": S,
                    "port": I,
                    "username": S,
                    "auth_method": {"type": "string", "enum": ["key", "password", "portal_key"]},
                    "private_key": S,
                    "passphrase": S,
                    "password": S,
                    "host_key": S,
                    "trust_host_key": B,
                    "tags": {"type": ["array", "string"]},
                    "gateway": S,
                },
                ("name",),
            ),
            errors=(409, 422, 502, 504),
        ),
    },
    "/api/machines/by-id/<int:machine_id>": {"GET": op("A machine by internal id", M, out=MACHINE)},
    "/api/machines/<agent_id>": {
        "GET": op("A machine", M, out=MACHINE),
        "PATCH": op(
            "Change a machine (admin)", M, out=MACHINE, body=OBJ, errors=(409, 422, 502, 504)
        ),
        "PUT": op(
            "Change a machine (admin)", M, out=MACHINE, body=OBJ, errors=(409, 422, 502, 504)
        ),
        "DELETE": op("Delete a machine (admin)", M, ok=204),
    },
    "/api/machines/<agent_id>/command": {
        "POST": op(
            "Run a command (operator)",
            M,
            out=obj(
                {
                    "exit_code": {"type": ["integer", "null"]},
                    "stdout": S,
                    "stderr": S,
                    "duration_ms": I,
                    "truncated": B,
                    "log_id": I,
                },
                ("exit_code", "stdout", "stderr"),
            ),
            body=obj({"command": S, "timeout": {"type": "number"}}, ("command",)),
            errors=(409, 422, 502, 504) + RATE,
        )
    },
    "/api/machines/<agent_id>/check": {
        "POST": op("Connect again now (operator)", M, out=MACHINE, errors=(409, 502, 504))
    },
    "/api/machines/<agent_id>/host-key": {
        "POST": op(
            "Re-pin the host key after a deliberate change (admin)",
            M,
            out=MACHINE,
            body=obj({"host_key": {"type": ["string", "array"]}}, ("host_key",)),
            errors=(409, 422, 502, 504),
        )
    },
    "/api/machines/<agent_id>/enroll-token": {
        "POST": op("A new enrollment token for a pending machine (admin)", M, errors=(409,))
    },
    "/api/machines/<agent_id>/logs": {
        "GET": op(
            "Command logs (viewer)",
            M,
            out=LOGS,
            params=[q("cursor"), q("limit", {"type": "integer", "minimum": 1, "maximum": 200})],
        )
    },
    "/api/machines/<agent_id>/logs/search": {
        "GET": op(
            "Search command logs (viewer)",
            M,
            out=LOGS,
            params=[
                q("q"),
                q("user"),
                q("exit_code"),
                q("since"),
                q("until"),
                q("cursor"),
                q("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
            ],
        )
    },
    "/api/machines/<agent_id>/sessions": {"GET": op("Terminal sessions (viewer)", T, out=SESSIONS)},
    "/api/machines/<agent_id>/sessions/active": {
        "GET": op("Live terminal sessions (viewer)", T, out=SESSIONS)
    },
    "/api/machines/<agent_id>/access/users": {
        "GET": op("Who may use the machine (viewer)", M, out=obj({"users": arr()}, ("users",)))
    },
    "/api/machines/<agent_id>/access/grant": {
        "POST": op(
            "Grant a role on the machine (admin)",
            M,
            body=obj({"user": {"type": ["string", "integer"]}, "role": ROLE}, ("user", "role")),
            errors=(409, 422),
        )
    },
    "/api/machines/<agent_id>/access/revoke": {
        "POST": op(
            "Revoke a user's role on the machine (admin)", M, body=USER_REF, errors=(409, 422)
        )
    },
    "/api/machines/broadcast": {
        "POST": op(
            "Run a command on several machines",
            M,
            out=obj({"results": arr()}, ("results",)),
            body=obj(
                {"command": S, "agent_ids": arr(S), "tag": S, "timeout": {"type": "number"}},
                ("command",),
            ),
            errors=(404, 409, 422) + RATE,
        )
    },
    "/api/machines/scan-host-key": {
        "POST": op(
            "The host keys a host presents now (nothing stored)",
            M,
            body=obj({"host": S, "port": I, "gateway": S}, ("host",)),
            errors=(404, 422, 502, 504) + RATE,
        )
    },
    "/api/machines/register": {
        "POST": op(
            "Enroll a machine with a registration token",
            M,
            out=MACHINE,
            public=True,
            body=obj(
                {
                    "token": S,
                    "hostname": S,
                    "username": S,
                    "port": I,
                    "host_keys": arr(S),
                    "os": S,
                    "addresses": arr(S),
                },
                ("token", "hostname", "username", "host_keys"),
            ),
            errors=(401, 403, 404, 409, 422) + RATE,
        )
    },
    "/api/machines/enroll.sh": {
        "GET": op(
            "The enrollment shell script",
            M,
            public=True,
            content_type="text/x-shellscript",
            params=[
                {"name": "X-Registration-Token", "in": "header", "required": False, "schema": S},
                q("token"),
            ],
            # Its errors are a two-line script too (`echo "portal: ..." >&2; exit 1`): it is
            # piped to sh, which then prints why instead of choking on JSON.
            plain_errors=(400, 401, 403, 404),
            errors=RATE,
        )
    },
}
