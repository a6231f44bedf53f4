"""Passkeys in real Chromium with its virtual authenticator (CDP WebAuthn domain): a real
WebAuthn ceremony on both ends, nothing mocked. Register from the two-step sign-in page, rename,
sign in with password + passkey, step up with a passkey before a sensitive terminal, sign in
without a password, add a second passkey and remove both (with a passkey, with the password).
Then the abuse cases, with answers the browser really produced: a replayed answer, a stale
challenge, an answer made for another origin, and a cloned authenticator whose sign count went
backwards are all refused.

The live server is opened as http://localhost:<port>: WebAuthn needs a secure context and an
RP id that is a domain (an IP address is not one); http://localhost is both."""

from __future__ import annotations

import datetime as dt
import http.server
import os
import threading

import pytest
import requests
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.fixtures.browser import age_session, fits, new_page, shot

VENDOR_JS = os.path.join(
    os.path.dirname(__file__), "..", "static", "vendor", "simplewebauthn", "index.umd.min.js"
)


def authenticator(ctx, page):
    """A platform authenticator with resident keys and user verification (a phone or laptop
    with a fingerprint reader). Returns (cdp session, authenticator id)."""
    cdp = ctx.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    made = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )
    return cdp, made["authenticatorId"]


def credentials(cdp, auth_id) -> list[dict]:
    return cdp.send("WebAuthn.getCredentials", {"authenticatorId": auth_id})["credentials"]


def password_sign_in(page, base, username="mo"):
    page.goto(f"{base}/login")
    page.fill("#f-login", username)
    page.fill("#f-password", PASSWORD)
    page.click("form button[type=submit]")


def arrive(page, url: str) -> None:
    """Wait for the page to reach `url`; when a passkey ceremony failed instead, fail with
    what the page told the user (a bare timeout says nothing about why)."""
    try:
        page.wait_for_url(url)
    except PlaywrightTimeout:
        err = page.locator("#e-passkey")
        said = err.inner_text() if err.count() else ""
        raise AssertionError(f"still at {page.url}, not {url}; the page says {said!r}") from None


def register(page, base, name: str):
    page.goto(f"{base}/profile/mfa")
    page.fill("#f-passkey-name", name)
    page.click("#passkey-add button[type=submit]")
    expect(page.locator(".passkey-name", has_text=name)).to_be_visible()


def sign_out(ctx, page, base):
    page.goto("about:blank")  # first leave the page: its requests in flight set cookies again
    ctx.clear_cookies()
    page.goto(f"{base}/login")


def audit_actions(app, username: str) -> list[tuple[str, str, str | None]]:
    from sqlalchemy import select

    from portal.audit.models import AuditEvent
    from portal.extensions import db

    app.extensions["portal_audit"].flush()
    with app.app_context():
        rows = db.session.scalars(
            select(AuditEvent)
            .where(AuditEvent.target_name == username, AuditEvent.action.like("mfa_%"))
            .order_by(AuditEvent.id)
        ).all()
        return [(r.action, r.result, (r.details or {}).get("method")) for r in rows]


