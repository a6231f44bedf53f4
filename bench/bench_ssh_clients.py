#!/usr/bin/env python3
"""Where a keystroke's time goes in the SSH client: OpenSSH vs paramiko vs libssh2, one sshd.

    sudo .venv/bin/python bench/bench_ssh_clients.py [--samples 600] [--no-write]

The terminal's echo target (raw ssh + 0.2 ms) is measured end to end by
bench/bench_terminal.py. This one takes the WebSocket hop away and times one keystroke's
round trip through the SSH client alone, interleaved, at an idle bash prompt:

  - raw `ssh -tt` on a PTY (as in bench_terminal.py);
  - paramiko as the portal uses it (portal.ssh connect path, AES-GCM, the keystroke sent by
    portal.ssh.chansend.sendall): the echo is read by paramiko's transport thread (one thread
    hand-off, as in the portal);
  - libssh2 through ssh2-python (C), blocking write and read in one thread, in its own
    process and venv (/tmp/ssh2-venv, created on first run with `pip install ssh2-python`).

It answers "how much of the portal's echo time is paramiko's Python work" with a number.
Writes its table to docs/benchmarks.md between <!-- sshclients:start/end -->.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.terminal.clients import RawSsh, read_until  # noqa: E402
from tests.fixtures.sshd import SshdServer, ensure_test_user  # noqa: E402

SSH2_VENV = Path("/tmp/ssh2-venv")
SSH2_PIN = "ssh2-python==1.2.0.post1"
START, END = "<!-- sshclients:start -->", "<!-- sshclients:end -->"

# The libssh2 client: reads a key (hex) per line on stdin, answers the round trip in seconds.
LIBSSH2_CLIENT = r"""
import socket, sys, time
from ssh2.session import LIBSSH2_METHOD_CRYPT_CS, Session
host, port, user, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sock = socket.create_connection((host, port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s = Session()
s.handshake(sock)
s.userauth_publickey_fromfile(user, key)
ch = s.open_session()
ch.pty("xterm-256color")
ch.shell()
ch.write(b"export PS1='$ '; echo READY$((1+1))\r")
buf = b""
while b"READY2" not in buf or not buf.endswith(b"$ "):
    buf += ch.read()[1]
print("ready", s.methods(LIBSSH2_METHOD_CRYPT_CS), flush=True)
for line in sys.stdin:
    k = bytes.fromhex(line.strip())
    t0 = time.perf_counter()
    ch.write(k)
    ch.read()
    print(f"{time.perf_counter() - t0:.9f}", flush=True)
"""


def ensure_ssh2() -> Path:
    py = SSH2_VENV / "bin/python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SSH2_VENV)], check=True)
        subprocess.run([str(SSH2_VENV / "bin/pip"), "install", "-q", SSH2_PIN], check=True)
    return py


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=600)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from portal.ssh.chansend import sendall as send_data
    from portal.ssh.pool import ConnectionPool
    from portal.ssh.shell import open_shell

    py = ensure_ssh2()
    sshd = SshdServer(ensure_test_user(), name="sshclients").start()
    work = Path(tempfile.mkdtemp(prefix="bench-sshclients-"))
    known = work / "known_hosts"
    known.write_text("\n".join(sshd.known_hosts_lines()) + "\n")
    child = subprocess.Popen(
        [py, "-c", LIBSSH2_CLIENT, sshd.host, str(sshd.port), sshd.username,
         str(sshd.client_key_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    pool = ConnectionPool()
    try:
        libssh2_cipher = child.stdout.readline().split(" ", 1)[1].strip()
        channel = open_shell(sshd.target(), 120, 40, pool=pool)
        paramiko_cipher = channel.get_transport().local_cipher
        channel.sendall(b"export PS1='$ '; echo READY$((1+1))\r")
        buf = b""
        while b"READY2" not in buf or not buf.endswith(b"$ "):
            buf += channel.recv(65536)
        raw = RawSsh(sshd, str(sshd.client_key_path), str(known))
        read_until(raw, b"$ ", 30)
        raw.send(b"export PS1='$ '; echo READY$((1+1))\r")
        read_until(raw, b"READY2", 30)
        time.sleep(0.3)
        while raw.recv(0.05):
            pass
        while channel.recv_ready():
            channel.recv(65536)
        times: dict[str, list[float]] = {"raw": [], "paramiko": [], "libssh2": []}
        for i in range(args.samples):
            key = b"a" if i % 2 == 0 else b"\x7f"
            t0 = time.perf_counter()
            raw.send(key)
            raw.recv(5)
            times["raw"].append(time.perf_counter() - t0)
            time.sleep(0.006)
            while raw.recv(0.002):
                pass
            t0 = time.perf_counter()
            send_data(channel, key)  # the portal's keystroke path
            channel.recv(4096)
            times["paramiko"].append(time.perf_counter() - t0)
            time.sleep(0.006)
            while channel.recv_ready():
                channel.recv(65536)
            child.stdin.write(key.hex() + "\n")
            child.stdin.flush()
            times["libssh2"].append(float(child.stdout.readline()))
            time.sleep(0.006)
        raw.close()
        channel.close()
    finally:
        child.kill()
        sshd.stop()

    rows = [
        ("raw `ssh -tt` (OpenSSH, through a PTY)", "raw", "OpenSSH default"),
        (
            "paramiko 5.1 as the portal drives it (its keystroke path; the echo read by paramiko's thread)",
            "paramiko",
            paramiko_cipher,
        ),
        ("libssh2 via ssh2-python 1.2 (C, same thread)", "libssh2", libssh2_cipher),
    ]
    lines = [
        "| SSH client | cipher | echo p50, ms | echo p99, ms |",
        "|---|---|---|---|",
    ]
    for label, key, cipher in rows:
        v = times[key]
        lines.append(
            f"| {label} | {cipher} | {statistics.median(v) * 1000:.3f} | {pct(v, 99) * 1000:.3f} |"
        )
    table = "\n".join(lines)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    meta = (
        f"{platform.node()}, Python {platform.python_version()}, {stamp}, {args.samples} keys each"
    )
    print(table)
    print(meta)
    if not args.no_write:
        doc = ROOT / "docs/benchmarks.md"
        text = doc.read_text()
        section = (
            f"{START}\n## One keystroke through the SSH client alone\n\n"
            "Run: `sudo .venv/bin/python bench/bench_ssh_clients.py` (no WebSocket hop; "
            "interleaved, idle bash prompt, same sshd). " + meta + "\n\n" + table + "\n" + END
        )
        if START in text and END in text:
            before, rest = text.split(START, 1)
            text = before + section + rest.split(END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        doc.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
