"""Editing a machine, for both faces: name, tags, sensitive flag, where it is reached (host,
port, jump host), the SSH user and its credentials.

Rules (access.py and API.md "Roles"): editing needs the admin role on the machine; moving a
machine that stores a password or key is for its owner or a global admin
("change_connection"); a move, a new SSH user or new credentials, and turning the sensitive
flag off need a fresh second factor (step-up). A blank secret keeps the stored one. A move
may carry the fingerprint(s) of the new address's host key (`host_key`): a fresh scan must
present them and they are pinned with the move; the page always asks for them. Everything is
checked before anything changes.
"""

from __future__ import annotations

from portal import signals
from portal.accounts import stepup
from portal.errors import PortalError, Unprocessable, ValidationError
from portal.machines.access import can, require
from portal.machines.inventory import clean_credentials, flush_named, resolve_gateway, verify
from portal.machines.models import AUTH_METHODS, Machine
from portal.machines.naming import clean_name, require_free_name
from portal.machines.targets import (
    check_allowed_target,
    clean_fingerprints,
    clean_host,
    clean_username,
    ensure_machine_key,
    scan_keys,
)
from portal.machines.vault import encrypt_json
from portal.ssh.errors import hostport
from portal.validation import get_bool, get_choice, get_int, get_tags

_FAIL = object()
WHERE = ("host", "port", "gateway")
SECRET_FIELD = {"key": "private_key", "password": "password"}

HOST_KEY_NEEDED = (
    "the address changed: fetch the host key of the new address, compare it and tick the box"
)
HOST_KEY_TICK = "tick the box to confirm you compared the fingerprints"


def _secret_given(data: dict, method: str) -> bool:
    value = data.get(SECRET_FIELD.get(method, ""))
    return isinstance(value, str) and bool(value.strip())


def _parse(user, machine: Machine, data: dict) -> tuple[dict, dict[str, PortalError]]:
    """(changes, errors): the fields that differ from the machine now, and every field
    problem keyed by field. Fields absent from `data` stay as they are."""
    errors: dict[str, PortalError] = {}
    changes: dict = {}

    def attempt(field, check):
        try:
            return check()
        except PortalError as err:
            errors.setdefault(err.field or field, err)
            return _FAIL

    if not isinstance(data, dict):
        raise ValidationError("send a JSON object")
    pending = machine.status == "pending" or not machine.host
    if "name" in data:
        name = attempt("name", lambda: clean_name(data))
        if name is not _FAIL and name != machine.name:
            ok = attempt(
                "name", lambda: require_free_name(user, machine.owner_id, name, machine.id)
            )
            if ok is not _FAIL:
                changes["name"] = name
    if "tags" in data:
        tags = attempt("tags", lambda: get_tags(data))
        if tags is not _FAIL and ",".join(tags) != (machine.tags or ""):
            changes["tags"] = ",".join(tags)
    if "host" in data:
        host = attempt("host", lambda: clean_host(data))
        if host is not _FAIL and host != machine.host:
            changes["host"] = host
    if "port" in data:
        port = attempt(
            "port", lambda: get_int(data, "port", required=True, min_value=1, max_value=65535)
        )
        if port is not _FAIL and port != machine.port:
            changes["port"] = port
    if "gateway" in data or "gateway_agent_id" in data:
        gw = attempt("gateway", lambda: resolve_gateway(user, data, machine))
        if gw is not _FAIL and (gw.id if gw else None) != machine.gateway_id:
            changes["gateway"] = gw
    if "username" in data:
        username = attempt("username", lambda: clean_username(data))
        if username is not _FAIL and username != machine.username:
            changes["username"] = username
    if pending and (changes.keys() & {*WHERE, "username"}):
        errors.setdefault(
            "host", Unprocessable(f"{machine.name} has not been enrolled yet", field="host")
        )
    method = data.get("auth_method")
    if not method and any(_secret_given(data, m) for m in SECRET_FIELD):
        method = machine.auth_method  # a new secret for the current method
    if method and not pending:
        given = {"auth_method": method}
        method = attempt("auth_method", lambda: get_choice(given, "auth_method", AUTH_METHODS))
        if method is not _FAIL:
            if method != machine.auth_method or _secret_given(data, method):
                field = SECRET_FIELD.get(method, "auth_method")
                secret = attempt(field, lambda: clean_credentials(data, method))
                if secret is not _FAIL:
                    changes["auth"] = (method, secret)
            elif method == "key" and data.get("passphrase"):
                errors.setdefault(
                    "private_key",
                    ValidationError(
                        "paste the private key again to change its passphrase",
                        field="private_key",
                    ),
                )
    if "sensitive" in data:
        sensitive = attempt("sensitive", lambda: get_bool(data, "sensitive"))
        if sensitive is not _FAIL and sensitive != bool(machine.sensitive):
            changes["sensitive"] = sensitive
    return changes, errors


def _new_address(machine: Machine, changes: dict) -> tuple[str, int, Machine | None]:
    gw = changes["gateway"] if "gateway" in changes else machine.gateway
    return changes.get("host", machine.host), changes.get("port", machine.port), gw