@pytest.mark.timeout(120)
def test_register_sign_in_step_up_passwordless_and_remove(
    live_server, browser, make_user, make_machine
):
    base = f"http://localhost:{live_server.port}"
    user = make_user("mo")
    # Nothing listens on port 1: the terminal page is reached, no SSH connection is made.
    box = make_machine(user, "vault-box", sensitive=True, host="127.0.0.1", port=1)
    ctx, page = new_page(browser, 1280)
    cdp, auth_id = authenticator(ctx, page)
    try:
        password_sign_in(page, base)
        arrive(page, f"{base}/dashboard")
        page.goto(f"{base}/profile/mfa")
        expect(page.locator("#no-passkeys")).to_be_visible()
        register(page, base, "Laptop")
        assert len(credentials(cdp, auth_id)) == 1  # a resident (discoverable) credential
        assert credentials(cdp, auth_id)[0]["isResidentCredential"] is True
        shot(page, "passkeys-list-1280")

        # rename it
        row = page.locator(".passkey", has_text="Laptop")
        row.locator("summary").click()
        row.locator("input[name=name]").fill("Work laptop")
        row.get_by_role("button", name="Rename").click()
        expect(page.locator(".passkey-name")).to_have_text(["Work laptop"])

        # password, then the passkey as the second step
        sign_out(ctx, page, base)
        password_sign_in(page, base)
        arrive(page, f"{base}/login/mfa")
        shot(page, "passkeys-login-mfa-1280")
        page.click("#passkey-mfa")
        arrive(page, f"{base}/dashboard")

        # an hour later the check is stale: the sensitive terminal asks again, a passkey answers
        age_session(ctx, live_server.app, base, 3600)
        page.goto(f"{base}/machines/{box.agent_id}/terminal")
        expect(page.locator("#step-up h1")).to_have_text("Confirm it is you")
        shot(page, "passkeys-step-up-1280")
        page.click("#passkey-step-up")
        arrive(page, f"{base}/machines/{box.agent_id}/terminal*")
        expect(page.locator("#step-up")).to_have_count(0)

        # no password at all
        sign_out(ctx, page, base)
        shot(page, "passkeys-login-1280")
        page.click("#passkey-login")
        arrive(page, f"{base}/dashboard")
        expect(page.locator("body")).to_contain_text("mo")

        # a second passkey (the first one is off this authenticator, as if on another device)
        first = credentials(cdp, auth_id)[0]["credentialId"]
        cdp.send("WebAuthn.removeCredential", {"authenticatorId": auth_id, "credentialId": first})
        register(page, base, "Security key")
        expect(page.locator(".passkey-name")).to_have_text(["Work laptop", "Security key"])
        fits(page, 1280)

        # remove the first with the other passkey, the second with the password
        row = page.locator(".passkey", has_text="Work laptop")
        page.wait_for_load_state("load")
        row.locator("summary").click()
        row.get_by_role("button", name="Remove with a passkey").click()
        expect(page.locator(".flash")).to_contain_text("The passkey was removed.")
        expect(page.locator(".passkey-name")).to_have_text(["Security key"])
        row = page.locator(".passkey", has_text="Security key")
        row.locator("summary").click()
        row.locator("input[name=password]").fill("wrong password")
        row.get_by_role("button", name="Remove", exact=True).click()
        expect(page.locator(".passkey .field-error")).to_contain_text("the password is wrong")
        row = page.locator(".passkey", has_text="Security key")
        row.locator("input[name=password]").fill(PASSWORD)
        row.get_by_role("button", name="Remove", exact=True).click()
        expect(page.locator("#no-passkeys")).to_be_visible()
        assert page.js_errors == []
    finally:
        ctx.close()

    actions = audit_actions(live_server.app, "mo")
    assert actions.count(("mfa_passkey_added", "ok", "passkey")) == 2
    assert actions.count(("mfa_passkey_removed", "ok", "passkey")) == 2
    assert ("mfa_used", "ok", "passkey") in actions
    assert ("mfa_step_up_ok", "ok", "passkey") in actions
    assert ("mfa_failed", "failed", None) in actions  # the wrong password


