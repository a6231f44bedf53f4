"""Machines (SSH targets), who may use them, enrollment tokens, command logs."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.accounts.models import User
from portal.db import Base, UTCDateTime, iso, utcnow
from portal.ssh import fingerprint

ROLES = ("viewer", "operator", "admin")
AUTH_METHODS = ("key", "password", "portal_key")
STATUSES = ("pending", "online", "offline", "error")
SOURCES = ("api", "terminal", "broadcast", "page")
OUTPUT_EXCERPT = 4096


def new_agent_id() -> str:
    """Public, URL-safe, unguessable id (22 chars, 128 random bits)."""
    return secrets.token_urlsafe(16)


class Machine(Base):
    __tablename__ = "machines"
    # One name per owner (portal.machines.naming checks first, case-insensitively; this is
    # the backstop for two requests racing).
    __table_args__ = (Index("uq_machines_owner_name", "owner_id", "name", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_agent_id)
    name: Mapped[str] = mapped_column(String(100))
    host: Mapped[str | None] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer, default=22)
    username: Mapped[str | None] = mapped_column(String(64))
    auth_method: Mapped[str | None] = mapped_column(String(16))
    # Fernet token (portal.machines.vault) of a JSON object: password / private_key / passphrase.
    secret_enc: Mapped[str | None] = mapped_column(Text)
    # The machine's own ed25519 key pair (auth_method "portal_key"): generated when the machine
    # is created or enrolled, never shared with another machine. Private part: Fernet token.
    key_enc: Mapped[str | None] = mapped_column(Text)
    public_key: Mapped[str | None] = mapped_column(Text)
    # Pinned host key lines ("ssh-ed25519 AAAA..."), one per line.
    host_keys: Mapped[str] = mapped_column(Text, default="")
    gateway_id: Mapped[int | None] = mapped_column(ForeignKey("machines.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    status_message: Mapped[str | None] = mapped_column(String(500))
    # Comma-separated, lower-case; filtered with LIKE on ",tags,".
    tags: Mapped[str] = mapped_column(String(600), default="")
    os: Mapped[str | None] = mapped_column(String(120))
    # Opening a terminal here needs a fresh second factor (portal/accounts/stepup.py).
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id], lazy="joined")
    gateway: Mapped[Machine | None] = relationship(remote_side=[id], foreign_keys=[gateway_id])

    @property
    def tag_list(self) -> list[str]:
        return [t for t in (self.tags or "").split(",") if t]

    @property
    def host_key_lines(self) -> list[str]:
        return [line for line in (self.host_keys or "").splitlines() if line.strip()]

    @property
    def host_key_fingerprints(self) -> list[str]:
        out = []
        for line in self.host_key_lines:
            try:
                out.append(fingerprint(line))
            except Exception:  # noqa: S112 - a bad stored line shows as nothing, not a 500
                continue
        return out

    @property
    def host_key_fingerprint(self) -> str | None:
        fps = self.host_key_fingerprints
        return fps[0] if fps else None

    @property
    def address(self) -> str:
        if not self.host:
            return "—"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.username}@{host}:{self.port}"

    def to_dict(self, *, my_role: str | None = None) -> dict:
        """The API's `machine`; `my_role` is the caller's role (access.role_of / roles_for)."""
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "auth_method": self.auth_method,
            "status": self.status,
            "status_message": self.status_message,
            "host_key_fingerprint": self.host_key_fingerprint,
            "host_key_fingerprints": self.host_key_fingerprints,
            # Public: the line to put in authorized_keys for this machine only.
            "public_key": self.public_key if self.auth_method == "portal_key" else None,
            "gateway": (
                {"agent_id": self.gateway.agent_id, "name": self.gateway.name}
                if self.gateway_id and self.gateway
                else None
            ),
            "tags": self.tag_list,
            "sensitive": bool(self.sensitive),
            "os": self.os,
            "owner": {"id": self.owner.id, "username": self.owner.username} if self.owner else None,
            "my_role": my_role,
            "created_at": iso(self.created_at),
            "last_seen_at": iso(self.last_seen_at),
        }

    def __repr__(self) -> str:
        return f"<Machine {self.id} {self.agent_id} {self.name}>"


class MachineAccess(Base):
    __tablename__ = "machine_access"
    __table_args__ = (UniqueConstraint("machine_id", "user_id", name="uq_machine_access_pair"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    machine_id: Mapped[int] = mapped_column(
        ForeignKey("machines.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    granted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")


class RegistrationToken(Base):
    """Single-use enrollment token for a pending machine; only its SHA-256 is stored."""

    __tablename__ = "registration_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    machine_id: Mapped[int] = mapped_column(
        ForeignKey("machines.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class CommandLog(Base):
    __tablename__ = "command_logs"
    __table_args__ = (
        Index("ix_command_logs_machine_id_id", "machine_id", "id"),
        Index("ix_command_logs_user_id_id", "user_id", "id"),
        # Dashboard counts (per machine and window, failed or not) answered from the index alone.
        Index("ix_command_logs_machine_id_created_at", "machine_id", "created_at", "exit_code"),
        Index("ix_command_logs_created_at_exit_code", "created_at", "exit_code"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The terminal's session id; no FK (that table belongs to the terminal feature).
    session_id: Mapped[str | None] = mapped_column(String(36), index=True)
    source: Mapped[str] = mapped_column(String(16))
    command: Mapped[str] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    output: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # terminal lines: ms from the session's start to the Enter (its moment in the recording)
    offset_ms: Mapped[int | None] = mapped_column(Integer)

    user: Mapped[User | None] = relationship(foreign_keys=[user_id], lazy="joined")
    machine: Mapped[Machine] = relationship(foreign_keys=[machine_id])

    @property
    def failed(self) -> bool:
        return self.exit_code is not None and self.exit_code != 0

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "machine_id": self.machine_id,
            "user": {"id": self.user.id, "username": self.user.username} if self.user else None,
            "session_id": self.session_id,
            # "page" (the machine page's command box) is shown as "api" to keep the
            # WebXTerm enum; `via` tells them apart.
            "source": "api" if self.source == "page" else self.source,
            "via": self.source,
            "command": self.command,
            "exit_code": self.exit_code,
            "output": self.output,
            "duration_ms": self.duration_ms,
            "offset_ms": self.offset_ms,
            "created_at": iso(self.created_at),
        }
