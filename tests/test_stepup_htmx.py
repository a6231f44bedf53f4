"""Step-up in place, the server's half (issue 18): an htmx request (or a page fetch that asks
for it) that needs a fresh second factor gets 401 with `X-Step-Up: required` and
`HX-Reswap: none` (nothing swapped, no redirect); /step-up answers the dialog's fetch with
204 or 401 JSON; the same request sent again then goes through. The JSON API's answer is
unchanged. The browser half is tests/test_stepup_htmx_browser.py."""

from __future__ import annotations

from portal.accounts.models import User
from portal.extensions import db
from tests.test_mfa_stepup import code_at, sign_in_stale, with_totp  # noqa: F401

HTMX = {"HX-Request": "true", "HX-Current-URL": "http://localhost/admin/users"}
JSON = {"Accept": "application/json"}


def role_of(app, user_id: int) -> str:
    with app.app_context():
        db.session.expire_all()
        return db.session.get(User, user_id).role


def test_htmx_request_gets_the_header_not_a_redirect_and_replays_after_the_code(
    app,
    client,
    admin,
    make_user,
    with_totp,  # noqa: F811
):
    other = make_user("eve")
    secret = with_totp(admin)
    csrf = sign_in_stale(client, admin, secret)
    url = f"/admin/users/{other.id}/promote"
    resp = client.post(url, data={"q": ""}, headers={**HTMX, "X-CSRFToken": csrf})
    assert resp.status_code == 401
    assert resp.headers["X-Step-Up"] == "required"
    assert resp.headers["HX-Reswap"] == "none"
    assert "HX-Redirect" not in resp.headers and "Location" not in resp.headers
    body = resp.get_data(as_text=True)
    assert "users-table" not in body  # no partial to swap: the dialog's prompt instead
    assert "Confirm it is you" in body and 'id="su-f-mfa_code"' in body
    assert 'name="csrf_token"' in body and 'action="/step-up"' in body
    assert 'id="su-passkey-step-up"' not in body  # no passkey: the code only
    assert role_of(app, other.id) == "user"

    # the dialog: a wrong code is a 401 with the message, and nothing is done
    bad = client.post("/step-up", data={"csrf_token": csrf, "mfa_code": "000000"}, headers=JSON)
    assert bad.status_code == 401 and bad.is_json
    assert "wrong" in bad.get_json()["error"] and bad.get_json()["step_up_required"] is True
    assert role_of(app, other.id) == "user"
    # the same request again is still refused
    again = client.post(url, data={"q": ""}, headers={**HTMX, "X-CSRFToken": csrf})
    assert again.status_code == 401 and again.headers["X-Step-Up"] == "required"

    ok = client.post(
        "/step-up", data={"csrf_token": csrf, "mfa_code": code_at(secret, 1)}, headers=JSON
    )
    assert ok.status_code == 204 and ok.get_data() == b""
    done = client.post(url, data={"q": ""}, headers={**HTMX, "X-CSRFToken": csrf})
    assert done.status_code == 200 and 'id="users-table"' in done.get_data(as_text=True)
    assert "X-Step-Up" not in done.headers
    assert role_of(app, other.id) == "admin"


def test_json_api_answer_is_unchanged(client, admin, make_user, auth, with_totp):  # noqa: F811
    other = make_user("eve")
    with_totp(admin)
    resp = client.post(
        f"/api/users/{other.id}/role", json={"role": "admin"}, headers={**auth(admin), **HTMX}
    )
    assert resp.status_code == 401 and resp.is_json
    assert resp.get_json() == {
        "error": resp.get_json()["error"],
        "code": "step_up_required",
        "step_up_required": True,
        "action": "user.role",
    }
    assert "X-Step-Up" not in resp.headers and "HX-Reswap" not in resp.headers


def test_broadcast_fetch_that_asks_for_the_dialog_gets_the_header(
    client,
    make_user,
    make_machine,
    with_totp,  # noqa: F811
):
    user = make_user("mo")
    secret = with_totp(user)
    a, b = make_machine(user, "a"), make_machine(user, "b")
    csrf = sign_in_stale(client, user, secret)
    form = {"csrf_token": csrf, "command": "true", "agent_ids": [a.agent_id, b.agent_id]}
    resp = client.post(
        "/machines/broadcast",
        data=form,
        headers={"X-Step-Up-Prompt": "inline", "X-CSRFToken": csrf},
    )
    assert resp.status_code == 401 and resp.headers["X-Step-Up"] == "required"
    assert resp.headers["HX-Reswap"] == "none"
    # without it (no script): the page prompt that re-sends the form, as before
    page = client.post("/machines/broadcast", data=form)
    assert page.status_code == 401 and "X-Step-Up" not in page.headers
    html = page.get_data(as_text=True)
    assert "Confirm it is you" in html and f'value="{a.agent_id}"' in html


def test_plain_step_up_page_still_redirects(client, make_user, with_totp):  # noqa: F811
    user = make_user("mo")
    secret = with_totp(user)
    csrf = sign_in_stale(client, user, secret)
    bad = client.post("/step-up", data={"csrf_token": csrf, "next": "/machines", "mfa_code": "1"})
    assert bad.status_code == 401 and "Confirm it is you" in bad.get_data(as_text=True)
    ok = client.post(
        "/step-up", data={"csrf_token": csrf, "next": "/machines", "mfa_code": code_at(secret, 1)}
    )
    assert ok.status_code == 303 and ok.headers["Location"].endswith("/machines")


def test_user_without_a_factor_is_sent_to_the_page_not_the_dialog(
    app,
    client,
    admin,
    make_user,
    login,
    auth,
    with_totp,  # noqa: F811
):
    secret = with_totp(admin)
    r = client.post(
        "/api/admin/mfa-required",
        json={"required": True, "totp": code_at(secret)},
        headers=auth(admin),
    )
    assert r.status_code == 200
    mo = make_user("mo", role="admin")
    other = make_user("eve")
    csrf = login(mo)
    resp = client.post(
        f"/admin/users/{other.id}/promote", data={}, headers={**HTMX, "X-CSRFToken": csrf}
    )
    assert resp.status_code == 401 and "X-Step-Up" not in resp.headers
    assert resp.headers["HX-Redirect"].startswith("/step-up")
    assert role_of(app, other.id) == "user"


def test_signed_in_pages_hold_the_empty_dialog_only(client, make_user, login):
    """The dialog is on every signed-in page, empty: a page says "Confirm it is you" only
    when it asks."""
    csrf = login(make_user("mo"))
    assert csrf
    html = client.get("/machines").get_data(as_text=True)
    assert 'id="step-up-dialog"' in html and "/static/js/stepup.js" in html
    assert "Confirm it is you" not in html and "su-f-mfa_code" not in html