class _OtherSite:
    """A page on another origin (http://localhost:<other port>): what a phishing site that
    relays the portal's options would be."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = b"<!doctype html><title>other site</title><p>other site</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _held_answer(ctx, page, base) -> tuple[dict, requests.Session]:
    """Run a passwordless sign-in in the browser but hold back its answer: returns the
    answer (as the page would have posted it) and an HTTP session with the browser's cookies
    at that moment (so the server-side challenge is still pending)."""
    held = {}

    def hold(route):
        held["body"] = route.request.post_data_json
        route.abort()

    page.route("**/api/auth/passkey", hold)
    page.goto(f"{base}/login")
    page.click("#passkey-login")
    expect(page.locator("#e-passkey")).to_be_visible()  # the aborted post shows an error
    page.unroute("**/api/auth/passkey")
    http = requests.Session()
    for c in ctx.cookies(base):
        http.cookies.set(c["name"], c["value"])  # no domain: the jar would not match "localhost"
    return held["body"], http


@pytest.mark.timeout(120)
def test_replayed_stale_foreign_and_cloned_answers_are_refused(live_server, browser, make_user):
    from portal.accounts.models import Passkey, WebauthnChallenge
    from portal.extensions import db

    app = live_server.app
    base = f"http://localhost:{live_server.port}"
    make_user("mo")
    ctx, page = new_page(browser, 375)
    cdp, auth_id = authenticator(ctx, page)
    other = _OtherSite()
    try:
        password_sign_in(page, base)
        arrive(page, f"{base}/dashboard")
        register(page, base, "Phone")
        fits(page, 375)
        shot(page, "passkeys-list-375")
        sign_out(ctx, page, base)
        fits(page, 375)
        shot(page, "passkeys-login-375")

        # 1. a real answer, posted twice: the first signs in, the second is a replay
        answer, http = _held_answer(ctx, page, base)
        ok = http.post(f"{base}/api/auth/passkey", json=answer)
        assert ok.status_code == 200, ok.text
        assert ok.json()["user"]["username"] == "mo" and "token" not in ok.json()
        signed_in_cookies = http.cookies.copy()
        again = requests.post(f"{base}/api/auth/passkey", json=answer, cookies=signed_in_cookies)
        assert again.status_code == 401 and again.json()["code"] == "passkey_refused"
        assert "no passkey check is pending" in again.json()["error"]
        # ... and with the cookie from before the first post (the challenge id still in it)
        sign_out(ctx, page, base)
        answer, http = _held_answer(ctx, page, base)
        before = http.cookies.copy()
        first = http.post(f"{base}/api/auth/passkey", json={**answer, "tokens": True})
        assert first.status_code == 200 and first.json()["token"]
        replay = requests.post(f"{base}/api/auth/passkey", json=answer, cookies=before)
        assert replay.status_code == 401
        assert "no passkey check is pending" in replay.json()["error"]

        # 2. a stale challenge: the answer is genuine but came after the challenge expired
        sign_out(ctx, page, base)
        answer, http = _held_answer(ctx, page, base)
        with app.app_context():
            for row in db.session.query(WebauthnChallenge).all():
                row.expires_at = row.expires_at - dt.timedelta(hours=1)
            db.session.commit()
        stale = http.post(f"{base}/api/auth/passkey", json=answer)
        assert stale.status_code == 401 and "expired" in stale.json()["error"]
        assert (
            "no passkey check is pending"
            in http.post(f"{base}/api/auth/passkey", json=answer).json()["error"]
        )

        # 3. another origin relays the portal's options; the authenticator signs for it
        relay = requests.Session()
        options = relay.post(f"{base}/api/auth/passkey/options", json={"purpose": "login"})
        assert options.status_code == 200
        page.goto(f"http://localhost:{other.port}/")
        page.add_script_tag(path=VENDOR_JS)
        foreign = page.evaluate(
            "o => SimpleWebAuthnBrowser.startAuthentication({optionsJSON: o})",
            options.json()["options"],
        )
        refused = relay.post(
            f"{base}/api/auth/passkey", json={"purpose": "login", "credential": foreign}
        )
        assert refused.status_code == 401
        assert f"http://localhost:{other.port}" in refused.json()["error"]  # the origin
        assert "origin" in refused.json()["error"]

        # 4. a cloned authenticator: same key, its counter behind the one the portal saw
        with app.app_context():
            seen = db.session.query(Passkey).one().sign_count
        assert seen >= 1  # this authenticator counts
        cred = credentials(cdp, auth_id)[0]
        cdp.send(
            "WebAuthn.removeCredential",
            {"authenticatorId": auth_id, "credentialId": cred["credentialId"]},
        )
        cdp.send(
            "WebAuthn.addCredential",
            {"authenticatorId": auth_id, "credential": {**cred, "signCount": 0}},
        )
        page.goto(f"{base}/login")
        page.click("#passkey-login")
        expect(page.locator("#e-passkey")).to_contain_text("sign count")
        assert page.url.startswith(f"{base}/login")
        assert page.js_errors == []
    finally:
        other.close()
        ctx.close()

    actions = audit_actions(app, "mo")
    failed = [a for a in actions if a[0] == "mfa_failed"]
    assert len(failed) >= 2  # the foreign origin and the cloned authenticator
