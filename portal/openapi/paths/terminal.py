"""Terminal sessions, tickets, sharing and recordings (the socket routes are in docs/terminal.md)."""

from __future__ import annotations

from portal.openapi.paths.common import NSTR, SESSION, SESSIONS, T
from portal.openapi.spec import B, I, S, arr, obj, op, q

PATHS: dict[str, dict[str, dict]] = {
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
                    "recording_url": NSTR,
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
}
