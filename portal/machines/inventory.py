"""The machines themselves: look-up, lists, add (direct or pending), edit, delete, and the
connection check. Services flush, never commit; each checks the acting user's role
(portal.machines.access).
"""

from __future__ import annotations

from sqlalchemy import func, literal, or_, select
from sqlalchemy.exc import IntegrityError

from portal import signals, ssh
from portal.db import utcnow
from portal.errors import (
    CommandTimeout,
    Conflict,
    HostKeyError,
    MachineUnreachable,
    NotFound,
    PortalError,
    Unprocessable,
    ValidationError,
)
from portal.extensions import db
from portal.machines import vault
from portal.machines.access import (
    MAX_GATEWAY_DEPTH,
    require,
    require_add_machines,
    visible_machines_query,
)
from portal.machines.enrollment import new_registration_token
from portal.machines.models import (
    AUTH_METHODS,
    STATUSES,
    Machine,
)
from portal.machines.naming import NameTaken, clean_name, require_free_name
from portal.machines.targets import (
    TargetNotAllowed,
    check_allowed_target,
    check_machine_target,
    clean_host,
    clean_username,
    connect_timeout,
    ensure_machine_key,
    host_key_lines,
    scan_keys,
    ssh_target,
)
from portal.validation import get_bool, get_choice, get_int, get_tags

MAX_DB_ID = 2**31 - 1


def parse_id(value) -> int | None:
    """A database id from user input (int or ASCII digits, 1..2**31-1), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= MAX_DB_ID else None
    if isinstance(value, str):
        value = value.strip()
        if value.isascii() and value.isdigit() and len(value) <= 10:
            n = int(value)
            return n if 1 <= n <= MAX_DB_ID else None
    return None


def get_machine(user, agent_id) -> Machine:
    """A machine the user may see, else NotFound (never a 403 that confirms it exists).
    What they may do with it, each service checks (access.require)."""
    if not isinstance(agent_id, str) or not agent_id or len(agent_id) > 64:
        raise NotFound("machine not found")
    machine = db.session.scalar(select(Machine).where(Machine.agent_id == agent_id))
    require(user, machine, "view")
    return machine


def get_machine_by_id(user, machine_id) -> Machine:
    mid = parse_id(machine_id)
    machine = db.session.get(Machine, mid) if mid is not None else None
    require(user, machine, "view")
    return machine


SEARCH_MAX = 100  # the list's search box (both faces)


def list_machines(user, *, q=None, tag=None, status=None, limit=50, offset=0):
    stmt = visible_machines_query(user)
    if q:
        like = f"%{q.strip().lower()}%"
        stmt = stmt.where(
            or_(
                func.lower(Machine.name).like(like),
                func.lower(func.coalesce(Machine.host, "")).like(like),
                func.lower(Machine.tags).like(like),
                func.lower(func.coalesce(Machine.os, "")).like(like),
            )
        )
    if tag:
        stmt = stmt.where((literal(",") + Machine.tags + literal(",")).like(f"%,{tag.lower()},%"))
    if status:
        if status not in STATUSES:
            raise ValidationError(f"status must be one of: {', '.join(STATUSES)}", field="status")
        stmt = stmt.where(Machine.status == status)
    total = db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = db.session.scalars(
        stmt.order_by(func.lower(Machine.name), Machine.id).limit(limit).offset(offset)
    ).all()
    return list(rows), total


def all_tags(user) -> list[str]:
    tags: set[str] = set()
    for value in db.session.scalars(visible_machines_query(user).with_only_columns(Machine.tags)):
        tags.update(t for t in (value or "").split(",") if t)
    return sorted(tags)


def _name(data: dict, user=None) -> str:
    """A valid name the user does not use for another machine yet (naming.py)."""
    name = clean_name(data)
    if user is not None:
        require_free_name(user, user.id, name)
    return name


def flush_named(machine: Machine, user) -> None:
    """Flush; two requests racing for one name meet the unique index: 409, not a 500."""
    try:
        db.session.flush()
    except IntegrityError:
        raise NameTaken(
            f"a machine named “{machine.name}” was just added: pick another name", field="name"
        ) from None


def field_errors(user, data: dict) -> dict[str, str]:
    """Every field problem of an add-machine form at once (no connection is made), so a
    page can show them all next to their fields in one submit. create_machine still checks
    each one itself; this only collects."""
    errors: dict[str, str] = {}
    checks = [
        ("name", lambda: _name(data, user)),
        ("tags", lambda: get_tags(data)),
        ("host", lambda: clean_host(data)),
        ("port", lambda: get_int(data, "port", default=22, min_value=1, max_value=65535)),
        ("username", lambda: clean_username(data)),
        ("gateway", lambda: resolve_gateway(user, data)),
    ]
    for field, check in checks:
        try:
            check()
        except PortalError as err:
            errors.setdefault(err.field or field, err.message)
    try:
        method = get_choice(data, "auth_method", AUTH_METHODS, label="auth_method")
    except PortalError as err:
        errors.setdefault("auth_method", err.message)
        return errors
    try:
        clean_credentials(data, method)
    except PortalError as err:
        errors.setdefault(
            err.field or ("private_key" if method == "key" else "password"), err.message
        )
    return errors


def host_key_choices(lines: list[str]) -> list[tuple[str, str]]:
    """(line, fingerprint) of host key lines a page sent back (the fetched keys shown again
    after an error); lines that do not parse are dropped."""
    out = []
    for line in lines[:10]:
        try:
            out.append((line, ssh.fingerprint(line)))
        except (PortalError, ValueError):
            continue
    return out


class HostKeyUnconfirmed(Unprocessable):
    """The host key has to be confirmed by a person first."""

    code = "host_key_unconfirmed"


def scan_host_keys(user, data: dict) -> list[tuple[str, str]]:
    """The trust step: read a host's keys (nothing stored) for a person to confirm."""
    require_add_machines(user)
    host = clean_host(data)
    port = get_int(data, "port", default=22, min_value=1, max_value=65535)
    gateway = resolve_gateway(user, data)
    check_allowed_target(host, port, via_gateway=gateway is not None)
    return scan_keys(host, port, gateway, user)


