"""Community pages (HTML face): same rules as the API, CSRF, HTMX partials, form errors."""

from __future__ import annotations

import pytest

from tests.conftest import csrf_from
from tests.test_community_api import quick_users

HX = {"HX-Request": "true"}


@pytest.fixture
def board(app, client, auth):
    alice, bob = quick_users(app, "alice", "bob")
    h = auth(alice)
    issue = client.post("/api/community/issues", json={"title": "cron job silent", "body": "nothing in syslog",
                                                       "tags": ["cron"]}, headers=h).json["issue"]  # fmt: skip
    fix = client.post(f"/api/community/issues/{issue['id']}/fixes", json={"body": "check MAILTO"},
                      headers=auth(bob)).json["fix"]  # fmt: skip
    return {"alice": alice, "bob": bob, "issue": issue, "fix": fix, "ah": h, "bh": auth(bob)}


def test_signed_out_visitors_go_to_login(client, board):
    for path in (
        "/community",
        f"/community/issues/{board['issue']['id']}",
        "/community/issues/new",
    ):
        r = client.get(path)
        assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_list_page_and_live_search_partial(client, login, board):
    login(board["bob"])
    page = client.get("/community").get_data(as_text=True)
    assert "cron job silent" in page and 'id="issue-filters"' in page and "<html" in page
    r = client.get("/community?q=cron", headers={**HX, "HX-Target": "issue-list"})
    body = r.get_data(as_text=True)
    assert (
        r.status_code == 200
        and body.lstrip().startswith('<div id="issue-list"')
        and "<html" not in body
    )
    assert "cron job silent" in body
    assert r.headers.get("Vary") and "HX-Request" in r.headers["Vary"]
    assert "Nothing matches" in client.get(
        "/community?q=zzzz", headers={**HX, "HX-Target": "issue-list"}
    ).get_data(as_text=True)
    r = client.get("/community?sort=bogus", headers={**HX, "HX-Target": "issue-list"})
    assert r.status_code == 400 and "sort must be one of" in r.get_data(as_text=True)


def test_new_issue_form_errors_keep_the_input(client, login, board):
    token = login(board["bob"])
    r = client.post(
        "/community/issues/new",
        data={"title": "x", "body": "my long text", "tags": "", "csrf_token": token},
    )
    html = r.get_data(as_text=True)
    assert (
        r.status_code == 422
        and "title must be at least 3 characters" in html
        and "my long text" in html
    )
    r = client.post(
        "/community/issues/new",
        data={"title": "disk quota", "body": "q", "tags": "bad tag!", "csrf_token": token},
    )
    assert r.status_code == 422 and "tag" in r.get_data(as_text=True)
    r = client.post("/community/issues/new", data={"title": "disk quota", "body": "quota exceeded", "tags": "disk",
                                                   "csrf_token": token})  # fmt: skip
    assert r.status_code == 303 and "/community/issues/" in r.headers["Location"]


def test_posts_without_csrf_are_refused(client, login, board):
    login(board["bob"])
    iid = board["issue"]["id"]
    for path in ("/community/issues/new", f"/community/issues/{iid}/fixes", f"/community/issues/{iid}/delete",
                 f"/community/issues/{iid}/fixes/{board['fix']['id']}/like", "/community/preview"):  # fmt: skip
        r = client.post(path, data={"title": "abcd", "body": "x"})
        assert r.status_code == 400, path


def test_non_author_cannot_edit_delete_or_accept_through_pages(client, login, board, auth):
    token = login(board["bob"])
    iid, fid = board["issue"]["id"], board["fix"]["id"]
    assert client.get(f"/community/issues/{iid}/edit").status_code == 403
    assert (
        client.post(
            f"/community/issues/{iid}/edit",
            data={"title": "owned", "body": "x", "csrf_token": token},
        ).status_code
        == 403
    )
    assert (
        client.post(f"/community/issues/{iid}/delete", data={"csrf_token": token}).status_code
        == 403
    )
    assert (
        client.post(
            f"/community/issues/{iid}/fixes/{fid}/accept", data={"csrf_token": token}, headers=HX
        ).status_code
        == 403
    )
    page = client.get(f"/community/issues/{iid}").get_data(as_text=True)
    assert "Accept" not in page and "/edit" not in page and "Delete" not in page
    issue = client.get(f"/api/community/issues/{iid}", headers=board["ah"]).json["issue"]
    assert issue["title"] == "cron job silent" and issue["status"] == "open"


