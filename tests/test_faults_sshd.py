"""The machine's sshd killed (SIGKILL, the daemon and every session process) under a live
terminal and under a running command: the client is told, the rows are closed, the
recording of what happened before is kept. (The failed command answers 502/504; the
request boundary rolls back on an error status, so it leaves no command-log row.)"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import requests

from tests.fixtures.sshd import _descendants
from tests.fixtures.terminal import Term, wait_for

pytestmark = pytest.mark.timeout(90)


def _kill_sshd(server) -> None:
    for pid in [server.pid, *_descendants(server.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.proc.wait(10)


def test_sshd_killed_mid_session_and_mid_command(
    app, live_server, make_sshd, make_user, sshd_machine, token_for, auth
):
    from portal.extensions import db
    from portal.terminal.models import TerminalSession

    server = make_sshd("killed")
    owner = make_user("sshdkilled")
    machine = sshd_machine(owner, server=server)
    ws = live_server.url.replace("http://", "ws://")
    t = Term(f"{ws}/api/terminal/{machine.agent_id}/ws?token={token_for(owner)}")
    sid = t.wait_control("ready")["session_id"]
    t.run("echo before$((20+22))", r"before42")

    answer: dict = {}

    def run_command():
        answer["r"] = requests.post(
            f"{live_server.url}/api/machines/{machine.agent_id}/command",
            json={"command": "echo started; sleep 30"},
            headers=auth(owner),
            timeout=60,
        )

    th = threading.Thread(target=run_command)
    th.start()
    assert wait_for(lambda: "sleep 30" in _ps(server), timeout=15), "the command did not start"
    _kill_sshd(server)

    th.join(60)
    r = answer["r"]
    assert r.status_code in (502, 504), r.text  # told, not a 500 or a hang
    assert r.json()["error"]
    msg = _ended(t)
    assert msg["type"] in ("exit", "error")
    t.close()

    def closed():
        with app.app_context():
            row = db.session.get(TerminalSession, sid)
            done = (row.status, row.close_reason, row.recording_path)
            db.session.remove()
            return done if done[0] == "closed" else None

    status, reason, recording = wait_for(closed, timeout=15)
    assert reason
    cast = Path(app.config["PORTAL_RECORDINGS_DIR"]) / recording
    assert b"before42" in cast.read_bytes()  # the recording is kept


def _ended(t: Term) -> dict:
    """The first exit or error frame the server sends as the terminal ends."""
    while True:
        for c in t.controls:
            if c.get("type") in ("exit", "error"):
                return c
        t.recv_one(20)


def _ps(server) -> str:
    out = []
    for pid in _descendants(server.pid):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return "\n".join(out)
