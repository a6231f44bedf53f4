"""JSON face of files: /api/machines/<agent_id>/files... (docs/api.md, "Files")."""

from __future__ import annotations

import functools

from flask import Blueprint, Response, g, jsonify, request, url_for
from werkzeug.http import http_date

from portal.files import archive, manage, services, tus
from portal.machines import inventory
from portal.validation import get_bool, get_int
from portal.web import api_login_required, json_body

bp = Blueprint("files_api", __name__)


def streamed_body(view):
    """A body streamed to the machine, never held whole: the app's 6 MiB cap on request
    bodies does not apply (the services enforce their own caps). Lifted before the sign-in
    check, whose CSRF check for a browser session looks at the form, and werkzeug refuses
    any body over the cap as soon as the form is looked at, whatever its type."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        request.max_content_length = 1 << 62  # (None would mean "the app default")
        return view(*args, **kwargs)

    return wrapped


def _flag(value) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


@bp.get("/api/machines/<agent_id>/files")
@api_login_required
def listing(agent_id: str):
    """?path=&hidden=1&limit=&offset= -> {path, entries: [...], total}."""
    machine = inventory.get_machine(g.user, agent_id)
    args = request.args
    limit = get_int(args, "limit", default=500, min_value=1, max_value=5000)
    offset = get_int(args, "offset", default=0, min_value=0, max_value=10_000_000)
    body = services.list_dir(
        g.user,
        machine,
        args.get("path") or ".",
        hidden=_flag(args.get("hidden")),
        limit=limit,
        offset=offset,
    )
    return jsonify(body)


@bp.get("/api/machines/<agent_id>/files/stat")
@api_login_required
def stat(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    return jsonify(services.stat(g.user, machine, request.args.get("path")))


@bp.get("/api/machines/<agent_id>/files/content")
@api_login_required
def content(agent_id: str):
    """The file's bytes, streamed; a `Range: bytes=a-b` gets 206 with that part."""
    machine = inventory.get_machine(g.user, agent_id)
    dl = services.open_download(
        g.user, machine, request.args.get("path"), request.headers.get("Range")
    )
    partial = (dl.start, dl.end) != (0, dl.size - 1) and dl.size > 0
    resp = Response(
        dl.chunks,
        status=206 if partial else 200,
        mimetype="application/octet-stream",
        direct_passthrough=True,
    )
    resp.headers["Content-Length"] = str(dl.length if dl.size else 0)
    resp.headers["Accept-Ranges"] = "bytes"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    if partial:
        resp.headers["Content-Range"] = f"bytes {dl.start}-{dl.end}/{dl.size}"
    resp.headers.set("Content-Disposition", "attachment", filename=dl.name)
    return resp


@bp.put("/api/machines/<agent_id>/files/content")
@streamed_body
@api_login_required
def put_content(agent_id: str):
    """Body = the file; ?path=folder/name&overwrite=1. 201 {path, size, sha256}."""
    machine = inventory.get_machine(g.user, agent_id)
    result = services.upload(
        g.user,
        machine,
        request.args.get("path"),
        request.stream,
        length=request.content_length,
        overwrite=_flag(request.args.get("overwrite")),
        expect={
            k: request.args[f"expect_{k}"]
            for k in ("size", "mtime", "sha256")
            if request.args.get(f"expect_{k}")
        },
    )
    return jsonify(result), 201


