"""Files JSON API against a real sshd (SFTP subsystem): browse, upload (PUT, temp name +
rename), download with Range, mkdir/rename/chmod/delete, transfer records, bad input, and
the role rule (a viewer browses and downloads; writing is refused)."""

from __future__ import annotations

import hashlib
import secrets

import pytest

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def box(app, make_user, sshd_machine, auth, client):
    """(machine, owner headers, a fresh folder in the sshd user's home); the folder is
    removed afterwards."""
    owner = make_user("owner")
    machine = sshd_machine(owner)
    headers = auth(owner)
    folder = f"portal-files-test-{secrets.token_hex(4)}"
    base = f"/api/machines/{machine.agent_id}/files"
    r = client.post(f"{base}/mkdir", json={"path": folder}, headers=headers)
    assert r.status_code == 201, r.json
    yield machine, owner, headers, r.json["path"]
    client.post(f"{base}/delete", json={"path": r.json["path"]}, headers=headers)


def _put(client, base, headers, path, data, **params):
    q = "&".join(f"{k}={v}" for k, v in params.items())
    return client.put(
        f"{base}/content?path={path}" + (f"&{q}" if q else ""),
        data=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
    )


def test_upload_list_download_range_and_records(app, client, box):
    machine, owner, headers, folder = box
    base = f"/api/machines/{machine.agent_id}/files"
    data = secrets.token_bytes(300_000)
    r = _put(client, base, headers, f"{folder}/blob.bin", data)
    assert r.status_code == 201, r.json
    assert r.json["sha256"] == hashlib.sha256(data).hexdigest()
    assert r.json["size"] == len(data)

    client.post(f"{base}/mkdir", json={"path": f"{folder}/zdir"}, headers=headers)
    r = client.get(f"{base}?path={folder}", headers=headers)
    assert r.status_code == 200
    names = [(e["name"], e["type"]) for e in r.json["entries"]]
    assert names == [("zdir", "dir"), ("blob.bin", "file")]  # folders first, no temp left
    assert r.json["entries"][1]["size"] == len(data)

    r = client.get(f"{base}/content?path={folder}/blob.bin", headers=headers)
    assert r.status_code == 200 and r.data == data
    assert r.headers["Accept-Ranges"] == "bytes"

    r = client.get(
        f"{base}/content?path={folder}/blob.bin",
        headers={**headers, "Range": "bytes=1000-70999"},
    )
    assert r.status_code == 206
    assert r.data == data[1000:71000]
    assert r.headers["Content-Range"] == f"bytes 1000-70999/{len(data)}"
    r = client.get(
        f"{base}/content?path={folder}/blob.bin", headers={**headers, "Range": "bytes=-10"}
    )
    assert r.status_code == 206 and r.data == data[-10:]
    r = client.get(
        f"{base}/content?path={folder}/blob.bin",
        headers={**headers, "Range": f"bytes={len(data)}-"},
    )
    assert r.status_code == 416 and r.json["error"]

    r = client.get(f"{base}/transfers", headers=headers)
    rows = r.json["transfers"]
    up = [t for t in rows if t["direction"] == "upload"][0]
    assert up["sha256"] == hashlib.sha256(data).hexdigest() and up["user"] == "owner"
    full = [t for t in rows if t["direction"] == "download" and t["size"] == len(data)]
    assert full and full[0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_overwrite_rename_chmod_delete(client, box):
    machine, owner, headers, folder = box
    base = f"/api/machines/{machine.agent_id}/files"
    assert _put(client, base, headers, f"{folder}/a.txt", b"one").status_code == 201
    r = _put(client, base, headers, f"{folder}/a.txt", b"two")
    assert r.status_code == 409 and "exists" in r.json["error"]
    r = _put(client, base, headers, f"{folder}/a.txt", b"three", overwrite=1)
    assert r.status_code == 201
    assert client.get(f"{base}/content?path={folder}/a.txt", headers=headers).data == b"three"

    r = client.post(
        f"{base}/rename", json={"path": f"{folder}/a.txt", "to": f"{folder}/b.txt"}, headers=headers
    )
    assert r.status_code == 200 and r.json["path"].endswith("/b.txt")
    r = client.post(
        f"{base}/chmod", json={"path": f"{folder}/b.txt", "mode": "0600"}, headers=headers
    )
    assert r.status_code == 200
    st = client.get(f"{base}/stat?path={folder}/b.txt", headers=headers).json
    assert st["mode"] == "0600" and st["type"] == "file" and st["size"] == 5

    client.post(f"{base}/mkdir", json={"path": f"{folder}/d"}, headers=headers)
    _put(client, base, headers, f"{folder}/d/inner", b"x")
    r = client.post(f"{base}/delete", json={"path": f"{folder}/d"}, headers=headers)
    assert r.status_code == 200 and r.json["removed"] == 2
    r = client.get(f"{base}/stat?path={folder}/d", headers=headers)
    assert r.status_code == 404


@pytest.mark.parametrize(
    "method,url,body,status",
    [
        ("get", "?path={f}/missing", None, 404),
        ("get", "/content?path={f}/missing", None, 404),
        ("get", "/content?path=/dev/zero", None, 400),
        ("get", "/content?path={f}", None, 400),
        ("get", "?path=/root", None, 403),
        ("get", "/stat", None, 400),
        ("post", "/mkdir", {"path": "{f}/bad\nname"}, 400),
        ("post", "/mkdir", {"path": "{f}"}, 409),
        ("post", "/mkdir", {"path": 5}, 400),
        ("post", "/mkdir", {"path": "{f}/a/b", "parents": "maybe"}, 400),
        ("post", "/mkdir", {"path": "{f}/a/b\nc", "parents": True}, 400),
        ("post", "/chmod", {"path": "{f}", "mode": "999"}, 400),
        ("post", "/rename", {"path": "{f}/missing", "to": "{f}/x"}, 404),
        ("post", "/delete", {"path": "/"}, 400),
        ("put", "/content?path={f}/new%0Aline", b"x", 400),
        ("put", "/content?path=/root/x", b"x", 403),
    ],
)
def test_bad_input_is_a_clear_error(client, box, method, url, body, status):
    machine, owner, headers, folder = box
    base = f"/api/machines/{machine.agent_id}/files"
    url = base + url.replace("{f}", folder)
    if isinstance(body, dict):
        body = {k: (v.replace("{f}", folder) if isinstance(v, str) else v) for k, v in body.items()}
        r = client.post(url, json=body, headers=headers)
    elif method == "put":
        r = client.put(url, data=body, headers=headers)
    else:
        r = client.get(url, headers=headers)
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    assert r.is_json and r.json["error"]
    listing = client.get(f"{base}?path={folder}&hidden=1", headers=headers).json
    assert listing["entries"] == []  # nothing half-written, no temporary left


def test_mkdir_with_parents_is_mkdir_p(app, client, box):
    machine, owner, headers, folder = box
    base = f"/api/machines/{machine.agent_id}/files"
    r = client.post(
        f"{base}/mkdir", json={"path": f"{folder}/a/b/c", "parents": True}, headers=headers
    )
    assert r.status_code == 201, r.json
    assert r.json["path"] == f"{folder}/a/b/c"
    assert r.json["created"] == [f"{folder}/a", f"{folder}/a/b", f"{folder}/a/b/c"]
    r = client.get(f"{base}?path={folder}/a/b", headers=headers)
    assert [(e["name"], e["type"]) for e in r.json["entries"]] == [("c", "dir")]

    # There already: no error, nothing made. Without `parents` it is still a 409.
    r = client.post(
        f"{base}/mkdir", json={"path": f"{folder}/a/b", "parents": True}, headers=headers
    )
    assert (r.status_code, r.json["created"]) == (201, [])
    r = client.post(f"{base}/mkdir", json={"path": f"{folder}/a/b"}, headers=headers)
    assert r.status_code == 409

    # A file on the way: 409, and nothing made under it or beside it.
    assert _put(client, base, headers, f"{folder}/a/file", b"x").status_code == 201
    r = client.post(
        f"{base}/mkdir", json={"path": f"{folder}/a/file/d", "parents": True}, headers=headers
    )
    assert r.status_code == 409 and "not a folder" in r.json["error"]
    names = [
        e["name"] for e in client.get(f"{base}?path={folder}/a", headers=headers).json["entries"]
    ]
    assert names == ["b", "file"]

    # Each folder made is audited like a plain mkdir.
    from portal.audit.models import AuditEvent
    from portal.extensions import db

    app.extensions["portal_audit"].flush()
    with app.app_context():
        made = [
            e.details["path"]
            for e in db.session.query(AuditEvent).filter_by(action="file_changed")
            if e.details.get("action") == "mkdir" and e.details["path"].startswith(f"{folder}/a")
        ]
    assert sorted(made) == [f"{folder}/a", f"{folder}/a/b", f"{folder}/a/b/c"]


def test_upload_onto_a_folder_is_refused(client, box):
    machine, owner, headers, folder = box
    base = f"/api/machines/{machine.agent_id}/files"
    client.post(f"{base}/mkdir", json={"path": f"{folder}/sub"}, headers=headers)
    r = _put(client, base, headers, f"{folder}/sub", b"data", overwrite=1)
    assert r.status_code == 409 and "folder" in r.json["error"]


def test_viewer_browses_and_downloads_but_cannot_write(client, box, caller_for, auth):
    machine, owner, headers, folder = box
    base = f"/api/machines/{machine.agent_id}/files"
    _put(client, base, headers, f"{folder}/f.txt", b"hello")
    viewer = caller_for(machine, owner, "viewer")
    vh = auth(viewer)
    assert client.get(f"{base}?path={folder}", headers=vh).status_code == 200
    assert client.get(f"{base}/content?path={folder}/f.txt", headers=vh).data == b"hello"
    r = _put(client, base, vh, f"{folder}/g.txt", b"no")
    assert r.status_code == 403 and r.json["error"]
    for action, body in [
        ("mkdir", {"path": f"{folder}/x"}),
        ("delete", {"path": f"{folder}/f.txt"}),
        ("chmod", {"path": f"{folder}/f.txt", "mode": "0777"}),
        ("rename", {"path": f"{folder}/f.txt", "to": f"{folder}/h.txt"}),
    ]:
        assert client.post(f"{base}/{action}", json=body, headers=vh).status_code == 403
    names = [
        e["name"] for e in client.get(f"{base}?path={folder}", headers=headers).json["entries"]
    ]
    assert names == ["f.txt"]
    stranger = caller_for(machine, owner, "stranger")
    assert client.get(f"{base}?path={folder}", headers=auth(stranger)).status_code == 404


def test_folder_zip_holds_the_files(client, box):
    import io
    import zipfile

    machine, owner, headers, folder = box
    base = f"/api/machines/{machine.agent_id}/files"
    big = secrets.token_bytes(200_000)
    _put(client, base, headers, f"{folder}/top.txt", b"top")
    client.post(f"{base}/mkdir", json={"path": f"{folder}/sub"}, headers=headers)
    _put(client, base, headers, f"{folder}/sub/big.bin", big)
    _put(client, base, headers, f"{folder}/sub/empty", b"")
    r = client.get(f"{base}/zip?path={folder}", headers=headers)
    assert r.status_code == 200 and r.mimetype == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.data))
    root = folder.rsplit("/", 1)[1]
    assert sorted(zf.namelist()) == sorted(
        [f"{root}/sub/", f"{root}/sub/big.bin", f"{root}/sub/empty", f"{root}/top.txt"]
    )
    assert zf.read(f"{root}/sub/big.bin") == big and zf.read(f"{root}/top.txt") == b"top"
    rows = client.get(f"{base}/transfers", headers=headers).json["transfers"]
    z = [t for t in rows if t["direction"] == "zip"][0]
    assert z["sha256"] == hashlib.sha256(r.data).hexdigest() and z["result"] == "ok"
    r = client.get(f"{base}/zip?path={folder}/top.txt", headers=headers)
    assert r.status_code == 400 and r.json["error"]


