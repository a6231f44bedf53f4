"""How file bytes travel: streamed through the machine's shell (`head`/`tail` for downloads,
`cat >>` for tus uploads) where it has one, over SFTP where it does not; a chatty login shell
never reaches the file; a download cancelled on the SFTP path leaves no thread dying behind.
Real sshd instances: one whose shell greets every command, one forced to SFTP only."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import secrets
import shutil
import tempfile
import zipfile

import pytest

pytestmark = pytest.mark.timeout(120)

TUS = {"Tus-Resumable": "1.0.0"}

GREETER = """#!/bin/sh
# A login shell that greets every command on stdout, as a chatty rc file does.
printf '%s\\n' "$SSH_ORIGINAL_COMMAND" >> {log}
case "$SSH_ORIGINAL_COMMAND" in
  internal-sftp|*sftp-server*) exec /usr/lib/openssh/sftp-server ;;
esac
printf 'Welcome to the greeter! Last login: never\\n'
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""


@pytest.fixture(scope="module")
def greeter_dir(sshd_user):
    folder = tempfile.mkdtemp(prefix="portal-greeter-")
    os.chmod(folder, 0o755)
    log = os.path.join(folder, "commands.log")
    with open(log, "w"):
        pass
    shutil.chown(log, sshd_user.username)
    script = os.path.join(folder, "greet.sh")
    with open(script, "w") as fh:
        fh.write(GREETER.format(log=log))
    os.chmod(script, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def greeter_sshd(make_sshd, greeter_dir):
    sftp_server = "/usr/lib/openssh/sftp-server"
    if not os.path.exists(sftp_server):
        pytest.skip(f"{sftp_server} is missing (openssh-sftp-server)")
    return make_sshd(
        "greeter",
        ForceCommand=os.path.join(greeter_dir, "greet.sh"),
        Subsystem=f"sftp {sftp_server}",
    )


RESTRICTED = """#!/bin/sh
# A restricted login shell (rbash): no redirections, so `cat >> file` cannot run.
case "$SSH_ORIGINAL_COMMAND" in
  internal-sftp|*sftp-server*) exec /usr/lib/openssh/sftp-server ;;
esac
exec /bin/rbash -c "$SSH_ORIGINAL_COMMAND"
"""


@pytest.fixture(scope="module")
def restricted_sshd(make_sshd, greeter_dir):
    if not os.path.exists("/bin/rbash"):
        pytest.skip("/bin/rbash is missing")
    script = os.path.join(greeter_dir, "restricted.sh")
    with open(script, "w") as fh:
        fh.write(RESTRICTED)
    os.chmod(script, 0o755)
    return make_sshd(
        "restricted", ForceCommand=script, Subsystem="sftp /usr/lib/openssh/sftp-server"
    )


@pytest.fixture(scope="module")
def sftp_only_sshd(make_sshd):
    return make_sshd("sftponly", ForceCommand="internal-sftp")


def _box(server, make_user, sshd_machine, auth, client):
    owner = make_user(f"owner-{server.name}")
    machine = sshd_machine(owner, server=server)
    headers = auth(owner)
    base = f"/api/machines/{machine.agent_id}/files"
    r = client.post(
        f"{base}/mkdir", json={"path": f"portal-streams-{secrets.token_hex(4)}"}, headers=headers
    )
    assert r.status_code == 201, r.json
    return machine, headers, base, r.json["path"]


def _tus_create(client, base, headers, folder, name, length) -> str:
    """A tus upload of `length` bytes named `name` in `folder`: its location."""
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"filename": name, "folder": folder}.items()
    )
    r = client.post(
        f"{base}/tus",
        headers={**headers, **TUS, "Upload-Length": str(length), "Upload-Metadata": meta},
    )
    assert r.status_code == 201, r.json
    return r.headers["Location"]


def _tus_patch(client, location, headers, offset, **body):
    """PATCH at `offset` with `data=` or `input_stream=`."""
    return client.patch(
        location,
        headers={
            **headers,
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        },
        **body,
    )


