"""Resumable uploads (tus 1.0) against a real sshd and a live HTTP server: a PATCH whose
socket is cut halfway keeps the bytes that arrived, HEAD reports that offset, the upload
resumes from it (not from zero) and lands under its real name with the right SHA-256;
conflicts (fail / keep both / skip), termination, offset mismatch, roles, bad input."""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import time

import pytest

pytestmark = pytest.mark.timeout(90)

TUS = {"Tus-Resumable": "1.0.0"}


def _meta(**kv) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in kv.items())


@pytest.fixture
def box(app, make_user, sshd_machine, auth, client):
    owner = make_user("owner")
    machine = sshd_machine(owner)
    headers = auth(owner)
    base = f"/api/machines/{machine.agent_id}/files"
    r = client.post(
        f"{base}/mkdir", json={"path": f"portal-tus-test-{secrets.token_hex(4)}"}, headers=headers
    )
    assert r.status_code == 201, r.json
    yield machine, owner, headers, r.json["path"], base
    client.post(f"{base}/delete", json={"path": r.json["path"]}, headers=headers)


def _create(client, base, headers, folder, name, length, *, body=None, **extra):
    """A tus creation; with `body`, the first bytes go with it (creation-with-upload)."""
    data = {} if body is None else {"Content-Type": "application/offset+octet-stream"}
    return client.post(
        f"{base}/tus",
        data=body,
        headers={
            **headers,
            **TUS,
            **data,
            "Upload-Length": str(length),
            "Upload-Metadata": _meta(filename=name, folder=folder, **extra),
        },
    )


def _patch(client, location, headers, offset, body):
    return client.patch(
        location,
        data=body,
        headers={
            **headers,
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        },
    )


def _names(client, base, headers, folder, hidden=True):
    r = client.get(f"{base}?path={folder}&hidden={int(hidden)}", headers=headers)
    return sorted(e["name"] for e in r.json["entries"])


def _offset(client, location, headers) -> int:
    r = client.head(location, headers={**headers, **TUS})
    assert r.status_code == 200
    return int(r.headers["Upload-Offset"])


