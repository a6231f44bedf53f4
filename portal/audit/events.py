"""The only writer of the audit log: one receiver per signal of portal/signals.py."""

from __future__ import annotations

from portal import signals
from portal.audit.log import record


def _user_target(user) -> dict:
    return {"target_type": "user", "target_id": user.id, "target_name": user.username}


def _machine_target(machine) -> dict:
    return {
        "target_type": "machine",
        "target_id": machine.id,
        "target_name": machine.name,
        "machine_id": machine.id,
    }


@signals.signed_in.connect
def on_signed_in(app, *, user, method="password", **_):
    record(app, "sign_in", actor=user, **_user_target(user), details={"method": method})


@signals.sign_in_failed.connect
def on_sign_in_failed(app, *, login=None, reason="", **_):
    name = login[:120] if isinstance(login, str) else None
    record(
        app,
        "sign_in",
        actor_label="anonymous",
        target_type="user",
        target_name=name,
        result="failed",
        details={"reason": reason},
    )


@signals.signed_out.connect
def on_signed_out(app, *, user, **_):
    record(app, "sign_out", actor=user, **_user_target(user))


@signals.tokens_revoked.connect
def on_tokens_revoked(app, *, user, **_):
    record(app, "tokens_revoked", actor=user, **_user_target(user))


@signals.api_key_created.connect
def on_api_key_created(app, *, user, prefix, **_):
    record(app, "api_key_created", actor=user, **_user_target(user), details={"prefix": prefix})


@signals.api_key_revoked.connect
def on_api_key_revoked(app, *, user, prefix=None, **_):
    record(app, "api_key_revoked", actor=user, **_user_target(user), details={"prefix": prefix})


@signals.refresh_reuse_detected.connect
def on_refresh_reuse(app, *, user_id, family=None, **_):
    record(
        app,
        "refresh_reuse_detected",
        actor_label="system",
        target_type="user",
        target_id=user_id,
        result="denied",
        details={"family": (family or "")[:12]},
    )


@signals.user_created.connect
def on_user_created(app, *, user, actor=None, how="admin", **_):
    record(app, "user_created", actor=actor or user, **_user_target(user), details={"how": how})


@signals.user_invited.connect
def on_user_invited(app, *, email=None, role="user", actor=None, **_):
    record(
        app,
        "user_invited",
        actor=actor,
        target_type="invite",
        target_name=email,
        details={"role": role},
    )


@signals.invite_revoked.connect
def on_invite_revoked(app, *, invite_id, email=None, actor=None, **_):
    record(
        app,
        "invite_revoked",
        actor=actor,
        target_type="invite",
        target_id=invite_id,
        target_name=email,
    )


@signals.password_reset_by_admin.connect
def on_password_reset_by_admin(app, *, user, actor=None, **_):
    record(app, "password_reset_by_admin", actor=actor, **_user_target(user))


@signals.user_role_changed.connect
def on_user_role_changed(app, *, user, role, actor=None, **_):
    record(app, "user_role_changed", actor=actor, **_user_target(user), details={"role": role})


@signals.user_deactivated.connect
def on_user_deactivated(app, *, user, actor=None, **_):
    record(app, "user_deactivated", actor=actor, **_user_target(user))


@signals.machine_created.connect
def on_machine_created(app, *, machine, actor=None, **_):
    record(app, "machine_created", actor=actor, **_machine_target(machine))


@signals.machine_updated.connect
def on_machine_updated(app, *, machine, actor=None, fields=(), **_):
    fields = [str(f)[:64] for f in list(fields)[:30]]
    record(
        app,
        "machine_updated",
        actor=actor,
        **_machine_target(machine),
        details={"fields": sorted(fields)},
    )


@signals.machine_deleted.connect
def on_machine_deleted(app, *, machine_id, actor=None, name=None, **_):
    record(
        app,
        "machine_deleted",
        actor=actor,
        target_type="machine",
        target_id=machine_id,
        target_name=name,
        machine_id=machine_id,
    )


@signals.host_key_trusted.connect
def on_host_key_trusted(app, *, machine, actor=None, **_):
    record(app, "host_key_trusted", actor=actor, **_machine_target(machine))