def test_machine_page_lists_transfers_escaped(client, box, login):
    machine, owner, headers, folder = box
    base = f"/api/machines/{machine.agent_id}/files"
    name = "<script>alert(1)<%2Fscript>.txt"
    r = _put(client, base, headers, f"{folder}/x.txt", b"payload")
    assert r.status_code == 201
    client.post(f"{base}/mkdir", json={"path": f"{folder}/<b>x</b>"}, headers=headers)
    _put(client, base, headers, f"{folder}/%3Cb%3Ex%3C%2Fb%3E/{name}", b"1")
    login(owner)
    page = client.get(f"/machines/{machine.agent_id}").get_data(as_text=True)
    assert f"/machines/{machine.agent_id}/transfers" in page
    html = client.get(f"/machines/{machine.agent_id}/transfers").get_data(as_text=True)
    assert f"{folder}/x.txt" in html
    assert hashlib.sha256(b"payload").hexdigest()[:12] in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_edit_conflict_when_changed_on_the_machine(client, box):
    machine, owner, headers, folder = box
    base = f"/api/machines/{machine.agent_id}/files"
    _put(client, base, headers, f"{folder}/conf.txt", b"v1")
    st = client.get(f"{base}/stat?path={folder}/conf.txt", headers=headers).json
    seen = {
        "expect_size": st["size"],
        "expect_mtime": st["mtime"],
        "expect_sha256": hashlib.sha256(b"v1").hexdigest(),
    }
    # Someone changes the file on the machine (same size, so only the hash tells).
    _put(client, base, headers, f"{folder}/conf.txt", b"v2", overwrite=1)
    r = _put(client, base, headers, f"{folder}/conf.txt", b"mine", overwrite=1, **seen)
    assert r.status_code == 409 and "changed on the machine" in r.json["error"]
    assert client.get(f"{base}/content?path={folder}/conf.txt", headers=headers).data == b"v2"
    seen["expect_sha256"] = hashlib.sha256(b"v2").hexdigest()
    seen.pop("expect_mtime")
    r = _put(client, base, headers, f"{folder}/conf.txt", b"mine", overwrite=1, **seen)
    assert r.status_code == 201
    assert client.get(f"{base}/content?path={folder}/conf.txt", headers=headers).data == b"mine"