def _tus_upload(client, base, headers, folder, name, data, pieces=1):
    location = _tus_create(client, base, headers, folder, name, len(data))
    step = -(-len(data) // pieces)
    for offset in range(0, len(data), step):
        r = _tus_patch(client, location, headers, offset, data=data[offset : offset + step])
        assert r.status_code == 204, r.json
    return r


def _transfers(app, machine, direction):
    from sqlalchemy import select

    from portal.extensions import db
    from portal.files.models import FileTransfer

    with app.app_context():
        return db.session.scalars(
            select(FileTransfer)
            .where(FileTransfer.machine_id == machine.id, FileTransfer.direction == direction)
            .order_by(FileTransfer.id)
        ).all()


def _exercise(app, client, box):
    """Upload (one PATCH and three, and a small one), download whole, ranges (large and
    small), a tail range, an empty file and a zip: every byte as sent, and the recorded
    SHA-256 right."""
    machine, headers, base, folder = box
    data = secrets.token_bytes(3 * 1024 * 1024 + 17)
    _tus_upload(client, base, headers, folder, "one.bin", data)
    _tus_upload(client, base, headers, folder, "three.bin", data, pieces=3)
    _tus_upload(client, base, headers, folder, "small.bin", data[:5000])
    ups = _transfers(app, machine, "upload")
    assert [u.sha256 for u in ups[-3:]] == [
        hashlib.sha256(data).hexdigest(),
        hashlib.sha256(data).hexdigest(),
        hashlib.sha256(data[:5000]).hexdigest(),
    ]
    r = client.get(f"{base}/content?path={folder}/small.bin", headers=headers)
    assert r.data == data[:5000]
    for name in ("one.bin", "three.bin"):
        r = client.get(f"{base}/content?path={folder}/{name}", headers=headers)
        assert r.status_code == 200 and r.data == data
    for first, last in ((1000, 2_100_999), (1000, 70_999)):  # through the shell, over SFTP
        r = client.get(
            f"{base}/content?path={folder}/one.bin",
            headers={**headers, "Range": f"bytes={first}-{last}"},
        )
        assert r.status_code == 206 and r.data == data[first : last + 1]
    r = client.get(
        f"{base}/content?path={folder}/one.bin", headers={**headers, "Range": "bytes=-5"}
    )
    assert r.status_code == 206 and r.data == data[-5:]
    r = client.put(f"{base}/content?path={folder}/empty.txt", data=b"", headers=headers)
    assert r.status_code == 201, r.json
    r = client.get(f"{base}/content?path={folder}/empty.txt", headers=headers)
    assert r.status_code == 200 and r.data == b""
    downs = [t for t in _transfers(app, machine, "download") if t.path.endswith("/one.bin")]
    assert downs[0].sha256 == hashlib.sha256(data).hexdigest() and downs[0].result == "ok"
    r = client.get(f"{base}/zip?path={folder}", headers=headers)
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.data)) as zf:
        base_name = folder.rsplit("/", 1)[1]
        assert zf.read(f"{base_name}/three.bin") == data


def test_a_chatty_login_shell_never_reaches_the_file(
    app, client, make_user, sshd_machine, auth, greeter_sshd, greeter_dir
):
    box = _box(greeter_sshd, make_user, sshd_machine, auth, client)
    _exercise(app, client, box)
    with open(os.path.join(greeter_dir, "commands.log")) as fh:
        commands = fh.read()
    # the bytes went through the shell (the fast path), not SFTP reads and writes
    assert "head -c 3145745 -- " in commands
    assert "tail -c +1001 -- " in commands
    assert "exec cat >> " in commands
    client.post(f"{box[2]}/delete", json={"path": box[3]}, headers=box[1])


def test_a_restricted_shell_streams_downloads_and_uploads_over_sftp(
    app, client, make_user, sshd_machine, auth, restricted_sshd
):
    """rbash refuses `>>`: the check before the marker fails, so uploads go over SFTP (no
    half-started stream, no error), while downloads still stream through `head`."""
    box = _box(restricted_sshd, make_user, sshd_machine, auth, client)
    _exercise(app, client, box)
    client.post(f"{box[2]}/delete", json={"path": box[3]}, headers=box[1])


def test_an_sftp_only_machine_reads_and_writes_over_sftp(
    app, client, make_user, sshd_machine, auth, sftp_only_sshd
):
    box = _box(sftp_only_sshd, make_user, sshd_machine, auth, client)
    _exercise(app, client, box)
    client.post(f"{box[2]}/delete", json={"path": box[3]}, headers=box[1])


def test_a_download_cancelled_on_the_sftp_path_stops_cleanly(
    app, client, make_user, sshd_machine, auth, sftp_only_sshd, live_server
):
    """The reader stops after the first bytes, several times: each download is recorded as
    cancelled, and paramiko's read-ahead thread never dies on a closed channel (pytest fails
    a test on an unhandled thread exception)."""
    import requests

    from tests.fixtures.terminal import wait_for

    machine, headers, base, folder = _box(sftp_only_sshd, make_user, sshd_machine, auth, client)
    big = secrets.token_bytes(24 * 1024 * 1024)
    _tus_upload(client, base, headers, folder, "big.bin", big)
    url = f"{live_server.url}{base}/content?path={folder}/big.bin"
    for _ in range(3):
        r = requests.get(url, headers=headers, stream=True, timeout=30)
        assert r.status_code == 200
        assert next(r.iter_content(65536))
        r.close()
    assert wait_for(
        lambda: sum(t.result == "cancelled" for t in _transfers(app, machine, "download")) == 3,
        timeout=30,
        interval=0.2,
    )
    client.post(f"{base}/delete", json={"path": folder}, headers=headers)


