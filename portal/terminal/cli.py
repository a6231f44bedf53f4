"""`flask terminal ...`: maintenance commands."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from portal.extensions import db
from portal.terminal import recordings, services

terminal_cli = AppGroup("terminal", help="Terminal sessions and recordings.")


@terminal_cli.command("prune-recordings")
@click.option("--days", type=int, default=None, help="Override PORTAL_RECORDING_RETENTION_DAYS.")
def prune_recordings(days):
    """Delete recordings older than the retention period."""
    with db.unit_of_work():
        n = recordings.prune_recordings(days)
    click.echo(f"removed {n} recording(s)")


@terminal_cli.command("close-ghosts")
@click.option(
    "--other-hosts",
    is_flag=True,
    help="Without REDIS_URL, also close live rows that name another host (no terminal server"
    " of another host shares this database).",
)
def close_ghosts(other_hosts):
    """Mark sessions left open by a dead server process as closed."""
    with db.unit_of_work():
        n = services.close_ghosts(other_hosts=other_hosts)
    click.echo(f"closed {n} session(s)")


def init_app(app) -> None:
    app.cli.add_command(terminal_cli)
