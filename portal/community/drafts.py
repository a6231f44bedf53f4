"""Ask the community: a prefilled, unsaved issue drafted from a command log the user may see."""

from __future__ import annotations

import re

from portal.accounts.models import User
from portal.community.issues import BODY_MAX, TITLE_MAX, get_row
from portal.errors import NotFound
from portal.extensions import db
from portal.machines import access as machine_access
from portal.machines.models import CommandLog, Machine


def _fence(text_: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text_)), default=0)
    return "`" * max(3, longest + 1)


def draft_from_log(user: User, log_id) -> dict:
    """A prefilled, unsaved issue from a command log the user may see (NotFound otherwise)."""
    log = get_row(CommandLog, log_id, "command log not found")
    machine = db.session.get(Machine, log.machine_id)
    if machine is None:
        raise NotFound("command log not found")
    machine_access.require(user, machine, "view_logs")  # NotFound if not visible
    d = log.to_dict()
    command = (d.get("command") or "").strip()
    exit_code = d.get("exit_code")
    output = d.get("output") or ""
    lines = output.rstrip("\n").splitlines()
    excerpt = "\n".join(lines[-40:])[-4000:]
    short = command.splitlines()[0] if command else "a command"
    if len(short) > 90:
        short = short[:87] + "..."
    title = f"{short} fails" + (f" with exit code {exit_code}" if exit_code is not None else "")
    cmd_fence = _fence(command)
    out_fence = _fence(excerpt)
    body = (
        "I ran this command and it did not work:\n\n"
        f"{cmd_fence}console\n$ {command}\n{cmd_fence}\n\n"
        f"Exit code: **{exit_code if exit_code is not None else 'unknown'}**\n\n"
        "Output (last lines):\n\n"
        f"{out_fence}\n{excerpt}\n{out_fence}\n\n"
        "What I expected / what I tried:\n\n"
    )
    return {"title": title[:TITLE_MAX], "body": body[:BODY_MAX], "tags": ""}
