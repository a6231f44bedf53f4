"""Where and how the portal connects to a machine: the allowed networks, SSH targets
(decrypted credentials, pinned host keys, jump hosts), host key scans and re-pinning.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import threading
from collections import OrderedDict

from flask import current_app, has_app_context

from portal import signals, ssh
from portal.errors import (
    MachineUnreachable,
    PortalError,
    Unprocessable,
    ValidationError,
)
from portal.extensions import db
from portal.machines import vault
from portal.machines.access import (
    MAX_GATEWAY_DEPTH,
    require,
    require_gateway_chain,
)
from portal.machines.models import (
    Machine,
)
from portal.ssh.connect import refused as ssh_refused
from portal.ssh.connect import resolve as resolve_checked
from portal.ssh.errors import hostport
from portal.ssh.netpolicy import TargetPolicy, policy_from_config
from portal.validation import get_str

log = logging.getLogger(__name__)

HOST_MAX, SSH_USER_MAX = 253, 64  # the pages' maxlength attributes come from here
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-_]*[A-Za-z0-9])?$")


_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._\-]{0,63}$")


TargetNotAllowed = ssh.TargetNotAllowed  # the address is outside PORTAL_ALLOWED_TARGETS


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


def clean_host(data: dict) -> str:
    host = get_str(data, "host", max_len=HOST_MAX)
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if not _HOST_RE.match(bare) or ".." in bare:
        raise ValidationError("host must be a host name or an IP address", field="host")
    return bare


def clean_username(data: dict, key: str = "username") -> str:
    name = get_str(data, key, max_len=SSH_USER_MAX, label="user name")
    if not _USER_RE.match(name):
        raise ValidationError("user name may use letters, digits, . _ -", field=key)
    return name


def host_key_lines(value, field: str = "host_key") -> list[str]:
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


_pkey_cache: OrderedDict[str, object] = OrderedDict()


_pkey_lock = threading.Lock()


def cached_pkey(text: str, passphrase: str | None):
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


def connect_timeout() -> float:
    return float(current_app.config.get("PORTAL_SSH_CONNECT_TIMEOUT", 10))


def ssh_target(machine: Machine, user, *, host_keys=None) -> ssh.Target:
    """A portal.ssh Target for the machine: decrypted credentials, pinned keys, jump host.

    `user` is who connects: an operator of the machine and of every jump host on the way
    (AccessDenied otherwise)."""
    require(user, machine, "connect")
    require_gateway_chain(user, machine)
    return _build_target(machine, host_keys=host_keys)


def files_target(machine: Machine, user, action: str) -> ssh.Target:
    """The target for file work (portal.files): `action` is "browse_files" (viewer) or
    "write_files" (operator); the user must also be an operator of every jump host."""
    require(user, machine, action)
    require_gateway_chain(user, machine)
    return _build_target(machine)


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
        pkey = cached_pkey(secret.get("private_key", ""), secret.get("passphrase"))
    elif machine.auth_method == "portal_key":
        if not machine.key_enc:
            raise Unprocessable(
                f"{machine.name} has no key pair of its own yet (it used the old shared portal "
                "key): use “check connection again” to create one, then install its public key"
            )
        pkey = cached_pkey(vault.decrypt(machine.key_enc), None)
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
        connect_timeout=connect_timeout(),
        allowed=allowed_networks(),
    )


def scan_keys(host: str, port: int, gateway: Machine | None, user) -> list[tuple[str, str]]:
    gw_target = ssh_target(gateway, user) if gateway is not None else None
    return ssh.scan_host_key(
        host, port, timeout=connect_timeout(), gateway=gw_target, allowed=allowed_networks()
    )


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
    return scan_keys(machine.host, machine.port, machine.gateway, user)


def clean_fingerprints(value) -> list[str]:
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
    wanted = clean_fingerprints(data.get("host_key"))
    check_machine_target(machine)
    scanned = scan_keys(machine.host, machine.port, machine.gateway, user)
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
    signals.send(signals.host_key_trusted, machine=machine, actor=user)
    return machine
