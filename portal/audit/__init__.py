"""The audit log: who did what, from where, with what result. See docs/audit.md.

Written only by the receivers in events.py (signals from the services that own the
actions); read by the /audit page and GET /api/audit; forwarded to a webhook and to syslog.
"""

from __future__ import annotations

import click


def register(app) -> None:
    from portal.audit import (
        api,
        cli,
        events,  # noqa: F401 - connects its signal receivers
        syslog,
        views,
    )
    from portal.audit.log import Writer
    from portal.audit.webhook import Deliverer, queue_events

    writer = Writer(app)
    deliverer = Deliverer(app)

    def _forward(session, rows):
        if queue_events(session, rows):
            writer.after_commit.append(deliverer.kick)

    writer.after_write.append(_forward)

    forwarder = syslog.from_config(app.config)
    if forwarder is not None:

        def _to_syslog(session, rows):
            events = [r.to_dict() for r in rows]  # read now; sent once they are committed
            writer.after_commit.append(lambda: forwarder.send(events))

        writer.after_write.append(_to_syslog)
    app.extensions["portal_audit_syslog"] = forwarder
    app.extensions["portal_audit"] = writer
    app.extensions["portal_audit_webhook"] = deliverer
    app.register_blueprint(api.bp)
    app.register_blueprint(views.bp)
    cli.init_app(app)
    if not app.testing and click.get_current_context(silent=True) is None:
        # Deliveries queued before a restart go out again; not from a `flask` command (on a
        # fresh install `flask db upgrade` builds the app before the tables exist).
        deliverer.kick()
