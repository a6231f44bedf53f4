"""Who holds which role on a machine: the access list, grant and revoke (with the
signals that close live terminals the change no longer allows).
"""

from __future__ import annotations

from sqlalchemy import select

from portal import signals
from portal.accounts import stepup
from portal.accounts.models import User
from portal.accounts.users import find_user_ref
from portal.db import utcnow
from portal.errors import (
    Conflict,
    NotFound,
    Unprocessable,
    ValidationError,
)
from portal.extensions import db
from portal.machines.access import (
    MAX_GATEWAY_DEPTH,
    allowed,
    can,
    require,
)
from portal.machines.inventory import parse_id
from portal.machines.models import (
    ROLES,
    Machine,
    MachineAccess,
)
from portal.validation import get_choice


def list_access(user, machine: Machine) -> list[dict]:
    require(user, machine, "list_access")
    rows = db.session.scalars(
        select(MachineAccess)
        .where(MachineAccess.machine_id == machine.id)
        .order_by(MachineAccess.granted_at, MachineAccess.id)
    ).all()
    out = []
    if machine.owner is not None:
        out.append(
            {
                "user_id": machine.owner.id,
                "username": machine.owner.username,
                "email": machine.owner.email,
                "role": "admin",
                "owner": True,
                "granted_at": machine.created_at,
            }
        )
    for r in rows:
        out.append(
            {
                "user_id": r.user.id,
                "username": r.user.username,
                "email": r.user.email,
                "role": r.role,
                "owner": False,
                "granted_at": r.granted_at,
            }
        )
    return out


def _user_ref(data: dict) -> User:
    ref = data.get("user")
    if ref is None:
        ref = data.get("user_id") or data.get("username") or data.get("email")
    if ref in (None, "") or isinstance(ref, bool) or not isinstance(ref, int | str):
        raise ValidationError("name the user by id, email or username", field="user")
    if isinstance(ref, int) or ref.strip().isdigit():
        # An id: ASCII digits in 1..2**31-1 only ("²" or 99999999999 name nobody).
        uid = parse_id(ref)
        user = db.session.get(User, uid) if uid is not None else None
        if user is None:
            raise NotFound("no such user", field="user")
        return user
    try:
        return find_user_ref(ref)
    except NotFound:
        raise NotFound("no such user", field="user") from None


def grant(actor, machine: Machine, data: dict) -> MachineAccess:
    require(actor, machine, "grant")
    target = _user_ref(data)
    role = get_choice(data, "role", ROLES)
    if role == "admin":
        stepup.require(actor, "access.grant_admin")
    if not target.is_active:
        raise Unprocessable("that account is deactivated", field="user")
    if target.id == machine.owner_id:
        raise Conflict("the owner already holds admin on this machine", field="user")
    row = db.session.scalar(
        select(MachineAccess).where(
            MachineAccess.machine_id == machine.id, MachineAccess.user_id == target.id
        )
    )
    # A viewer may not hold a terminal: losing that right closes the live ones.
    lost_terminal = (
        row is not None
        and allowed(target, machine, "open_terminal", row.role)
        and not allowed(target, machine, "open_terminal", role)
    )
    if row is None:
        row = MachineAccess(machine_id=machine.id, user_id=target.id, role=role, user=target)
        db.session.add(row)
    row.role = role
    row.granted_by = actor.id
    row.granted_at = utcnow()
    db.session.flush()
    signals.send(
        signals.access_granted, machine_id=machine.id, user_id=target.id, role=role, actor=actor
    )
    if lost_terminal:  # the terminal closes live sessions on this signal
        signals.send(signals.access_revoked, user_id=target.id, machine_id=machine.id, actor=actor)
        _revoke_behind(target, machine, actor)
    return row


def _revoke_behind(user: User, gateway: Machine, actor) -> None:
    """`user` can no longer use `gateway` as a jump host: their live terminals on machines
    reached through it (up to MAX_GATEWAY_DEPTH hops) are closed through the same signal."""
    if can(user, gateway, "use_as_gateway"):
        return
    seen, frontier = {gateway.id}, [gateway.id]
    for _ in range(MAX_GATEWAY_DEPTH):
        if not frontier:
            break
        inner = db.session.scalars(select(Machine.id).where(Machine.gateway_id.in_(frontier)))
        frontier = [mid for mid in inner if mid not in seen]
        seen.update(frontier)
        for mid in frontier:
            signals.send(signals.access_revoked, user_id=user.id, machine_id=mid, actor=actor)


def revoke(actor, machine: Machine, data: dict) -> User:
    require(actor, machine, "revoke")
    target = _user_ref(data)
    if target.id == machine.owner_id:
        raise Conflict("the owner's access cannot be revoked", field="user")
    row = db.session.scalar(
        select(MachineAccess).where(
            MachineAccess.machine_id == machine.id, MachineAccess.user_id == target.id
        )
    )
    if row is None:
        raise NotFound("that user has no grant on this machine", field="user")
    db.session.delete(row)
    db.session.flush()
    signals.send(signals.access_revoked, user_id=target.id, machine_id=machine.id, actor=actor)
    _revoke_behind(target, machine, actor)
    return target