@pytest.fixture
def full_disk(sshd_user):
    """A 2 MiB tmpfs in the test user's home, owned by them: a machine whose disk fills."""
    import subprocess

    folder = os.path.join(sshd_user.home, f"full-disk-{secrets.token_hex(4)}")
    os.mkdir(folder)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", folder], capture_output=True
    )
    if mounted.returncode:
        os.rmdir(folder)
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    shutil.chown(folder, sshd_user.username)
    yield folder
    subprocess.run(["umount", folder], check=False)
    os.rmdir(folder)


@pytest.mark.parametrize("how", ["shell", "sftp"])
def test_a_full_disk_is_507_and_leaves_nothing_under_the_name(
    how, app, client, make_user, sshd_machine, auth, sshd, sftp_only_sshd, full_disk
):
    """A tus upload bigger than the machine's free space (through `cat >>`, and over SFTP
    where there is no shell) and a plain PUT: 507 with the API's error, no file under the
    real name, the upload's offset no further than what the disk took."""
    server = sshd if how == "shell" else sftp_only_sshd
    owner = make_user(f"owner-full-{how}")
    machine = sshd_machine(owner, server=server)
    headers = auth(owner)
    base = f"/api/machines/{machine.agent_id}/files"
    data = secrets.token_bytes(5 * 1024 * 1024)
    location = _tus_create(client, base, headers, full_disk, "big.bin", len(data))
    r = _tus_patch(client, location, headers, 0, data=data)
    assert r.status_code == 507, (r.status_code, r.get_data(as_text=True))
    assert "full" in r.json["error"]
    assert "big.bin" not in os.listdir(full_disk)
    offset = int(client.head(location, headers={**headers, **TUS}).headers["Upload-Offset"])
    assert offset <= 2 * 1024 * 1024
    assert client.delete(location, headers={**headers, **TUS}).status_code == 204
    assert os.listdir(full_disk) == []  # the temporary went with the upload

    r = client.put(f"{base}/content?path={full_disk}/put.bin", data=data, headers=headers)
    assert r.status_code == 507, (r.status_code, r.get_data(as_text=True))
    assert os.listdir(full_disk) == []  # nor a half-written temporary


class _PausingBody(io.RawIOBase):
    """A request body that calls `at(first)` once `first` bytes have been read."""

    def __init__(self, data: bytes, first: int, at):
        self._data, self._first, self._at, self._pos = data, first, at, 0

    def readable(self):
        return True

    def seekable(self):  # the test client measures the body by seeking to its end and back
        return True

    def seek(self, offset, whence=0):
        self._pos = {0: 0, 1: self._pos, 2: len(self._data)}[whence] + offset
        return self._pos

    def tell(self):
        return self._pos

    def readinto(self, buf):
        if self._at is not None and self._pos >= self._first:
            self._at()
            self._at = None
        n = min(len(buf), len(self._data) - self._pos)
        if self._pos < self._first:
            n = min(n, self._first - self._pos)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_a_stalled_machine_ends_the_upload_with_504_not_a_hang(
    app, client, make_user, sshd_machine, auth, sshd, sshd_user, monkeypatch
):
    """`cat` on the machine stops taking bytes mid-upload (SIGSTOP): after the stall timeout
    the PATCH answers 504 instead of holding its worker forever; the upload then resumes
    from its saved offset and lands with the right SHA-256."""
    from portal.files import remote

    monkeypatch.setattr(remote, "STALL_TIMEOUT", 2.0)
    _machine, headers, base, folder = _box(sshd, make_user, sshd_machine, auth, client)
    try:
        _stall_and_resume(client, base, headers, folder, sshd_user)
    finally:  # the machine is this host: the folder goes even when the test fails
        shutil.rmtree(folder, ignore_errors=True)


def _stall_and_resume(client, base, headers, folder, sshd_user):
    import signal
    import subprocess

    data = secrets.token_bytes(24 * 1024 * 1024)
    location = _tus_create(client, base, headers, folder, "stall.bin", len(data))
    stopped: list[int] = []

    def stop_cat():  # the machine stalls: its `cat` stops reading
        found = subprocess.run(
            ["pgrep", "-u", sshd_user.username, "-x", "cat"], capture_output=True, text=True
        )
        for pid in (int(p) for p in found.stdout.split()):
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    try:
        body = _PausingBody(data, 4 * 1024 * 1024, stop_cat)
        r = _tus_patch(client, location, headers, 0, input_stream=body)
    finally:
        for pid in stopped:  # the stalled process dies (as on a machine that recovered)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert stopped, "no cat process took the upload"
    assert r.status_code == 504, (r.status_code, r.get_data(as_text=True))
    assert "did not answer" in r.json["error"]

    offset = int(client.head(location, headers={**headers, **TUS}).headers["Upload-Offset"])
    assert offset <= 4 * 1024 * 1024
    r = _tus_patch(client, location, headers, offset, data=data[offset:])
    assert r.status_code == 204, r.get_data(as_text=True)
    got = client.get(f"{base}/content?path={folder}/stall.bin", headers=headers).data
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
