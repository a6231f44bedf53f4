"""Every rule about machines lives here; the HTML views and the JSON API both call these.

Services flush, never commit. SSH work goes through `portal.ssh` (pooled transports,
pinned host keys); views never touch SSH objects.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import re
import secrets
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from flask import current_app, has_app_context
from sqlalchemy import func, literal, or_, select, update

from portal import signals, ssh
from portal.accounts.models import User
from portal.accounts.services import find_user_ref
from portal.db import utcnow
from portal.errors import (
    AuthenticationRequired,
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
    allowed,
    can,
    require,
    require_add_machines,
    require_gateway_chain,
    roles_for,
    visible_machines_query,
)
from portal.machines.models import (
    AUTH_METHODS,
    OUTPUT_EXCERPT,
    ROLES,
    SOURCES,
    STATUSES,
    CommandLog,
    Machine,
    MachineAccess,
    RegistrationToken,
)
from portal.ssh.connect import refused as ssh_refused
from portal.ssh.connect import resolve as resolve_checked
from portal.ssh.errors import hostport
from portal.ssh.netpolicy import TargetPolicy, policy_from_config
from portal.validation import get_bool, get_choice, get_int, get_str, get_tags

log = logging.getLogger(__name__)

TOKEN_PREFIX = "wxreg_"  # noqa: S105 - a prefix, not a secret
TOKEN_TTL = dt.timedelta(hours=1)
MAX_TIMEOUT = 600
DEFAULT_TIMEOUT = 30
MAX_COMMAND = 16 * 1024
BROADCAST_MAX = 100
BROADCAST_MAX_OUTPUT = 64 * 1024
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-_]*[A-Za-z0-9])?$")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._\-]{0,63}$")


class HostKeyUnconfirmed(Unprocessable):
    """The host key has to be confirmed by a person first."""

    code = "host_key_unconfirmed"


TargetNotAllowed = ssh.TargetNotAllowed  # the address is outside PORTAL_ALLOWED_TARGETS
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


# ---------------------------------------------------------------- roles and lookup


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


# ---------------------------------------------------------------- allowed networks


_policy_cache: dict[tuple[str, str], TargetPolicy] = {}


def allowed_networks() -> TargetPolicy:
    """The targets policy from PORTAL_ALLOWED_TARGETS / PORTAL_DENIED_TARGETS (cached per
    value): link-local and cloud metadata addresses are always refused unless an allow
    entry names them; a malformed entry in either list allows nothing (fail closed)."""
    cfg = current_app.config if has_app_context() else {}
    key = (
        str(cfg.get("PORTAL_ALLOWED_TARGETS") or ""),
        str(cfg.get("PORTAL_DENIED_TARGETS") or ""),
    )
    policy = _policy_cache.get(key)
    if policy is None:
        policy, bad = policy_from_config(*key)
        if bad:
            log.error("%s has an invalid entry: no SSH target is allowed", bad)
        _policy_cache[key] = policy
    return policy


def check_allowed_target(host: str, port: int = 22, *, via_gateway: bool = False) -> None:
    """Early check (create, scan, check, edit, enrollment): a clear 400 before anything is
    stored or connected. The binding check happens again on the resolved address when the
    socket is opened (portal.ssh.connect.open_socket), which is what actually connects.

    Behind a jump host the jump host resolves names and reaches its own networks: only an
    IP literal is checked here, against the denials (not the allow list)."""
    policy = allowed_networks()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
        literal = True
    except ValueError:
        literal = False
    if via_gateway:
        reason = policy.refusal(bare, via_gateway=True) if literal else None
        if reason is not None:
            raise ssh_refused(host, reason)
        return
    try:
        resolve_checked(bare, port, policy)
    except MachineUnreachable:
        if policy.closed:
            raise TargetNotAllowed(
                f"{host} could not be resolved, and this portal only connects to allowed networks",
                field="host",
            ) from None
        # An unresolvable name with an open policy: the connection reports it later.


# ---------------------------------------------------------------- validation helpers


def _host(data: dict) -> str:
    host = get_str(data, "host", max_len=253)
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if not _HOST_RE.match(bare) or ".." in bare:
        raise ValidationError("host must be a host name or an IP address", field="host")
    return bare


def _username(data: dict, key: str = "username") -> str:
    name = get_str(data, key, max_len=64, label="user name")
    if not _USER_RE.match(name):
        raise ValidationError("user name may use letters, digits, . _ -", field=key)
    return name


def _name(data: dict) -> str:
    return get_str(data, "name", max_len=100)


def _host_key_lines(value, field: str = "host_key") -> list[str]:
    """Key lines from a string (one per line) or a list; each parsed (InvalidHostKey)."""
    if isinstance(value, str):
        value = [v for v in value.splitlines() if v.strip()]
    if not isinstance(value, list) or not value or len(value) > 10:
        raise ValidationError("host keys must be 1 to 10 key lines", field=field)
    out = []
    for line in value:
        if not isinstance(line, str):
            raise ValidationError("host keys must be strings", field=field)
        try:
            keytype, b64, _ = ssh.parse_host_key_line(line)
        except PortalError as err:
            err.field = field
            raise
        if f"{keytype} {b64}" not in out:
            out.append(f"{keytype} {b64}")
    return out


# ---------------------------------------------------------------- per-machine keys


def ensure_machine_key(machine: Machine, *, replace: bool = False) -> str:
    """The machine's own ed25519 key pair (generated if missing); returns the public line.

    Each machine gets its own pair: the public line goes into that machine's
    authorized_keys only, so one machine's key opens no other machine."""
    if machine.key_enc and machine.public_key and not replace:
        return machine.public_key
    name = re.sub(r"[^A-Za-z0-9._-]", "", machine.name or "")[:40] or "machine"
    private, public = ssh.generate_ed25519(f"webterm-portal:{name}:{machine.agent_id or ''}")
    machine.key_enc = vault.encrypt(private)
    machine.public_key = public
    return public


