"""The terminal's look-ups in the machines feature (machine rows, command logs).

Who may do what on a machine is portal.machines.access; the terminal calls it directly.
"""

from __future__ import annotations


def machine_by_id(machine_id: int):
    from portal.extensions import db
    from portal.machines.models import Machine

    return db.session.get(Machine, machine_id)


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
