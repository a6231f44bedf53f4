"""Machine lists cost a fixed number of SQL statements, whatever their length (no N+1:
roles come from one batch look-up, jump hosts and owners are loaded with the rows)."""

from __future__ import annotations

import pytest
from sqlalchemy import event

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def machines_for(app, make_user):
    """machines_for(user, n): n machines `user` sees through grants of every role (half of
    them behind a jump host), owned by someone else."""
    from portal.extensions import db
    from portal.machines.models import Machine, MachineAccess

    other = make_user("owner")
    calls = [0]  # names are unique per owner: each call gets its own prefix

    def _make(user, n: int) -> None:
        calls[0] += 1
        batch = calls[0]
        with app.app_context():
            gateway = Machine(
                name=f"gw{batch}", owner_id=other.id, status="online", host="10.0.0.1"
            )
            db.session.add(gateway)
            db.session.flush()
            roles = ("viewer", "operator", "admin")
            for i in range(n):
                m = Machine(
                    name=f"m{batch}-{i:03d}",
                    owner_id=other.id,
                    status="online",
                    host=f"10.0.1.{i}",
                    username="root",
                    auth_method="password",
                    gateway_id=gateway.id if i % 2 else None,
                    tags="grp",
                )
                db.session.add(m)
                db.session.flush()
                db.session.add(MachineAccess(machine_id=m.id, user_id=user.id, role=roles[i % 3]))
            db.session.commit()

    return _make


class Counter:
    def __init__(self, engine):
        self.engine, self.n = engine, 0

    def __call__(self, *args):
        self.n += 1

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self)


def _count(client, url, **kw) -> tuple[int, object]:
    from portal.extensions import db

    client.get(url, **kw)  # warm: first-request work is not what is measured
    with Counter(db.engine) as c:
        r = client.get(url, **kw)
    assert r.status_code == 200
    return c.n, r


@pytest.mark.parametrize("path", ["/machines", "/api/machines", "/api/dashboard/recent-machines"])
def test_machine_lists_do_not_query_per_machine(client, make_user, login, auth, machines_for, path):
    small, large = make_user("small"), make_user("large")
    machines_for(small, 5)
    machines_for(large, 50)
    counts = {}
    for user, n in ((small, 5), (large, 50)):
        if path.startswith("/api/"):
            counts[n], r = _count(client, path, headers=auth(user))
            if path == "/api/machines":
                assert r.json["total"] == n
                assert {m["my_role"] for m in r.json["machines"]} == {"viewer", "operator", "admin"}
        else:
            csrf = login(user)
            counts[n], r = _count(client, path)
            assert r.get_data(as_text=True).count('data-label="Your role"') == n
            client.post("/logout", headers={"X-CSRFToken": csrf})
    assert counts[50] == counts[5], counts
    assert counts[50] <= 12, counts
