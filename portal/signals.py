"""Cross-feature events, as blinker signals.

A service that changes something other features care about sends one of these (with the
Flask app as sender, inside its app context); the features that care connect receivers in
their own `events.py`. So no feature calls into another's internals, and none keeps a list
of hooks. A receiver that fails is logged and the others still run: the action that sent
the signal has happened, and its transaction is the request's to commit.

    from portal import signals
    signals.send(signals.machine_deleted, machine_id=machine.id, actor=user)
"""

from __future__ import annotations

import logging

from blinker import Namespace
from flask import current_app

from portal.extensions import db

log = logging.getLogger(__name__)
_events = Namespace()

#: machine_id, user_id (whose access ended), actor
access_revoked = _events.signal("access-revoked")
#: machine_id, actor
machine_deleted = _events.signal("machine-deleted")
#: user, actor
user_deactivated = _events.signal("user-deactivated")
#: user (a global admin made a user), actor
user_demoted = _events.signal("user-demoted")
#: user (every JWT, refresh token and browser session of theirs ended)
tokens_revoked = _events.signal("tokens-revoked")
#: session_id, user_id, machine_id, reason (a terminal session ended, by any path)
session_closed = _events.signal("session-closed")
#: user (whose factors changed or were used), action ("totp_enrolled", "totp_removed",
#: "passkey_added", "passkey_removed", "recovery_regenerated", "factors_reset", "used",
#: "failed", "step_up_ok", "step_up_failed"), method ("totp", "recovery", "passkey" or None),
#: actor (who did it; the user themself or an admin), details (dict, never a secret or code)
mfa_event = _events.signal("mfa-event")
#: user, machine, path, direction ("upload" | "download" | "zip"), size, sha256, duration_ms,
#: result ("ok" | a short error), details (dict)
file_transferred = _events.signal("file-transferred")
#: user, machine, action ("mkdir" | "rename" | "delete" | "chmod" | "edit"), path,
#: result ("ok" | a short error), details (dict: e.g. new path, mode)
file_changed = _events.signal("file-changed")
#: no arguments: the app's process is going away (gunicorn worker exit, tests' teardown)
app_shutdown = _events.signal("app-shutdown")

#: user, method ("password" | "oauth:<provider>"): a sign-in succeeded
signed_in = _events.signal("signed-in")
#: login (what was typed, or None), reason (short, e.g. "invalid login or password")
sign_in_failed = _events.signal("sign-in-failed")
#: user (signed out of this browser session)
signed_out = _events.signal("signed-out")
#: user, prefix (the new key's public prefix; never the key)
api_key_created = _events.signal("api-key-created")
#: user, prefix (the key that stopped working)
api_key_revoked = _events.signal("api-key-revoked")
#: user_id, family (a rotated refresh token was used again; its family is revoked)
refresh_reuse_detected = _events.signal("refresh-reuse-detected")
#: user (the new account), actor (None for self sign-up), how ("signup" | "admin" | "invite")
user_created = _events.signal("user-created")
#: email (or None), role, actor
user_invited = _events.signal("user-invited")
#: user, role (the new one), actor
user_role_changed = _events.signal("user-role-changed")
#: machine, actor
machine_created = _events.signal("machine-created")
#: machine, actor, fields (names of the fields that changed; never their secret values)
machine_updated = _events.signal("machine-updated")
#: machine, actor (the machine's host key was re-trusted)
host_key_trusted = _events.signal("host-key-trusted")
#: machine_id, user_id, role, actor
access_granted = _events.signal("access-granted")
#: session_id, user, machine_id (a terminal session was opened)
terminal_opened = _events.signal("terminal-opened")
#: session_id, actor (who closed it: the owner, an admin), reason
terminal_closed_by = _events.signal("terminal-closed-by")
#: session_id, actor, shared (True: a read-only link was made; False: it was withdrawn)
session_shared = _events.signal("session-shared")
#: session_id, user (who watches), machine_id
watch_started = _events.signal("watch-started")
#: session_id, user, download (bool)
recording_viewed = _events.signal("recording-viewed")
#: user, machine, command, source ("api" | "broadcast"), exit_status (None if it failed)
command_run = _events.signal("command-run")
#: invite_id, email (or None), actor (an unused invite was revoked)
invite_revoked = _events.signal("invite-revoked")
#: user, actor (an admin set a new password; every session and key of the user ended)
password_reset_by_admin = _events.signal("password-reset-by-admin")


def send(signal, app=None, **kwargs) -> None:
    """Call every receiver of `signal` for this app; one receiver's failure is logged and
    does not stop the others (or undo the action that sent it)."""
    sender = app if app is not None else current_app._get_current_object()
    for receiver in list(signal.receivers_for(sender)):
        try:
            receiver(sender, **kwargs)
        except Exception:
            log.exception("receiver of %s failed", signal.name)


def shutdown(app) -> None:
    """The app is going away: its features stop their threads and close live terminals, then
    its database connections are closed."""
    with app.app_context():
        send(app_shutdown, app=app)
        db.session.remove()
        db.engine.dispose()
