"""The audit log: one append-only table, written only by portal/audit/events.py."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, UTCDateTime, iso, utcnow

RESULTS = ("ok", "failed", "denied")


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # No foreign key: the log outlives the users and machines it names.
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(120), default="system")
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    target_name: Mapped[str | None] = mapped_column(String(200))
    # Which machine the event is about (when it is about one): the page's machine filter.
    machine_id: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[str] = mapped_column(String(200), default="ok")
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    # Lower-cased text of details + target name + actor: the full-text filter (LIKE).
    search: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        Index("ix_audit_events_actor_id_id", "actor_id", "id"),
        Index("ix_audit_events_action_id", "action", "id"),
        Index("ix_audit_events_machine_id_id", "machine_id", "id"),
        Index("ix_audit_events_at", "at"),
    )

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "at": iso(self.at),
            "actor_id": self.actor_id,
            "actor": self.actor,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "target_name": self.target_name,
            "machine_id": self.machine_id,
            "result": self.result,
            "details": self.details or {},
        }


class AuditWebhook(Base):
    """Where events are forwarded (one row, id 1): a URL and an HMAC secret (Fernet token)."""

    __tablename__ = "audit_webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(500))
    secret_enc: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditDelivery(Base):
    """An event waiting to be POSTed to the webhook (the queue survives a restart)."""

    __tablename__ = "audit_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    last_error: Mapped[str | None] = mapped_column(String(300))
