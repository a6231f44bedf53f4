"""Issue 20, forms that never lose work: the add-machine page shows every field error of a
submit at once, keeps what was pasted or fetched, is never cached, and its limits are the
server's."""

from __future__ import annotations

import re

import pytest

from portal.machines.naming import NAME_MAX

pytestmark = pytest.mark.timeout(60)


def _errors(html: str) -> dict[str, str]:
    return dict(re.findall(r'<p class="field-error" id="e-([a-z_]+)">([^<]+)</p>', html))


def test_add_machine_all_errors_at_once_and_key_kept(client, login, make_user, sshd):
    csrf = login(make_user("alice"))
    html = client.get("/machines/new").get_data(as_text=True)
    assert f'maxlength="{NAME_MAX}"' in html
    form = {
        "csrf_token": csrf,
        "name": "n" * (NAME_MAX + 1),
        "host": sshd.host,
        "port": "99999",
        "username": "",
        "auth_method": "key",
        "private_key": sshd.client_key_private_text,
        "passphrase": "not-needed",
        "host_key_confirmed": sshd.host_key_lines,
    }
    r = client.post("/machines/new", data=form)
    html = r.get_data(as_text=True)
    assert r.status_code == 422
    assert r.headers["Cache-Control"] == "no-store"
    errors = _errors(html)
    assert set(errors) >= {"name", "port", "username"}, errors
    assert "at most 65535" in errors["port"]
    # the unticked trust box is reported too, outside the collapsed section
    top = html.split("<details")[0]
    assert "tick the box" in top
    # the pasted key, its passphrase and the fetched host keys come back
    assert sshd.client_key_private_text.splitlines()[1] in html
    assert 'value="not-needed"' in html
    for fp in sshd.host_key_fingerprints:
        assert fp in html
    assert html.count('name="host_key_confirmed"') == len(sshd.host_key_lines)
    assert "checked" not in re.search(r'<input type="checkbox" name="host_key_ack"[^>]*>', html)[0]
    # a ticked box stays ticked across another error
    r = client.post("/machines/new", data={**form, "host_key_ack": "1"})
    box = re.search(r'<input type="checkbox" name="host_key_ack"[^>]*>', r.get_data(as_text=True))
    assert "checked" in box[0]
    assert "tick the box" not in r.get_data(as_text=True)
    # nothing was stored
    assert "machines-table" in client.get("/machines").get_data(as_text=True)
    assert "nnnnnnnnnn" not in client.get("/machines").get_data(as_text=True)


def test_add_machine_fixed_without_repasting(client, login, make_user, sshd):
    csrf = login(make_user("alice"))
    form = {
        "csrf_token": csrf,
        "name": "fixed",
        "host": sshd.host,
        "port": "0",
        "username": sshd.username,
        "auth_method": "password",
        "password": sshd.password,
        "host_key_confirmed": sshd.host_key_lines,
        "host_key_ack": "1",
    }
    r = client.post("/machines/new", data=form)
    assert r.status_code == 422 and "port" in _errors(r.get_data(as_text=True))
    kept = re.search(r'id="f-password"[^>]*value="([^"]*)"', r.get_data(as_text=True))[1]
    assert kept == sshd.password
    r = client.post("/machines/new", data={**form, "port": sshd.port, "password": kept})
    assert r.status_code == 303


def test_signup_all_errors_in_one_submit(client, open_signup):
    from portal.accounts.users import EMAIL_MAX, USERNAME_MAX

    html = client.get("/signup").get_data(as_text=True)
    assert f'maxlength="{EMAIL_MAX}"' in html and f'maxlength="{USERNAME_MAX}"' in html
    from tests.conftest import csrf_from

    r = client.post(
        "/signup",
        data={
            "csrf_token": csrf_from(html),
            "email": "not-an-email",
            "username": "x",
            "password": "",
            "password_confirm": "something",
        },
    )
    assert r.status_code == 422
    errors = _errors(r.get_data(as_text=True))
    assert set(errors) == {"email", "username", "password", "password_confirm"}, errors
    assert "not a valid address" in errors["email"]
    assert "2-32" in errors["username"]
    assert "required" in errors["password"]
    assert 'value="not-an-email"' in r.get_data(as_text=True)  # what was typed stays