def test_a_user_s_concurrent_sftp_sessions_are_capped(app, box, live_server):
    """PORTAL_FILES_MAX_CONCURRENT: a download in progress holds its session until its last
    byte; one more than the cap is a 429 with Retry-After (nothing else changes), and the
    slot is free again once that download is gone."""
    import os

    import requests

    from tests.fixtures.terminal import wait_for

    machine, owner, headers, folder = box
    big = os.path.join(folder, "big.bin")
    with open(big, "wb") as fh:  # written beside the test (the folder is on this machine)
        fh.write(secrets.token_bytes(64 * 1024 * 1024))
    os.chmod(big, 0o644)
    app.config["PORTAL_FILES_MAX_CONCURRENT"] = 1
    url = f"{live_server.url}/api/machines/{machine.agent_id}/files"
    first = requests.get(f"{url}/content?path={big}", headers=headers, stream=True, timeout=30)
    assert first.status_code == 200
    next(first.iter_content(65536))  # it is flowing; the reader then stops reading

    r = requests.get(f"{url}?path={folder}", headers=headers, timeout=30)
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"] == "5"
    assert "1 file transfers running" in r.json()["error"]

    first.close()
    assert wait_for(
        lambda: requests.get(f"{url}?path={folder}", headers=headers, timeout=30).ok,
        timeout=15,
        interval=0.2,
    )
