"""The JSON routes, one entry per Flask rule and method (see docs/openapi.md to add one).

Keys are Flask rules exactly as in `app.url_map` (`<int:issue_id>`, `<agent_id>`); path
parameters and their 404 are added by `spec.build`. WebSocket routes are not HTTP operations
and are left out (docs/terminal.md describes them).
"""

from __future__ import annotations

from portal.openapi.spec import OBJ, PAGE, B, I, S, arr, obj, op, q

TOKENS = obj(
    {"token": S, "refresh_token": S, "expires_in": I, "user": OBJ},
    required=("token", "refresh_token"),
)
MACHINE = obj({"machine": OBJ}, required=("machine",))
ISSUE = obj({"issue": OBJ}, required=("issue",))
FIX = obj({"fix": OBJ}, required=("fix",))
LIKE = obj({"likes": I, "liked": B}, required=("likes", "liked"))
_NSTR = {"type": ["string", "null"]}
#: API.md `session`; bytes_in/bytes_out are live for a session the answering process holds,
#: else as last written by its holder (every 5 s, and the totals on close).
SESSION = obj(
    {
        "id": S,
        "machine": {"type": ["object", "null"]},
        "user": {"type": ["object", "null"]},
        "status": {"type": "string", "enum": ["active", "detached", "closed"]},
        "started_at": S,
        "ended_at": _NSTR,
        "close_reason": _NSTR,
        "cols": I,
        "rows": I,
        "bytes_in": {"type": "integer", "description": "bytes typed (sent to the machine)"},
        "bytes_out": {"type": "integer", "description": "bytes received from the machine"},
        "shared": B,
        "last_activity_at": _NSTR,
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


def _header(name: str, schema: dict | None = None, required: bool = False) -> dict:
    return {"name": name, "in": "header", "required": required, "schema": schema or S}


F = "files"
FILE_ERRORS = (403, 404, 409, 429, 502, 504, 507)  # 429: PORTAL_FILES_MAX_CONCURRENT
_PATH = [q("path", S, "a path on the machine (absolute, or relative to the SSH user's home)")]
_RAW = "application/octet-stream"
FILES_PATHS: dict[str, dict[str, dict]] = {
    "/api/machines/<agent_id>/files": {
        "GET": op(
            "List a folder (folders first)",
            F,
            params=_PATH + [q("hidden", S)] + PAGE,
            errors=FILE_ERRORS,
        )
    },
    "/api/machines/<agent_id>/files/stat": {
        "GET": op("One entry", F, params=_PATH, errors=FILE_ERRORS)
    },
    "/api/machines/<agent_id>/files/content": {
        "GET": op(
            "Download a file (streamed; Range gives 206)",
            F,
            params=_PATH,
            content_type=_RAW,
            errors=FILE_ERRORS + (416,),
        ),
        "PUT": op(
            "Upload a small file (the body is the file)",
            F,
            ok=201,
            params=_PATH + [q("overwrite", S)],
            errors=FILE_ERRORS + (413, 415),
        ),
    },
    "/api/machines/<agent_id>/files/zip": {
        "GET": op(
            "A folder as a zip, streamed",
            F,
            params=_PATH,
            content_type="application/zip",
            errors=FILE_ERRORS,
        )
    },
    "/api/machines/<agent_id>/files/mkdir": {
        "POST": op(
            "New folder",
            F,
            ok=201,
            body=obj({"path": S, "parents": B}, ("path",)),
            errors=FILE_ERRORS,
            description="409 when `path` exists. With `parents` it is `mkdir -p`: the missing "
            "folders on the way are made too and an existing folder is no error; `created` "
            "lists the folders made.",
        )
    },
    "/api/machines/<agent_id>/files/rename": {
        "POST": op(
            "Rename or move",
            F,
            body=obj({"path": S, "to": S, "overwrite": B}, ("path", "to")),
            errors=FILE_ERRORS,
        )
    },
    "/api/machines/<agent_id>/files/delete": {
        "POST": op(
            "Delete (folders recursively)", F, body=obj({"path": S}, ("path",)), errors=FILE_ERRORS
        )
    },
    "/api/machines/<agent_id>/files/chmod": {
        "POST": op(
            "Change a mode",
            F,
            body=obj({"path": S, "mode": S}, ("path", "mode")),
            errors=FILE_ERRORS,
        )
    },
    "/api/machines/<agent_id>/files/transfers": {
        "GET": op("The machine's latest transfers", F, errors=(403, 404))
    },
    "/api/machines/<agent_id>/files/tus": {
        "POST": op(
            "tus 1.0 creation (Upload-Length, Upload-Metadata headers)",
            F,
            ok=201,
            empty=True,  # Location and Upload-Offset headers
            description="creation-with-upload: a body sent as application/offset+octet-stream "
            "is the upload's first bytes (Upload-Offset says how many were kept); an upload of "
            "0 bytes is complete once created",
            params=[
                _header("Tus-Resumable", {"type": "string", "enum": ["1.0.0"]}),
                _header("Upload-Length", {"type": "string", "pattern": "^[0-9]+$"}, True),
                {
                    **_header("Upload-Metadata"),
                    "description": "tus metadata (key base64,...): filename, folder, conflict "
                    "(fail | overwrite | keep | skip) and, for a file of an uploaded folder, "
                    "relativePath (a/b/c.txt: the missing folders under folder are made first)",
                },
            ],
            errors=FILE_ERRORS + (412, 413, 415),
        )
    },
    "/api/machines/<agent_id>/files/tus/<upload_id>": {
        "PATCH": op(
            "tus 1.0: append bytes at Upload-Offset",
            F,
            ok=204,
            params=[
                _header("Tus-Resumable", {"type": "string", "enum": ["1.0.0"]}),
                _header("Upload-Offset", {"type": "string", "pattern": "^[0-9]+$"}, True),
            ],
            errors=FILE_ERRORS + (410, 412, 415),
        ),
        "DELETE": op("tus 1.0 termination", F, ok=204, errors=FILE_ERRORS + (410, 412)),
    },
}

PATHS: dict[str, dict[str, dict]] = {
    # ---------------------------------------------------------------- authentication
    "/api/signup": {
        "POST": op(
            "Create an account",
            A,
            ok=201,
            out=TOKENS,
            public=True,
            body=obj(
                {"email": S, "username": S, "password": S, "invite": S},
                required=("email", "username", "password"),
            ),
            errors=(403, 409, 422) + RATE,
        )
    },
    "/api/login": {
        "POST": op(
            "Sign in",
            A,
            out=TOKENS,
            public=True,
            body=obj({"login": S, "password": S, "new_password": S}, ("login", "password")),
            errors=(401, 403, 422) + RATE,
        )
    },
    "/api/auth/refresh": {
        "POST": op(
            "Exchange a refresh token for a new pair",
            A,
            out=TOKENS,
            public=True,
            body=obj({"refresh_token": S}, ("refresh_token",)),
            errors=(401,) + RATE,
        )
    },
    "/api/auth/logout": {"POST": op("Revoke every credential of the caller", A)},
    # ---------------------------------------------------------------- profile and users
    "/api/profile": {"GET": op("The caller's profile", U)},
    "/api/profile/regenerate-api-key": {
        "POST": op("A new API key (shown once)", U, out=obj({"api_key": S}, ("api_key",)))
    },
    "/api/profile/reset-password": {
        "POST": op(
            "Change the caller's password",
            U,
            out=TOKENS,
            body=obj({"current_password": S, "new_password": S}, ("current_password",)),
            errors=(422,) + RATE,
        )
    },
    "/api/profile/upload-avatar": {
        "POST": op(
            "Upload an avatar image",
            U,
            out=obj({"avatar_url": S}, ("avatar_url",)),
            multipart=obj({"avatar": {"type": "string", "format": "binary"}}, ("avatar",)),
            errors=(422,),
        )
    },
    "/api/users": {
        "GET": op(
            "Users (admin)",
            U,
            out=obj({"users": arr(), "total": I}, ("users", "total")),
            params=[q("q"), *PAGE],
        ),
        "POST": op(
            "Create a user (admin)",
            U,
            ok=201,
            out=obj({"user": OBJ, "password": S}, ("user",)),
            body=obj({"email": S, "username": S, "role": S, "password": S}, ("email", "username")),
            errors=(409, 422),
        ),
    },
    "/api/users/<int:user_id>/active": {
        "POST": op(
            "Activate or deactivate a user (admin)",
            U,
            body=obj({"active": B}, ("active",)),
            errors=(409,),
        )
    },
    "/api/users/<int:user_id>/role": {
        "POST": op(
            "Set a user's global role (admin)",
            U,
            body=obj({"role": {"type": "string", "enum": ["admin", "user"]}}, ("role",)),
            errors=(409,),
        )
    },
    "/api/users/<int:user_id>/reset-password": {
        "POST": op(
            "Reset a user's password (admin)",
            U,
            out=obj({"user": OBJ, "password": S}, ("user",)),
            body=obj({"password": S}),
            errors=(409, 422),
        )
    },
    "/api/users/invites": {
        "GET": op("Invites (admin)", U, out=obj({"invites": arr(), "total": I}, ("invites",))),
        "POST": op(
            "Create an invite link (admin)",
            U,
            ok=201,
            out=obj({"invite": OBJ, "invite_url": S, "expires_at": S}, ("invite", "invite_url")),
            body=obj({"email": S, "role": S, "expires_in": I}),
            errors=(409, 422),
        ),
    },
    "/api/users/invites/<int:invite_id>": {
        "DELETE": op("Revoke a pending invite (admin)", U, out=obj({"invite": OBJ}), errors=(409,))
    },
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
    # ---------------------------------------------------------------- terminal
    "/api/terminal/<agent_id>/ticket": {
        "POST": op(
            "A single-use socket ticket (operator)",
            T,
            out=obj({"ticket": S, "expires_in": I}, ("ticket",)),
            errors=(409,),
        )
    },
    "/api/terminal/sessions": {"GET": op("Live sessions the caller may see", T, out=SESSIONS)},
    "/api/terminal/sessions/<sid>": {"DELETE": op("Close a live session", T, errors=(409,))},
    "/api/terminal/sessions/<sid>/share": {
        "POST": op(
            "Share a session read-only",
            T,
            body=obj({"shared": B}, ("shared",)),
            out=obj({"session": SESSION}, ("session",)),
            errors=(409,),
        )
    },
    "/api/sessions/<sid>": {
        "GET": op(
            "A session with its commands",
            T,
            out=obj(
                {
                    "session": SESSION,
                    "commands": arr(),
                    "transfers": arr(),
                    "recording_url": _NSTR,
                },
                ("session",),
            ),
        )
    },
    "/api/sessions/<sid>/recording": {
        "GET": op(
            "The asciicast v2 recording",
            T,
            content_type="application/x-asciicast",
            params=[q("download")],
        )
    },
    # ---------------------------------------------------------------- dashboard
    "/api/dashboard/stats": {"GET": op("Counters", D)},
    "/api/dashboard/recent-machines": {
        "GET": op("The last 5 active machines", D, out=obj({"machines": arr()}, ("machines",)))
    },
    "/api/dashboard/recent-activity": {
        "GET": op("The last 10 commands", D, out=obj({"activity": arr()}, ("activity",)))
    },
    "/api/dashboard/commands-per-day": {
        "GET": op("Commands per day over 14 days", D, out=obj({"days": arr()}, ("days",)))
    },
    # ---------------------------------------------------------------- community
    "/api/community/issues": {
        "GET": op(
            "Issues",
            C,
            out=obj({"issues": arr(), "total": I}, ("issues", "total")),
            params=[q("q"), q("status"), q("tag"), q("mine"), q("sort"), *PAGE],
        ),
        "POST": op("Open an issue", C, ok=201, out=ISSUE, body=ISSUE_BODY, errors=(422,) + RATE),
    },
    "/api/community/issues/<int:issue_id>": {
        "GET": op("An issue", C, out=ISSUE),
        "PUT": op("Edit an issue (author or admin)", C, out=ISSUE, body=ISSUE_BODY, errors=(422,)),
        "PATCH": op(
            "Edit an issue (author or admin)", C, out=ISSUE, body=ISSUE_BODY, errors=(422,)
        ),
        "DELETE": op("Delete an issue (author or admin)", C, ok=204),
    },
    "/api/community/issues/<int:issue_id>/fixes": {
        "GET": op("Fixes of an issue", C, out=obj({"fixes": arr()}, ("fixes",))),
        "POST": op(
            "Post a fix", C, ok=201, out=FIX, body=obj({"body": S}, ("body",)), errors=(422,) + RATE
        ),
    },
    "/api/community/issues/<int:issue_id>/fixes/<int:fix_id>/like": {
        "POST": op("Like a fix", C, out=LIKE),
        "DELETE": op("Take a like back", C, out=LIKE),
    },
    "/api/community/issues/<int:issue_id>/fixes/<int:fix_id>/accept": {
        "POST": op("Accept a fix (issue author or admin)", C),
        "DELETE": op("Un-accept a fix", C),
    },
    "/api/community/upload": {
        "POST": op(
            "Upload an image for an issue or fix",
            C,
            out=obj({"url": S, "width": I, "height": I}, ("url",)),
            multipart=obj({"file": {"type": "string", "format": "binary"}}, ("file",)),
            errors=(422,) + RATE,
        )
    },
    # ---------------------------------------------------------------- second factor (MFA)
    "/api/profile/mfa": {"GET": op("The caller's second factors", U)},
    "/api/profile/mfa/totp": {
        "POST": op("Start enrolling an authenticator app", U, ok=201, errors=(409,)),
        "DELETE": op(
            "Remove the authenticator app (password again, or a `reauth` passkey assertion)",
            U,
            body=obj({"password": S, "passkey": OBJ}),
            errors=(400,) + RATE,
        ),
    },
    "/api/profile/mfa/totp/confirm": {
        "POST": op(
            "Confirm the app with a code; answers the recovery codes once",
            U,
            body=obj({"code": S}, ("code",)),
            errors=(400, 409) + RATE,
        )
    },
    "/api/profile/mfa/recovery-codes": {
        "POST": op(
            "New recovery codes (the old ones die; password or a `reauth` passkey assertion)",
            U,
            body=obj({"password": S, "passkey": OBJ}),
            errors=(400, 409) + RATE,
        )
    },
    "/api/users/<int:user_id>/mfa/reset": {
        "POST": op("Admin: remove every factor of a user", U, errors=(403, 404))
    },
    "/api/admin/mfa-required": {
        "POST": op(
            "Admin: require a second factor for everyone",
            U,
            body=obj({"required": B}, ("required",)),
            errors=(403,),
        )
    },
    # ---------------------------------------------------------------- passkeys (WebAuthn)
    "/api/profile/mfa/passkeys": {
        "GET": op("The caller's passkeys", U, out=obj({"passkeys": arr(PASSKEY)}, ("passkeys",))),
        "POST": op(
            "Register a passkey: the browser's answer to the options",
            U,
            ok=201,
            out=obj({"passkey": PASSKEY}, ("passkey",)),
            body=obj({"credential": OBJ, "name": S}, ("credential",)),
            errors=(401, 409),
            description="`credential` is the RegistrationResponseJSON of "
            "`navigator.credentials.create()` (as @simplewebauthn/browser returns it). The "
            "challenge of the options works once and for PORTAL_WEBAUTHN_TIMEOUT seconds.",
        ),
    },
    "/api/profile/mfa/passkeys/options": {
        "POST": op(
            "Start registering a passkey (PublicKeyCredentialCreationOptionsJSON)",
            U,
            out=WEBAUTHN_OPTIONS,
            errors=(401, 409),
            description="Adding a factor to an account that has one needs a step-up "
            "(401 `step_up_required`).",
        )
    },
    "/api/profile/mfa/passkeys/<int:passkey_id>": {
        "PATCH": op(
            "Rename a passkey",
            U,
            out=obj({"passkey": PASSKEY}, ("passkey",)),
            body=obj({"name": S}, ("name",)),
            errors=(404,),
        ),
        "DELETE": op(
            "Remove a passkey (the password again, or a `reauth` passkey assertion)",
            U,
            body=obj({"password": S, "passkey": OBJ}),
            errors=(404,) + RATE,
        ),
    },
    "/api/auth/passkey/options": {
        "POST": op(
            "Start a passkey check (PublicKeyCredentialRequestOptionsJSON)",
            A,
            out=WEBAUTHN_OPTIONS,
            public=True,
            body=obj(
                {"purpose": {"type": "string", "enum": ["login", "mfa", "step-up", "reauth"]}}
            ),
            errors=(401, 409) + RATE,
            description="`login`: passwordless sign-in with a discoverable passkey (anyone); "
            "`mfa`: the second step of this browser's password sign-in; `step-up` / `reauth`: "
            "the caller's own passkeys (send the answer as `passkey` with the request it "
            "guards). The challenge is kept server-side, bound to this session, and works "
            "once.",
        )
    },
    "/api/auth/passkey": {
        "POST": op(
            "Finish a passkey sign-in (`login` or `mfa`)",
            A,
            out=obj({"user": OBJ, "redirect": S, "token": S, "refresh_token": S}),
            public=True,
            body=obj(
                {
                    "purpose": {"type": "string", "enum": ["login", "mfa"]},
                    "credential": OBJ,
                    "tokens": B,
                    "next": S,
                },
                ("credential",),
            ),
            errors=(401, 403) + RATE,
            description="Signs this browser session in. `tokens: true` also answers a JWT "
            "pair whose access token carries `mfa_at`. Refused (401 `passkey_refused`): "
            "another origin or RP id, a reused or expired challenge, a sign count that did "
            "not move forward, an unknown passkey.",
        )
    },
    # ---------------------------------------------------------------- audit log
    "/api/audit": {
        "GET": op(
            "Audit events, newest first (admins: all; others: their own)",
            "audit",
            # The cursor is the id of the last event of the page (older ones follow).
            out=obj({"events": arr(), "next_cursor": {"type": ["integer", "null"]}}),
            params=[q(n) for n in ("actor", "action", "machine", "result", "since", "until", "q")]
            + [
                q("cursor", {"type": "integer", "minimum": 1}),
                q("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
            ],
        )
    },
    "/api/audit/export": {
        "GET": op(
            "Audit events streamed as JSON Lines or CSV",
            "audit",
            content_type=("application/x-ndjson", "text/csv"),
            params=[q("format", {"type": "string", "enum": ["jsonl", "csv"]})]
            + [q(n) for n in ("actor", "action", "machine", "result", "since", "until", "q")],
        )
    },
    # ---------------------------------------------------------------- files
    **FILES_PATHS,
    # ---------------------------------------------------------------- health and the spec
    "/health": {
        "GET": op(
            "Liveness and database check",
            H,
            public=True,
            out=obj({"status": S, "database": S, "version": S}),
            errors=(503,),
        )
    },
    "/health/ready": {
        "GET": op(
            "Readiness: database and Redis",
            H,
            public=True,
            out=obj({"status": S, "database": S, "redis": S}),
            errors=(503,),
        )
    },
    "/api/openapi.json": {"GET": op("This document", H, public=True)},
}
