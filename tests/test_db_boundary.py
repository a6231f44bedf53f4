"""One transaction boundary: services flush, the request (or CLI command, or job) commits once
or rolls back. A failing request changes nothing, even after its service flushed rows.
(The one early commit that must stick although the request fails, a reused refresh token
revoking its family, is test_accounts_api.py::test_refresh_rotates_and_reuse_revokes_family.)"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from tests.conftest import PASSWORD, csrf_from
from tests.fixtures.race import commit_before_flush_of

NEW_PW = "brand-new-Pass-77"


def _invite(app, admin_user):
    from portal.accounts import membership
    from portal.accounts.models import User
    from portal.extensions import db

    with app.test_request_context():
        inv, raw = membership.create_invite(db.session.get(User, admin_user.id), {})
        db.session.commit()
        return inv.id, raw


def _state(app):
    from portal.accounts.models import Invite, User
    from portal.extensions import db

    with app.app_context():
        users = db.session.scalar(select(func.count(User.id)))
        invites = {i.id: i.used_by for i in db.session.scalars(select(Invite))}
        late = db.session.scalar(select(User.id).where(User.username_key == "late"))
        return users, invites, late


def test_invite_sign_up_that_fails_after_flushing_its_user_changes_nothing(client, app, admin):
    """Two people open one invite link; the other one's sign-up commits while this one's is
    being written. This request has flushed its new user when spending the link fails: it
    answers 403 and the boundary rolls the user back (no account without an invite)."""
    from portal.accounts.models import Invite, User
    from portal.db import utcnow

    invite_id, raw = _invite(app, admin)
    html = client.get(f"/invite?token={raw}").get_data(as_text=True)
    form = {
        "csrf_token": csrf_from(html),
        "token": raw,
        "email": "late@example.test",
        "username": "late",
        "password": NEW_PW,
        "password_confirm": NEW_PW,
    }
    other = update(Invite).where(Invite.id == invite_id).values(used_at=utcnow(), used_by=admin.id)
    with commit_before_flush_of(User, lambda u: u.username == "late", other) as fired:
        resp = client.post(f"/invite?token={raw}", data=form)
    assert fired, "the racing sign-up did not run"
    assert resp.status_code == 403
    assert "already used" in resp.get_data(as_text=True)
    users, invites, late = _state(app)
    assert late is None and users == 1
    assert invites == {invite_id: admin.id}  # the winner's spend stands
    assert client.get("/api/profile").status_code == 401  # nobody was signed in


def test_unit_of_work_commits_on_success_and_rolls_back_on_error(app):
    from portal.accounts import users
    from portal.extensions import db

    with app.app_context():
        with pytest.raises(RuntimeError), db.unit_of_work():
            users.create_user(
                email="ghost@example.test", username="ghost", password=PASSWORD, check_open=False
            )
            assert users.find_user("ghost") is not None  # flushed, visible to this unit
            raise RuntimeError("the job failed after its service flushed")
        assert users.find_user("ghost") is None
        with db.unit_of_work():
            users.create_user(
                email="kept@example.test", username="kept", password=PASSWORD, check_open=False
            )
    with app.app_context():  # a fresh session: it was committed
        assert users.find_user("kept") is not None
        assert users.find_user("ghost") is None


def test_cli_commands_commit_through_the_unit_of_work(app, make_user):
    from portal.accounts import users

    runner = app.test_cli_runner()
    weak = runner.invoke(
        args=["users", "create-admin", "--email", "a@example.test", "--username", "boss",
              "--password-stdin"],
        input="short\n",
    )  # fmt: skip
    assert weak.exit_code != 0 and "Traceback" not in weak.output
    ok = runner.invoke(
        args=["users", "create-admin", "--email", "b@example.test", "--username", "boss",
              "--password-stdin"],
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    make_user("pat")
    assert runner.invoke(args=["users", "set-role", "pat", "admin"]).exit_code == 0
    missing = runner.invoke(args=["users", "set-role", "nobody", "admin"])
    assert missing.exit_code != 0 and "no such user" in missing.output
    with app.app_context():
        assert users.find_user("boss").role == "admin"
        assert users.find_user("pat").role == "admin"
        assert users.find_user("a@example.test") is None