# ---------------------------------------------------------------- secrets and targets


_pkey_cache: OrderedDict[str, object] = OrderedDict()
_pkey_lock = threading.Lock()


def _cached_pkey(text: str, passphrase: str | None):
    """Parsed private keys, cached by a hash of their text: a warm exec skips the parse."""
    digest = hashlib.sha256(f"{text}\0{passphrase or ''}".encode()).hexdigest()
    with _pkey_lock:
        if digest in _pkey_cache:
            _pkey_cache.move_to_end(digest)
            return _pkey_cache[digest]
    pkey = ssh.parse_private_key(text, passphrase)
    with _pkey_lock:
        _pkey_cache[digest] = pkey
        while len(_pkey_cache) > 256:
            _pkey_cache.popitem(last=False)
    return pkey


def _connect_timeout() -> float:
    return float(current_app.config.get("PORTAL_SSH_CONNECT_TIMEOUT", 10))


def ssh_target(machine: Machine, user, *, host_keys=None) -> ssh.Target:
    """A portal.ssh Target for the machine: decrypted credentials, pinned keys, jump host.

    `user` is who connects: an operator of the machine and of every jump host on the way
    (AccessDenied otherwise)."""
    require(user, machine, "connect")
    require_gateway_chain(user, machine)
    return _build_target(machine, host_keys=host_keys)


def system_target(machine: Machine) -> ssh.Target:
    """The target for the portal's own status probe (`flask machines probe`): no user acts."""
    return _build_target(machine)


def _build_target(machine: Machine, _depth: int = 0, host_keys=None) -> ssh.Target:
    if machine.status == "pending" or not machine.host or not machine.auth_method:
        raise Unprocessable(f"{machine.name} has not been enrolled yet")
    if _depth > MAX_GATEWAY_DEPTH:
        raise Unprocessable("too many jump hosts in a chain", field="gateway")
    gateway = None
    if machine.gateway_id:
        gateway = _build_target(machine.gateway, _depth + 1)
    secret = vault.decrypt_json(machine.secret_enc)
    pkey = password = None
    if machine.auth_method == "key":
        pkey = _cached_pkey(secret.get("private_key", ""), secret.get("passphrase"))
    elif machine.auth_method == "portal_key":
        if not machine.key_enc:
            raise Unprocessable(
                f"{machine.name} has no key pair of its own yet (it used the old shared portal "
                "key): use “check connection again” to create one, then install its public key"
            )
        pkey = _cached_pkey(vault.decrypt(machine.key_enc), None)
    elif machine.auth_method == "password":
        password = secret.get("password", "")
    return ssh.Target(
        host=machine.host,
        port=machine.port,
        username=machine.username,
        password=password,
        pkey=pkey,
        host_keys=tuple(host_keys if host_keys is not None else machine.host_key_lines),
        gateway=gateway,
        connect_timeout=_connect_timeout(),
        allowed=allowed_networks(),
    )


def _scan(host: str, port: int, gateway: Machine | None, user) -> list[tuple[str, str]]:
    gw_target = ssh_target(gateway, user) if gateway is not None else None
    return ssh.scan_host_key(
        host, port, timeout=_connect_timeout(), gateway=gw_target, allowed=allowed_networks()
    )


