"""`flask db ...` and `flask users ...`: headless installs and operations."""

from __future__ import annotations

import getpass
import os
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from portal import ROOT

db_cli = AppGroup("db", help="Database schema (Alembic migrations).")
users_cli = AppGroup("users", help="Manage users without the web UI.")


def alembic_config(url: str | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", os.path.join(ROOT, "migrations"))
    cfg.set_main_option(
        "sqlalchemy.url", (url or current_app.config["DATABASE_URL"]).replace("%", "%%")
    )
    return cfg


def upgrade_database(url: str | None = None, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str):
    """Apply migrations up to REVISION (default: every head)."""
    upgrade_database(revision=revision)
    click.echo("database is at " + revision)


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str):
    """Revert migrations down to REVISION."""
    from alembic import command

    command.downgrade(alembic_config(), revision)


@db_cli.command("current")
def db_current():
    """Show the applied revision."""
    from alembic import command

    command.current(alembic_config())


@users_cli.command("create-admin")
@click.option("--email", required=True)
@click.option("--username", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_admin(email: str, username: str, password_stdin: bool):
    """Create an admin account (for headless installs)."""
    from portal.accounts import users
    from portal.errors import PortalError
    from portal.extensions import db

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
    try:
        with db.unit_of_work():
            user = users.create_user(
                email=email, username=username, password=password, role="admin", check_open=False
            )
    except PortalError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"created admin {user.username} (id {user.id})")


@users_cli.command("set-role")
@click.argument("login")
@click.argument("role", type=click.Choice(["admin", "user"]))
def set_role(login: str, role: str):
    """Make LOGIN an admin or a plain user."""
    from portal.accounts import users
    from portal.extensions import db

    with db.unit_of_work():
        user = users.find_user(login)
        if user is None:
            raise click.ClickException("no such user")
        user.role = role
    click.echo(f"{user.username} is now {role}")


def init_app(app) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(users_cli)


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
@click.option("--rev-id", default=None, help="Revision id, e.g. 0002_machines.")
def db_revision(message: str, rev_id: str | None):
    """Autogenerate a migration from the models (review it before committing)."""
    from alembic import command

    command.revision(alembic_config(), message=message, autogenerate=True, rev_id=rev_id)