@bp.post("/api/machines/<agent_id>/files/mkdir")
@api_login_required
def mkdir(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    data = json_body()
    result = manage.mkdir(g.user, machine, data.get("path"), parents=get_bool(data, "parents"))
    return jsonify(result), 201


@bp.post("/api/machines/<agent_id>/files/rename")
@api_login_required
def rename(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    data = json_body()
    return jsonify(
        manage.rename(
            g.user,
            machine,
            data.get("path"),
            data.get("to"),
            overwrite=data.get("overwrite") is True,
        )
    )


@bp.post("/api/machines/<agent_id>/files/delete")
@api_login_required
def delete(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    return jsonify(manage.delete(g.user, machine, json_body().get("path")))


@bp.post("/api/machines/<agent_id>/files/chmod")
@api_login_required
def chmod(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    data = json_body()
    return jsonify(manage.chmod(g.user, machine, data.get("path"), data.get("mode")))


@bp.get("/api/machines/<agent_id>/files/transfers")
@api_login_required
def transfers(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    rows = services.transfers(g.user, machine)
    return jsonify({"transfers": [r.to_dict() for r in rows]})


# ---------------------------------------------------------------- tus 1.0 (resumable uploads)


def _tus(resp: Response, upload=None) -> Response:
    if not resp.get_data():
        resp.headers.pop("Content-Type", None)  # no body: nothing to type (not text/html)
    resp.headers["Tus-Resumable"] = tus.VERSION
    resp.headers["Cache-Control"] = "no-store"
    if upload is not None:
        resp.headers["Upload-Expires"] = http_date(tus.expires_at(upload))
    return resp


@bp.post("/api/machines/<agent_id>/files/tus")
@streamed_body
@api_login_required
def tus_create(agent_id: str):
    """Upload-Length + Upload-Metadata (filename, folder, conflict) -> 201 Location; a body
    (creation-with-upload) is the upload's first bytes -> Upload-Offset past them."""
    machine = inventory.get_machine(g.user, agent_id)
    content_type = request.headers.get("Content-Type")
    has_body = (
        bool(request.content_length)
        or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        or tus.carries_data(content_type)  # an empty first part is a part too
    )
    upload, result = tus.create(
        g.user,
        machine,
        request.headers.get("Upload-Length"),
        request.headers.get("Upload-Metadata"),
        content_type=content_type,
        body=request.stream if has_body else None,
        body_length=request.content_length,
    )
    resp = Response(status=201)
    resp.headers["Location"] = url_for(
        "files_api.tus_upload", agent_id=agent_id, upload_id=upload.id
    )
    resp.headers["Upload-Offset"] = str(result["offset"])
    return _tus(resp, upload)


@bp.route("/api/machines/<agent_id>/files/tus/<upload_id>", methods=["HEAD"])
@api_login_required
def tus_upload(agent_id: str, upload_id: str):
    """The upload's offset (where a resume starts)."""
    machine = inventory.get_machine(g.user, agent_id)
    upload = tus.get(g.user, machine, upload_id)
    resp = Response(status=200)
    resp.headers["Upload-Offset"] = str(upload.offset)
    resp.headers["Upload-Length"] = str(upload.length)
    return _tus(resp, upload)


@bp.patch("/api/machines/<agent_id>/files/tus/<upload_id>")
@streamed_body
@api_login_required
def tus_patch(agent_id: str, upload_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    result = tus.append(
        g.user,
        machine,
        upload_id,
        request.headers.get("Upload-Offset"),
        request.headers.get("Content-Type"),
        request.stream,
    )
    resp = Response(status=204)
    resp.headers["Upload-Offset"] = str(result["offset"])
    return _tus(resp)


@bp.delete("/api/machines/<agent_id>/files/tus/<upload_id>")
@api_login_required
def tus_delete(agent_id: str, upload_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    tus.terminate(g.user, machine, upload_id)
    return _tus(Response(status=204))


@bp.get("/api/machines/<agent_id>/files/zip")
@api_login_required
def zip_folder(agent_id: str):
    """?path=folder -> the folder as a zip, streamed as it is read."""
    machine = inventory.get_machine(g.user, agent_id)
    name, chunks = archive.open_zip(g.user, machine, request.args.get("path"))
    resp = Response(chunks, mimetype="application/zip", direct_passthrough=True)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers.set("Content-Disposition", "attachment", filename=name)
    return resp
