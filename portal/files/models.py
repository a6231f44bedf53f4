"""Records of file transfers (who, machine, path, size, SHA-256, duration, result)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.accounts.models import User
from portal.db import Base, UTCDateTime, iso, utcnow

DIRECTIONS = ("upload", "download", "zip")


class FileTransfer(Base):
    __tablename__ = "file_transfers"
    __table_args__ = (Index("ix_file_transfers_machine_id_id", "machine_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    direction: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str] = mapped_column(String(200), default="ok")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User | None] = relationship(foreign_keys=[user_id], lazy="joined")

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "user": self.user.username if self.user else None,
            "direction": self.direction,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "duration_ms": self.duration_ms,
            "result": self.result,
            "created_at": iso(self.created_at),
        }


CONFLICTS = ("overwrite", "keep", "skip", "fail")


class FileUpload(Base):
    """A resumable (tus) upload in progress: the offset lives here so any worker resumes it."""

    __tablename__ = "file_uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    folder: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(255))
    temp_path: Mapped[str] = mapped_column(Text)
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    conflict: Mapped[str] = mapped_column(String(16), default="fail")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
