"""Folder uploads over tus against a real sshd: a file's `relativePath` ("top/a/b.txt") makes
the missing folders under the target folder before the upload is created, the conflict rule
applies per file, the folders made are audited; a bad relative path (absolute, `..`, empty or
`.` segments, NUL, too long, too deep, a file in the way) is a clear 400/409 that creates
nothing; a viewer cannot make folders this way."""

from __future__ import annotations

import secrets

import pytest

from portal.files.paths import MAX_PATH, RELATIVE_DEPTH_MAX
from tests.test_files_tus import TUS, _meta, _names, _patch

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def box(app, make_user, sshd_machine, auth, client):
    owner = make_user("owner")
    machine = sshd_machine(owner)
    headers = auth(owner)
    base = f"/api/machines/{machine.agent_id}/files"
    r = client.post(
        f"{base}/mkdir",
        json={"path": f"portal-folder-test-{secrets.token_hex(4)}"},
        headers=headers,
    )
    assert r.status_code == 201, r.json
    yield machine, owner, headers, r.json["path"], base
    client.post(f"{base}/delete", json={"path": r.json["path"]}, headers=headers)


def _create(client, base, headers, folder, relative, length, **extra):
    meta = {"folder": folder, "relativePath": relative, **extra}
    return client.post(
        f"{base}/tus",
        headers={**headers, **TUS, "Upload-Length": str(length), "Upload-Metadata": _meta(**meta)},
    )


def _upload(client, base, headers, folder, relative, data: bytes, **extra) -> None:
    r = _create(client, base, headers, folder, relative, len(data), **extra)
    assert r.status_code == 201, r.get_data(as_text=True)
    assert _patch(client, r.headers["Location"], headers, 0, data).status_code == 204


def _get(client, base, headers, path) -> bytes:
    r = client.get(f"{base}/content?path={path}", headers=headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.data


def test_relative_path_makes_the_missing_folders(app, client, box):
    machine, owner, headers, folder, base = box
    _upload(client, base, headers, folder, "top/a/b/c.txt", b"deep", filename="c.txt")
    _upload(client, base, headers, folder, "top/a/d.txt", b"beside")  # filename optional
    _upload(client, base, headers, folder, "top/e.txt", b"near")
    assert _names(client, base, headers, folder) == ["top"]
    assert _names(client, base, headers, f"{folder}/top") == ["a", "e.txt"]
    assert _names(client, base, headers, f"{folder}/top/a") == ["b", "d.txt"]
    assert _get(client, base, headers, f"{folder}/top/a/b/c.txt") == b"deep"
    assert _get(client, base, headers, f"{folder}/top/a/d.txt") == b"beside"
    assert _get(client, base, headers, f"{folder}/top/e.txt") == b"near"
    # the transfer names the real path; each folder made is audited once
    transfers = client.get(f"{base}/transfers", headers=headers).json["transfers"]
    assert f"{folder}/top/a/b/c.txt" in [t["path"] for t in transfers]
    from portal.audit.models import AuditEvent
    from portal.extensions import db

    app.extensions["portal_audit"].flush()
    with app.app_context():
        made = [
            e.details["path"]
            for e in db.session.query(AuditEvent).filter_by(action="file_changed")
            if e.details.get("by") == "upload"
        ]
    assert sorted(made) == [f"{folder}/top", f"{folder}/top/a", f"{folder}/top/a/b"]


def test_conflict_rule_applies_per_file_in_a_folder(client, box):
    machine, owner, headers, folder, base = box
    _upload(client, base, headers, folder, "top/a.txt", b"old")
    assert _create(client, base, headers, folder, "top/a.txt", 3).status_code == 409
    _upload(client, base, headers, folder, "top/a.txt", b"two", conflict="keep")
    _upload(client, base, headers, folder, "top/a.txt", b"skip", conflict="skip")
    _upload(client, base, headers, folder, "top/b.txt", b"new", conflict="skip")  # no clash
    assert _names(client, base, headers, f"{folder}/top") == ["a (1).txt", "a.txt", "b.txt"]
    assert _get(client, base, headers, f"{folder}/top/a.txt") == b"old"
    _upload(client, base, headers, folder, "top/a.txt", b"fresh", conflict="overwrite")
    assert _get(client, base, headers, f"{folder}/top/a.txt") == b"fresh"


DEEP = "/".join(["d"] * RELATIVE_DEPTH_MAX) + "/x.txt"  # one segment too many
LONG = "/".join(["n" * 255] * 16)  # 4095 characters: fine alone, too long under the folder


@pytest.mark.parametrize(
    "relative,extra",
    [
        ("/etc/x.txt", {}),
        ("../x.txt", {}),
        ("top/../../x.txt", {}),
        ("top//x.txt", {}),
        ("./x.txt", {}),
        ("top/./x.txt", {}),
        ("top/", {}),
        ("", {}),
        ("top\x00/x.txt", {}),
        ("top\n/x.txt", {}),
        ("top/" + "n" * 256, {}),
        ("x" * (MAX_PATH + 1), {}),
        (DEEP, {}),
        (LONG, {}),
        ("top/x.txt", {"filename": "y.txt"}),
    ],
    ids=[
        "absolute",
        "dotdot",
        "dotdot-inside",
        "empty-segment",
        "dot",
        "dot-inside",
        "trailing-slash",
        "empty",
        "nul",
        "newline",
        "long-name",
        "too-long",
        "too-deep",
        "too-long-under-folder",
        "filename-mismatch",
    ],
)
def test_bad_relative_path_is_a_400_and_creates_nothing(client, box, relative, extra):
    machine, owner, headers, folder, base = box
    r = _create(client, base, headers, folder, relative, 4, **extra)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json["error"]
    assert _names(client, base, headers, folder) == []


def test_a_file_in_the_way_is_a_409(client, box):
    machine, owner, headers, folder, base = box
    _upload(client, base, headers, folder, "top", b"a file")
    r = _create(client, base, headers, folder, "top/a/x.txt", 4)
    assert r.status_code == 409, r.get_data(as_text=True)
    assert "not a folder" in r.json["error"]
    assert _names(client, base, headers, folder) == ["top"]


def test_viewer_cannot_make_folders_by_uploading(client, box, caller_for, auth):
    machine, owner, headers, folder, base = box
    viewer = auth(caller_for(machine, owner, "viewer"))
    r = _create(client, base, viewer, folder, "top/a/x.txt", 4)
    assert r.status_code == 403, r.get_data(as_text=True)
    assert _names(client, base, headers, folder) == []