def resolve_gateway(user, data: dict, machine: Machine | None = None) -> Machine | None:
    ref = data.get("gateway") or data.get("gateway_agent_id")
    if ref in (None, "", "none"):
        return None
    if not isinstance(ref, str):
        raise ValidationError("gateway must be a machine's agent_id", field="gateway")
    try:
        gateway = get_machine(user, ref)
        require(user, gateway, "use_as_gateway")
    except PortalError:
        raise ValidationError(
            "the jump host must be a machine you can operate", field="gateway"
        ) from None
    if gateway.status == "pending":
        raise ValidationError("the jump host has not been enrolled yet", field="gateway")
    depth, cur = 0, gateway
    while cur is not None:
        if machine is not None and cur.id == machine.id:
            raise ValidationError("a machine cannot be its own jump host", field="gateway")
        depth += 1
        if depth > MAX_GATEWAY_DEPTH:
            raise ValidationError("too many jump hosts in a chain", field="gateway")
        cur = cur.gateway
    return gateway


SECRET_MAX = 1024  # an SSH password or key passphrase (the pages' maxlength too)


def clean_credentials(data: dict, auth_method: str) -> dict:
    if auth_method == "key":
        text = data.get("private_key")
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("paste the private key", field="private_key")
        passphrase = data.get("passphrase") or None
        if passphrase is not None and not isinstance(passphrase, str):
            raise ValidationError("the passphrase must be text", field="passphrase")
        if passphrase is not None and len(passphrase) > SECRET_MAX:
            raise ValidationError(
                f"the passphrase must be at most {SECRET_MAX} characters", field="passphrase"
            )
        ssh.parse_private_key(text, passphrase)  # InvalidPrivateKey / WrongPassphrase: 400
        return {"private_key": text.strip() + "\n", "passphrase": passphrase}
    if auth_method == "password":
        password = data.get("password")
        if not isinstance(password, str) or not password:
            raise ValidationError("the password is required", field="password")
        if len(password) > SECRET_MAX or "\x00" in password:
            raise ValidationError("the password is not acceptable", field="password")
        return {"password": password}
    return {}  # "portal_key": the machine's own key pair (ensure_machine_key)


def _resolve_host_keys(data: dict, host: str, port: int, gateway, user) -> list[str]:
    """Given key line(s), a SHA256 fingerprint to match against a scan, or trust_host_key."""
    given = data.get("host_key") or data.get("host_keys")
    if isinstance(given, str) and given.strip().startswith("SHA256:"):
        wanted = given.strip()
        scanned = scan_keys(host, port, gateway, user)
        for line, fp in scanned:
            if fp == wanted:
                return [line]
        raise HostKeyError(
            f"the host key fingerprint does not match: you gave {wanted}, "
            f"{host}:{port} presents {', '.join(fp for _, fp in scanned)}",
            field="host_key",
            expected=[wanted],
            presented=[fp for _, fp in scanned],
        )
    if given:
        return host_key_lines(given)
    if get_bool(data, "trust_host_key"):
        return [line for line, _fp in scan_keys(host, port, gateway, user)]
    scanned = scan_keys(host, port, gateway, user)
    raise HostKeyUnconfirmed(
        f"confirm the host key of {host}:{port} first: "
        + ", ".join(fp for _, fp in scanned)
        + " — send it back as host_key (or trust_host_key: true)",
        field="host_key",
        fingerprints=[fp for _, fp in scanned],
        host_keys=[line for line, _ in scanned],
    )


