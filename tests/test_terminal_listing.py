"""The sessions page: filters, paging, HTMX partials and who sees which session (seeded rows
in the real database; the live parts are in test_terminal_share_browser.py)."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

pytestmark = pytest.mark.timeout(60)

DAY = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def seed(app):
    """seed(machine, user, n=1, status="closed", day=0, shared=False) -> [session ids];
    `day` counts days after 2026-03-10, each row a minute apart."""
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    def _seed(machine, user, n=1, status="closed", day=0, shared=False):
        ids = []
        with app.app_context():
            for i in range(n):
                sid = str(uuid.uuid4())
                start = DAY + dt.timedelta(days=day, minutes=i)
                db.session.add(
                    TerminalSession(
                        id=sid,
                        machine_id=machine.id,
                        user_id=user.id,
                        status=status,
                        shared=shared,
                        started_at=start,
                        ended_at=None if status != "closed" else start + dt.timedelta(minutes=5),
                        close_reason="closed by its user" if status == "closed" else None,
                        bytes_in=10 + i,
                        bytes_out=1000 + i,
                        server_id="elsewhere:1:1" if status != "closed" else None,
                    )
                )
                ids.append(sid)
            db.session.commit()
            db.session.remove()
        return ids

    return _seed


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr id="session-([0-9a-f-]{36})"', html)


@pytest.fixture
def world(make_user, make_machine, grant_role, seed):
    """alice owns box-a; bob operates box-a (sessions there) and owns box-b; carol views
    box-a. Seeds: alice 3 closed on box-a (day 0), bob 2 closed on box-a (day 2), bob one
    live shared and one live unshared on box-a (day 3), bob 1 closed on box-b (day 5)."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    box_a = make_machine(alice, name="box-a")
    box_b = make_machine(bob, name="box-b")
    grant_role(box_a, bob, "operator")
    grant_role(box_a, carol, "viewer")
    s = {
        "alice_a": seed(box_a, alice, 3, day=0),
        "bob_a": seed(box_a, bob, 2, day=2),
        "bob_shared": seed(box_a, bob, 1, status="active", day=3, shared=True),
        "bob_private": seed(box_a, bob, 1, status="detached", day=3),
        "bob_b": seed(box_b, bob, 1, day=5),
    }
    return {"alice": alice, "bob": bob, "carol": carol, "a": box_a, "b": box_b, "s": s}


def test_each_user_lists_only_the_sessions_they_may_see(world, client, login, admin, app):
    s = world["s"]
    every = [sid for ids in s.values() for sid in ids]
    # alice owns box-a: every session there, none on box-b
    login(world["alice"])
    seen = set(_ids(client.get("/sessions").get_data(as_text=True)))
    assert seen == set(every) - set(s["bob_b"])
    # carol views box-a: only the live shared one
    client._cookies.clear()
    login(world["carol"])
    assert _ids(client.get("/sessions").get_data(as_text=True)) == s["bob_shared"]
    # bob: his own everywhere, not alice's (operator, not admin, on box-a)
    client._cookies.clear()
    login(world["bob"])
    seen = set(_ids(client.get("/sessions").get_data(as_text=True)))
    assert seen == set(every) - set(s["alice_a"])
    # a global admin sees everything
    client._cookies.clear()
    login(admin)
    assert set(_ids(client.get("/sessions").get_data(as_text=True))) == set(every)


def test_the_sql_visibility_agrees_with_the_policy(world, app, admin, make_user):
    """policy.visible_sessions_clause is can_see in SQL: the two agree row by row."""
    from sqlalchemy import select

    from portal.accounts.models import User
    from portal.extensions import db
    from portal.terminal import policy
    from portal.terminal.models import TerminalSession

    stranger = make_user("stranger")
    with app.app_context():
        rows = db.session.scalars(select(TerminalSession)).all()
        for u in (world["alice"], world["bob"], world["carol"], admin, stranger):
            user = db.session.get(User, u.id)
            by_sql = set(
                db.session.scalars(
                    select(TerminalSession.id).where(policy.visible_sessions_clause(user))
                )
            )
            assert by_sql == {r.id for r in rows if policy.can_see(user, r)}, u.username


