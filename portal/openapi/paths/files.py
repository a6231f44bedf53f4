"""Files beside the terminal: SFTP listing, content, transfers and tus uploads."""

from __future__ import annotations

from portal.openapi.paths.common import header
from portal.openapi.spec import PAGE, B, S, obj, op, q

F = "files"
FILE_ERRORS = (403, 404, 409, 429, 502, 504, 507)  # 429: PORTAL_FILES_MAX_CONCURRENT
PATH_PARAM = [q("path", S, "a path on the machine (absolute, or relative to the SSH user's home)")]
RAW = "application/octet-stream"

PATHS: dict[str, dict[str, dict]] = {
    "/api/machines/<agent_id>/files": {
        "GET": op(
            "List a folder (folders first)",
            F,
            params=PATH_PARAM + [q("hidden", S)] + PAGE,
            errors=FILE_ERRORS,
        )
    },
    "/api/machines/<agent_id>/files/stat": {
        "GET": op("One entry", F, params=PATH_PARAM, errors=FILE_ERRORS)
    },
    "/api/machines/<agent_id>/files/content": {
        "GET": op(
            "Download a file (streamed; Range gives 206)",
            F,
            params=PATH_PARAM,
            content_type=RAW,
            errors=FILE_ERRORS + (416,),
        ),
        "PUT": op(
            "Upload a small file (the body is the file)",
            F,
            ok=201,
            params=PATH_PARAM + [q("overwrite", S)],
            errors=FILE_ERRORS + (413, 415),
        ),
    },
    "/api/machines/<agent_id>/files/zip": {
        "GET": op(
            "A folder as a zip, streamed",
            F,
            params=PATH_PARAM,
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
                header("Tus-Resumable", {"type": "string", "enum": ["1.0.0"]}),
                header("Upload-Length", {"type": "string", "pattern": "^[0-9]+$"}, True),
                {
                    **header("Upload-Metadata"),
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
                header("Tus-Resumable", {"type": "string", "enum": ["1.0.0"]}),
                header("Upload-Offset", {"type": "string", "pattern": "^[0-9]+$"}, True),
            ],
            errors=FILE_ERRORS + (410, 412, 415),
        ),
        "DELETE": op("tus 1.0 termination", F, ok=204, errors=FILE_ERRORS + (410, 412)),
    },
}
