"""`flask files expire`: forget idle resumable uploads and remove their temporaries."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from portal.extensions import db
from portal.files import tus

files_cli = AppGroup("files", help="Files on machines.")


@files_cli.command("expire")
def expire_command() -> None:
    """Remove resumable uploads idle longer than PORTAL_FILES_UPLOAD_EXPIRY."""
    n = tus.expire()
    db.session.commit()
    click.echo(f"expired {n} upload(s)")


def init_app(app) -> None:
    app.cli.add_command(files_cli)
