"""Step-up in place (issue 18) in real Chromium: an htmx action that needs a fresh second
factor shows the dialog of base.html on the page itself; a wrong code gets its message in the
dialog and nothing happens; the right code (or a passkey from the virtual authenticator)
sends the same request again, so the action IS done and its partial swaps in, without leaving
the page; Cancel changes nothing. Covered: granting admin on a machine's access list, the
Users page's actions, and a broadcast to two machines on the real test sshd.

Served as http://localhost:<port> (WebAuthn needs a secure context and a domain RP id).
Screenshots of the dialog go to /tmp/stepup-*.png (or PORTAL_SHOTS_DIR)."""

from __future__ import annotations

import os
import time

import pyotp
import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from tests.conftest import PASSWORD
from tests.fixtures.browser import age_session, fits, new_page
from tests.fixtures.browser import shot as browser_shot
from tests.test_passkeys_browser import authenticator, credentials, register

SHOTS = os.environ.get("PORTAL_SHOTS_DIR", "/tmp")

pytestmark = pytest.mark.timeout(180)


def shot(page, name):  # always saved (/tmp without PORTAL_SHOTS_DIR), the viewport only
    browser_shot(page, f"stepup-{name}", folder=SHOTS, full_page=False)


def enrol_totp(client, auth, user) -> tuple[pyotp.TOTP, list[str]]:
    """A confirmed authenticator app (its code of the step before used) and recovery codes."""
    secret = client.post("/api/profile/mfa/totp", headers=auth(user)).get_json()["secret"]
    totp = pyotp.TOTP(secret)
    resp = client.post(
        "/api/profile/mfa/totp/confirm",
        json={"code": totp.at(time.time() - 30)},
        headers=auth(user),
    )
    assert resp.status_code == 200
    return totp, resp.get_json()["recovery_codes"]


def sign_in_with_code(page, base, username: str, totp: pyotp.TOTP) -> None:
    page.goto(f"{base}/login")
    page.fill("#f-login", username)
    page.fill("#f-password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{base}/login/mfa")
    page.fill("#f-code", totp.now())
    page.click("form button[type=submit]")
    page.wait_for_url(f"{base}/dashboard")


def stale(ctx, page, app, base, url: str) -> None:
    """An hour since the last second factor, then (back) on `url`."""
    age_session(ctx, app, base, 3600)
    page.goto(url)