@signals.access_granted.connect
def on_access_granted(app, *, machine_id, user_id, role=None, actor=None, **_):
    record(
        app,
        "access_granted",
        actor=actor,
        target_type="user",
        target_id=user_id,
        machine_id=machine_id,
        details={"role": role, "machine_id": machine_id},
    )


@signals.access_revoked.connect
def on_access_revoked(app, *, machine_id, user_id, actor=None, **_):
    record(
        app,
        "access_revoked",
        actor=actor,
        target_type="user",
        target_id=user_id,
        machine_id=machine_id,
        details={"machine_id": machine_id},
    )


@signals.terminal_opened.connect
def on_terminal_opened(app, *, session_id, user, machine_id=None, **_):
    record(
        app,
        "terminal_opened",
        actor=user,
        target_type="session",
        target_id=session_id,
        machine_id=machine_id,
    )


@signals.session_closed.connect
def on_session_closed(app, *, session_id, user_id=None, machine_id=None, reason=None, **_):
    record(
        app,
        "terminal_closed",
        actor_label="system",
        target_type="session",
        target_id=session_id,
        machine_id=machine_id,
        details={"reason": reason, "user_id": user_id},
    )


@signals.terminal_closed_by.connect
def on_terminal_closed_by(app, *, session_id, actor, reason=None, machine_id=None, **_):
    record(
        app,
        "terminal_close_requested",
        actor=actor,
        target_type="session",
        target_id=session_id,
        machine_id=machine_id,
        details={"reason": reason},
    )


@signals.session_shared.connect
def on_session_shared(app, *, session_id, actor, shared=True, **_):
    record(
        app,
        "session_shared" if shared else "session_unshared",
        actor=actor,
        target_type="session",
        target_id=session_id,
    )


@signals.watch_started.connect
def on_watch_started(app, *, session_id, user=None, machine_id=None, **_):
    record(
        app,
        "watch_started",
        actor=user,
        actor_label=None if user else "share link",
        target_type="session",
        target_id=session_id,
        machine_id=machine_id,
    )


@signals.recording_viewed.connect
def on_recording_viewed(app, *, session_id, user, download=False, **_):
    record(
        app,
        "recording_downloaded" if download else "recording_viewed",
        actor=user,
        target_type="session",
        target_id=session_id,
    )


@signals.command_run.connect
def on_command_run(app, *, user, machine, command, source="api", exit_status=None, **_):
    record(
        app,
        "command_run",
        actor=user,
        **_machine_target(machine),
        result="ok" if exit_status == 0 else ("failed" if exit_status is None else "nonzero"),
        details={"command": command[:1000], "source": source, "exit_status": exit_status},
    )


@signals.mfa_event.connect
def on_mfa_event(app, *, user, action, method=None, actor=None, details=None, **_):
    failed = action in ("failed", "step_up_failed")
    record(
        app,
        f"mfa_{action}",
        actor=actor or user,
        **_user_target(user),
        result="failed" if failed else "ok",
        details={**(details or {}), "method": method},
    )


@signals.file_transferred.connect
def on_file_transferred(app, *, user, machine, path, direction, result="ok", **kw):
    record(
        app,
        "file_transferred",
        actor=user,
        **_machine_target(machine),
        result=result,
        details={
            **(kw.get("details") or {}),
            "path": path,
            "direction": direction,
            "size": kw.get("size"),
            "sha256": kw.get("sha256"),
            "duration_ms": kw.get("duration_ms"),
        },
    )


@signals.file_changed.connect
def on_file_changed(app, *, user, machine, action, path, result="ok", details=None, **_):
    record(
        app,
        "file_changed",
        actor=user,
        **_machine_target(machine),
        result=result,
        details={**(details or {}), "action": action, "path": path},
    )


@signals.app_shutdown.connect
def on_shutdown(app, **_):
    app.extensions["portal_audit"].stop()
    app.extensions["portal_audit_webhook"].stop()
    if app.extensions.get("portal_audit_syslog") is not None:
        app.extensions["portal_audit_syslog"].close()
