"""The terminal's look-ups in the machines feature (machine rows, command logs).

Who may do what on a machine is portal.machines.access; the terminal calls it directly.
"""

from __future__ import annotations

from portal.accounts.models import User
from portal.extensions import db
from portal.machines.commands import log_command
from portal.machines.models import Machine


def machine_by_id(machine_id: int):
    return db.session.get(Machine, machine_id)


def log_commands(machine_id: int, user_id: int, session_id: str, lines: list) -> None:
    """Write CommandLog rows (called by the registry's DB thread, inside an app context).
    `lines`: command strings, or (command, offset_ms) pairs."""
    machine = db.session.get(Machine, machine_id)
    if machine is None:
        return
    user = db.session.get(User, user_id)
    for line in lines:
        command, offset = line if isinstance(line, tuple) else (line, None)
        log_command(
            machine,
            user,
            source="terminal",
            command=command,
            session_id=session_id,
            offset_ms=offset,
        )
    db.session.flush()
