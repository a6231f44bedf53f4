"""Issue 16, finding 15: every Python package, transitive ones included, is installed from a
lock file at a pinned version with its hash checked, so a tampered or swapped release on the
registry is refused instead of installed."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ("requirements.lock", "requirements-test.lock")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)\s*(?:;([^\\]*))?")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _entries(lock: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of every requirement in a lock file that applies to
    this Python (a name may be locked twice, under environment markers)."""
    out: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in (ROOT / lock).read_text().splitlines():
        m = PIN.match(line)
        if m and m.group(3) and not Marker(m.group(3).strip()).evaluate():
            current = None
        elif m:
            current = _norm(m.group(1))
            out[current] = (m.group(2), [])
        elif current and "--hash=sha256:" in line:
            out[current][1].append(line.split("--hash=sha256:", 1)[1].split()[0].rstrip("\\"))
        elif not line.startswith(" "):
            current = None
    return out


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_requirement_is_pinned_with_hashes(lock):
    entries = _entries(lock)
    assert len(entries) > 20
    lines = [ln for ln in (ROOT / lock).read_text().splitlines() if ln and ln[0].isalnum()]
    assert all(PIN.match(ln) for ln in lines), "every requirement is name==version"
    unhashed = [name for name, (_v, hashes) in entries.items() if not hashes]
    assert not unhashed


def test_the_test_environment_is_exactly_the_lock():
    """Every distribution in this environment (but the project itself and pip) is in the lock at
    the version installed: nothing transitive floats."""
    locked = _entries("requirements-test.lock")
    floating = []
    for dist in metadata.distributions():
        name = _norm(dist.metadata["Name"])
        if name in {"webterm-portal", "pip"}:
            continue
        if locked.get(name, (None,))[0] != dist.version:
            floating.append(f"{name}=={dist.version}")
    assert not floating, f"installed but not locked at this version: {floating}"
    runtime = _entries("requirements.lock")
    assert all(locked.get(n, (None,))[0] == v for n, (v, _h) in runtime.items())


def test_bootstrap_installs_only_from_the_lock_with_hashes():
    script = (ROOT / "scripts" / "bootstrap.sh").read_text()
    installs = [
        ln for ln in script.splitlines() if "pip install" in ln and not ln.lstrip().startswith("#")
    ]
    assert installs
    for line in installs:
        assert "--require-hashes" in line or "--no-deps" in line, line


def test_a_tampered_release_is_refused(tmp_path):
    """The attack: the registry serves other bytes under a locked name and version. pip,
    as bootstrap runs it, refuses them; the true hashes (the control) install."""
    name, (version, hashes) = next(
        (n, e) for n, e in _entries("requirements.lock").items() if n in {"six", "itsdangerous"}
    )

    def download(hash_list) -> subprocess.CompletedProcess:
        req = tmp_path / "req.txt"
        req.write_text(f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hash_list))
        return subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-deps", "--require-hashes", "-d", str(tmp_path / "dl"), "-r", str(req)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    tampered = download(["0" * 64])
    assert tampered.returncode != 0
    assert "DO NOT MATCH THE HASHES" in tampered.stderr
    assert download(hashes).returncode == 0