def test_filters_narrow_the_list(world, client, login, admin):
    s = world["s"]
    login(admin)

    def listed(query: str) -> set[str]:
        resp = client.get(f"/sessions?{query}")
        assert resp.status_code == 200, query
        return set(_ids(resp.get_data(as_text=True)))

    assert listed("user=alice") == set(s["alice_a"])
    assert listed("user=BOB&machine=" + world["b"].agent_id) == set(s["bob_b"])
    assert listed("status=live") == set(s["bob_shared"] + s["bob_private"])
    assert listed("status=detached") == set(s["bob_private"])
    assert listed("since=2026-03-12&until=2026-03-13") == set(
        s["bob_a"] + s["bob_shared"] + s["bob_private"]
    )
    assert listed("until=2026-03-10") == set(s["alice_a"])  # the end day is included
    assert listed("since=2026-03-15") == set(s["bob_b"])
    # the form keeps what was asked
    html = client.get("/sessions?status=closed&since=2026-03-12").get_data(as_text=True)
    assert 'value="closed" selected' in html and 'value="2026-03-12"' in html


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("since=yesterday", "since", "use a date like"),
        ("until=2026-02-30", "until", "use a date like"),
        ("since=2026-03-12&until=2026-03-11", "until", "before the start date"),
        ("status=running", "status", "choose live"),
        ("user=nobody-here", "user", "nobody is called"),
        ("machine=not-a-machine", "machine", "no such machine"),
        ("page=-3", "page", "whole number"),
        ("page=lots", "page", "whole number"),
    ],
)
def test_bad_filters_get_a_message_next_to_the_field(world, client, login, query, field, words):
    login(world["alice"])
    resp = client.get(f"/sessions?{query}")
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    m = re.search(rf'<p id="err-{field}" class="field-error"[^>]*>([^<]*)</p>', html)
    assert m and words in m.group(1), html[:3000]
    assert _ids(html) == []  # nothing listed under a filter that was not understood


def test_a_machine_the_user_cannot_see_is_not_a_filter(world, client, login):
    login(world["carol"])  # carol cannot see box-b
    resp = client.get(f"/sessions?machine={world['b'].agent_id}")
    assert resp.status_code == 400 and "no such machine" in resp.get_data(as_text=True)
    html = client.get("/sessions").get_data(as_text=True)
    assert world["b"].agent_id not in html  # nor offered in the form
    assert 'name="user"' not in html  # the user filter is for admins


def test_paging_splits_the_list_and_keeps_the_filters(
    app, client, login, make_user, make_machine, seed
):
    from portal.terminal.listing import PER_PAGE

    owner = make_user("pager")
    box = make_machine(owner, name="many")
    other = make_machine(owner, name="other")
    ids = seed(box, owner, PER_PAGE + 5)
    seed(other, owner, 3)
    login(owner)
    q = f"machine={box.agent_id}"
    first = client.get(f"/sessions?{q}").get_data(as_text=True)
    second = client.get(f"/sessions?{q}&page=2").get_data(as_text=True)
    newest_first = list(reversed(ids))
    assert _ids(first) == newest_first[:PER_PAGE]
    assert _ids(second) == newest_first[PER_PAGE:]
    assert "page 1 of 2" in first and "page 2 of 2" in second
    nxt = re.search(r'<a class="btn sm" rel="next"[^>]*href="([^"]+)"', first).group(1)
    assert "page=2" in nxt and f"machine={box.agent_id}" in nxt.replace("&amp;", "&")
    # past the last page: the last page
    assert (
        _ids(client.get(f"/sessions?{q}&page=9").get_data(as_text=True)) == newest_first[PER_PAGE:]
    )


def test_htmx_gets_partials_not_the_page(world, client, login):
    login(world["alice"])
    hx = {"HX-Request": "true", "HX-Target": "sessions-rows"}
    # the rows' own poll: just the tbody (no pager, no page chrome)
    poll = client.get("/sessions?status=live", headers={**hx, "HX-Trigger": "sessions-rows"})
    body = poll.get_data(as_text=True)
    assert poll.status_code == 200 and body.lstrip().startswith('<tbody id="sessions-rows"')
    assert "<html" not in body and "sessions-pager" not in body
    assert set(_ids(body)) == set(world["s"]["bob_shared"] + world["s"]["bob_private"])
    assert 'hx-get="/sessions?status=live"' in body  # it keeps polling with the filters
    assert "Vary" in poll.headers and "HX-Request" in poll.headers["Vary"]
    # the filter form: rows plus the out-of-band parts
    form = client.get("/sessions?since=bad", headers={**hx, "HX-Trigger": "session-filters"})
    body = form.get_data(as_text=True)
    assert form.status_code == 400 and "<html" not in body
    for part in ("sessions-rows", "sessions-summary", "sessions-pager", "err-since"):
        assert f'id="{part}"' in body
    assert "use a date like" in body


def test_the_detail_traffic_partial_polls_while_live_only(world, client, login):
    login(world["bob"])
    live = world["s"]["bob_shared"][0]
    html = client.get(f"/sessions/{live}/traffic").get_data(as_text=True)
    assert 'hx-trigger="every 3s"' in html and 'data-bytes-out="1000"' in html
    closed = world["s"]["bob_b"][0]
    html = client.get(f"/sessions/{closed}/traffic").get_data(as_text=True)
    assert "hx-trigger" not in html and 'data-bytes-in="10"' in html
    client._cookies.clear()
    login(world["carol"])  # may not see a closed session of bob's
    assert client.get(f"/sessions/{closed}/traffic").status_code == 404