def dialog_open(page):
    dialog = page.locator("#step-up-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text("Confirm it is you")
    return dialog


def wrong_code(page, dialog) -> None:
    dialog.locator("#su-f-mfa_code").fill("000000")
    dialog.get_by_role("button", name="Confirm and continue").click()
    expect(dialog.locator("#su-e-mfa_code")).to_contain_text("wrong")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#su-f-mfa_code")).to_have_attribute("aria-invalid", "true")


def right_code(page, dialog, code: str) -> None:
    dialog.locator("#su-f-mfa_code").fill(code)
    dialog.get_by_role("button", name="Confirm and continue").click()
    expect(dialog).to_be_hidden()


def db_value(app, fn):
    from portal.extensions import db

    with app.app_context():
        db.session.expire_all()
        return fn(db.session)


def access_role(app, machine_id: int, user_id: int):
    from portal.machines.models import MachineAccess

    return db_value(
        app,
        lambda s: s.scalar(
            select(MachineAccess.role).where(
                MachineAccess.machine_id == machine_id, MachineAccess.user_id == user_id
            )
        ),
    )


def broadcast_count(app, command: str) -> int:
    from portal.machines.models import CommandLog

    return db_value(
        app,
        lambda s: s.scalar(select(func.count(CommandLog.id)).where(CommandLog.command == command)),
    )


def user_row(app, user_id: int):
    from portal.accounts.models import User

    return db_value(app, lambda s: (lambda u: (u.role, u.active))(s.get(User, user_id)))


def test_machine_access_grant_and_broadcast_continue_after_the_code(
    live_server, browser, client, auth, make_user, sshd_machine
):
    app = live_server.app
    base = f"http://localhost:{live_server.port}"
    mo = make_user("mo")
    pal = make_user("pal")
    totp, recovery = enrol_totp(client, auth, mo)
    a = sshd_machine(mo, "key", name="fleet-a")
    b = sshd_machine(mo, "password", name="fleet-b")
    ctx, page = new_page(browser, 1280)
    try:
        sign_in_with_code(page, base, "mo", totp)

        # granting admin on the machine page's access list
        detail = f"{base}/machines/{a.agent_id}"
        stale(ctx, page, app, base, detail)
        form = page.locator(".grant-form")
        form.locator("input[name=user]").fill("pal")
        form.locator("select[name=role]").select_option("admin")
        form.get_by_role("button", name="Grant").click()
        dialog = dialog_open(page)
        expect(dialog.locator("#su-passkey-step-up")).to_have_count(0)  # no passkey: code only
        fits(page, 1280)
        shot(page, "dialog-1280")
        wrong_code(page, dialog)
        assert access_role(app, a.id, pal.id) is None
        right_code(page, dialog, totp.at(time.time() + 30))
        expect(page.locator("#access")).to_contain_text("pal is now admin.")
        expect(page.locator("#access li", has_text="pal")).to_contain_text("admin")
        assert access_role(app, a.id, pal.id) == "admin"
        assert page.url == detail  # never left the page

        # a broadcast to both machines: cancel, then the code, then it runs once
        bc = f"{base}/machines/broadcast"
        stale(ctx, page, app, base, bc)
        page.fill("#broadcast-form input[name=command]", "echo stepup-fleet-ok")
        page.locator(f"input[name=agent_ids][value='{a.agent_id}']").check()
        page.locator(f"input[name=agent_ids][value='{b.agent_id}']").check()
        page.once("dialog", lambda d: d.accept())  # "Run … on 2 machines?"
        page.locator("#broadcast-form button[type=submit]").click()
        dialog = dialog_open(page)
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#broadcast-results tr")).to_have_count(0)
        expect(page.locator("#broadcast-form button[type=submit]")).to_be_enabled()
        assert broadcast_count(app, "echo stepup-fleet-ok") == 0

        page.once("dialog", lambda d: d.accept())
        page.locator("#broadcast-form button[type=submit]").click()
        dialog = dialog_open(page)
        wrong_code(page, dialog)
        assert broadcast_count(app, "echo stepup-fleet-ok") == 0
        right_code(page, dialog, recovery[0])
        expect(page.locator("#broadcast-results tr.done")).to_have_count(2)
        expect(page.locator("#broadcast-results")).to_contain_text("stepup-fleet-ok")
        assert broadcast_count(app, "echo stepup-fleet-ok") == 2
        assert page.url == bc
        assert page.js_errors == []
    finally:
        ctx.close()


def test_users_page_cancel_code_and_passkey_continue_in_place(
    live_server, browser, client, auth, make_user
):
    app = live_server.app
    base = f"http://localhost:{live_server.port}"
    root = make_user("root", role="admin")
    eve = make_user("eve")
    pat = make_user("pat")
    totp, recovery = enrol_totp(client, auth, root)
    ctx, page = new_page(browser, 375)
    cdp, auth_id = authenticator(ctx, page)
    users = f"{base}/admin/users"
    try:
        sign_in_with_code(page, base, "root", totp)
        stale(ctx, page, app, base, users)

        # deactivate eve: its hx-confirm, then the dialog; Cancel leaves her active
        row = page.locator(f"#user-{eve.id}")
        page.once("dialog", lambda d: d.accept())
        row.get_by_role("button", name="Deactivate").click()
        dialog = dialog_open(page)
        fits(page, 375)
        shot(page, "dialog-375")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        assert user_row(app, eve.id) == ("user", True)
        expect(row).to_contain_text("active")

        # again: a wrong code, then a recovery code; the replay does not ask its hx-confirm
        # again (an unanswered native confirm would be dismissed and nothing sent)
        page.once("dialog", lambda d: d.accept())
        row.get_by_role("button", name="Deactivate").click()
        dialog = dialog_open(page)
        wrong_code(page, dialog)
        shot(page, "dialog-wrong-375")
        assert user_row(app, eve.id) == ("user", True)
        right_code(page, dialog, recovery[0])
        expect(page.locator(f"#user-{eve.id}")).to_contain_text("deactivated")
        assert user_row(app, eve.id) == ("user", False)
        assert page.url == users

        # a passkey (now fresh: adding one needs no second prompt), later it answers the dialog
        register(page, base, "Phone")
        assert len(credentials(cdp, auth_id)) == 1
        stale(ctx, page, app, base, users)
        page.locator(f"#user-{pat.id}").get_by_role("button", name="Make admin").click()
        dialog = dialog_open(page)
        expect(dialog.locator("#su-passkey-step-up")).to_be_enabled()
        shot(page, "dialog-passkey-375")
        dialog.locator("#su-passkey-step-up").click()
        expect(dialog).to_be_hidden()
        expect(page.locator(f"#user-{pat.id}")).to_contain_text("admin")
        expect(
            page.locator(f"#user-{pat.id}").get_by_role("button", name="Make user")
        ).to_be_visible()
        assert user_row(app, pat.id) == ("admin", True)
        assert page.url == users
        assert page.js_errors == []
    finally:
        ctx.close()


def test_passkey_dialog_at_1280(live_server, browser, client, auth, make_user, make_machine):
    """The dialog with its passkey button on a desktop, answered with the passkey: the
    machine access grant goes through."""
    app = live_server.app
    base = f"http://localhost:{live_server.port}"
    mo = make_user("mo")
    pal = make_user("pal")
    totp, _ = enrol_totp(client, auth, mo)
    ctx, page = new_page(browser, 1280)
    cdp, auth_id = authenticator(ctx, page)
    try:
        sign_in_with_code(page, base, "mo", totp)
        register(page, base, "Laptop")
        m = make_machine(mo, "vault", host="127.0.0.1", port=1)  # nothing listens on port 1
        agent_id, machine_id = m.agent_id, m.id
        detail = f"{base}/machines/{agent_id}"
        stale(ctx, page, app, base, detail)
        form = page.locator(".grant-form")
        form.locator("input[name=user]").fill("pal")
        form.locator("select[name=role]").select_option("admin")
        form.get_by_role("button", name="Grant").click()
        dialog = dialog_open(page)
        expect(dialog.locator("#su-passkey-step-up")).to_be_enabled()
        shot(page, "dialog-passkey-1280")
        dialog.locator("#su-passkey-step-up").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#access")).to_contain_text("pal is now admin.")
        assert access_role(app, machine_id, pal.id) == "admin"
        assert page.url == detail
        assert page.js_errors == []
    finally:
        ctx.close()
