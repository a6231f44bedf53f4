"""Keystroke echo of two versions of the portal side by side, interleaved with raw ssh.

    git worktree add /tmp/portal-before <commit>
    sudo .venv/bin/python bench/bench_echo_ab.py /tmp/portal-before [--keys 600]

One sshd; raw `ssh -tt`, the portal from the other tree and the portal from this tree each
get one keystroke in turn, in a new random order each round (the same clients, pacing and
order as bench_terminal.py's echo), so background load hits all three alike. Prints p50/p99 per system. The other tree runs with
this tree's virtualenv (its own code first on sys.path). Nothing is written to docs/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_terminal as bt  # noqa: E402

from tests.fixtures.sshd import SshdServer, ensure_test_user  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", type=Path, help="a checkout of the version to compare with")
    ap.add_argument("--keys", type=int, default=600)
    args = ap.parse_args()
    other = args.other.resolve()
    if not (other / "portal").is_dir():
        sys.exit(f"{other}: not a checkout of this project")
    venv = other / ".venv"
    if not venv.exists():
        venv.symlink_to(ROOT / ".venv")

    sshd = SshdServer(ensure_test_user(), name="ab").start()
    servers = []
    clients = {}
    try:
        raw = bt.RawServer(sshd, Path(tempfile.mkdtemp(prefix="bench-ab-")))
        this = bt.PortalServer(sshd)
        servers.append(this)
        this.start()
        that = bt.PortalServer(sshd)
        that.env["PYTHONPATH"] = str(other)
        servers.append(that)
        bt.ROOT = other  # its migrations, its app, its gunicorn config
        try:
            that.start()
        finally:
            bt.ROOT = ROOT
        clients = {
            "raw ssh -tt": bt.fresh_shell(raw),
            f"portal ({other.name})": bt.fresh_shell(that),
            "portal (this tree)": bt.fresh_shell(this),
        }
        for name, (p50, p99) in bt.echo_rounds(clients, args.keys).items():
            print(f"{name:28s} echo p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    finally:
        for c in clients.values():
            c.close()
        for s in servers:
            s.stop()
        sshd.stop()


if __name__ == "__main__":
    main()
