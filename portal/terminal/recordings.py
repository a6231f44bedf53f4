"""Recordings as the portal serves them: where the files are, who may replay one, the size
cap for new ones, and retention (the asciicast files themselves are written by recorder.py).
"""

from __future__ import annotations

from pathlib import Path

from flask import current_app, url_for
from sqlalchemy import select

from portal import signals
from portal.errors import AccessDenied, NotFound
from portal.extensions import db
from portal.terminal import policy
from portal.terminal.models import TerminalSession
from portal.terminal.recorder import DEFAULT_MAX_BYTES, prune


def recordings_dir() -> Path:
    return Path(current_app.config["PORTAL_RECORDINGS_DIR"])


def recording_file(row: TerminalSession) -> Path | None:
    if not row.recording_path:
        return None
    name = Path(row.recording_path).name  # never a path from outside
    path = recordings_dir() / name
    return path if path.is_file() else None


def recording_for(user, row: TerminalSession, *, download: bool = False) -> Path:
    """The session's recording file for `user` (AccessDenied / NotFound); audited as viewed
    or (`download`) downloaded."""
    if not policy.can_replay(user, row):
        raise AccessDenied("only the session's user or an admin of the machine may replay it")
    path = recording_file(row)
    if path is None:
        raise NotFound("no recording for this session")
    signals.send(signals.recording_viewed, session_id=row.id, user=user, download=download)
    _catch_up(row.id)
    return path


def _catch_up(sid: str) -> None:
    """A live session held by this process: what it recorded so far goes to the file now
    (the flusher would hand it over within DISK_FLUSH_INTERVAL s), so a replay of a session
    that just started is not an empty file."""
    registry = current_app.extensions.get("portal_terminal")
    live = registry.get(sid) if registry is not None else None
    recorder = getattr(live, "recorder", None)
    if recorder is not None:
        recorder.flush()
        recorder.flush_to_disk()


def recording_max_bytes() -> int:
    """PORTAL_RECORDING_MAX_BYTES: output bytes recorded per session (0 = no cap)."""
    value = current_app.config.get("PORTAL_RECORDING_MAX_BYTES", DEFAULT_MAX_BYTES)
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return DEFAULT_MAX_BYTES


def recording_url(row: TerminalSession) -> str | None:
    if not row.recording_path:
        return None
    return url_for("terminal_api.recording", sid=row.id)


def prune_recordings(days: int | None = None) -> int:
    """Delete recordings past PORTAL_RECORDING_RETENTION_DAYS (or `days`); their rows forget
    the file. Returns how many went."""
    days = current_app.config.get("PORTAL_RECORDING_RETENTION_DAYS", 30) if days is None else days
    removed = prune(recordings_dir(), int(days or 0))
    if removed:
        for row in db.session.scalars(
            select(TerminalSession).where(TerminalSession.recording_path.in_(removed))
        ):
            row.recording_path = None
        db.session.flush()
    return len(removed)
