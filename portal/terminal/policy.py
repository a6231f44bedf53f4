"""Who may do what with a terminal: open one on a machine, see, watch, close, share or
replay a session, and whether an account's credential still holds.

Roles on machines are portal.machines.access; these rules add the session's own user.
Every service and socket route asks here, with the acting user passed explicitly.
"""

from __future__ import annotations

from sqlalchemy import and_, false, or_, select, true

from portal.accounts import stepup
from portal.errors import AccessDenied
from portal.machines import access as machine_access
from portal.machines.inventory import get_machine
from portal.machines.models import Machine, MachineAccess
from portal.terminal import access
from portal.terminal.models import LIVE, TerminalSession


def machine_for_terminal(user, agent_id: str):
    """The machine, when the user may open a terminal there (NotFound / AccessDenied)."""
    machine = get_machine(user, agent_id)
    try:
        machine_access.require(user, machine, "open_terminal")
    except AccessDenied:
        raise AccessDenied("you need operator access to open a terminal on this machine") from None
    stepup.require_terminal_rights(user)
    if machine.sensitive:
        stepup.require(user, "terminal.open_sensitive")
    return machine


def account_denied(user, token_version) -> str | None:
    """Why this account's credential of `token_version` no longer holds (None: it does)."""
    if user is None or not user.is_active:
        return "the account was deactivated"
    if token_version is not None and user.token_version != token_version:
        return "you were signed out everywhere"
    return None


def can_see(user, row: TerminalSession, machine=None) -> bool:
    """Its user, global admins and the machine's admins; anyone with a role on the machine
    while it is shared and live (sharing is live watching: it ends with the session)."""
    if user is None:
        return False
    if user.is_admin or row.user_id == user.id:
        return True
    machine = machine if machine is not None else access.machine_by_id(row.machine_id)
    role = machine_access.role_of(user, machine)
    return machine_access.allowed(user, machine, "watch_any", role) or (
        bool(row.shared)
        and row.status in LIVE
        and machine_access.allowed(user, machine, "watch_shared", role)
    )


def visible_sessions_clause(user):
    """`can_see` as a WHERE clause over TerminalSession, for lists filtered and paged in SQL
    (tests/test_terminal_listing.py checks the two agree)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return false()
    if user.is_admin:
        return true()
    owned = select(Machine.id).where(Machine.owner_id == user.id)
    granted = select(MachineAccess.machine_id).where(MachineAccess.user_id == user.id)
    admin_of = granted.where(MachineAccess.role == "admin")
    ts = TerminalSession
    return or_(
        ts.user_id == user.id,
        ts.machine_id.in_(owned),
        ts.machine_id.in_(admin_of),  # watch_any: the machine's admins
        and_(ts.shared.is_(True), ts.status.in_(LIVE), ts.machine_id.in_(granted)),
    )


def can_close(user, row: TerminalSession, machine=None) -> bool:
    if user is None:
        return False
    if user.is_admin or row.user_id == user.id:
        return True
    machine = machine if machine is not None else access.machine_by_id(row.machine_id)
    return machine_access.can(user, machine, "close_any_session")


def can_replay(user, row: TerminalSession, machine=None) -> bool:
    """The recording holds everything the session printed, from before it was shared too:
    its user, global admins and the machine's admins only, never a watcher."""
    return can_close(user, row, machine)


def can_watch(user, row: TerminalSession, machine=None) -> bool:
    """Watch a session one may see (services.get_session): while its user shares it, or
    always for whoever may close it."""
    return bool(row.shared) or can_close(user, row, machine)


def can_share(user, row: TerminalSession) -> bool:
    return user is not None and row.user_id == user.id
