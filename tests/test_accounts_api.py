"""The accounts JSON API as API.md describes it: signup, login, refresh, logout, profile, users."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.conftest import PASSWORD


def signup(client, username="alice", email=None, password="correct-horse-9"):
    return client.post(
        "/api/signup",
        json={
            "email": email or f"{username}@example.test",
            "username": username,
            "password": password,
        },
    )


def test_first_signup_becomes_admin_second_is_user(client, open_signup):
    first = signup(client, "alice")
    assert first.status_code == 201
    body = first.get_json()
    assert set(body) >= {"token", "refresh_token", "expires_in", "user"}
    assert body["expires_in"] == 24 * 3600
    assert body["user"]["role"] == "admin"
    assert set(body["user"]) >= {"id", "email", "username", "role", "avatar_url", "created_at"}
    assert body["user"]["created_at"].endswith("Z")
    second = signup(client, "bob")
    assert second.status_code == 201
    assert second.get_json()["user"]["role"] == "user"


def test_signup_taken_username_or_email_is_409(client, open_signup):
    assert signup(client, "alice").status_code == 201
    assert signup(client, "ALICE", email="other@example.test").status_code == 409
    assert signup(client, "alice2", email="alice@example.test").status_code == 409


@pytest.mark.parametrize(
    "payload, field",
    [
        ({}, "email"),
        ({"email": "x@example.test", "username": "xx"}, "password"),
        ({"email": "not-an-email", "username": "xx", "password": "correct-horse-9"}, "email"),
        ({"email": "x@example.test", "username": "a", "password": "correct-horse-9"}, "username"),
        (
            {"email": "x@example.test", "username": "bad name!", "password": "correct-horse-9"},
            "username",
        ),
        ({"email": "x@example.test", "username": "xx", "password": "short"}, "password"),
        ({"email": "x@example.test", "username": "xx", "password": "x" * 129}, "password"),
        ({"email": "x@example.test", "username": "xx", "password": "password123"}, "password"),
        ({"email": 5, "username": "xx", "password": "correct-horse-9"}, "email"),
        (
            {"email": "x@example.test", "username": ["xx"], "password": "correct-horse-9"},
            "username",
        ),
        (
            {"email": "x@example.test", "username": "x" * 500, "password": "correct-horse-9"},
            "username",
        ),
        ({"email": "x@example.test", "username": "xx", "password": 12345678}, "password"),
    ],
)
def test_signup_bad_input_is_400_and_stores_nothing(
    client, payload, field, admin, auth, open_signup
):
    resp = client.post("/api/signup", json=payload)
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"]
    assert body.get("field") == field
    users = client.get("/api/users", headers=auth(admin)).get_json()
    assert users["total"] == 1


@pytest.mark.parametrize("path", ["/api/signup", "/api/login", "/api/auth/refresh"])
@pytest.mark.parametrize(
    "data, content_type",
    [
        ("{not json", "application/json"),
        ("[1,2]", "application/json"),
        ("a=b", "application/x-www-form-urlencoded"),
        ("", "text/plain"),
        ('"str"', "application/json"),
    ],
)
def test_public_endpoints_reject_malformed_bodies(client, path, data, content_type):
    resp = client.post(path, data=data, content_type=content_type)
    assert 400 <= resp.status_code < 500
    assert "error" in resp.get_json()


def test_login_by_username_or_email_and_wrong_password(client, make_user):
    user = make_user("carol")
    ok = client.post("/api/login", json={"login": "carol", "password": PASSWORD})
    assert ok.status_code == 200 and ok.get_json()["user"]["username"] == "carol"
    ok2 = client.post("/api/login", json={"login": "CAROL@example.test", "password": PASSWORD})
    assert ok2.status_code == 200
    bad = client.post("/api/login", json={"login": "carol", "password": "wrong-password"})
    nobody = client.post("/api/login", json={"login": "nobody", "password": "wrong-password"})
    assert bad.status_code == nobody.status_code == 401
    # the same message whether or not the account exists: no enumeration
    assert bad.get_json()["error"] == nobody.get_json()["error"]
    assert user.id


def test_jwt_and_api_key_auth(client, make_user, auth):
    user = make_user("dave")
    assert client.get("/api/profile").status_code == 401
    assert (
        client.get("/api/profile", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    )
    prof = client.get("/api/profile", headers=auth(user)).get_json()
    assert prof["user"]["username"] == "dave" and prof["has_api_key"] is False
    key = client.post("/api/profile/regenerate-api-key", headers=auth(user)).get_json()["api_key"]
    assert key.startswith("wxp_") and len(key) >= 4 + 43
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        resp = client.get("/api/profile", headers=headers)
        assert resp.status_code == 200
        body = resp.get_json()
        assert body["has_api_key"] is True and key not in resp.get_data(as_text=True)
        assert key.startswith(body["api_key_prefix"])
    new_key = client.post("/api/profile/regenerate-api-key", headers={"X-API-Key": key}).get_json()[
        "api_key"
    ]
    assert client.get("/api/profile", headers={"X-API-Key": key}).status_code == 401
    assert client.get("/api/profile", headers={"X-API-Key": new_key}).status_code == 200


def test_refresh_rotates_and_reuse_revokes_family(client, make_user):
    make_user("erin")
    first = client.post("/api/login", json={"login": "erin", "password": PASSWORD}).get_json()
    r1 = client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r1.status_code == 200
    second = r1.get_json()
    assert set(second) >= {"token", "refresh_token", "expires_in"}
    assert second["refresh_token"] != first["refresh_token"]
    # the rotated token is refused, and its reuse revokes the newer one too
    reuse = client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    after = client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert after.status_code == 401


def test_logout_revokes_jwts_and_refresh_tokens(client, make_user):
    make_user("fay")
    pair = client.post("/api/login", json={"login": "fay", "password": PASSWORD}).get_json()
    h = {"Authorization": f"Bearer {pair['token']}"}
    assert client.get("/api/profile", headers=h).status_code == 200
    assert client.post("/api/auth/logout", headers=h).status_code == 200
    assert client.get("/api/profile", headers=h).status_code == 401
    assert (
        client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code
        == 401
    )


def test_password_change_revokes_old_tokens(client, make_user):
    make_user("gus")
    pair = client.post("/api/login", json={"login": "gus", "password": PASSWORD}).get_json()
    h = {"Authorization": f"Bearer {pair['token']}"}
    wrong = client.post(
        "/api/profile/reset-password",
        headers=h,
        json={"current_password": "nope-nope-nope", "new_password": "brand-new-pass-1"},
    )
    assert wrong.status_code == 400
    weak = client.post(
        "/api/profile/reset-password",
        headers=h,
        json={"current_password": PASSWORD, "new_password": "short"},
    )
    assert weak.status_code == 400
    ok = client.post(
        "/api/profile/reset-password",
        headers=h,
        json={"current_password": PASSWORD, "new_password": "brand-new-pass-1"},
    )
    assert ok.status_code == 200
    assert client.get("/api/profile", headers=h).status_code == 401
    assert (
        client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code
        == 401
    )
    assert (
        client.get(
            "/api/profile", headers={"Authorization": f"Bearer {ok.get_json()['token']}"}
        ).status_code
        == 200
    )
    assert (
        client.post("/api/login", json={"login": "gus", "password": "brand-new-pass-1"}).status_code
        == 200
    )
    assert client.post("/api/login", json={"login": "gus", "password": PASSWORD}).status_code == 401


def test_users_list_is_admin_only_and_deactivation_blocks_tokens(client, make_user, admin, auth):
    user = make_user("hal")
    user_headers = auth(user)
    assert client.get("/api/users", headers=user_headers).status_code == 403
    listing = client.get("/api/users?q=hal", headers=auth(admin)).get_json()
    assert listing["total"] == 1 and listing["users"][0]["username"] == "hal"
    assert client.get("/api/users?limit=0", headers=auth(admin)).status_code == 400
    assert client.get("/api/users?limit=abc", headers=auth(admin)).status_code == 400
    resp = client.post(f"/api/users/{user.id}/active", headers=auth(admin), json={"active": False})
    assert resp.status_code == 200
    assert client.get("/api/profile", headers=user_headers).status_code == 401
    assert client.post("/api/login", json={"login": "hal", "password": PASSWORD}).status_code == 401


def test_last_admin_cannot_be_demoted_or_deactivated(client, admin, auth):
    h = auth(admin)
    assert (
        client.post(f"/api/users/{admin.id}/role", headers=h, json={"role": "user"}).status_code
        == 409
    )
    assert (
        client.post(f"/api/users/{admin.id}/active", headers=h, json={"active": False}).status_code
        == 409
    )


def _image_bytes(fmt: str, size=(300, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_avatar_upload_reencodes_to_square_png(client, make_user, auth, fmt):
    user = make_user("ivy")
    resp = client.post(
        "/api/profile/upload-avatar",
        headers=auth(user),
        data={"avatar": (io.BytesIO(_image_bytes(fmt)), "me.bin")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200, resp.get_json()
    url = resp.get_json()["avatar_url"]
    img = client.get(url, buffered=True)
    img.close()
    assert img.status_code == 200
    assert img.headers["X-Content-Type-Options"] == "nosniff"
    assert img.mimetype == "image/png"
    with Image.open(io.BytesIO(img.data)) as out:
        assert out.format == "PNG" and out.size == (256, 256)


@pytest.mark.parametrize(
    "payload, status",
    [
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", 400),
        (b"<html><script>alert(1)</script></html>", 400),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, 400),
        (b"", 400),
    ],
)
def test_avatar_rejects_non_images(client, make_user, auth, payload, status):
    user = make_user("jan")
    resp = client.post(
        "/api/profile/upload-avatar",
        headers=auth(user),
        data={"avatar": (io.BytesIO(payload), "a.png")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == status
    assert client.get("/api/profile", headers=auth(user)).get_json()["user"]["avatar_url"] is None


def test_avatar_too_large_is_413(client, make_user, auth):
    user = make_user("kim")
    big = b"\x89PNG\r\n\x1a\n" + b"0" * (2 * 1024 * 1024 + 10)
    # A hand-built multipart body: Werkzeug's builder would spool it to an unclosed temp file.
    body = (
        b'--B\r\nContent-Disposition: form-data; name="avatar"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + big + b"\r\n--B--\r\n"
    )
    resp = client.post(
        "/api/profile/upload-avatar",
        headers=auth(user),
        data=body,
        content_type="multipart/form-data; boundary=B",
    )
    assert resp.status_code == 413


def test_health(client):
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["version"]


def test_signup_closed_is_403(client, admin, auth, app):
    from portal.accounts import settings
    from portal.extensions import db

    with app.app_context():
        settings.set_setting("signup_open", "0")
        db.session.commit()
    resp = signup(client, "late")
    assert resp.status_code == 403


def test_rate_limit_on_login(app_config):
    from portal import create_app, signals

    app_config["PORTAL_AUTH_RATE_LIMIT"] = "3 per minute"
    app = create_app(app_config)
    try:
        c = app.test_client()
        codes = [
            c.post("/api/login", json={"login": "x", "password": "y"}).status_code for _ in range(5)
        ]
        assert codes[:3] == [401, 401, 401]
        assert codes[3] == 429
        assert "error" in c.post("/api/login", json={"login": "x", "password": "y"}).get_json()
    finally:
        signals.shutdown(app)


@pytest.mark.parametrize("path", ["/api/login", "/api/signup", "/api/auth/refresh"])
def test_absurdly_nested_json_is_400(client, path):
    body = '{"a":' + "[" * 5000 + "]" * 5000 + "}"
    resp = client.post(path, data=body, content_type="application/json")
    assert resp.status_code == 400 and "nested" in resp.get_json()["error"]


def test_nul_bytes_and_odd_ids_are_clean_4xx(client, admin, auth):
    h = auth(admin)
    assert (
        client.post("/api/login", json={"login": "a\u0000b", "password": "xxxxxxxxxx"}).status_code
        == 401
    )
    assert client.get("/api/users?q=a%00", headers=h).status_code == 200
    assert (
        client.post("/api/users/99999999999/active", headers=h, json={"active": False}).status_code
        == 404
    )
    assert client.post("/api/users/0/role", headers=h, json={"role": "user"}).status_code == 404


def test_find_user_ref_rejects_unicode_digits_and_out_of_range(app, admin):
    from portal.accounts.users import find_user_ref
    from portal.errors import NotFound

    with app.app_context():
        assert find_user_ref(str(admin.id)).id == admin.id
        assert find_user_ref(admin.username).id == admin.id
        for ref in ("²", "٣", 10**30, -1, 0, True, None, "9" * 40, ["1"]):
            with pytest.raises(NotFound):
                find_user_ref(ref)


@pytest.mark.parametrize(
    "how", ["api-reset-password", "api-logout", "page-password", "page-logout-all"]
)
def test_api_key_is_revoked_by_password_change_and_sign_out_everywhere(
    client, make_user, login, how
):
    """Issue 16: a leaked API key survived a password change and "sign out everywhere"."""
    user = make_user("kim")
    pair = client.post("/api/login", json={"login": "kim", "password": PASSWORD}).get_json()
    h = {"Authorization": f"Bearer {pair['token']}"}
    key = client.post("/api/profile/regenerate-api-key", headers=h).get_json()["api_key"]
    stolen = {"X-API-Key": key}
    assert client.get("/api/profile", headers=stolen).status_code == 200
    new_password = "brand-new-pass-1"
    if how == "api-reset-password":
        body = {"current_password": PASSWORD, "new_password": new_password}
        resp = client.post("/api/profile/reset-password", headers=h, json=body)
        assert resp.status_code == 200
    elif how == "api-logout":
        assert client.post("/api/auth/logout", headers=stolen).status_code == 200
    else:
        token = login(user)
        page = client.get("/profile").get_data(as_text=True)
        assert "Changing your password or signing out everywhere revokes it." in page
        assert "including your API key" in page
        if how == "page-password":
            form = {
                "csrf_token": token,
                "current_password": PASSWORD,
                "new_password": new_password,
                "new_password_confirm": new_password,
            }
            resp = client.post("/profile/password", data=form)
        else:
            resp = client.post("/profile/logout-all", data={"csrf_token": token})
        assert resp.status_code == 303
    assert client.get("/api/profile", headers=stolen).status_code == 401
    assert client.get("/api/profile", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    fresh = client.post(
        "/api/login",
        json={"login": "kim", "password": new_password if "password" in how else PASSWORD},
    ).get_json()
    prof = client.get("/api/profile", headers={"Authorization": f"Bearer {fresh['token']}"})
    assert prof.get_json()["has_api_key"] is False and prof.get_json()["api_key_prefix"] is None


def test_concurrent_uses_of_one_refresh_token_yield_exactly_one_pair(live_server, make_user):
    """Issue 16: six simultaneous refreshes with one token used to mostly succeed (each read the
    row as unused before any wrote it). Exactly one may win; the others count as reuse, which
    revokes the family, the winner's new refresh token included."""
    import threading

    import requests

    make_user("ray")
    base = live_server.url
    pair = requests.post(
        f"{base}/api/login", json={"login": "ray", "password": PASSWORD}, timeout=30
    ).json()
    n = 6
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def refresh(i: int) -> None:
        barrier.wait(timeout=30)
        r = requests.post(
            f"{base}/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}, timeout=60
        )
        results[i] = (r.status_code, r.json())

    threads = [threading.Thread(target=refresh, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    statuses = sorted(code for code, _ in results)
    assert statuses == [200] + [401] * (n - 1), results
    assert all("error" in body for code, body in results if code == 401)
    won = next(body for code, body in results if code == 200)
    again = requests.post(
        f"{base}/api/auth/refresh", json={"refresh_token": won["refresh_token"]}, timeout=30
    )
    assert again.status_code == 401
