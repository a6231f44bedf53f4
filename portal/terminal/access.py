"""The terminal's view of the machines feature (roles, SSH targets, command logs).

A thin adapter so the rest of the package depends on four functions, not on the
machines package's internals.
"""

from __future__ import annotations

from portal.errors import AccessDenied, NotFound

ROLE_RANK = {None: 0, "viewer": 1, "operator": 2, "admin": 3}


def get_machine(user, agent_id: str, need: str = "operator"):
    """The machine, or NotFound / AccessDenied (the machines service decides)."""
    from portal.machines import services as ms

    return ms.get_machine(user, agent_id, need=need)


def machine_by_id(machine_id: int):
    from portal.extensions import db
    from portal.machines.models import Machine

    return db.session.get(Machine, machine_id)


def role_of(user, machine) -> str | None:
    """The user's role on the machine (global admins and owners are admins)."""
    if user is None or machine is None:
        return None
    if getattr(user, "is_admin", False):
        return "admin"
    from portal.machines import services as ms

    fn = getattr(ms, "role_of", None)
    if fn is not None:
        return fn(user, machine)
    for need in ("admin", "operator", "viewer"):  # pragma: no cover - fallback
        try:
            ms.get_machine(user, machine.agent_id, need=need)
            return need
        except (AccessDenied, NotFound):
            continue
    return None


def has_role(user, machine, need: str) -> bool:
    return ROLE_RANK.get(role_of(user, machine), 0) >= ROLE_RANK[need]


def ssh_target(machine):
    from portal.machines import services as ms

    return ms.ssh_target(machine)


def log_commands(machine_id: int, user_id: int, session_id: str, lines: list[str]) -> None:
    """Write CommandLog rows (called by the registry's DB thread, inside an app context)."""
    from portal.accounts.models import User
    from portal.extensions import db
    from portal.machines import services as ms
    from portal.machines.models import CommandLog, Machine

    machine = db.session.get(Machine, machine_id)
    if machine is None:
        return
    user = db.session.get(User, user_id)
    fn = getattr(ms, "log_command", None)
    for line in lines:
        if fn is not None:
            fn(machine, user, source="terminal", command=line, session_id=session_id)
        else:  # pragma: no cover - fallback
            db.session.add(
                CommandLog(
                    machine_id=machine_id,
                    user_id=user_id,
                    session_id=session_id,
                    source="terminal",
                    command=line,
                )
            )
    db.session.flush()
