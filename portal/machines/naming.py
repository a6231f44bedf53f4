"""Machine names: at most NAME_MAX characters, unique per owner. The one place that checks
it (create, rename, enrollment); the database's unique index on (owner_id, name) is the
backstop for two requests racing.

Two names that differ only in case count as taken for new names ("web" and "WEB" look like
one machine); rows that already differ only in case stay, and lists show their address
beside them (`look_alike`)."""

from __future__ import annotations

from sqlalchemy import select

from portal.errors import Conflict
from portal.extensions import db
from portal.machines.models import Machine
from portal.validation import get_str

NAME_MAX = 100  # the pages' maxlength comes from here too


class NameTaken(Conflict):
    """Another machine of the same owner has this name."""

    code = "name_taken"


def clean_name(data: dict) -> str:
    return get_str(data, "name", max_len=NAME_MAX)


def _owner_names(owner_id: int, exclude_id: int | None) -> list[str]:
    stmt = select(Machine.name).where(Machine.owner_id == owner_id)
    if exclude_id is not None:
        stmt = stmt.where(Machine.id != exclude_id)
    return list(db.session.scalars(stmt))


def name_taken(owner_id: int | None, name: str, exclude_id: int | None = None) -> bool:
    """Whether the owner has another machine called `name` (case-insensitive). Ownerless
    machines (their owner was deleted) share no namespace."""
    if owner_id is None:
        return False
    wanted = name.casefold()
    return any(n.casefold() == wanted for n in _owner_names(owner_id, exclude_id))


def require_free_name(user, owner_id: int | None, name: str, exclude_id: int | None = None):
    """NameTaken (409, field "name") when the owner already has a machine called `name`."""
    if name_taken(owner_id, name, exclude_id):
        whose = "you already have" if owner_id == getattr(user, "id", None) else "its owner has"
        raise NameTaken(
            f"{whose} a machine named “{name}”: pick another name", field="name", name=name
        )


def free_name(owner_id: int | None, name: str, exclude_id: int | None = None) -> str:
    """`name`, or `name (2)`, `name (3)`... : the first one the owner does not use yet (for
    names the portal picks itself, e.g. an enrolled machine's hostname)."""
    if owner_id is None:
        return name[:NAME_MAX]
    used = {n.casefold() for n in _owner_names(owner_id, exclude_id)}
    candidate, n = name[:NAME_MAX], 1
    while candidate.casefold() in used:
        n += 1
        suffix = f" ({n})"
        candidate = name[: NAME_MAX - len(suffix)] + suffix
    return candidate


def look_alike(machines) -> set[int]:
    """Ids of machines in a list whose name another one in the same list shares, ignoring
    case (the same name under two owners, or old rows that differ only in case): lists show
    user@host beside those."""
    seen: dict[str, list[int]] = {}
    for m in machines:
        seen.setdefault((m.name or "").casefold(), []).append(m.id)
    return {mid for ids in seen.values() if len(ids) > 1 for mid in ids}
