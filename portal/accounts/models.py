"""User and the credentials that belong to one."""

from __future__ import annotations

import datetime as dt

from flask import url_for
from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime, iso, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    # Lower-cased username: case-insensitive uniqueness on every engine.
    username_key: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped on logout-all, password change and deactivation: older JWTs, cookies fail at once.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    api_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    api_key_prefix: Mapped[str | None] = mapped_column(String(16))
    # The key was made after a second-factor check; it may open terminals (or only call the API).
    api_key_mfa: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    api_key_terminal: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    avatar_file: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Set when an admin creates the account or resets its password: the next sign-in must
    # choose a new password before anything else (portal/accounts/membership.py).
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )

    identities: Mapped[list[OAuthIdentity]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    # flask-login protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return bool(self.active)

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        # The version rides in the cookie, so logout-all also ends browser sessions.
        return f"{self.id}:{self.token_version}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def avatar_url(self) -> str | None:
        if not self.avatar_file:
            return None
        return url_for("accounts.avatar", filename=self.avatar_file)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "email": self.email,
            "username": self.username,
            "role": self.role,
            "active": self.is_active,
            "avatar_url": self.avatar_url,
            "must_change_password": bool(self.must_change_password),
            "created_at": iso(self.created_at),
        }

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username}>"


class RefreshToken(Base):
    """Opaque, rotating, stored as SHA-256. Reuse of a rotated one revokes its family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Unix time of the second-factor check behind the family's sign-in (None: there was none)
    mfa_at: Mapped[int | None] = mapped_column(Integer)


class OAuthIdentity(Base):
    __tablename__ = "oauth_identities"
    __table_args__ = (UniqueConstraint("provider", "subject", name="uq_oauth_provider_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="identities")


class Setting(Base):
    """Small site-wide settings an admin changes at run time (e.g. signup open)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Invite(Base):
    """A single-use sign-up link an admin made; only the token's SHA-256 is stored."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))  # only this address may use it
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    used_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    creator: Mapped[User | None] = relationship(foreign_keys=[created_by])
    user: Mapped[User | None] = relationship(foreign_keys=[used_by])

    def status(self, now: dt.datetime | None = None) -> str:
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= (now or utcnow()):
            return "expired"
        return "pending"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "email": self.email,
            "role": self.role,
            "status": self.status(),
            "created_by": (
                {"id": self.creator.id, "username": self.creator.username} if self.creator else None
            ),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "used_at": iso(self.used_at),
            "used_by": {"id": self.user.id, "username": self.user.username} if self.user else None,
            "revoked_at": iso(self.revoked_at),
        }


class TotpFactor(Base):
    """A user's authenticator app. The secret is encrypted with the vault key and never
    shown again after enrolment; `last_step` stops a code from being used twice."""

    __tablename__ = "totp_factors"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret_enc: Mapped[str] = mapped_column(Text)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_step: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RecoveryCode(Base):
    """A single-use recovery code, stored as SHA-256."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class MfaThrottle(Base):
    """Failed second-factor attempts per account (not per address): a stolen password
    cannot brute-force six digits from many addresses."""

    __tablename__ = "mfa_throttle"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Passkey(Base):
    """A WebAuthn credential (passkey or security key) of a user. Only the public key is
    stored; `sign_count` is the authenticator's counter at its last use (an assertion that
    does not move it forward is refused, unless the authenticator never counts: 0 and 0)."""

    __tablename__ = "passkeys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # base64url of the credential id (as the browser sends `rawId`)
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[str] = mapped_column(String(200), default="")  # comma-separated
    # WebAuthn user.id (base64url, random, the same for all of a user's passkeys): a
    # discoverable credential returns it at passwordless sign-in.
    user_handle: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "transports": [t for t in (self.transports or "").split(",") if t],
            "created_at": iso(self.created_at),
            "last_used_at": iso(self.last_used_at),
        }


class WebauthnChallenge(Base):
    """A pending WebAuthn ceremony. The browser session holds its id; verifying deletes the
    row first, so a challenge works once (a replayed cookie finds nothing) and only until
    `expires_at`."""

    __tablename__ = "webauthn_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    challenge: Mapped[str] = mapped_column(String(128))  # base64url
    purpose: Mapped[str] = mapped_column(String(16))  # register | mfa | login | step-up | reauth
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