def scan_host_keys(user, data: dict) -> list[tuple[str, str]]:
    """The trust step: read a host's keys (nothing stored) for a person to confirm."""
    require_add_machines(user)
    host = _host(data)
    port = get_int(data, "port", default=22, min_value=1, max_value=65535)
    gateway = _gateway(user, data)
    check_allowed_target(host, port, via_gateway=gateway is not None)
    return _scan(host, port, gateway, user)


def check_machine_target(machine: Machine) -> None:
    """The machine's address and every jump host's on the way, against the targets policy."""
    hop, depth = machine, 0
    while hop is not None and hop.host and depth <= MAX_GATEWAY_DEPTH:
        check_allowed_target(hop.host, hop.port, via_gateway=hop.gateway_id is not None)
        hop, depth = hop.gateway, depth + 1


def scan_machine_host_keys(user, machine: Machine) -> list[tuple[str, str]]:
    """The keys an enrolled machine presents now (admin re-trust step)."""
    require(user, machine, "scan_host_key")
    if machine.status == "pending" or not machine.host:
        raise Unprocessable(f"{machine.name} has not been enrolled yet")
    check_machine_target(machine)
    return _scan(machine.host, machine.port, machine.gateway, user)


def _gateway(user, data: dict, machine: Machine | None = None) -> Machine | None:
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


# ---------------------------------------------------------------- create, edit, delete


def _credentials(data: dict, auth_method: str) -> dict:
    if auth_method == "key":
        text = data.get("private_key")
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("paste the private key", field="private_key")
        passphrase = data.get("passphrase") or None
        if passphrase is not None and not isinstance(passphrase, str):
            raise ValidationError("the passphrase must be text", field="passphrase")
        ssh.parse_private_key(text, passphrase)  # InvalidPrivateKey / WrongPassphrase: 400
        return {"private_key": text.strip() + "\n", "passphrase": passphrase}
    if auth_method == "password":
        password = data.get("password")
        if not isinstance(password, str) or not password:
            raise ValidationError("the password is required", field="password")
        if len(password) > 1024 or "\x00" in password:
            raise ValidationError("the password is not acceptable", field="password")
        return {"password": password}
    return {}  # "portal_key": the machine's own key pair (ensure_machine_key)


def _resolve_host_keys(data: dict, host: str, port: int, gateway, user) -> list[str]:
    """Given key line(s), a SHA256 fingerprint to match against a scan, or trust_host_key."""
    given = data.get("host_key") or data.get("host_keys")
    if isinstance(given, str) and given.strip().startswith("SHA256:"):
        wanted = given.strip()
        scanned = _scan(host, port, gateway, user)
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
        return _host_key_lines(given)
    if get_bool(data, "trust_host_key"):
        return [line for line, _fp in _scan(host, port, gateway, user)]
    scanned = _scan(host, port, gateway, user)
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
    name = _name(data)
    tags = get_tags(data)
    direct_keys = ("host", "username", "auth_method", "private_key", "password")
    if not any(data.get(k) not in (None, "") for k in direct_keys):
        machine = Machine(name=name, tags=",".join(tags), owner_id=user.id, status="pending")
        db.session.add(machine)
        db.session.flush()
        ensure_machine_key(machine)
        return machine, new_registration_token(user, machine)

    host = _host(data)
    port = get_int(data, "port", default=22, min_value=1, max_value=65535)
    username = _username(data)
    auth_method = get_choice(data, "auth_method", AUTH_METHODS, label="auth_method")
    gateway = _gateway(user, data)
    secret = _credentials(data, auth_method)
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
    db.session.flush()
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
        result = ssh.run(target, "uname -sr", timeout=min(_connect_timeout(), 15))
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


def update_machine(user, machine: Machine, data: dict) -> Machine:
    """Edit name/tags/credentials/host/port/jump host (admin). Changing where the machine is
    reached needs require_connection_change (owner or global admin when it stores a secret);
    host keys change only through retrust. Everything is checked before anything changes."""
    require(user, machine, "update")
    name = _name(data) if "name" in data else None
    tags = ",".join(get_tags(data)) if "tags" in data else None
    host, port, gateway_id, gw = machine.host, machine.port, machine.gateway_id, machine.gateway
    if "host" in data:
        host = _host(data)
    if "port" in data:
        port = get_int(data, "port", required=True, min_value=1, max_value=65535)
    if "gateway" in data:
        gw = _gateway(user, data, machine)
        gateway_id = gw.id if gw else None
    moved = (host, port, gateway_id) != (machine.host, machine.port, machine.gateway_id)
    if moved:
        if machine.status == "pending" or not machine.host:
            raise Unprocessable(f"{machine.name} has not been enrolled yet", field="host")
        require(user, machine, "change_connection")
        check_allowed_target(host, port, via_gateway=gw is not None)
    secret = method = None
    if data.get("auth_method") and machine.status != "pending":
        method = get_choice(data, "auth_method", AUTH_METHODS, label="auth_method")
        secret = _credentials(data, method)
    if name is not None:
        machine.name = name
    if tags is not None:
        machine.tags = tags
    if moved:
        machine.host, machine.port = host, port
        machine.gateway_id, machine.gateway = gateway_id, gw
        machine.status, machine.status_message = "offline", None
    if method is not None:
        machine.auth_method = method
        machine.secret_enc = vault.encrypt_json(secret) if secret else None
        if method == "portal_key":
            ensure_machine_key(machine)
    db.session.flush()
    return machine


