"""`flask machines probe [--loop]` (status probe worker) and `flask vault rotate|generate-key`."""

from __future__ import annotations

import time

import click
from flask.cli import AppGroup
from sqlalchemy import select

machines_cli = AppGroup("machines", help="Machines: status probe.")
vault_cli = AppGroup("vault", help="Encrypted SSH credentials (PORTAL_VAULT_KEY).")


def probe_once(timeout: float = 10.0) -> dict:
    """Connect to every enrolled machine in parallel; record online/offline/error, OS, last seen."""
    from portal import ssh
    from portal.db import utcnow
    from portal.errors import HostKeyError, PortalError
    from portal.extensions import db
    from portal.machines import commands
    from portal.machines.models import Machine

    s = db.session
    machines = list(s.scalars(select(Machine).where(Machine.status != "pending")))
    targets = commands.broadcast_targets(machines, None)
    by_id = {m.id: m for m in machines}
    counts = {"online": 0, "offline": 0, "error": 0}
    for mid, outcome in commands.run_parallel(targets, "uname -sr", int(timeout)):
        m = by_id[mid]
        if isinstance(outcome, PortalError):
            bad = isinstance(outcome, HostKeyError | ssh.AuthenticationFailed)
            m.status = "error" if bad else "offline"
            m.status_message = outcome.message[:500]
        else:
            m.status, m.status_message, m.last_seen_at = "online", None, utcnow()
            if outcome.exit_code == 0 and outcome.stdout.strip():
                m.os = outcome.stdout.strip()[:120]
        counts[m.status] += 1
    return counts


@machines_cli.command("probe")
@click.option("--loop", is_flag=True, help="Keep probing every --interval seconds.")
@click.option("--interval", default=60, show_default=True, help="Seconds between rounds.")
@click.option("--timeout", default=10.0, show_default=True, help="Per-machine timeout.")
def probe(loop: bool, interval: int, timeout: float):
    """Mark machines online/offline and record their OS and last-seen time."""
    from portal.extensions import db

    while True:
        started = time.monotonic()
        try:
            with db.unit_of_work():
                counts = probe_once(timeout)
            click.echo(
                f"probe: {counts['online']} online, {counts['offline']} offline, "
                f"{counts['error']} error"
            )
        except Exception as exc:  # a worker keeps going through a bad round
            click.echo(f"probe failed: {exc}", err=True)
            if not loop:
                raise SystemExit(1) from None
        finally:
            db.session.remove()
        if not loop:
            return
        time.sleep(max(1.0, interval - (time.monotonic() - started)))


@vault_cli.command("rotate")
def rotate():
    """Re-encrypt every stored credential with the first key of PORTAL_VAULT_KEY.

    Put the new key first and keep the old ones after it (comma-separated), run this,
    then drop the old keys."""
    from portal.accounts.models import TotpFactor
    from portal.audit.models import AuditWebhook
    from portal.extensions import db
    from portal.machines import vault
    from portal.machines.models import Machine

    # Every column the vault encrypts: one left out would be unreadable once the old key goes
    # (authenticator apps locked out, the webhook unsigned).
    encrypted = (
        (Machine, "secret_enc"),
        (Machine, "key_enc"),
        (TotpFactor, "secret_enc"),
        (AuditWebhook, "secret_enc"),
    )
    n = 0
    with db.unit_of_work():
        for model, attr in encrypted:
            column = getattr(model, attr)
            for row in db.session.scalars(select(model).where(column.is_not(None))):
                setattr(row, attr, vault.rotate(getattr(row, attr)))
                n += 1
    click.echo(f"re-encrypted {n} secret(s) with the first key")


@vault_cli.command("generate-key")
def generate_key():
    """Print a new Fernet key (for PORTAL_VAULT_KEY)."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


def init_app(app) -> None:
    app.cli.add_command(machines_cli)
    app.cli.add_command(vault_cli)
