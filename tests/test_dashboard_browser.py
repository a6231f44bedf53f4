"""The dashboard in real Chromium at 1280 px and 375 px; it refreshes itself in place."""

from __future__ import annotations

import datetime as dt
import os
import re

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.fixtures.browser import sign_in
from tests.test_community_api import quick_users

SHOTS = os.environ.get("PORTAL_SHOTS_DIR", "/tmp/shots")


def shot(page, name):
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def seed(app, owner_id):
    import random

    from portal.dashboard import services
    from portal.db import utcnow
    from portal.extensions import db
    from portal.machines.models import CommandLog, Machine

    services.clear_cache()
    rnd = random.Random(3)
    now = utcnow()
    with app.app_context():
        ms = []
        for i, (name, status) in enumerate([("web-1", "online"), ("db-primary", "online"), ("build-box", "offline"),
                                            ("edge-router-with-a-long-name", "error"), ("staging", "online"), ("old-vm", "offline")]):  # fmt: skip
            m = Machine(name=name, host=f"10.0.0.{i + 1}", username="deploy", status=status, owner_id=owner_id,
                        last_seen_at=now - dt.timedelta(minutes=7 * i))  # fmt: skip
            db.session.add(m)
            ms.append(m)
        db.session.flush()
        for day in range(13, -1, -1):
            for _ in range(rnd.randint(3, 25)):
                when = now - dt.timedelta(days=day, minutes=rnd.randint(0, 600 if day else 1))
                code = 0 if rnd.random() > 0.15 else 1
                db.session.add(CommandLog(machine_id=rnd.choice(ms).id, user_id=owner_id, source="api",
                                          command=rnd.choice(["uptime", "df -h /var", "systemctl restart nginx",
                                                              "journalctl -u app --since today | tail -n 200"]),
                                          exit_code=code, output="boom" if code else "ok", created_at=when))  # fmt: skip
        db.session.commit()
        return ms[0].agent_id


@pytest.mark.timeout(90)
def test_dashboard_desktop_and_phone(live_server, page, phone, app):
    (u,) = quick_users(app, "ops")
    seed(app, u.id)
    base = live_server.url
    sign_in(page, base, "ops", PASSWORD)
    expect(page.locator("[data-stat=machines_total] .value")).to_have_text("6")
    expect(page.locator(".db-bar")).to_have_count(14)
    expect(page.locator(".db-machine")).to_have_count(5)
    expect(page.locator(".db-log")).to_have_count(10)
    assert page.locator(".db-term").count() >= 1  # one click to a terminal
    shot(page, "dashboard-desktop")

    # it refreshes itself: a new command shows up without a reload
    from portal.extensions import db
    from portal.machines.models import CommandLog, Machine

    page.evaluate("window.__noReload = true")
    with app.app_context():
        m = db.session.query(Machine).filter_by(name="web-1").one()
        db.session.add(CommandLog(machine_id=m.id, user_id=u.id, source="api", command="echo fresh-from-poll",
                                  exit_code=0, output=""))  # fmt: skip
        db.session.commit()
    expect(page.locator(".db-log").first).to_contain_text("echo fresh-from-poll", timeout=15_000)
    assert page.evaluate("window.__noReload") is True
    assert page.js_errors == []

    # one click from a failed command to a prefilled (not yet posted) question
    page.locator(".db-log.failed a:has-text('Ask the community')").first.click()
    page.wait_for_url(re.compile(r".*/community/issues/new\?from_log=\d+"))
    assert "fails with exit code 1" in page.input_value("#f-title")
    assert "Exit code: **1**" in page.input_value("#f-body")
    shot(page, "community-from-log-desktop")

    sign_in(phone, base, "ops", PASSWORD)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"dashboard scrolls sideways on a phone ({width}px)"
    expect(phone.locator(".db-bar")).to_have_count(14)
    shot(phone, "dashboard-phone")
