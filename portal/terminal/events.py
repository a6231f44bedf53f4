"""What the terminal does when other features' events happen (portal/signals.py): live
terminals end when access to their machine (or a jump host on the way) is revoked, the
machine is deleted, or the user is deactivated, demoted or signed out everywhere."""

from __future__ import annotations

from portal import signals
from portal.machines import access as machine_access
from portal.terminal import access, services

REVOKED = "your access to this machine was revoked"


def _registry(app):
    return app.extensions["portal_terminal"]


@signals.access_revoked.connect
def on_access_revoked(app, *, user_id, machine_id, **_):
    _registry(app).close_matching(user_id=user_id, machine_id=machine_id, reason=REVOKED)


@signals.machine_deleted.connect
def on_machine_deleted(app, *, machine_id, **_):
    _registry(app).close_matching(machine_id=machine_id, reason="the machine was deleted")


@signals.user_deactivated.connect
def on_user_deactivated(app, *, user, **_):
    _registry(app).close_matching(user_id=user.id, reason="the account was deactivated")


@signals.user_demoted.connect
def on_user_demoted(app, *, user, **_):
    """A global admin made a user keeps only the terminals their machine roles allow."""
    registry = _registry(app)
    opening = registry.pending_machine_ids(user.id)
    for machine_id in set(services.live_machine_ids(user.id)) | opening:
        machine = access.machine_by_id(machine_id)
        if not machine_access.can(user, machine, "open_terminal"):
            registry.close_matching(user_id=user.id, machine_id=machine_id, reason=REVOKED)


@signals.tokens_revoked.connect
def on_tokens_revoked(app, *, user, **_):
    """Logout-all and password changes end every credential, live terminals included."""
    reason = "you were signed out everywhere" if user.is_active else "the account was deactivated"
    _registry(app).close_matching(user_id=user.id, reason=reason)


@signals.app_shutdown.connect
def on_shutdown(app, **_):
    _registry(app).shutdown()
