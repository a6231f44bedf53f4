"""flask audit prune: retention (the only path that deletes audit events)."""

from __future__ import annotations

import click
from flask import current_app

from portal.audit import services
from portal.errors import PortalError
from portal.extensions import db


def init_app(app) -> None:
    @app.cli.group("audit")
    def audit():
        """The audit log."""

    @audit.command("prune")
    @click.option(
        "--days", type=int, default=None, help="keep this many days (PORTAL_AUDIT_RETENTION_DAYS)"
    )
    def prune(days):
        """Delete audit events older than the retention period."""
        if days is None:
            days = int(current_app.config.get("PORTAL_AUDIT_RETENTION_DAYS", 365))
        try:
            with db.unit_of_work():
                n = services.prune(days)
        except PortalError as err:
            raise click.ClickException(err.message) from None
        click.echo(f"deleted {n} audit events older than {days} days")
