"""The HTML face of accounts: forms, errors next to fields, CSRF, headers, admin actions."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, csrf_from


def test_signup_form_errors_are_next_to_fields_and_store_nothing(client, admin, auth, open_signup):
    token = csrf_from(client.get("/signup").get_data(as_text=True))
    resp = client.post(
        "/signup",
        data={
            "csrf_token": token,
            "email": "bad",
            "username": "ok-name",
            "password": "long-enough-1",
            "password_confirm": "long-enough-1",
        },
    )
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert 'id="e-email"' in html and "not a valid address" in html
    assert 'value="ok-name"' in html  # what the user typed is kept
    resp = client.post(
        "/signup",
        data={
            "csrf_token": token,
            "email": "a@b.test",
            "username": "ok-name",
            "password": "long-enough-1",
            "password_confirm": "different-1",
        },
    )
    assert resp.status_code == 422 and 'id="e-password_confirm"' in resp.get_data(as_text=True)
    assert client.get("/api/users", headers=auth(admin)).get_json()["total"] == 1


def test_signup_then_logout_then_login(client):
    token = csrf_from(client.get("/signup").get_data(as_text=True))
    resp = client.post(
        "/signup",
        data={
            "csrf_token": token,
            "email": "sam@example.test",
            "username": "sam",
            "password": "long-enough-1",
            "password_confirm": "long-enough-1",
        },
    )
    assert resp.status_code == 303 and resp.location.endswith("/dashboard")
    assert client.get("/dashboard").status_code == 200
    token = csrf_from(client.get("/dashboard").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/dashboard").status_code == 302
    token = csrf_from(client.get("/login").get_data(as_text=True))
    bad = client.post(
        "/login", data={"csrf_token": token, "login": "sam", "password": "wrong-pass-1"}
    )
    assert bad.status_code == 401 and "invalid login or password" in bad.get_data(as_text=True)
    ok = client.post(
        "/login?next=/profile",
        data={"csrf_token": token, "login": "sam", "password": "long-enough-1"},
    )
    assert ok.status_code == 303 and ok.location.endswith("/profile")


@pytest.mark.parametrize(
    "nxt", ["https://evil.test/", "//evil.test/x", "/\\evil.test", "javascript:alert(1)"]
)
def test_login_next_cannot_redirect_off_site(client, make_user, nxt):
    make_user("tom")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    resp = client.post(
        "/login",
        query_string={"next": nxt},
        data={"csrf_token": token, "login": "tom", "password": PASSWORD},
    )
    assert resp.status_code == 303 and resp.location.endswith("/dashboard")


@pytest.mark.parametrize(
    "path",
    [
        "/login",
        "/signup",
        "/logout",
        "/profile/password",
        "/profile/api-key",
        "/profile/logout-all",
        "/admin/signup",
        "/admin/users/1/deactivate",
    ],
)
def test_posts_without_csrf_token_are_refused(client, make_user, login, path):
    user = make_user("uma", role="admin")
    login(user)
    resp = client.post(path, data={"login": "uma", "password": PASSWORD, "open": "0"})
    assert resp.status_code == 400
    assert "reload the page" in resp.get_data(as_text=True)
    # nothing changed: still signed in, still active, still admin
    assert client.get("/api/profile").get_json()["user"]["role"] == "admin"


def test_cookie_authenticated_api_posts_need_csrf_header(client, make_user, login):
    token = login(make_user("vic"))
    assert client.post("/api/profile/regenerate-api-key").status_code == 400
    ok = client.post("/api/profile/regenerate-api-key", headers={"X-CSRFToken": token})
    assert ok.status_code == 200 and ok.get_json()["api_key"].startswith("wxp_")


@pytest.mark.parametrize("path", ["/dashboard", "/profile", "/admin/users"])
def test_pages_need_sign_in(client, path):
    resp = client.get(path)
    assert resp.status_code == 302 and "/login?next=" in resp.location
    htmx = client.get(path, headers={"HX-Request": "true"})
    assert htmx.status_code == 401 and "/login" in htmx.headers["HX-Redirect"]


@pytest.mark.parametrize("path", ["/admin/users", "/api/users"])
def test_admin_pages_refuse_plain_users(client, make_user, login, path):
    login(make_user("wes"))
    assert client.get(path).status_code == 403


def test_security_headers_on_every_page(client):
    for path in ("/login", "/signup", "/health", "/nope"):
        h = client.get(path).headers
        csp = h["Content-Security-Policy"]
        assert (
            "script-src 'self'" in csp
            and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        )
        assert "frame-ancestors 'none'" in csp
        assert h["X-Frame-Options"] == "DENY"
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"]


def test_session_cookie_is_httponly_lax(client, make_user):
    make_user("xan")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"csrf_token": token, "login": "xan", "password": PASSWORD})
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_static_files_never_set_the_session_cookie(client, make_user, login):
    """A static file still on its way when a request changed the session would put the older
    cookie back (a passkey ceremony's pending challenge was lost that way); pages still
    refresh it."""
    login(make_user("sta"))
    assert "Set-Cookie" not in client.get("/static/css/app.css").headers
    assert "session=" in client.get("/dashboard").headers.get("Set-Cookie", "")
    # nor do the service worker, HTMX partials, fetches and API calls beside a page (a
    # step-up's fresh session was put back to stale by /sw.js answered after it)
    quiet = [
        client.get("/sw.js", headers={"Sec-Fetch-Dest": "serviceworker"}),  # as browsers
        client.get("/sessions", headers={"HX-Request": "true"}),
        client.get("/dashboard", headers={"Sec-Fetch-Dest": "empty"}),
        client.get("/api/machines"),
    ]
    assert [r.headers.get("Set-Cookie") for r in quiet] == [None] * 4
    assert [r.status_code for r in quiet[1:]] == [200, 200, 200]
    nav = client.get("/dashboard", headers={"Sec-Fetch-Dest": "document"})
    assert "session=" in nav.headers.get("Set-Cookie", "")


def test_requests_beside_a_sign_in_page_leave_its_session_cookie_alone(client):
    """Signed out, the sign-in page's session holds only its CSRF token. The service worker
    script fetched while a passkey sign-in starts must not answer with that session: it used
    to (flask-login's session protection marked it not fresh, which counts as a change), and
    the browser then dropped the pending challenge: the passkey was refused with a 401."""
    assert "session=" in client.get("/login").headers.get("Set-Cookie", "")
    quiet = [
        client.get("/sw.js", headers={"Sec-Fetch-Dest": "serviceworker"}),
        client.get("/manifest.webmanifest", headers={"Sec-Fetch-Dest": "manifest"}),
        client.get("/static/css/app.css"),
        client.get("/api/machines"),
    ]
    assert [r.headers.get("Set-Cookie") for r in quiet] == [None] * 4
    assert [r.status_code for r in quiet] == [200, 200, 200, 401]
    started = client.post("/api/auth/passkey/options", json={"purpose": "login"})
    assert started.status_code == 200 and "session=" in started.headers["Set-Cookie"]
    assert (
        client.get("/sw.js", headers={"Sec-Fetch-Dest": "serviceworker"}).headers.get("Set-Cookie")
        is None
    )


def test_no_inline_script_in_pages(client, make_user, login):
    login(make_user("yul", role="admin"))
    for path in ("/login", "/dashboard", "/profile", "/admin/users"):
        html = client.get(path).get_data(as_text=True)
        for chunk in html.split("<script")[1:]:
            assert chunk.lstrip().startswith("src="), path
        assert " onclick=" not in html and " onload=" not in html


def _row(html: str, user_id: int) -> str:
    start = html.index(f'<tr id="user-{user_id}">')
    return html[start : html.index("</tr>", start)]


def test_admin_deactivates_reactivates_promotes_and_last_admin_is_kept(client, make_user, login):
    boss = make_user("boss", role="admin")
    worker = make_user("worker")
    token = login(boss)
    h = {"X-CSRFToken": token, "HX-Request": "true", "HX-Target": "users-table"}
    resp = client.post(f"/admin/users/{worker.id}/deactivate", headers=h)
    assert resp.status_code == 200 and "deactivated" in resp.get_data(as_text=True)
    assert (
        client.post("/api/login", json={"login": "worker", "password": PASSWORD}).status_code == 401
    )
    client.post(f"/admin/users/{worker.id}/activate", headers=h)
    assert (
        client.post("/api/login", json={"login": "worker", "password": PASSWORD}).status_code == 200
    )
    # The only admin's row offers neither demote nor deactivate; the service refuses both anyway.
    row = _row(client.get("/admin/users").get_data(as_text=True), boss.id)
    assert "only admin" in row and "/demote" not in row and "/deactivate" not in row
    assert "/deactivate" in _row(client.get("/admin/users").get_data(as_text=True), worker.id)
    refused = client.post(f"/admin/users/{boss.id}/demote", headers=h)
    assert refused.status_code == 409 and "last admin" in refused.get_data(as_text=True)
    refused = client.post(f"/admin/users/{boss.id}/deactivate", headers=h)
    assert refused.status_code == 409 and "last admin" in refused.get_data(as_text=True)
    client.post(f"/admin/users/{worker.id}/promote", headers=h)
    row = _row(client.get("/admin/users").get_data(as_text=True), boss.id)
    assert "only admin" not in row and "/demote" in row and "/deactivate" in row
    assert client.post(f"/admin/users/{boss.id}/demote", headers=h).status_code == 200
    assert client.get("/admin/users").status_code == 403  # boss is no longer an admin


def test_admin_search_is_htmx_partial(client, make_user, login):
    login(make_user("zed", role="admin"))
    make_user("findme")
    resp = client.get(
        "/admin/users?q=findm", headers={"HX-Request": "true", "HX-Target": "users-table"}
    )
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "findme" in html and "<html" not in html
    assert "HX-Request" in resp.headers.get("Vary", "")


def test_admin_closes_signup(client, make_user, login):
    token = login(make_user("ann", role="admin"))
    client.post("/admin/signup", data={"csrf_token": token, "open": "0"})
    client.post("/logout", data={"csrf_token": token})
    assert "Signup is closed" in client.get("/signup").get_data(as_text=True)
    resp = client.post(
        "/api/signup",
        json={"email": "n@example.test", "username": "newer", "password": "long-enough-1"},
    )
    assert resp.status_code == 403


def test_logout_everywhere_ends_cookie_sessions_and_tokens(client, app, make_user, login, auth):
    user = make_user("ben")
    headers = auth(user)
    other = app.test_client()
    token_other = csrf_from(other.get("/login").get_data(as_text=True))
    other.post("/login", data={"csrf_token": token_other, "login": "ben", "password": PASSWORD})
    assert other.get("/profile").status_code == 200
    token = login(user)
    assert client.post("/profile/logout-all", data={"csrf_token": token}).status_code == 303
    assert other.get("/profile").status_code == 302
    assert client.get("/api/profile", headers=headers).status_code == 401


def test_profile_page_shows_api_key_once(client, make_user, login):
    token = login(make_user("cai"))
    resp = client.post("/profile/api-key", data={"csrf_token": token})
    html = resp.get_data(as_text=True)
    key = html.split('id="new-api-key" readonly value="')[1].split('"')[0]
    assert key.startswith("wxp_")
    again = client.get("/profile").get_data(as_text=True)
    assert key not in again and key[:10] in again


def test_unknown_routes_and_methods_are_clean_4xx(client):
    assert client.get("/api/nope").get_json()["error"]
    assert client.get("/api/nope").status_code == 404
    assert client.get("/api/login").status_code == 405
    assert "error" in client.get("/api/login").get_json()
