"""Dashboard API and page: figures scoped to the machines the caller may see."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.test_community_api import quick_users


@pytest.fixture
def world(app):
    """Three machines: alice owns m1, bob owns m2 (alice is a viewer there), m3 is the admin's.
    Logs today and yesterday, failures, a live and a closed session, one open issue."""
    from portal.community.models import Issue
    from portal.dashboard import services
    from portal.db import utcnow
    from portal.extensions import db
    from portal.machines.models import CommandLog, Machine, MachineAccess
    from portal.terminal.models import TerminalSession

    services.clear_cache()
    alice, bob, carol, root = quick_users(app, "alice", "bob", "carol", "root:admin")
    now = utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with app.app_context():
        m1 = Machine(name="web-1", host="10.0.0.1", username="deploy", status="online", owner_id=alice.id,
                     last_seen_at=now - dt.timedelta(minutes=5))  # fmt: skip
        m2 = Machine(name="db-1", host="10.0.0.2", username="deploy", status="offline", owner_id=bob.id,
                     last_seen_at=now - dt.timedelta(hours=2))  # fmt: skip
        m3 = Machine(name="secret-box", host="10.0.0.3", username="root", status="online", owner_id=root.id,
                     last_seen_at=now)  # fmt: skip
        db.session.add_all([m1, m2, m3])
        db.session.flush()
        db.session.add(MachineAccess(machine_id=m2.id, user_id=alice.id, role="viewer"))
        t = today + dt.timedelta(minutes=1)
        y = today - dt.timedelta(hours=3)

        def log(m, u, cmd, code, when):
            db.session.add(CommandLog(machine_id=m.id, user_id=u.id, source="api", command=cmd,
                                      exit_code=code, output="out", duration_ms=5, created_at=when))  # fmt: skip

        # inserted in time order, as the portal logs them
        log(m3, root, "old", 0, today - dt.timedelta(days=20))  # outside the chart
        log(m1, alice, "ls /nope", 2, y)
        log(m1, alice, "uptime", 0, t)
        log(m1, alice, "false", 1, t + dt.timedelta(seconds=1))
        log(m2, bob, "pg_dump", 0, t + dt.timedelta(seconds=2))
        log(m2, bob, "interactive", None, t + dt.timedelta(seconds=3))
        log(m3, root, "cat /etc/shadow", 0, t + dt.timedelta(seconds=4))
        log(m3, root, "rm -rf /tmp/x", 1, t + dt.timedelta(seconds=5))
        db.session.add_all([
            TerminalSession(machine_id=m1.id, user_id=alice.id, status="active"),
            TerminalSession(machine_id=m2.id, user_id=bob.id, status="detached"),
            TerminalSession(machine_id=m3.id, user_id=root.id, status="active"),
            TerminalSession(machine_id=m1.id, user_id=alice.id, status="closed"),
        ])  # fmt: skip
        db.session.add_all([
            Issue(title="open one", body="x", body_html="<p>x</p>", status="open", author_id=bob.id,
                  fixes_count=0, likes_count=0),
            Issue(title="done one", body="x", body_html="<p>x</p>", status="solved", author_id=bob.id,
                  fixes_count=0, likes_count=0),
        ])  # fmt: skip
        db.session.commit()
        ids = {"m1": m1.agent_id, "m2": m2.agent_id, "m3": m3.agent_id}
    return {"alice": alice, "bob": bob, "carol": carol, "root": root, **ids}


def test_stats_are_scoped(client, auth, world):
    expect = {
        # alice: her m1 + viewer on m2
        "alice": dict(machines_total=2, machines_online=1, sessions_active=2, commands_today=4,
                      commands_failed_today=1, issues_open=1),
        "bob": dict(machines_total=1, machines_online=0, sessions_active=1, commands_today=2,
                    commands_failed_today=0, issues_open=1),
        "carol": dict(machines_total=0, machines_online=0, sessions_active=0, commands_today=0,
                      commands_failed_today=0, issues_open=1),
        "root": dict(machines_total=3, machines_online=2, sessions_active=3, commands_today=6,
                     commands_failed_today=2, issues_open=1),
    }  # fmt: skip
    for who, want in expect.items():
        r = client.get("/api/dashboard/stats", headers=auth(world[who]))
        assert r.status_code == 200
        assert r.json == want, who


def test_recent_machines_are_scoped_and_ordered(client, auth, world):
    r = client.get("/api/dashboard/recent-machines", headers=auth(world["alice"]))
    machines = r.json["machines"]
    assert [m["name"] for m in machines] == ["web-1", "db-1"]
    assert machines[0]["my_role"] == "admin" and machines[1]["my_role"] == "viewer"
    assert {"agent_id", "status", "host", "owner", "last_seen_at"} <= set(machines[0])
    assert "secret_enc" not in machines[0] and "password" not in str(machines)
    r = client.get("/api/dashboard/recent-machines", headers=auth(world["root"]))
    assert [m["name"] for m in r.json["machines"]] == ["secret-box", "web-1", "db-1"]
    assert client.get("/api/dashboard/recent-machines", headers=auth(world["carol"])).json == {
        "machines": []
    }


def test_recent_activity_is_scoped_newest_first(client, auth, world):
    r = client.get("/api/dashboard/recent-activity", headers=auth(world["alice"]))
    cmds = [a["command"] for a in r.json["activity"]]
    assert cmds == ["interactive", "pg_dump", "false", "uptime", "ls /nope"]
    assert "cat /etc/shadow" not in str(r.json)
    one = r.json["activity"][0]
    assert {"id", "machine_id", "user", "session_id", "source", "command", "exit_code", "output",
            "duration_ms", "created_at"} <= set(one)  # fmt: skip
    r = client.get("/api/dashboard/recent-activity", headers=auth(world["root"]))
    assert len(r.json["activity"]) == 8 and r.json["activity"][0]["command"] == "rm -rf /tmp/x"
    assert client.get("/api/dashboard/recent-activity", headers=auth(world["carol"])).json == {
        "activity": []
    }


def test_recent_activity_caps_at_ten(client, auth, world, app):
    from portal.extensions import db
    from portal.machines.models import CommandLog, Machine

    with app.app_context():
        m1 = db.session.query(Machine).filter_by(name="web-1").one()
        for i in range(15):
            db.session.add(CommandLog(machine_id=m1.id, user_id=world["alice"].id, source="terminal",
                                      command=f"echo {i}", exit_code=0, output=""))  # fmt: skip
        db.session.commit()
    for who in ("alice", "root"):
        acts = client.get("/api/dashboard/recent-activity", headers=auth(world[who])).json[
            "activity"
        ]
        assert [a["command"] for a in acts] == [f"echo {i}" for i in range(14, 4, -1)]


def test_commands_per_day_is_scoped(client, auth, world):
    days = client.get("/api/dashboard/commands-per-day", headers=auth(world["alice"])).json["days"]
    assert len(days) == 14
    assert days[-1]["total"] == 4 and days[-1]["failed"] == 1
    assert days[-2]["total"] == 1 and days[-2]["failed"] == 1
    assert sum(d["total"] for d in days) == 5
    root_days = client.get("/api/dashboard/commands-per-day", headers=auth(world["root"])).json[
        "days"
    ]
    assert sum(d["total"] for d in root_days) == 7  # the 20-day-old log is outside


def test_dashboard_needs_auth(client):
    for path in (
        "/api/dashboard/stats",
        "/api/dashboard/recent-machines",
        "/api/dashboard/recent-activity",
    ):
        assert client.get(path).status_code == 401
    r = client.get("/dashboard")
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_dashboard_page_and_live_partial(client, login, world):
    login(world["alice"])
    html = client.get("/dashboard").get_data(as_text=True)
    assert 'hx-trigger="every 10s"' in html and 'id="dash-live"' in html
    assert 'data-stat="machines_total"' in html and "web-1" in html and "db-1" in html
    assert "secret-box" not in html and "/etc/shadow" not in html
    assert f"/machines/{world['m1']}/terminal" in html  # alice may open a terminal on her machine
    assert f"/machines/{world['m2']}/terminal" not in html  # viewer only on db-1
    assert "from_log=" in html  # failed commands link to "Ask the community"
    assert "<svg" in html and html.count('class="db-bar"') == 14
    part = client.get("/dashboard/live", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert (
        part.lstrip().startswith("{#") is False and 'id="dash-live"' in part and "<html" not in part
    )


def test_ask_the_community_prefills_from_a_visible_log_only(client, login, world, app):
    from sqlalchemy import func, select

    from portal.community.models import Issue
    from portal.extensions import db
    from portal.machines.models import CommandLog

    with app.app_context():
        ids = dict(db.session.execute(select(CommandLog.command, CommandLog.id)).all())
        db.session.get(CommandLog, ids["false"]).output = "line 1\n```\nfatal: boom"
        db.session.commit()
        before = db.session.scalar(select(func.count()).select_from(Issue))
    login(world["alice"])
    html = client.get(f"/community/issues/new?from_log={ids['false']}").get_data(as_text=True)
    assert 'value="false fails with exit code 1"' in html
    assert "$ false" in html and "fatal: boom" in html and "Exit code: **1**" in html
    assert "````" in html  # the fence outgrows the ``` inside the output
    assert client.get(f"/community/issues/new?from_log={ids['cat /etc/shadow']}").status_code == 404
    assert client.get("/community/issues/new?from_log=999999").status_code == 404
    assert client.get("/community/issues/new?from_log=abc").status_code == 404
    with app.app_context():
        assert (
            db.session.scalar(select(func.count()).select_from(Issue)) == before
        )  # nothing posted


def test_recent_activity_fallback_matches_windowed_answer(app, world, monkeypatch):
    from portal.accounts.models import User
    from portal.dashboard import services
    from portal.extensions import db

    with app.app_context():
        alice = db.session.get(User, world["alice"].id)
        windowed = [log.id for log in services.recent_activity(alice)]
        monkeypatch.setattr(services, "_top_ids_windowed", lambda ids, limit: None)
        assert [log.id for log in services.recent_activity(alice)] == windowed
        assert len(windowed) == 5
