"""Who may do what on a machine: the one place that knows roles.

Every service that acts on a machine calls `require(user, machine, ACTION)` with the acting
user; the faces only load (`inventory.get_machine`: visible or 404) and respond. POLICY
below is also what tests/test_access_policy.py generates its route matrix from.
"""

from __future__ import annotations

from sqlalchemy import literal, or_, select

from portal.errors import AccessDenied, NotFound
from portal.extensions import db
from portal.machines.models import Machine, MachineAccess

RANK = {"viewer": 1, "operator": 2, "admin": 3}

#: A machine admin; on a machine that stores a password or private key, only its owner or a
#: global admin (host, port, jump host and pinned host keys decide where that secret goes).
CONNECTION = "connection"

#: action -> the role it needs (API.md, "Roles:").
POLICY: dict[str, str] = {
    "view": "viewer",
    "view_logs": "viewer",
    "view_sessions": "viewer",
    "watch_shared": "viewer",  # watch a session its user shares
    "run_command": "operator",
    "broadcast": "operator",
    "open_terminal": "operator",
    "connect": "operator",  # build an SSH target for it
    "check_connection": "operator",
    "use_as_gateway": "operator",
    "update": "admin",
    "delete": "admin",
    "list_access": "admin",
    "grant": "admin",
    "revoke": "admin",
    "scan_host_key": "admin",
    "new_registration_token": "admin",
    "watch_any": "admin",
    "close_any_session": "admin",
    "browse_files": "viewer",  # list, stat, download, zip (portal.files)
    "write_files": "operator",  # upload, edit, mkdir, rename, delete, chmod
    "change_connection": CONNECTION,
    "retrust_host_key": CONNECTION,
}

MAX_GATEWAY_DEPTH = 3


def _signed_in(user) -> bool:
    return user is not None and getattr(user, "is_authenticated", False)


def _admin_by_right(user, machine: Machine) -> bool:
    """Global admins and the owner hold admin without a grant row."""
    return bool(user.is_admin or (machine.owner_id is not None and machine.owner_id == user.id))


def role_of(user, machine: Machine | None) -> str | None:
    """The caller's role on a machine (None: they may not see it)."""
    if machine is None or not _signed_in(user):
        return None
    if _admin_by_right(user, machine):
        return "admin"
    return db.session.scalar(
        select(MachineAccess.role).where(
            MachineAccess.machine_id == machine.id, MachineAccess.user_id == user.id
        )
    )


def roles_for(user, machines) -> dict[int, str | None]:
    """machine id -> the caller's role for a whole list, in at most one query."""
    machines = list(machines)
    if not machines or not _signed_in(user):
        return {m.id: None for m in machines}
    roles: dict[int, str | None] = {
        m.id: ("admin" if _admin_by_right(user, m) else None) for m in machines
    }
    rest = [mid for mid, role in roles.items() if role is None]
    if rest:
        rows = db.session.execute(
            select(MachineAccess.machine_id, MachineAccess.role).where(
                MachineAccess.user_id == user.id, MachineAccess.machine_id.in_(rest)
            )
        )
        roles.update(dict(rows.all()))
    return roles


def stores_secret(machine: Machine) -> bool:
    """The machine keeps a password or a private key the portal sends/uses on connect."""
    return bool(machine.secret_enc)


def allowed(user, machine: Machine, action: str, role: str | None) -> bool:
    """Whether `role` (the user's role on the machine) suffices for `action`."""
    need = POLICY[action]
    if role is None:
        return False
    if need == CONNECTION:
        return role == "admin" and (not stores_secret(machine) or _admin_by_right(user, machine))
    return RANK[role] >= RANK[need]


def can(user, machine: Machine | None, action: str, role=False) -> bool:
    """Whether the user may do `action` on the machine. Pass `role` when it is already known
    (from roles_for) to spare a query."""
    if action not in POLICY:
        raise ValueError(f"unknown action {action!r}")
    if machine is None:
        return False
    return allowed(user, machine, action, role_of(user, machine) if role is False else role)


def require(user, machine: Machine | None, action: str) -> str:
    """The user's role, when it allows `action`. NotFound when they may not see the machine
    (never a 403 that confirms it exists); AccessDenied when their role is too small."""
    if action not in POLICY:
        raise ValueError(f"unknown action {action!r}")
    role = role_of(user, machine)
    if role is None:
        raise NotFound("machine not found")
    if not allowed(user, machine, action, role):
        need = POLICY[action]
        if need == CONNECTION:
            raise AccessDenied(
                f"{machine.name} stores a password or private key: only its owner or a global "
                "admin may change its host, port, jump host or pinned host key"
                if role == "admin"
                else f"this needs the admin role on {machine.name}; you are a {role}"
            )
        raise AccessDenied(f"this needs the {need} role on {machine.name}; you are a {role}")
    return role


def visible_machines_query(user):
    """select(Machine) of the machines `user` may see (lists and the dashboard build on it)."""
    stmt = select(Machine)
    if not _signed_in(user):
        return stmt.where(literal(False))
    if user.is_admin:
        return stmt
    granted = select(MachineAccess.machine_id).where(MachineAccess.user_id == user.id)
    return stmt.where(or_(Machine.owner_id == user.id, Machine.id.in_(granted)))


# ---------------------------------------------------------------- jump hosts


def refused_gateway(user, machine: Machine) -> Machine | None:
    """The first jump host on the way to `machine` the user may not use (None: all fine)."""
    hop = machine
    for _ in range(MAX_GATEWAY_DEPTH + 1):
        hop = hop.gateway
        if hop is None:
            return None
        if not can(user, hop, "use_as_gateway"):
            return hop
    return None


def require_gateway_chain(user, machine: Machine) -> None:
    """The acting user must (still) be an operator of every jump host on the way."""
    hop = refused_gateway(user, machine)
    if hop is not None:
        raise AccessDenied(
            f"{machine.name} is reached through the jump host {hop.name}, which you may no "
            "longer use (it needs the operator role there): ask an admin of "
            f"{hop.name} for access, or change {machine.name}'s jump host"
        )


def connect_refusal(user, machine: Machine | None) -> str | None:
    """Why the user may not (any longer) hold a connection to the machine, or None."""
    if machine is None:
        return "the machine was deleted"
    if not can(user, machine, "open_terminal"):
        return "your access to this machine was revoked"
    hop = refused_gateway(user, machine)
    if hop is not None:
        return f"your access to the jump host {hop.name} was revoked"
    return None


# ---------------------------------------------------------------- adding machines


def can_add_machines(user) -> bool:
    """Who may add machines (and so scan hosts): signed-in, active accounts."""
    return bool(
        _signed_in(user)
        and getattr(user, "is_active", False)
        and getattr(user, "role", None) in ("user", "admin")
    )


def require_add_machines(user) -> None:
    if not can_add_machines(user):
        raise AccessDenied("your account may not add machines")