def test_htmx_fix_like_accept_return_partials(client, login, board):
    iid, fid = board["issue"]["id"], board["fix"]["id"]
    token = login(board["alice"])
    r = client.post(
        f"/community/issues/{iid}/fixes", data={"body": "", "csrf_token": token}, headers=HX
    )
    assert r.status_code == 422 and 'id="fix-form"' in r.get_data(as_text=True)
    r = client.post(
        f"/community/issues/{iid}/fixes",
        data={"body": "use `crontab -l`", "csrf_token": token},
        headers=HX,
    )
    html = r.get_data(as_text=True)
    assert (
        r.status_code == 200
        and 'id="fix-form"' in html
        and 'id="fixes" class="cm-fixes" hx-swap-oob="true"' in html
    )
    assert "<code>crontab -l</code>" in html
    r = client.post(
        f"/community/issues/{iid}/fixes/{fid}/like", data={"csrf_token": token}, headers=HX
    )
    html = r.get_data(as_text=True)
    assert 'class="cm-like liked"' in html and '<span class="cm-like-count">1</span>' in html
    r = client.post(
        f"/community/issues/{iid}/fixes/{fid}/unlike", data={"csrf_token": token}, headers=HX
    )
    assert '<span class="cm-like-count">0</span>' in r.get_data(as_text=True)
    r = client.post(
        f"/community/issues/{iid}/fixes/{fid}/accept", data={"csrf_token": token}, headers=HX
    )
    html = r.get_data(as_text=True)
    assert (
        "Accepted fix" in html
        and 'id="issue-status" hx-swap-oob="true"' in html
        and "Solved" in html
    )
    # likes on a fix of another issue: 404 here too
    other = client.post(
        "/api/community/issues", json={"title": "other issue", "body": "x"}, headers=board["ah"]
    ).json["issue"]
    assert (
        client.post(
            f"/community/issues/{other['id']}/fixes/{fid}/like",
            data={"csrf_token": token},
            headers=HX,
        ).status_code
        == 404
    )


def test_edit_and_delete_by_author(client, login, board, app):
    token = login(board["alice"])
    iid = board["issue"]["id"]
    form = client.get(f"/community/issues/{iid}/edit").get_data(as_text=True)
    assert 'value="cron job silent"' in form and 'value="cron"' in form
    r = client.post(f"/community/issues/{iid}/edit", data={"title": "cron job is silent", "body": "**still**",
                                                           "tags": "cron, mail", "csrf_token": token})  # fmt: skip
    assert r.status_code == 303
    page = client.get(f"/community/issues/{iid}").get_data(as_text=True)
    assert "cron job is silent" in page and "<strong>still</strong>" in page and ">mail<" in page
    r = client.post(
        f"/community/issues/{iid}/delete", data={"csrf_token": csrf_from(page)}, headers=HX
    )
    assert r.status_code == 200 and r.headers["HX-Redirect"] == "/community"
    assert client.get(f"/community/issues/{iid}").status_code == 404


def test_preview_returns_sanitised_html(client, login, board):
    token = login(board["bob"])
    r = client.post(
        "/community/preview",
        data={"body": "*hi* <img src=x onerror=alert(1)>", "csrf_token": token},
        headers=HX,
    )
    assert r.status_code == 200
    assert (
        r.get_data(as_text=True).strip() == "<p><em>hi</em> &lt;img src=x onerror=alert(1)&gt;</p>"
    )
    r = client.post(
        "/community/preview", data={"body": "x" * 20_001, "csrf_token": token}, headers=HX
    )
    assert r.status_code == 413


def test_unknown_ids_are_404_pages(client, login, board):
    login(board["bob"])
    for path in (
        "/community/issues/424242",
        "/community/issues/424242/edit",
        "/community/issues/abc",
    ):
        assert client.get(path).status_code == 404
