"""The socket handoff between workers (portal/terminal/handoff.py): who may hand over."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid

import pytest

from tests.test_terminal_helpers import wait_for

# What another process would run to hand a connection over (stdlib only: it runs as another
# user, who may not be able to read this checkout).
_HAND_OVER = r"""
import hashlib, json, socket, struct, sys
name = "\0portal-terminal-" + hashlib.sha256(sys.argv[1].encode()).hexdigest()[:40]
a, b = socket.socketpair()
payload = json.dumps({"user_id": 1}).encode()
try:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as us:
        us.settimeout(3)
        us.connect(name)
        socket.send_fds(us, [struct.pack("!I", len(payload)) + payload], [a.fileno()])
        print("taken" if us.recv(1) == b"1" else "refused")
except OSError as exc:
    print("refused", exc)
"""


@pytest.fixture
def listen():
    """listen(server_id) -> served: a handoff listener under that id that records what it
    is handed (closed after the test)."""
    from portal.terminal import handoff

    made: list = []

    def _listen(server_id: str) -> list:
        served: list = []

        def serve(sock, info):
            served.append(info)
            sock.close()

        made.append(handoff.Listener(server_id, serve))
        return served

    yield _listen
    for lst in made:
        lst.close()


@pytest.fixture
def listener(listen):
    server_id = f"test-handoff-{uuid.uuid4().hex}"
    return server_id, listen(server_id)


@pytest.fixture
def own_listener(listen):
    """A listener under this process's own server id (as a worker's is)."""
    from portal.terminal import handoff
    from portal.terminal.registry import make_server_id

    handoff.stop_listening()  # an app of this test run may hold the process's listener
    server_id = make_server_id()
    return server_id, listen(server_id)


def test_a_name_squatted_by_another_process_is_sent_nothing(listen):
    """A listener holds the handoff name of a worker whose pid is not its own (what another
    local user could do by binding a worker's name before it does): nothing is sent to it."""
    from portal.terminal import handoff
    from portal.terminal.registry import server_id_for

    worker = subprocess.Popen(["sleep", "60"])  # the "worker" the name belongs to
    a, b = socket.socketpair()
    try:
        server_id = server_id_for(worker.pid)
        served = listen(server_id)  # this process squats that worker's name
        assert handoff.hand_over(server_id, a.fileno(), {"user_id": 7}) == "unreachable"
        assert served == []
    finally:
        worker.kill()
        worker.wait()
        a.close()
        b.close()


def test_a_worker_of_the_same_user_hands_a_connection_over(own_listener):
    from portal.terminal import handoff

    server_id, served = own_listener
    a, b = socket.socketpair()
    try:
        assert handoff.hand_over(server_id, a.fileno(), {"user_id": 7, "args": {"cols": "90"}}) == (
            "taken"
        )
        assert wait_for(lambda: served, timeout=5)
        assert served == [{"user_id": 7, "args": {"cols": "90"}}]
    finally:
        a.close()
        b.close()


def test_nobody_can_hand_over_to_a_worker_that_is_not_there():
    from portal.terminal import handoff

    a, b = socket.socketpair()
    try:
        gone = f"{socket.gethostname()}:999999:1"
        assert handoff.hand_over(gone, a.fileno(), {"user_id": 1}) == "unreachable"
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the client as another user")
def test_a_process_of_another_user_cannot_hand_over(listener):
    server_id, served = listener
    python = shutil.which("python3", path="/usr/bin:/bin")  # one that nobody may run
    if python is None:
        pytest.skip("no system python3 for the other user's client")
    out = subprocess.run(
        [python, "-I", "-c", _HAND_OVER, server_id],
        user="nobody",
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.startswith("refused"), (out.stdout, out.stderr)
    assert served == []
    # The same script as this user is taken: the refusal was about the user, nothing else.
    ok = subprocess.run(
        [python, "-I", "-c", _HAND_OVER, server_id], capture_output=True, text=True, timeout=30
    )
    assert ok.stdout.startswith("taken"), (ok.stdout, ok.stderr)
    assert wait_for(lambda: served, timeout=5) and served == [{"user_id": 1}]