def test_cut_connection_resumes_from_the_offset(client, box, live_server):
    machine, owner, headers, folder, base = box
    data = secrets.token_bytes(7 * 1024 * 1024)  # over the app's 6 MiB request cap
    r = _create(client, base, headers, folder, "big.bin", len(data))
    assert r.status_code == 201, r.get_data(as_text=True)
    location = r.headers["Location"]
    assert r.headers["Tus-Resumable"] == "1.0.0" and r.headers["Upload-Expires"]
    assert "Content-Type" not in r.headers  # an empty answer claims no type (not text/html)

    # A raw PATCH that promises all the bytes, sends about half, and the socket is cut.
    half = len(data) // 2
    sock = socket.create_connection(("127.0.0.1", live_server.port))
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {headers['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + data[:half])
    time.sleep(0.5)  # let the server write what it has read (not a timing assertion)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()

    deadline = time.monotonic() + 20
    offset = _offset(client, location, headers)
    while offset == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        offset = _offset(client, location, headers)
    assert 0 < offset <= half, offset  # resumes from what arrived, not from zero
    assert "big.bin" not in _names(client, base, headers, folder)  # never under the real name

    r = _patch(client, location, headers, 0, data)
    assert r.status_code == 409  # a stale offset is refused
    r = _patch(client, location, headers, offset, data[offset:])
    assert r.status_code == 204, r.get_data(as_text=True)
    assert int(r.headers["Upload-Offset"]) == len(data)
    assert _names(client, base, headers, folder) == ["big.bin"]  # temporary renamed away
    got = client.get(f"{base}/content?path={folder}/big.bin", headers=headers).data
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    rows = client.get(f"{base}/transfers", headers=headers).json["transfers"]
    up = [t for t in rows if t["direction"] == "upload"][0]
    assert up["sha256"] == hashlib.sha256(data).hexdigest() and up["size"] == len(data)
    assert client.head(location, headers={**headers, **TUS}).status_code == 404


def test_conflicts_fail_keep_both_skip(client, box):
    machine, owner, headers, folder, base = box
    client.put(f"{base}/content?path={folder}/a.txt", data=b"old", headers=headers)
    assert _create(client, base, headers, folder, "a.txt", 3).status_code == 409
    r = _create(client, base, headers, folder, "a.txt", 3, conflict="keep")
    assert _patch(client, r.headers["Location"], headers, 0, b"new").status_code == 204
    r = _create(client, base, headers, folder, "a.txt", 4, conflict="skip")
    assert _patch(client, r.headers["Location"], headers, 0, b"skip").status_code == 204
    assert _names(client, base, headers, folder) == ["a (1).txt", "a.txt"]
    assert client.get(f"{base}/content?path={folder}/a.txt", headers=headers).data == b"old"
    r = _create(client, base, headers, folder, "a.txt", 5, conflict="overwrite")
    assert _patch(client, r.headers["Location"], headers, 0, b"fresh").status_code == 204
    assert client.get(f"{base}/content?path={folder}/a.txt", headers=headers).data == b"fresh"


def _landed(client, base, headers, path) -> tuple[bytes, str | None]:
    """What the file at `path` holds, and the SHA-256 its upload was recorded with."""
    data = client.get(f"{base}/content?path={path}", headers=headers).data
    rows = client.get(f"{base}/transfers", headers=headers).json["transfers"]
    return data, next((r["sha256"] for r in rows if r["path"] == path), None)


def test_a_small_file_goes_with_its_creation(client, box):
    """creation-with-upload: one request for a whole small file, as the drawer sends it;
    a creation carrying only the first part is then PATCHed from where it stands."""
    machine, owner, headers, folder, base = box
    data = secrets.token_bytes(300_000)
    r = _create(client, base, headers, folder, "one.bin", len(data), body=data)
    assert r.status_code == 201, r.json
    assert r.headers["Upload-Offset"] == str(len(data))
    assert client.head(r.headers["Location"], headers={**headers, **TUS}).status_code == 404
    assert _landed(client, base, headers, f"{folder}/one.bin") == (
        data,
        hashlib.sha256(data).hexdigest(),
    )
    r = _create(client, base, headers, folder, "two.bin", len(data), body=data[:1000])
    assert r.status_code == 201 and r.headers["Upload-Offset"] == "1000"
    assert _offset(client, r.headers["Location"], headers) == 1000
    assert _patch(client, r.headers["Location"], headers, 1000, data[1000:]).status_code == 204
    assert _landed(client, base, headers, f"{folder}/two.bin")[0] == data
    assert _names(client, base, headers, folder) == ["one.bin", "two.bin"]


def test_an_empty_file_lands_when_it_is_created(client, box):
    """tus clients send no PATCH for 0 bytes: the creation finishes it (the drawer's empty
    files used to stay a hidden temporary)."""
    machine, owner, headers, folder, base = box
    for name, body in (("empty.txt", None), ("empty2.txt", b"")):
        r = _create(client, base, headers, folder, name, 0, body=body)
        assert r.status_code == 201 and r.headers["Upload-Offset"] == "0"
        assert _landed(client, base, headers, f"{folder}/{name}") == (
            b"",
            hashlib.sha256(b"").hexdigest(),
        )
    client.put(f"{base}/content?path={folder}/kept.txt", data=b"old", headers=headers)
    r = _create(client, base, headers, folder, "kept.txt", 0, conflict="skip")
    assert r.status_code == 201
    assert _names(client, base, headers, folder) == ["empty.txt", "empty2.txt", "kept.txt"]
    assert client.get(f"{base}/content?path={folder}/kept.txt", headers=headers).data == b"old"


def test_a_creation_with_bad_data_makes_nothing(client, box):
    machine, owner, headers, folder, base = box
    r = client.post(
        f"{base}/tus",
        data=b"abcd",
        headers={
            **headers,
            **TUS,
            "Content-Type": "text/plain",
            "Upload-Length": "4",
            "Upload-Metadata": _meta(filename="t.txt", folder=folder),
        },
    )
    assert r.status_code == 415 and r.json["error"]
    r = _create(client, base, headers, folder, "long.bin", 3, body=b"abcdef")
    assert r.status_code == 400 and "past Upload-Length" in r.json["error"]
    client.put(f"{base}/content?path={folder}/x.bin", data=b"old", headers=headers)
    assert _create(client, base, headers, folder, "x.bin", 3, body=b"new").status_code == 409
    assert _names(client, base, headers, folder) == ["x.bin"]
    assert client.get(f"{base}/content?path={folder}/x.bin", headers=headers).data == b"old"


def test_terminate_removes_the_temporary(client, box):
    machine, owner, headers, folder, base = box
    r = _create(client, base, headers, folder, "t.bin", 10)
    location = r.headers["Location"]
    assert _patch(client, location, headers, 0, b"12345").status_code == 204
    assert len(_names(client, base, headers, folder)) == 1  # the hidden temporary
    assert client.delete(location, headers={**headers, **TUS}).status_code == 204
    assert _names(client, base, headers, folder) == []
    assert _patch(client, location, headers, 5, b"67890").status_code == 404


@pytest.mark.parametrize(
    "length,meta,status",
    [
        ("abc", {"filename": "x"}, 400),
        ("-1", {"filename": "x"}, 400),
        ("5", {}, 400),
        ("5", {"filename": "bad\nname"}, 400),
        ("5", {"filename": "x", "conflict": "maybe"}, 400),
        ("5", {"filename": "x", "folder": "/no/such/folder"}, 404),
        ("5", {"filename": "x", "folder": "/root"}, 403),
    ],
)
def test_bad_creation_is_a_clear_error(client, box, length, meta, status):
    machine, owner, headers, folder, base = box
    meta = {"folder": folder, **meta}
    r = client.post(
        f"{base}/tus",
        headers={**headers, **TUS, "Upload-Length": length, "Upload-Metadata": _meta(**meta)},
    )
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.json["error"]
    assert _names(client, base, headers, folder) == []


def test_patch_checks_type_and_length(client, box):
    machine, owner, headers, folder, base = box
    location = _create(client, base, headers, folder, "p.bin", 4).headers["Location"]
    r = client.patch(location, data=b"ab", headers={**headers, **TUS, "Upload-Offset": "0"})
    assert r.status_code == 415
    assert _patch(client, location, headers, 0, b"abcdef").status_code == 400
    assert _patch(client, location, headers, "x", b"ab").status_code == 400


def test_viewer_cannot_upload_resumably(client, box, caller_for, auth):
    machine, owner, headers, folder, base = box
    location = _create(client, base, headers, folder, "v.bin", 4).headers["Location"]
    viewer = auth(caller_for(machine, owner, "viewer"))
    assert _create(client, base, viewer, folder, "w.bin", 4).status_code == 403
    assert _patch(client, location, viewer, 0, b"abcd").status_code == 403
    assert client.delete(location, headers={**viewer, **TUS}).status_code == 403
    other = auth(caller_for(machine, owner, "operator"))
    assert _patch(client, location, other, 0, b"abcd").status_code == 404  # not theirs
    assert _offset(client, location, headers) == 0


def test_idle_uploads_expire_with_their_temporary(app, client, box):
    machine, owner, headers, folder, base = box
    location = _create(client, base, headers, folder, "idle.bin", 10).headers["Location"]
    assert _patch(client, location, headers, 0, b"12345").status_code == 204
    assert len(_names(client, base, headers, folder)) == 1
    app.config["PORTAL_FILES_UPLOAD_EXPIRY"] = 0
    result = app.test_cli_runner().invoke(args=["files", "expire"])
    assert result.exit_code == 0 and "expired 1" in result.output, result.output
    assert _names(client, base, headers, folder) == []
    assert client.head(location, headers={**headers, **TUS}).status_code == 404


def test_a_browser_session_sends_bodies_over_the_app_s_6_mib_cap(client, box, login):
    """The drawer signs requests with the session cookie and X-CSRFToken and sends 16 MiB
    PATCHes: the CSRF check must not trip werkzeug's body cap (a 413 before the view). A
    JSON body over the cap is still refused, and a PATCH without the CSRF token too."""
    machine, owner, headers, folder, base = box
    token = login(owner)
    browser = {"X-CSRFToken": token}
    data = secrets.token_bytes(9 * 1024 * 1024)
    r = _create(client, base, browser, folder, "big.bin", len(data))
    assert r.status_code == 201, r.json
    location = r.headers["Location"]
    r = _patch(client, location, {}, 0, data[: 7 * 1024 * 1024])
    assert r.status_code == 400 and r.json["code"] == "csrf"  # no token: refused
    r = _patch(client, location, browser, 0, data)
    assert r.status_code == 204, r.json
    r = client.put(
        f"{base}/content?path={folder}/put.bin",
        data=data,
        headers={**browser, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.json
    assert r.json["sha256"] == hashlib.sha256(data).hexdigest()
    got = client.get(f"{base}/content?path={folder}/big.bin").data
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    r = client.post(
        f"{base}/mkdir",
        data=b"{" + b" " * (7 * 1024 * 1024) + b"}",
        headers={**browser, "Content-Type": "application/json"},
    )
    assert r.status_code == 413