def form_for(user, machine: Machine) -> dict:
    """The edit page's fields as they are now (admin role; never a secret)."""
    require(user, machine, "update")
    return {
        "name": machine.name,
        "tags": ", ".join(machine.tag_list),
        "sensitive": bool(machine.sensitive),
        "host": machine.host or "",
        "port": machine.port,
        "gateway": machine.gateway.agent_id if machine.gateway_id and machine.gateway else "",
        "username": machine.username or "",
        "auth_method": machine.auth_method or "key",
    }


def edit_field_errors(user, machine: Machine, data: dict) -> dict[str, str]:
    """Every field problem of the edit page at once (no connection is made; update_machine
    still checks each one). The page always asks for the host key of a new address."""
    changes, errors = _parse(user, machine, data)
    out = {field: err.message for field, err in errors.items()}
    if changes.keys() & set(WHERE) and not out.keys() & {*WHERE, "_form"}:
        host, port, gw = _new_address(machine, changes)
        if can(user, machine, "change_connection"):
            try:
                check_allowed_target(host, port, via_gateway=gw is not None)
            except PortalError as err:
                out.setdefault("host", err.message)
        if not data.get("host_key"):
            out.setdefault("host_key", HOST_KEY_NEEDED)
        elif not data.get("host_key_ack"):
            out.setdefault("host_key", HOST_KEY_TICK)
    return out


def _pin_new_address(user, host: str, port: int, gw, given) -> list[str]:
    """The key lines a fresh scan of the new address presents with the given fingerprints."""
    wanted = clean_fingerprints(given)
    by_fp = {fp: line for line, fp in scan_keys(host, port, gw, user)}
    missing = [fp for fp in wanted if fp not in by_fp]
    if missing:
        raise ValidationError(
            f"{hostport(host, port)} does not present {', '.join(missing)} now; it presents "
            f"{', '.join(by_fp) or 'no key'}: fetch the host key again and compare",
            field="host_key",
            presented=list(by_fp),
        )
    return [by_fp[fp] for fp in wanted]


def scan_new_address(user, machine: Machine, data: dict) -> list[tuple[str, str]]:
    """The edit page's trust step: the host keys a new address presents (nothing stored)."""
    require(user, machine, "change_connection")
    if machine.status == "pending" or not machine.host:
        raise Unprocessable(f"{machine.name} has not been enrolled yet")
    host = clean_host(data)
    port = get_int(data, "port", default=22, min_value=1, max_value=65535)
    gw = resolve_gateway(user, data, machine)
    check_allowed_target(host, port, via_gateway=gw is not None)
    return scan_keys(host, port, gw, user)


def update_machine(user, machine: Machine, data: dict, *, host_key_required=False) -> Machine:
    """Apply an edit (both faces). `host_key_required`: a move must come with the new
    address's host key fingerprint(s) and the person's "I compared them" (`host_key_ack`;
    the page); the API may leave the old pins, and then connections are refused until a
    re-pin (POST .../host-key). `verify: true` in `data` checks the connection after a
    move or new credentials."""
    require(user, machine, "update")
    changes, errors = _parse(user, machine, data)
    if errors:
        raise next(iter(errors.values()))
    moved = bool(changes.keys() & set(WHERE))
    lines = None
    if moved:
        require(user, machine, "change_connection")
        host, port, gw = _new_address(machine, changes)
        check_allowed_target(host, port, via_gateway=gw is not None)
    if moved or changes.keys() & {"username", "auth"} or changes.get("sensitive") is False:
        stepup.require(user, "machine.connection")
    if moved:
        if host_key_required and not data.get("host_key"):
            raise ValidationError(HOST_KEY_NEEDED, field="host_key")
        if host_key_required and not data.get("host_key_ack"):
            raise ValidationError(HOST_KEY_TICK, field="host_key")
        if data.get("host_key"):
            lines = _pin_new_address(user, host, port, gw, data.get("host_key"))
    _apply(machine, changes, lines)
    flush_named(machine, user)
    fields = sorted("credentials" if k == "auth" else k for k in changes)
    signals.send(signals.machine_updated, machine=machine, actor=user, fields=fields)
    if lines is not None:
        signals.send(signals.host_key_trusted, machine=machine, actor=user)
    reached_anew = moved or bool(changes.keys() & {"username", "auth"})
    if reached_anew and get_bool(data, "verify") and machine.host_key_lines:
        verify(machine, user)
    return machine


def _apply(machine: Machine, changes: dict, lines: list[str] | None) -> None:
    for key in ("name", "tags", "host", "port", "username", "sensitive"):
        if key in changes:
            setattr(machine, key, changes[key])
    if "gateway" in changes:
        gw = changes["gateway"]
        machine.gateway_id, machine.gateway = (gw.id if gw else None), gw
    if changes.keys() & set(WHERE):
        machine.status, machine.status_message = "offline", None
    if lines is not None:
        machine.host_keys = "\n".join(lines)
    if "auth" in changes:
        method, secret = changes["auth"]
        machine.auth_method = method
        machine.secret_enc = encrypt_json(secret) if secret else None
        if method == "portal_key":
            ensure_machine_key(machine)