def delete_machine(user, machine: Machine) -> None:
    require(user, machine, "delete")
    users = db.session.scalars(select(Machine.name).where(Machine.gateway_id == machine.id)).all()
    if users:
        raise Conflict(
            f"{machine.name} is the jump host of {', '.join(users[:5])}: change those first"
        )
    machine_id = machine.id
    signals.send(signals.machine_deleted, machine_id=machine_id, actor=user)
    db.session.delete(machine)
    db.session.flush()


def _fingerprints(value) -> list[str]:
    """`host_key` of a re-pin: one or more SHA256 fingerprints (a string, space/comma/line
    separated, or a list); nothing else, so only a freshly scanned key can be pinned."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if (
        not isinstance(value, list)
        or not value
        or len(value) > 10
        or not all(isinstance(v, str) and v.startswith("SHA256:") for v in value)
    ):
        raise ValidationError(
            "give host_key: the SHA256 fingerprint of the key the machine presents now "
            "(scan it, compare it on the machine, send it back)",
            field="host_key",
        )
    return list(dict.fromkeys(value))


def retrust_host_key(user, machine: Machine, data: dict, *, acknowledged: bool = True) -> Machine:
    """Pin the key(s) the machine presents now, confirmed by fingerprint (a fresh scan must
    present each given fingerprint). Owner or global admin when the machine stores a secret.
    `acknowledged`: the page's "I compared the fingerprints" box."""
    require(user, machine, "retrust_host_key")
    if machine.status == "pending" or not machine.host:
        raise Unprocessable("the machine has not been enrolled yet")
    if not acknowledged:
        raise ValidationError(
            "tick the box to confirm you checked the new fingerprint", field="host_key_ack"
        )
    wanted = _fingerprints(data.get("host_key"))
    check_machine_target(machine)
    scanned = _scan(machine.host, machine.port, machine.gateway, user)
    by_fp = {fp: line for line, fp in scanned}
    missing = [fp for fp in wanted if fp not in by_fp]
    if missing:
        raise ValidationError(
            f"{hostport(machine.host, machine.port)} does not present {', '.join(missing)} now; it presents "
            f"{', '.join(by_fp) or 'no key'}: scan again and compare",
            field="host_key",
            presented=list(by_fp),
        )
    machine.host_keys = "\n".join(by_fp[fp] for fp in wanted)
    machine.status_message = None
    if machine.status == "error":
        machine.status = "offline"
    db.session.flush()
    return machine


# ---------------------------------------------------------------- access


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


# ---------------------------------------------------------------- enrollment


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def new_registration_token(user, machine: Machine) -> str:
    """A fresh single-use token (older unused ones for this machine stop working)."""
    require(user, machine, "new_registration_token")
    if machine.status != "pending":
        raise Conflict("the machine is already enrolled")
    for old in db.session.scalars(
        select(RegistrationToken).where(
            RegistrationToken.machine_id == machine.id, RegistrationToken.used_at.is_(None)
        )
    ):
        old.used_at = utcnow()
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.session.add(
        RegistrationToken(
            machine_id=machine.id,
            token_hash=_hash(raw),
            created_by=user.id if user else None,
            expires_at=utcnow() + TOKEN_TTL,
        )
    )
    ensure_machine_key(machine)  # pending machines made before per-machine keys
    db.session.flush()
    return raw


def token_expiry(raw: str) -> dt.datetime | None:
    row = db.session.scalar(
        select(RegistrationToken).where(RegistrationToken.token_hash == _hash(raw))
    )
    return row.expires_at if row else None


def _valid_token(raw) -> RegistrationToken:
    if not isinstance(raw, str) or not raw.startswith(TOKEN_PREFIX) or len(raw) > 128:
        raise AuthenticationRequired("invalid or expired registration token")
    row = db.session.scalar(
        select(RegistrationToken).where(RegistrationToken.token_hash == _hash(raw))
    )
    if row is None or row.expires_at <= utcnow():
        raise AuthenticationRequired("invalid or expired registration token")
    if row.used_at is not None:
        raise Conflict("this registration token was already used")
    return row


