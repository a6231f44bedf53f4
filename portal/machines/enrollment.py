"""Enrollment of pending machines: single-use registration tokens, the enroll
script, and the public register call that pins host keys and goes online.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from flask import render_template
from sqlalchemy import select

from portal import ssh
from portal.db import utcnow
from portal.errors import (
    AuthenticationRequired,
    Conflict,
    ValidationError,
)
from portal.extensions import db
from portal.machines import vault
from portal.machines.access import (
    require,
)
from portal.machines.models import (
    Machine,
    RegistrationToken,
)
from portal.machines.naming import free_name
from portal.machines.targets import (
    allowed_networks,
    cached_pkey,
    check_allowed_target,
    clean_host,
    clean_username,
    connect_timeout,
    ensure_machine_key,
    host_key_lines,
)
from portal.validation import get_int

TOKEN_PREFIX = "wxreg_"  # noqa: S105 - a prefix, not a secret


TOKEN_TTL = dt.timedelta(hours=1)


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
    username = clean_username(data)
    port = get_int(data, "port", default=22, min_value=1, max_value=65535)
    lines = host_key_lines(data.get("host_keys"), field="host_keys")
    if data.get("host"):
        host = clean_host(data)
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
        pkey=cached_pkey(vault.decrypt(machine.key_enc), None),
        host_keys=tuple(lines),
        connect_timeout=connect_timeout(),
        allowed=allowed_networks(),
    )
    db.release()
    result = ssh.run(target, "uname -sr", timeout=min(connect_timeout(), 15))
    now = utcnow()
    if not db.spend_once(RegistrationToken, row.id, used_at=now):
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
        # the owner may have a machine of that name already: "web (2)"
        machine.name = free_name(machine.owner_id, hostname, machine.id)
    machine.status = "online"
    machine.status_message = None
    machine.last_seen_at = now
    db.session.flush()
    return machine
