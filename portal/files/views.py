"""HTML face of files: the files page (the terminal drawer on its own, viewers included) and
the transfer records shown on the machine's page."""

from __future__ import annotations

from flask import Blueprint, g, render_template

from portal.files import services
from portal.machines import inventory
from portal.web import login_required

bp = Blueprint("files", __name__)


@bp.get("/machines/<agent_id>/transfers")
@login_required
def transfers(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    rows = services.transfers(g.user, machine)
    return render_template("files/_transfers.html", m=machine, transfers=rows)


@bp.get("/machines/<agent_id>/files")
@login_required
def page(agent_id: str):
    machine = inventory.get_machine(g.user, agent_id)
    role = services.page_role(g.user, machine)
    return render_template("files/page.html", machine=machine, role=role)
