"""Every text field of the pages that send forms carries a maxlength equal to the limit the
server checks (portal/formlimits.py reads the services' constants). The pages are rendered
for real and parsed; a new text field without its limit, or with another number, fails."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from portal.formlimits import limits

pytestmark = pytest.mark.timeout(60)

NOT_TEXT = {"hidden", "checkbox", "radio", "file", "number", "submit", "button", "range"}

MACHINE_FORM = {
    "name": "machine_name",
    "host": "host",
    "username": "ssh_user",
    "tags": "tags",
    "private_key": "private_key",
    "passphrase": "ssh_secret",
    "password": "ssh_secret",
    "host_key": "host_key",
}
ISSUE_FORM = {"title": "issue_title", "tags": "tags", "body": "issue_body"}

#: page -> {field name: key in formlimits.limits()}; every text field of the page must be here.
PAGES = {
    "/machines": {"q": "machine_search"},
    "/machines/new": MACHINE_FORM,
    "/machines/new?mode=enroll": {"name": "machine_name", "tags": "tags"},
    "/machines/{agent_id}": {"command": "command", "q": "log_search", "user": "log_user"},
    "/machines/{agent_id}/edit": MACHINE_FORM,
    "/machines/broadcast": {"command": "command"},
    "/community": {"q": "issue_search"},
    "/community/issues/new": ISSUE_FORM,
    "/community/issues/{issue_id}": {"body": "issue_body"},
    "/community/issues/{issue_id}/edit": ISSUE_FORM,
    "/profile": {
        "current_password": "current_password",
        "new_password": "new_password",
        "new_password_confirm": "new_password",
    },
    "/admin/users": {
        "q": "user_search",
        "email": "email",
        "username": "username",
        "password": "new_password",
    },
    "/audit": {
        "q": "audit_search",
        "actor": "audit_actor",
        "action": "audit_action",
        "machine": "audit_machine",
        "since": "time",
        "until": "time",
        "url": "webhook_url",
        "secret": "webhook_secret",
    },
}


class Fields(HTMLParser):
    def __init__(self):
        super().__init__()
        self.fields: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "textarea" or (tag == "input" and a.get("type", "text") not in NOT_TEXT):
            if "readonly" not in a:  # shown to copy (a new API key, an invite link)
                self.fields.append({"tag": tag, **a})


def text_fields(html: str) -> list[dict]:
    parser = Fields()
    parser.feed(html)
    return parser.fields


def test_the_server_limits_are_the_services_constants():
    from portal.accounts.passwords import PASSWORD_MAX
    from portal.community.issues import BODY_MAX, TITLE_MAX
    from portal.machines.commands import MAX_COMMAND
    from portal.machines.naming import NAME_MAX

    got = limits()
    assert got["machine_name"] == NAME_MAX and got["command"] == MAX_COMMAND
    assert got["issue_title"] == TITLE_MAX and got["issue_body"] == BODY_MAX
    assert got["new_password"] == PASSWORD_MAX


def test_every_text_field_has_the_servers_maxlength(app, client, login, make_user, make_machine):
    from portal.community import issues
    from portal.extensions import db

    root = make_user("root", role="admin")  # sees every page, including Users
    machine = make_machine(root, name="web")
    with app.app_context():
        from portal.accounts.models import User

        issue = issues.create_issue(
            db.session.get(User, root.id), {"title": "Disk full", "body": "help"}
        )
        db.session.commit()
        issue_id = issue.id
    login(root)
    want_all = limits()
    checked, wrong = 0, []
    for path, wanted in PAGES.items():
        url = path.format(agent_id=machine.agent_id, issue_id=issue_id)
        r = client.get(url)
        assert r.status_code == 200, url
        fields = text_fields(r.get_data(as_text=True))
        assert fields, url
        for f in fields:
            name = f.get("name")
            if name not in wanted:
                wrong.append(f"{url}: {f['tag']} {name!r} is not in the table")
                continue
            want = want_all[wanted[name]]
            if f.get("maxlength") != str(want):
                wrong.append(f"{url}: {name} maxlength={f.get('maxlength')!r}, server: {want}")
            checked += 1
    assert not wrong, "\n".join(wrong)
    assert checked >= 35  # every page above has its fields


def test_login_page_fields(client, make_user):
    make_user("someone")  # (with no account yet, /login sends the first visitor to sign up)
    html = client.get("/login").get_data(as_text=True)
    got = {f["name"]: f.get("maxlength") for f in text_fields(html)}
    lim = limits()
    assert got == {"login": str(lim["login"]), "password": str(lim["current_password"])}


def test_signup_page_fields(client):
    """The first-run sign-up page (no account yet)."""
    html = client.get("/signup").get_data(as_text=True)
    got = {f["name"]: f.get("maxlength") for f in text_fields(html)}
    lim = limits()
    assert got == {
        "email": str(lim["email"]),
        "username": str(lim["username"]),
        "password": str(lim["new_password"]),
        "password_confirm": str(lim["new_password"]),
    }
