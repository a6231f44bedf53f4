"""The dashboard and the community board."""

from __future__ import annotations

from portal.openapi.paths.common import FIX, ISSUE, ISSUE_BODY, LIKE, RATE, C, D
from portal.openapi.spec import PAGE, I, S, arr, obj, op, q

PATHS: dict[str, dict[str, dict]] = {
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
}