def create_machine(user, data: dict) -> tuple[Machine, str | None]:
    """Direct (host, credentials, confirmed host key) or pending (name only: enrollment).
    Returns (machine, raw registration token or None).

    A pending machine and a direct "portal_key" machine get their own key pair here; the
    direct one's public line (`machine.public_key`) must be installed on the machine before
    the connection check can pass (check_connection retries)."""
    require_add_machines(user)
    name = _name(data, user)
    tags = get_tags(data)
    direct_keys = ("host", "username", "auth_method", "private_key", "password")
    if not any(data.get(k) not in (None, "") for k in direct_keys):
        machine = Machine(name=name, tags=",".join(tags), owner_id=user.id, status="pending")
        db.session.add(machine)
        flush_named(machine, user)
        ensure_machine_key(machine)
        signals.send(signals.machine_created, machine=machine, actor=user)
        return machine, new_registration_token(user, machine)

    host = clean_host(data)
    port = get_int(data, "port", default=22, min_value=1, max_value=65535)
    username = clean_username(data)
    auth_method = get_choice(data, "auth_method", AUTH_METHODS, label="auth_method")
    gateway = resolve_gateway(user, data)
    secret = clean_credentials(data, auth_method)
    check_allowed_target(host, port, via_gateway=gateway is not None)
    lines = _resolve_host_keys(data, host, port, gateway, user)
    machine = Machine(
        name=name,
        host=host,
        port=port,
        username=username,
        auth_method=auth_method,
        secret_enc=vault.encrypt_json(secret) if secret else None,
        host_keys="\n".join(lines),
        gateway_id=gateway.id if gateway else None,
        gateway=gateway,
        tags=",".join(tags),
        owner_id=user.id,
        status="offline",
    )
    if auth_method == "portal_key":
        ensure_machine_key(machine)
    db.session.add(machine)
    flush_named(machine, user)
    signals.send(signals.machine_created, machine=machine, actor=user)
    if get_bool(data, "verify", default=True):
        verify(machine, user)
    return machine, None


def check_connection(user, machine: Machine) -> bool:
    """“Check connection again” (operator): e.g. after pasting the machine's public key.
    A "portal_key" machine without its own pair (made with the old shared key) gets one."""
    require(user, machine, "check_connection")
    if machine.status == "pending" or not machine.host:
        raise Unprocessable(f"{machine.name} has not been enrolled yet")
    check_machine_target(machine)
    if machine.auth_method == "portal_key" and not machine.key_enc:
        ensure_machine_key(machine)
        db.session.flush()
    return verify(machine, user)


def verify(machine: Machine, user) -> bool:
    """Connect and read the OS; sets status/os/last_seen_at. False (status error/offline) on failure."""
    try:
        target = ssh_target(machine, user)
        db.release()  # a new machine's row is committed before the check connects
        result = ssh.run(target, "uname -sr", timeout=min(connect_timeout(), 15))
    except (MachineUnreachable, HostKeyError, CommandTimeout, TargetNotAllowed) as err:
        machine.status = (
            "error" if isinstance(err, HostKeyError | ssh.AuthenticationFailed) else "offline"
        )
        machine.status_message = err.message[:500]
        db.session.flush()
        return False
    machine.status = "online"
    machine.status_message = None
    if result.exit_code == 0 and result.stdout.strip():
        machine.os = result.stdout.strip()[:120]
    machine.last_seen_at = utcnow()
    db.session.flush()
    return True


def delete_machine(user, machine: Machine) -> None:
    require(user, machine, "delete")
    users = db.session.scalars(select(Machine.name).where(Machine.gateway_id == machine.id)).all()
    if users:
        raise Conflict(
            f"{machine.name} is the jump host of {', '.join(users[:5])}: change those first"
        )
    machine_id = machine.id
    signals.send(signals.machine_deleted, machine_id=machine_id, actor=user, name=machine.name)
    db.session.delete(machine)
    db.session.flush()
