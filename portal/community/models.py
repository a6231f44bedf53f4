"""Community board: issues, fixes, likes and uploaded images."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.accounts.models import User
from portal.db import Base, UTCDateTime, iso, utcnow
from portal.extensions import db


def _author(user: User | None) -> dict | None:
    if user is None:
        return None
    return {"id": user.id, "username": user.username, "avatar_url": user.avatar_url}


class Issue(Base):
    __tablename__ = "community_issues"
    __table_args__ = (
        Index("ix_community_issues_status_created", "status", "created_at"),
        Index("ix_community_issues_likes", "likes_count", "created_at"),
        Index("ix_community_issues_fixes", "fixes_count", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    # Rendered and sanitised once on write; pages and the API serve this copy.
    body_html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # Counters kept by the service layer so lists sort without aggregating.
    fixes_count: Mapped[int] = mapped_column(Integer, default=0)
    likes_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    author: Mapped[User | None] = relationship(lazy="joined")
    tag_rows: Mapped[list[IssueTag]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="IssueTag.position",
        lazy="selectin",
    )
    fixes: Mapped[list[Fix]] = relationship(
        back_populates="issue", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def tags(self) -> list[str]:
        return [t.tag for t in self.tag_rows]

    def accepted_fix_id(self) -> int | None:
        return db.session.scalar(
            select(Fix.id).where(Fix.issue_id == self.id, Fix.accepted.is_(True)).limit(1)
        )

    def to_dict(self, accepted_fix_id: int | None | bool = False) -> dict:
        if accepted_fix_id is False:
            accepted_fix_id = self.accepted_fix_id() if self.status == "solved" else None
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "body_html": self.body_html,
            "tags": self.tags,
            "status": self.status,
            "author": _author(self.author),
            "fixes_count": self.fixes_count,
            "likes": self.likes_count,
            "accepted_fix_id": accepted_fix_id,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class IssueTag(Base):
    __tablename__ = "community_issue_tags"

    issue_id: Mapped[int] = mapped_column(
        ForeignKey("community_issues.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Fix(Base):
    __tablename__ = "community_fixes"
    __table_args__ = (
        Index("ix_community_fixes_issue_order", "issue_id", "accepted", "likes_count"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("community_issues.id", ondelete="CASCADE"))
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    body: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    likes_count: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    issue: Mapped[Issue] = relationship(back_populates="fixes")
    author: Mapped[User | None] = relationship(lazy="joined")

    def to_dict(self, liked_by_me: bool = False) -> dict:
        return {
            "id": self.id,
            "issue_id": self.issue_id,
            "body": self.body,
            "body_html": self.body_html,
            "author": _author(self.author),
            "likes": self.likes_count,
            "liked_by_me": liked_by_me,
            "accepted": bool(self.accepted),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class FixLike(Base):
    """One row per (fix, user): the primary key makes a like unique."""

    __tablename__ = "community_fix_likes"

    fix_id: Mapped[int] = mapped_column(
        ForeignKey("community_fixes.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Attachment(Base):
    """An uploaded image. Bound to an issue (and a fix) once a saved body references it;
    deleting the issue deletes the rows (FK cascade) and the service removes the files."""

    __tablename__ = "community_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(String(64), unique=True)
    content_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    uploader_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    issue_id: Mapped[int | None] = mapped_column(
        ForeignKey("community_issues.id", ondelete="CASCADE"), index=True
    )
    fix_id: Mapped[int | None] = mapped_column(
        ForeignKey("community_fixes.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
