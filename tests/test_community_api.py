"""Community JSON API: the flow, rights, bad input (clear 4xx, nothing changed) and cascades."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

_HASH: dict = {}


def quick_users(app, *specs):
    """Users straight into the table with one shared argon2 hash: the API tests need many
    users and the hash is what costs time (tests that sign in through the form use PASSWORD)."""
    from portal.accounts.models import User
    from portal.accounts.passwords import hasher
    from portal.extensions import db
    from tests.conftest import PASSWORD

    out = []
    with app.app_context():
        if "h" not in _HASH:
            _HASH["h"] = hasher().hash(PASSWORD)
        for spec in specs:
            name, _, role = spec.partition(":")
            u = User(
                email=f"{name}@example.test",
                username=name,
                username_key=name.lower(),
                password_hash=_HASH["h"],
                role=role or "user",
                active=True,
                token_version=0,
            )
            db.session.add(u)
            db.session.flush()
            out.append(u)
        db.session.commit()
        for u in out:
            db.session.refresh(u)
            db.session.expunge(u)
    return out


@pytest.fixture
def people(app, auth):
    alice, bob, root = quick_users(app, "alice", "bob", "boss:admin")
    return {
        "alice": (alice, auth(alice)),
        "bob": (bob, auth(bob)),
        "admin": (root, auth(root)),
    }


def _issue(client, headers, **over):
    body = {"title": "apt update fails", "body": "`apt update` says **404**", "tags": ["apt"]}
    body.update(over)
    r = client.post("/api/community/issues", json=body, headers=headers)
    assert r.status_code == 201, r.json
    return r.json["issue"]


def _fix(client, headers, issue_id, body="Run `apt clean` first"):
    r = client.post(f"/api/community/issues/{issue_id}/fixes", json={"body": body}, headers=headers)
    assert r.status_code == 201, r.json
    return r.json["fix"]


def _counts(app):
    from portal.community.models import Attachment, Fix, FixLike, Issue, IssueTag
    from portal.extensions import db

    with app.app_context():
        return {
            m.__tablename__: db.session.scalar(select(func.count()).select_from(m))
            for m in (Issue, IssueTag, Fix, FixLike, Attachment)
        }


def test_issue_fix_like_accept_flow(client, people):
    _, ah = people["alice"]
    _, bh = people["bob"]
    issue = _issue(client, ah, tags="apt, Debian,apt")
    assert issue["tags"] == ["apt", "debian"]
    assert issue["status"] == "open" and issue["accepted_fix_id"] is None
    assert issue["body_html"] == "<p><code>apt update</code> says <strong>404</strong></p>\n"
    assert set(issue) >= {
        "id",
        "title",
        "body",
        "body_html",
        "tags",
        "status",
        "author",
        "fixes_count",
        "accepted_fix_id",
        "created_at",
        "updated_at",
    }
    assert issue["author"]["username"] == "alice" and issue["created_at"].endswith("Z")

    fix = _fix(client, bh, issue["id"])
    assert set(fix) >= {
        "id",
        "issue_id",
        "body",
        "body_html",
        "author",
        "likes",
        "liked_by_me",
        "accepted",
        "created_at",
    }
    assert fix["likes"] == 0 and fix["liked_by_me"] is False and fix["accepted"] is False
    second = _fix(client, ah, issue["id"], "Or switch mirrors")

    url = f"/api/community/issues/{issue['id']}/fixes/{second['id']}/like"
    for _ in range(2):  # idempotent
        r = client.post(url, headers=bh)
        assert r.status_code == 200 and r.json == {"likes": 1, "liked": True}
    assert client.post(url, headers=ah).json == {"likes": 2, "liked": True}
    assert client.delete(url, headers=ah).json == {"likes": 1, "liked": False}
    assert client.delete(url, headers=ah).json == {"likes": 1, "liked": False}

    fixes = client.get(f"/api/community/issues/{issue['id']}/fixes", headers=bh).json["fixes"]
    assert [f["id"] for f in fixes] == [second["id"], fix["id"]]  # most liked first
    assert fixes[0]["liked_by_me"] is True and fixes[1]["liked_by_me"] is False

    r = client.post(f"/api/community/issues/{issue['id']}/fixes/{fix['id']}/accept", headers=ah)
    assert r.status_code == 200
    assert r.json["fix"]["accepted"] is True and r.json["issue"]["status"] == "solved"
    got = client.get(f"/api/community/issues/{issue['id']}", headers=bh).json["issue"]
    assert got["status"] == "solved" and got["accepted_fix_id"] == fix["id"]
    assert got["fixes_count"] == 2
    fixes = client.get(f"/api/community/issues/{issue['id']}/fixes", headers=bh).json["fixes"]
    assert [f["id"] for f in fixes] == [fix["id"], second["id"]]  # accepted first

    # accepting another fix moves the flag: one accepted fix per issue
    client.post(f"/api/community/issues/{issue['id']}/fixes/{second['id']}/accept", headers=ah)
    fixes = client.get(f"/api/community/issues/{issue['id']}/fixes", headers=bh).json["fixes"]
    assert [f["accepted"] for f in fixes] == [True, False] and fixes[0]["id"] == second["id"]


def test_update_and_delete_by_author_or_admin(client, people, app):
    _, ah = people["alice"]
    _, bh = people["bob"]
    _, rh = people["admin"]
    issue = _issue(client, ah)
    r = client.put(
        f"/api/community/issues/{issue['id']}", json={"title": "apt update 404s"}, headers=ah
    )
    assert r.status_code == 200 and r.json["issue"]["title"] == "apt update 404s"
    assert r.json["issue"]["body"] == issue["body"]
    r = client.put(
        f"/api/community/issues/{issue['id']}",
        json={"tags": ["x", "y"], "body": "# new"},
        headers=rh,
    )
    assert r.status_code == 200 and r.json["issue"]["tags"] == ["x", "y"]
    assert r.json["issue"]["body_html"] == "<h1>new</h1>\n"
    assert client.delete(f"/api/community/issues/{issue['id']}", headers=rh).status_code == 204
    assert client.get(f"/api/community/issues/{issue['id']}", headers=ah).status_code == 404
    assert _counts(app)["community_issues"] == 0


def test_delete_takes_fixes_likes_and_tags_with_it(client, people, app):
    _, ah = people["alice"]
    _, bh = people["bob"]
    keep = _issue(client, bh, title="unrelated one")
    _fix(client, ah, keep["id"])
    issue = _issue(client, ah)
    f = _fix(client, bh, issue["id"])
    client.post(f"/api/community/issues/{issue['id']}/fixes/{f['id']}/like", headers=ah)
    before = _counts(app)
    assert before["community_fix_likes"] == 1 and before["community_fixes"] == 2
    assert client.delete(f"/api/community/issues/{issue['id']}", headers=ah).status_code == 204
    after = _counts(app)
    assert after == {
        "community_issues": 1,
        "community_issue_tags": 1,
        "community_fixes": 1,
        "community_fix_likes": 0,
        "community_attachments": 0,
    }


def test_list_search_filters_sorts_and_pages(client, people):
    _, ah = people["alice"]
    _, bh = people["bob"]
    a = _issue(
        client,
        ah,
        title="Docker daemon will not start",
        body="systemd says failed",
        tags=["docker"],
    )
    b = _issue(
        client, bh, title="SSH key rejected", body="Permission denied (publickey)", tags=["ssh"]
    )
    c = _issue(
        client,
        bh,
        title="Disk full on build box",
        body="docker images use 40G",
        tags=["disk", "docker"],
    )
    f = _fix(client, ah, b["id"])
    client.post(f"/api/community/issues/{b['id']}/fixes/{f['id']}/like", headers=ah)
    client.post(f"/api/community/issues/{b['id']}/fixes/{f['id']}/accept", headers=bh)

    def ids(qs, h=ah):
        r = client.get("/api/community/issues" + qs, headers=h)
        assert r.status_code == 200, r.json
        return [i["id"] for i in r.json["issues"]], r.json["total"]

    assert ids("") == ([c["id"], b["id"], a["id"]], 3)
    assert ids("?q=docker") == ([c["id"], a["id"]], 2)  # title or body
    assert ids("?q=perm") == ([b["id"]], 1)  # prefix match while typing
    assert ids("?q=docker%20systemd") == ([a["id"]], 1)  # every word
    assert ids("?q=%22%29%28*%20OR%20NEAR") == ([], 0)  # search syntax is just text
    assert ids("?status=solved") == ([b["id"]], 1)
    assert ids("?status=open") == ([c["id"], a["id"]], 2)
    assert ids("?tag=docker") == ([c["id"], a["id"]], 2)
    assert ids("?mine=true") == ([a["id"]], 1)
    assert ids("?mine=1", bh) == ([c["id"], b["id"]], 2)
    assert ids("?sort=liked")[0][0] == b["id"]
    assert ids("?sort=unanswered")[0] == [c["id"], a["id"], b["id"]]
    assert ids("?limit=1&offset=1") == ([b["id"]], 3)
    r = client.get("/api/community/issues?q=docker", headers=ah).json["issues"][0]
    assert r["accepted_fix_id"] is None


def test_search_follows_edits_and_deletes(client, people):
    _, ah = people["alice"]
    issue = _issue(client, ah, title="kernel panic", body="on boot")
    client.put(
        f"/api/community/issues/{issue['id']}", json={"title": "grub rescue prompt"}, headers=ah
    )
    assert client.get("/api/community/issues?q=kernel", headers=ah).json["total"] == 0
    assert client.get("/api/community/issues?q=grub", headers=ah).json["total"] == 1
    client.delete(f"/api/community/issues/{issue['id']}", headers=ah)
    assert client.get("/api/community/issues?q=grub", headers=ah).json["total"] == 0


# ---------------------------------------------------------------- bad input


BAD_ISSUES = [
    ({}, "title"),
    ({"title": "", "body": "x"}, "title"),
    ({"title": "   ", "body": "x"}, "title"),
    ({"title": "ab", "body": "x"}, "title"),
    ({"title": "x" * 201, "body": "x"}, "title"),
    ({"title": 42, "body": "x"}, "title"),
    ({"title": ["a list"], "body": "x"}, "title"),
    ({"title": "fine title", "body": ""}, "body"),
    ({"title": "fine title", "body": "  \n "}, "body"),
    ({"title": "fine title", "body": "x" * 20_001}, "body"),
    ({"title": "fine title", "body": {"a": 1}}, "body"),
    ({"title": "fine title", "body": "nul \x00 byte"}, "body"),
    ({"title": "fine title", "body": "x", "tags": "bad tag!"}, "tags"),
    ({"title": "fine title", "body": "x", "tags": ["<script>"]}, "tags"),
    ({"title": "fine title", "body": "x", "tags": ["x" * 33]}, "tags"),
    ({"title": "fine title", "body": "x", "tags": [1, 2]}, "tags"),
    ({"title": "fine title", "body": "x", "tags": {"a": "b"}}, "tags"),
    ({"title": "fine title", "body": "x", "tags": [f"t{i}" for i in range(9)]}, "tags"),
]


@pytest.mark.parametrize(("payload", "field"), BAD_ISSUES)
def test_bad_issue_input_is_400_and_changes_nothing(client, people, app, payload, field):
    _, ah = people["alice"]
    r = client.post("/api/community/issues", json=payload, headers=ah)
    assert r.status_code == 400, r.json
    assert r.json["error"] and r.json.get("field") == field
    assert _counts(app)["community_issues"] == 0


@pytest.mark.parametrize(
    "raw, content_type",
    [("not json", "application/json"), ("[1, 2]", "application/json"), ("title=x", "text/plain")],
)
def test_non_object_bodies_are_refused(client, people, raw, content_type):
    _, ah = people["alice"]
    r = client.post("/api/community/issues", data=raw, headers={**ah, "Content-Type": content_type})
    assert r.status_code == 400 and "error" in r.json


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"title": "x"},
        {"title": None},
        {"body": ""},
        {"tags": "no spaces allowed"},
        {"title": 5},
    ],
)
def test_bad_updates_change_nothing(client, people, payload):
    _, ah = people["alice"]
    issue = _issue(client, ah)
    r = client.put(f"/api/community/issues/{issue['id']}", json=payload, headers=ah)
    assert r.status_code == 400, r.json
    again = client.get(f"/api/community/issues/{issue['id']}", headers=ah).json["issue"]
    assert again == issue


@pytest.mark.parametrize("payload", [{}, {"body": ""}, {"body": 3}, {"body": "x" * 20_001}])
def test_bad_fix_bodies(client, people, payload, app):
    _, ah = people["alice"]
    issue = _issue(client, ah)
    r = client.post(f"/api/community/issues/{issue['id']}/fixes", json=payload, headers=ah)
    assert r.status_code == 400 and r.json["field"] == "body"
    assert _counts(app)["community_fixes"] == 0


def test_rights_are_403_and_change_nothing(client, people):
    _, ah = people["alice"]
    _, bh = people["bob"]
    issue = _issue(client, ah)
    fix = _fix(client, bh, issue["id"])
    base = f"/api/community/issues/{issue['id']}"
    assert client.put(base, json={"title": "hijacked!"}, headers=bh).status_code == 403
    assert client.delete(base, headers=bh).status_code == 403
    r = client.post(f"{base}/fixes/{fix['id']}/accept", headers=bh)  # fix author, not issue author
    assert r.status_code == 403 and r.json["code"] == "forbidden"
    got = client.get(base, headers=bh).json["issue"]
    assert got["title"] == issue["title"] and got["status"] == "open"


def test_unknown_ids_and_cross_issue_fixes_are_404(client, people, app):
    _, ah = people["alice"]
    one = _issue(client, ah)
    two = _issue(client, ah, title="another issue")
    fix = _fix(client, ah, one["id"])
    wrong = f"/api/community/issues/{two['id']}/fixes/{fix['id']}"
    assert client.post(wrong + "/like", headers=ah).status_code == 404
    assert client.delete(wrong + "/like", headers=ah).status_code == 404
    assert client.post(wrong + "/accept", headers=ah).status_code == 404
    for method, path in [
        ("get", "/api/community/issues/999999"),
        ("put", "/api/community/issues/999999"),
        ("delete", "/api/community/issues/999999"),
        ("get", "/api/community/issues/999999/fixes"),
        ("post", "/api/community/issues/999999/fixes"),
        ("post", f"/api/community/issues/{one['id']}/fixes/999999/like"),
        ("post", f"/api/community/issues/{one['id']}/fixes/999999/accept"),
        ("get", "/api/community/issues/abc"),
    ]:
        r = getattr(client, method)(path, json={"title": "xxxx", "body": "y"}, headers=ah)
        assert r.status_code == 404, (method, path, r.status_code)
        assert "error" in r.json
    assert _counts(app)["community_fix_likes"] == 0
    assert (
        client.get(f"/api/community/issues/{one['id']}", headers=ah).json["issue"]["status"]
        == "open"
    )


@pytest.mark.parametrize(
    "qs",
    [
        "?status=closed",
        "?sort=random",
        "?limit=0",
        "?limit=500",
        "?offset=-1",
        "?tag=bad%20tag",
        "?mine=maybe",
    ],
)
def test_bad_list_arguments_are_400(client, people, qs):
    _, ah = people["alice"]
    r = client.get("/api/community/issues" + qs, headers=ah)
    assert r.status_code == 400 and "error" in r.json


def test_api_needs_auth_and_csrf_for_browser_sessions(client, people, login):
    alice, _ = people["alice"]
    assert client.get("/api/community/issues").status_code == 401
    assert (
        client.post("/api/community/issues", json={"title": "abc", "body": "x"}).status_code == 401
    )
    token = login(alice)
    r = client.post("/api/community/issues", json={"title": "abcd", "body": "x"})
    assert r.status_code == 400 and r.json["code"] == "csrf"
    r = client.post(
        "/api/community/issues", json={"title": "abcd", "body": "x"}, headers={"X-CSRFToken": token}
    )
    assert r.status_code == 201