def test_first_run_sign_in_offers_admin_account(client, make_user):
    html = client.get("/login").get_data(as_text=True)
    assert "no accounts yet" in html and "Create the admin account" in html
    assert 'href="/signup"' in html
    make_user("alice")
    html = client.get("/login").get_data(as_text=True)
    assert "no accounts yet" not in html and "Create the admin account" not in html


def test_404_names_what_was_missing_and_429_says_when(client, app, login, make_user):
    r = client.get("/no/such/thing")
    assert r.status_code == 404 and "/no/such/thing" in r.get_data(as_text=True)
    login(make_user("alice"))
    r = client.get("/machines/doesnotexist")
    assert r.status_code == 404 and "machine not found" in r.get_data(as_text=True)


def test_429_says_when_to_retry(client, app):
    app.config["PORTAL_AUTH_RATE_LIMIT"] = "3 per minute"
    # the sign-in form is rate limited per address: hit it until it answers 429
    from tests.conftest import csrf_from

    token = csrf_from(client.get("/login").get_data(as_text=True))
    for _ in range(5):
        r = client.post("/login", data={"csrf_token": token, "login": "x", "password": "y"})
        if r.status_code == 429:
            break
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert "try again in" in r.get_data(as_text=True)


def test_run_top_without_terminal_hints_at_a_terminal(client, login, make_user, sshd_machine):
    from portal.machines.commands import needs_terminal

    assert needs_terminal("top") and needs_terminal("sudo vim /etc/hosts")
    assert needs_terminal("TERM=xterm less x") and not needs_terminal("python3 x.py")
    assert not needs_terminal("ls -l") and not needs_terminal("")
    alice = make_user("alice")
    m = sshd_machine(alice)
    csrf = login(alice)
    r = client.post(
        f"/machines/{m.agent_id}/run",
        data={"command": "top", "csrf_token": csrf},
        headers={"HX-Request": "true"},
    )
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "needs a terminal" in html
    assert f"/machines/{m.agent_id}/terminal" in html
    r = client.post(
        f"/machines/{m.agent_id}/run",
        data={"command": "false", "csrf_token": csrf},
        headers={"HX-Request": "true"},
    )
    assert "needs a terminal" not in r.get_data(as_text=True)


def test_avatar_too_large_is_said_on_the_profile_page(client, login, make_user):
    import io

    csrf = login(make_user("alice"))
    # over the 2 MB avatar limit: the profile page with the message next to the field
    from werkzeug.datastructures import FileStorage
    from werkzeug.test import encode_multipart

    upload = FileStorage(io.BytesIO(b"0" * (3 << 20)), "a.png")
    boundary, body = encode_multipart({"csrf_token": csrf, "avatar": upload})
    r = client.post(
        "/profile/avatar",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert r.status_code == 413 and 'id="e-avatar"' in r.get_data(as_text=True)
    assert "at most 2 MB" in r.get_data(as_text=True) and "<h2>Avatar</h2>" in r.get_data(
        as_text=True
    )


def test_broadcast_list_tells_look_alike_names_apart(client, login, make_user, make_machine):
    alice = make_user("alice")
    make_machine(alice, name="web", host="10.0.0.1", status="online")
    make_machine(alice, name="WEB", host="10.0.0.2", status="online")
    make_machine(alice, name="db", host="10.0.0.3", status="online")
    login(alice)
    html = client.get("/machines/broadcast?command=uptime").get_data(as_text=True)
    assert "@10.0.0.1:" in html and "@10.0.0.2:" in html
    assert "@10.0.0.3:" not in html  # a unique name needs no address
    assert 'value="uptime"' in html  # prefill only: nothing ran
    assert "broadcast-results" in html and "<table" not in html.split("broadcast-results")[1]


def test_community_issue_form_all_errors_at_once(client, login, make_user):
    csrf = login(make_user("alice"))
    r = client.post(
        "/community/issues/new",
        data={"csrf_token": csrf, "title": "x", "body": "", "tags": ",".join("abcdefghij")},
    )
    html = r.get_data(as_text=True)
    assert r.status_code == 422
    assert "e-title" in html and "at least 3" in html
    assert "at most 8" in html
    assert html.count('class="field-error"') >= 3, html.count('class="field-error"')
    assert 'value="a,b,c,d,e,f,g,h,i,j"' in html  # what was typed stays
