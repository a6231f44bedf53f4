"""TerminalSession: one row per browser terminal (live or ended)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.accounts.models import User
from portal.db import Base, UTCDateTime, utcnow

STATUSES = ("active", "detached", "closed")
LIVE = ("active", "detached")


def new_session_id() -> str:
    return str(uuid.uuid4())


class TerminalSession(Base):
    __tablename__ = "terminal_sessions"
    __table_args__ = (
        Index("ix_terminal_sessions_user_id_status", "user_id", "status"),
        Index("ix_terminal_sessions_machine_id_started_at", "machine_id", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_session_id)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    close_reason: Mapped[str | None] = mapped_column(String(255))
    cols: Mapped[int] = mapped_column(Integer, default=80)
    rows: Mapped[int] = mapped_column(Integer, default=24)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    client_addr: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    # File name inside PORTAL_RECORDINGS_DIR (never a path from a request).
    recording_path: Mapped[str | None] = mapped_column(String(255))
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    # "host:pid:start" of the process that holds the SSH channel (ghost detection on start).
    server_id: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def __repr__(self) -> str:
        return f"<TerminalSession {self.id} {self.status}>"
