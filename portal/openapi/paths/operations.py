"""The audit log, health checks and this document."""

from __future__ import annotations

from portal.openapi.paths.common import H
from portal.openapi.spec import S, arr, obj, op, q

PATHS: dict[str, dict[str, dict]] = {
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
