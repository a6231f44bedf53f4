"""The browser terminal: xterm.js over flask-sock to a PTY on an SSH channel.

Flow-controlled, resumable (ring buffer + grace period), recorded (asciicast v2),
shareable read-only, command lines logged. See docs/terminal.md.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


def register(app) -> None:
    from portal.terminal import (
        api,
        cli,
        events,  # noqa: F401 - connects its signal receivers
        relay,
        relay_owner,
        views,
        watch,  # noqa: F401 - adds the watch route to ws.bp
        ws,
    )
    from portal.terminal.registry import Registry

    registry = Registry(app)
    # The relay (a re-attach served by another process) hooks into the registry.
    registry.control_ops["relay"] = relay_owner.on_request
    registry.shutdown_hooks.append(relay.stop_all)
    app.extensions["portal_terminal"] = registry
    app.register_blueprint(api.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(ws.bp)
    cli.init_app(app)

    _on_start(app)
    if not app.testing:
        _install_sigterm(registry)


def on_serve(app) -> None:
    """The terminal server's worker starts (portal/gunicorn_conf.py): without Redis, live
    rows naming another host are closed too (see close_ghosts). The app's start already
    closed the rest and pruned the recordings."""
    _on_start(app, other_hosts=True)


def _on_start(app, other_hosts: bool = False) -> None:
    """No ghosts: sessions whose process is gone are closed; old recordings pruned (once,
    at the app's start)."""
    from portal.extensions import db
    from portal.terminal import recordings, services

    with app.app_context():
        try:
            with db.unit_of_work():
                n = services.close_ghosts("server restarted", other_hosts=other_hosts)
                if not other_hosts:
                    recordings.prune_recordings()
            if n:
                log.info("closed %d terminal session(s) left open by a stopped server", n)
        except Exception as exc:  # the schema may not exist yet (flask db upgrade)
            log.debug("terminal start-up cleanup skipped: %s", exc)
        finally:
            db.session.remove()


def _install_sigterm(registry) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # pragma: no cover
        return

    def handler(signum, frame):
        # Close sessions off the signal frame (it may interrupt a lock holder), then let the
        # server (gunicorn's worker) run its own graceful shutdown.
        threading.Thread(
            target=registry.shutdown, args=("the server is restarting",), daemon=False
        ).start()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise SystemExit(143)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # pragma: no cover - not the main thread after all
        pass