def enroll_command(base_url: str, raw: str) -> str:
    """The one-line enroll command. The token goes in a header read from stdin (`-H @-`):
    `echo` is a shell builtin, so it is in no process's argv (`ps`), nor in the URL (logs)."""
    url = f"{base_url.rstrip('/')}/api/machines/enroll.sh"
    return f"echo 'X-Registration-Token: {raw}' | curl -fsSL -H @- '{url}' | sh"


def enroll_script(raw, base_url: str) -> str:
    """The enrollment script: installs THIS machine's own public key (never a shared one)."""
    row = _valid_token(raw)
    machine = db.session.get(Machine, row.machine_id)
    if machine is None or machine.status != "pending":
        raise Conflict("this machine is already enrolled")
    if not machine.public_key or not machine.key_enc:
        raise Conflict("this enrollment token is out of date: create a new one on the machine page")
    from flask import render_template

    return render_template(
        "machines/enroll.sh",
        portal_url=base_url.rstrip("/"),
        token=raw,
        machine_key=machine.public_key,
    )


def _sanitize(value, field: str, max_len: int, pattern=r"[^A-Za-z0-9 ._\-+()/#:,]") -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string", field=field)
    return re.sub(pattern, "", value).strip()[:max_len] or None


def register(data: dict, remote_addr: str | None) -> Machine:
    """The enrollment script's call: pin the host keys, verify by connecting, go online.

    The connection check runs before anything is written (no write lock held across SSH);
    then the token is spent with one atomic `UPDATE ... WHERE used_at IS NULL`, so of two
    concurrent registrations with one token exactly one succeeds (409 for the other)."""
    row = _valid_token(data.get("token"))
    machine = db.session.get(Machine, row.machine_id)
    if machine is None or machine.status != "pending":
        raise Conflict("this machine is already enrolled")
    if not machine.key_enc:
        raise Conflict("this enrollment token is out of date: create a new one on the machine page")
    username = _username(data)
    port = get_int(data, "port", default=22, min_value=1, max_value=65535)
    lines = _host_key_lines(data.get("host_keys"), field="host_keys")
    if data.get("host"):
        host = _host(data)
    else:
        host = (remote_addr or "").strip()
        if not host:
            raise ValidationError("host is required", field="host")
    check_allowed_target(host, port)
    os_name = _sanitize(data.get("os"), "os", 120)
    hostname = _sanitize(data.get("hostname"), "hostname", 100, r"[^A-Za-z0-9._\-]")
    # Verify with this machine's own key and the pinned host keys; a failure answers 502 and
    # changes nothing (the token stays usable for a retry).
    target = ssh.Target(
        host=host,
        port=port,
        username=username,
        pkey=_cached_pkey(vault.decrypt(machine.key_enc), None),
        host_keys=tuple(lines),
        connect_timeout=_connect_timeout(),
        allowed=allowed_networks(),
    )
    db.release()
    result = ssh.run(target, "uname -sr", timeout=min(_connect_timeout(), 15))
    now = utcnow()
    spent = db.session.execute(
        update(RegistrationToken)
        .where(RegistrationToken.id == row.id, RegistrationToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:
        raise Conflict("this registration token was already used")
    db.session.refresh(machine)
    if machine.status != "pending":
        raise Conflict("this machine is already enrolled")
    machine.host = host
    machine.port = port
    machine.username = username
    machine.auth_method = "portal_key"
    machine.secret_enc = None
    machine.host_keys = "\n".join(lines)
    machine.os = os_name
    if result.exit_code == 0 and result.stdout.strip():
        machine.os = result.stdout.strip()[:120]
    if hostname and machine.name.startswith("pending-"):
        machine.name = hostname
    machine.status = "online"
    machine.status_message = None
    machine.last_seen_at = now
    db.session.flush()
    return machine


# ---------------------------------------------------------------- exec and logs


def _excerpt(stdout: str, stderr: str) -> str:
    text = (
        stdout
        if not stderr
        else (stdout + ("\n" if stdout and not stdout.endswith("\n") else "") + stderr)
    )
    return text[:OUTPUT_EXCERPT]


def log_command(
    machine: Machine,
    user,
    *,
    source: str,
    command: str,
    exit_code: int | None = None,
    output: str = "",
    duration_ms: int | None = None,
    session_id: str | None = None,
    session=None,
) -> CommandLog:
    """Record one command (flush only). `output` is cut to a 4 KiB excerpt."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    s = session or db.session
    entry = CommandLog(
        machine_id=machine.id if isinstance(machine, Machine) else int(machine),
        user_id=getattr(user, "id", user),
        session_id=session_id,
        source=source,
        command=(command or "")[:MAX_COMMAND],
        exit_code=exit_code,
        output=(output or "")[:OUTPUT_EXCERPT],
        duration_ms=duration_ms,
    )
    s.add(entry)
    s.flush()
    return entry


def _command_args(data: dict) -> tuple[str, int]:
    command = data.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ValidationError("the command is empty", field="command")
    if len(command) > MAX_COMMAND:
        raise ValidationError(
            f"the command is longer than {MAX_COMMAND} characters", field="command"
        )
    if "\x00" in command:
        raise ValidationError("the command contains a NUL byte", field="command")
    timeout = get_int(data, "timeout", default=DEFAULT_TIMEOUT, min_value=1, max_value=MAX_TIMEOUT)
    return command, timeout


def _record_outside(machine_id: int, user_id, *, status=None, message=None, log=None):
    """Persist a status change / log of a failed run in its own transaction (the request's
    transaction is rolled back for a 5xx)."""
    s = db.new_session()
    try:
        m = s.get(Machine, machine_id)
        if m is not None and status:
            m.status = status
            m.status_message = (message or "")[:500] or None
        if log is not None:
            log_command(machine_id, user_id, session=s, **log)
        s.commit()
    except Exception:
        s.rollback()
        log_exc = logging.getLogger(__name__)
        log_exc.exception("could not record the failed run")
    finally:
        s.close()


def run_command(
    user, machine: Machine, data: dict, *, source: str = "api"
) -> tuple[ssh.ExecResult, CommandLog]:
    """Run one command (operator). A failing command is a result; unreachable 502, timeout 504."""
    require(user, machine, "run_command")
    command, timeout = _command_args(data)
    target = ssh_target(machine, user)
    db.release()  # no DB connection (or SQLite write lock) held while the command runs
    try:
        result = ssh.run(target, command, timeout=timeout)
    except CommandTimeout:
        _record_outside(
            machine.id,
            user.id,
            log={
                "source": source,
                "command": command,
                "exit_code": None,
                "output": f"[timed out after {timeout} s]",
                "duration_ms": timeout * 1000,
            },
        )
        raise CommandTimeout(
            f"the command did not finish within {timeout} s and was stopped", timeout=timeout
        ) from None
    except HostKeyError as err:
        _record_outside(machine.id, user.id, status="error", message=err.message)
        raise
    except MachineUnreachable as err:
        status = "error" if isinstance(err, ssh.AuthenticationFailed) else "offline"
        _record_outside(machine.id, user.id, status=status, message=err.message)
        raise
    entry = log_command(
        machine,
        user,
        source=source,
        command=command,
        exit_code=result.exit_code,
        output=_excerpt(result.stdout, result.stderr),
        duration_ms=result.duration_ms,
    )
    machine.status = "online"
    machine.status_message = None
    machine.last_seen_at = utcnow()
    db.session.flush()
    return result, entry


def result_dict(result: ssh.ExecResult, entry: CommandLog | None) -> dict:
    return {
        "exit_code": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "duration_ms": result.duration_ms,
        "truncated": result.truncated,
        "log_id": entry.id if entry else None,
    }


def broadcast_machines(user, data: dict) -> list[Machine]:
    """The machines a broadcast targets: `agent_ids` (list) or `tag`; operator on each."""
    agent_ids = data.get("agent_ids")
    tag = data.get("tag")
    if agent_ids in (None, [], "") and not tag:
        raise ValidationError("choose machines (agent_ids) or a tag", field="agent_ids")
    if agent_ids not in (None, [], ""):
        if not isinstance(agent_ids, list) or not all(isinstance(a, str) for a in agent_ids):
            raise ValidationError("agent_ids must be a list of strings", field="agent_ids")
        if len(agent_ids) > BROADCAST_MAX:
            raise ValidationError(f"at most {BROADCAST_MAX} machines", field="agent_ids")
        machines = [get_machine(user, a) for a in dict.fromkeys(agent_ids)]
        for m in machines:
            require(user, m, "broadcast")
    else:
        if not isinstance(tag, str):
            raise ValidationError("tag must be a string", field="tag")
        rows, _ = list_machines(user, tag=tag.strip().lower(), limit=BROADCAST_MAX)
        roles = roles_for(user, rows)
        machines = [m for m in rows if can(user, m, "broadcast", roles[m.id])]
        if not machines:
            raise NotFound("no machine you can operate has that tag", field="tag")
    return machines


def run_parallel(targets: dict[int, object], command: str, timeout: int):
    """Yield (machine_id, ExecResult | PortalError) as each finishes; one thread per machine
    (bounded), connections through the shared pool."""
    from concurrent.futures import as_completed

    def one(target):
        if isinstance(target, PortalError):
            return target
        try:
            return ssh.run(target, command, timeout=timeout, max_output=BROADCAST_MAX_OUTPUT)
        except PortalError as err:
            return err
        except Exception as exc:  # never let one machine break the others
            return MachineUnreachable(f"unexpected error: {type(exc).__name__}")

    if not targets:
        return
    with ThreadPoolExecutor(
        max_workers=min(32, len(targets)), thread_name_prefix="broadcast"
    ) as ex:
        futures = {ex.submit(one, t): mid for mid, t in targets.items()}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def broadcast_targets(machines: list[Machine], user) -> dict[int, object]:
    """machine id -> its Target for `user`, or the PortalError that refused it. With
    user=None: the portal's own probe (system_target)."""
    out: dict[int, object] = {}
    for m in machines:
        try:
            out[m.id] = ssh_target(m, user) if user is not None else system_target(m)
        except PortalError as err:
            out[m.id] = err
    return out


def broadcast_entry(
    machine: Machine, outcome, user, command: str, timeout: int, session=None
) -> dict:
    """Log one machine's outcome and describe it (shared by the API and the page)."""
    base = {"agent_id": machine.agent_id, "name": machine.name}
    if isinstance(outcome, PortalError):
        if isinstance(outcome, CommandTimeout):
            log_command(
                machine.id,
                user.id,
                source="broadcast",
                command=command,
                output=f"[timed out after {timeout} s]",
                duration_ms=timeout * 1000,
                session=session,
            )
        return {
            **base,
            "ok": False,
            "error": outcome.message,
            "code": outcome.code,
            "status": outcome.status,
        }
    entry = log_command(
        machine.id,
        user.id,
        source="broadcast",
        command=command,
        exit_code=outcome.exit_code,
        output=_excerpt(outcome.stdout, outcome.stderr),
        duration_ms=outcome.duration_ms,
        session=session,
    )
    return {**base, "ok": True, **result_dict(outcome, entry)}


class Broadcast:
    """A broadcast whose machines are checked and whose targets are built; `results()`
    runs it."""

    def __init__(self, user, machines: list[Machine], command: str, timeout: int, targets):
        self.user, self.machines = user, machines
        self.command, self.timeout, self.targets = command, timeout, targets

    def results(self):
        """Yield (machine, entry) as each machine finishes. Each outcome is logged in a
        session of its own and committed at once: no transaction (on SQLite, no write lock)
        stays open while the slowest machine runs."""
        by_id = {m.id: m for m in self.machines}
        s = db.new_session()
        try:
            for mid, outcome in run_parallel(self.targets, self.command, self.timeout):
                m = by_id[mid]
                entry = broadcast_entry(m, outcome, self.user, self.command, self.timeout, s)
                if entry["ok"]:
                    live = s.get(Machine, mid)
                    if live is not None:
                        live.status, live.status_message, live.last_seen_at = (
                            "online",
                            None,
                            utcnow(),
                        )
                s.commit()
                yield m, entry
        finally:
            s.close()


def start_broadcast(user, data: dict) -> Broadcast:
    """Check the command and every machine (operator on each), build the targets, and give
    the request's DB connection back before anything connects."""
    command, timeout = _command_args(data)
    machines = broadcast_machines(user, data)
    targets = broadcast_targets(machines, user)
    db.release()
    return Broadcast(user, machines, command, timeout, targets)


def broadcast(user, data: dict) -> list[dict]:
    """Run a command on many machines in parallel; one entry per machine, in request order."""
    run = start_broadcast(user, data)
    results = {m.id: entry for m, entry in run.results()}
    return [results[m.id] for m in run.machines]


def recent_commands(user, machine: Machine, limit: int = 10) -> list[CommandLog]:
    """The caller's own latest commands on the machine."""
    require(user, machine, "view_logs")
    return list(
        db.session.scalars(
            select(CommandLog)
            .where(CommandLog.machine_id == machine.id, CommandLog.user_id == user.id)
            .order_by(CommandLog.id.desc())
            .limit(limit)
        )
    )


def get_log(user, log_id) -> CommandLog:
    """A log entry the user may see (viewer on its machine), else NotFound."""
    lid = parse_id(log_id)
    entry = db.session.get(CommandLog, lid) if lid is not None else None
    if entry is None or not can(user, entry.machine, "view_logs"):
        raise NotFound("log entry not found")
    return entry


def _cursor(args) -> int | None:
    cursor = get_int(args, "cursor", default=None, min_value=1, max_value=2**62)
    # Every id is below 2**31 (an int4 column on PostgreSQL): a larger cursor bounds nothing,
    # and binding it would overflow.
    return cursor if cursor is None or cursor <= MAX_DB_ID else None


def list_logs(user, machine: Machine, args) -> tuple[list[CommandLog], int | None]:
    require(user, machine, "view_logs")
    limit = get_int(args, "limit", default=50, min_value=1, max_value=200)
    stmt = select(CommandLog).where(CommandLog.machine_id == machine.id)
    cursor = _cursor(args)
    if cursor:
        stmt = stmt.where(CommandLog.id < cursor)
    stmt = _log_filters(stmt, args)
    rows = list(db.session.scalars(stmt.order_by(CommandLog.id.desc()).limit(limit + 1)))
    return _page(rows, limit)


def _page(rows, limit):
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, rows[-1].id
    return rows, None


def _parse_time(args, key: str) -> dt.datetime | None:
    raw = get_str(args, key, required=False, max_len=40)
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ValidationError(f"{key} must be an ISO 8601 time", field=key) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        value = value.astimezone(dt.UTC)
    except OverflowError:
        raise ValidationError(f"{key} is out of range", field=key) from None
    # Clamped to a range every engine and the id-hint margin (± minutes) can handle:
    # nothing is logged before 1970 or after 9000.
    return min(max(value, _TIME_MIN), _TIME_MAX)


_TIME_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TIME_MAX = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


def _log_filters(stmt, args):
    user_ref = get_str(args, "user", required=False, max_len=254)
    if user_ref and user_ref.strip().isdigit():
        uid = parse_id(user_ref)  # "²" or ids past 2**31-1 match nobody
        stmt = stmt.where(CommandLog.user_id == uid if uid is not None else literal(False))
    elif user_ref:
        try:
            stmt = stmt.where(CommandLog.user_id == find_user_ref(user_ref).id)
        except NotFound:
            stmt = stmt.where(literal(False))
    exit_code = args.get("exit_code")
    if exit_code not in (None, ""):
        if exit_code in ("failed", "nonzero", "!0"):
            stmt = stmt.where(CommandLog.exit_code != 0)
        else:
            code = get_int(args, "exit_code", min_value=-1, max_value=255)
            stmt = stmt.where(CommandLog.exit_code == code)
    since, until = _parse_time(args, "since"), _parse_time(args, "until")
    if since:
        stmt = stmt.where(CommandLog.created_at >= since)
    if until:
        stmt = stmt.where(CommandLog.created_at <= until)
    source = args.get("source")
    if source:
        stmt = stmt.where(CommandLog.source == get_choice(args, "source", SOURCES))
    return stmt


def search_logs(user, machine: Machine, args) -> tuple[list[CommandLog], int | None]:
    from portal.machines.search import apply_search

    require(user, machine, "view_logs")
    q = get_str(args, "q", required=False, max_len=200)
    if not q:
        return list_logs(user, machine, args)
    limit = get_int(args, "limit", default=50, min_value=1, max_value=200)
    found = apply_search(select(CommandLog), q, machine.id)
    if found is None:
        return [], None
    stmt, order_col = found
    cursor = _cursor(args)
    if cursor:
        stmt = stmt.where(order_col < cursor)
    stmt = _log_filters(stmt, args)
    stmt = _time_hint(stmt, order_col, args)
    rows = list(db.session.scalars(stmt.order_by(order_col.desc()).limit(limit + 1)))
    return _page(rows, limit)


_HINT_MARGIN = dt.timedelta(minutes=10)


def _time_hint(stmt, order_col, args):
    """since/until as id bounds too, so the full-text index skips rows outside the range
    instead of checking each one. Ids grow with created_at (both set at insert); the
    10-minute margin keeps the bound safe, and the exact created_at filter stays."""
    until, since = _parse_time(args, "until"), _parse_time(args, "since")
    if until is not None:
        after = db.session.scalar(
            select(CommandLog.id)
            .where(CommandLog.created_at > until + _HINT_MARGIN)
            .order_by(CommandLog.created_at)
            .limit(1)
        )
        if after is not None:
            stmt = stmt.where(order_col < after)
    if since is not None:
        before = db.session.scalar(
            select(CommandLog.id)
            .where(CommandLog.created_at < since - _HINT_MARGIN)
            .order_by(CommandLog.created_at.desc())
            .limit(1)
        )
        if before is not None:
            stmt = stmt.where(order_col > before)
    return stmt
