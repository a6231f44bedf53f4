"""Files, side by side: OpenSSH's `sftp` client and the portal's HTTP path, one run, one sshd.

    sudo .venv/bin/python bench/bench_files.py [--size-mb 200] [--rounds 5]

Starts its own sshd (tests/fixtures/sshd.py) and the portal under gunicorn (one worker,
bench_terminal.PortalServer), makes a random file, then for each system uploads and
downloads it (--rounds rounds, each portal run right after the sftp run it is compared
with; reported: the best MB/s of each, and the median and range of the per-round ratios,
which the host's drift between rounds does not skew):
- sftp: `sftp -b` batch `put` / `get` with the same key, over the same loopback.
- portal upload: one tus PATCH of the whole file (curl streaming it, as a browser would).
- portal download: GET .../files/content with curl, piped into sha256sum.
- a folder of --folder-files files (10 KB each): `sftp put -r` vs one tus upload per file
  with its relativePath (what the drawer's folder upload sends), and a folder of
  --zip-files small files: `sftp get -r` vs GET .../files/zip (contents checked).
Checks the SHA-256 of what landed, and reports the portal's RSS growth (gunicorn master and
worker) over the whole run. Prints a Markdown table; pass --write to put it in docs/files.md
between <!-- files-bench:start --> and <!-- files-bench:end -->.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_terminal import PortalServer, rss_mb  # noqa: E402
from tests.fixtures.sshd import SshdServer, ensure_test_user  # noqa: E402


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sftp_batch(sshd, known_hosts: Path, commands: str) -> float:
    batch = known_hosts.parent / "batch"
    batch.write_text(commands)
    began = time.monotonic()
    subprocess.run(
        [
            "sftp",
            "-q",
            "-b",
            str(batch),
            "-P",
            str(sshd.port),
            "-i",
            str(sshd.client_key_path),
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            f"{sshd.username}@{sshd.host}",
        ],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - began


def portal_upload(portal, src: Path, size: int, folder: str, name: str) -> float:
    import requests

    base = f"http://127.0.0.1:{portal.port}/api/machines/{portal.agent_id}/files"
    auth = {"Authorization": f"Bearer {portal.token}", "Tus-Resumable": "1.0.0"}
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"filename": name, "folder": folder, "conflict": "overwrite"}.items()
    )
    began = time.monotonic()
    r = requests.post(
        f"{base}/tus", headers={**auth, "Upload-Length": str(size), "Upload-Metadata": meta}
    )
    r.raise_for_status()
    location = f"http://127.0.0.1:{portal.port}{r.headers['Location']}"
    # curl streams the body as a browser does (requests sends a file in 8 KiB writes, and
    # that Python client, on the same cores, would be what is measured)
    subprocess.run(
        [
            "curl",
            "-sSf",
            "-X",
            "PATCH",
            "-T",
            str(src),
            "-H",
            "Expect:",
            "-H",
            f"Authorization: {auth['Authorization']}",
            "-H",
            "Tus-Resumable: 1.0.0",
            "-H",
            "Upload-Offset: 0",
            "-H",
            "Content-Type: application/offset+octet-stream",
            location,
        ],
        check=True,
    )
    return time.monotonic() - began


def portal_download(portal, path: str) -> tuple[float, str]:
    from urllib.parse import quote

    url = (
        f"http://127.0.0.1:{portal.port}/api/machines/{portal.agent_id}/files/content"
        f"?path={quote(path)}"
    )
    began = time.monotonic()
    curl = subprocess.Popen(
        ["curl", "-sSf", "-H", f"Authorization: Bearer {portal.token}", url],
        stdout=subprocess.PIPE,
    )
    out = subprocess.run(["sha256sum"], stdin=curl.stdout, capture_output=True, check=True)
    curl.stdout.close()
    if curl.wait():
        raise RuntimeError("curl failed")
    return time.monotonic() - began, out.stdout.split()[0].decode()


WITH_CREATION_MAX = 1 << 20  # the drawer sends a file this small with its creation


def portal_folder_upload(portal, src: Path, folder: str) -> float:
    """One tus creation per file, with its relativePath, as the drawer sends them: a file of
    up to 1 MiB goes with its creation (creation-with-upload), a larger one in a PATCH."""
    import requests

    base = f"http://127.0.0.1:{portal.port}/api/machines/{portal.agent_id}/files"
    auth = {"Authorization": f"Bearer {portal.token}", "Tus-Resumable": "1.0.0"}
    octets = {"Content-Type": "application/offset+octet-stream"}
    files = sorted(p for p in src.rglob("*") if p.is_file())
    began = time.monotonic()
    with requests.Session() as http:
        for path in files:
            rel = f"{src.name}/{path.relative_to(src).as_posix()}"
            data = path.read_bytes()
            meta = ",".join(
                f"{k} {base64.b64encode(v.encode()).decode()}"
                for k, v in {
                    "filename": path.name,
                    "folder": folder,
                    "relativePath": rel,
                    "conflict": "overwrite",
                }.items()
            )
            with_creation = len(data) <= WITH_CREATION_MAX
            r = http.post(
                f"{base}/tus",
                data=data if with_creation else None,
                headers={
                    **auth,
                    **(octets if with_creation else {}),
                    "Upload-Length": str(len(data)),
                    "Upload-Metadata": meta,
                },
            )
            r.raise_for_status()
            if int(r.headers["Upload-Offset"]) == len(data):
                continue
            r = http.patch(
                f"http://127.0.0.1:{portal.port}{r.headers['Location']}",
                data=data,
                headers={**auth, **octets, "Upload-Offset": r.headers["Upload-Offset"]},
            )
            r.raise_for_status()
    return time.monotonic() - began


def portal_zip(portal, path: str) -> tuple[float, bytes]:
    import requests

    url = f"http://127.0.0.1:{portal.port}/api/machines/{portal.agent_id}/files/zip"
    began = time.monotonic()
    r = requests.get(
        url, params={"path": path}, headers={"Authorization": f"Bearer {portal.token}"}
    )
    r.raise_for_status()
    return time.monotonic() - began, r.content


def span(values: list[float]) -> str:
    """'0.91x (0.80-1.02x)': the median and the range of per-round ratios."""
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f}x)"


def make_tree(root: Path, count: int, size: int) -> dict[str, bytes]:
    """`count` files of `size` random bytes in ten sub-folders; {relative path: bytes}."""
    files = {}
    for i in range(count):
        rel = f"d{i % 10}/f{i:05d}.bin"
        data = os.urandom(size)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        files[rel] = data
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--folder-files", type=int, default=100)
    ap.add_argument("--zip-files", type=int, default=1000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    size = args.size_mb * 1_000_000
    user = ensure_test_user()
    work = Path(tempfile.mkdtemp(prefix="bench-files-"))
    sshd = SshdServer(user, name="bench-files").start()
    portal = PortalServer(sshd)
    known = work / "known_hosts"
    known.write_text("".join(f"[{sshd.host}]:{sshd.port} {line}\n" for line in sshd.host_key_lines))
    src = work / "src.bin"
    with open(src, "wb") as fh:
        for _ in range(size // (1 << 20)):
            fh.write(os.urandom(1 << 20))
        fh.write(os.urandom(size % (1 << 20)))
    want = sha256_file(src)
    remote_dir = Path(user.home) / f"bench-files-{os.getpid()}"
    remote_dir.mkdir(exist_ok=True)
    shutil.chown(remote_dir, user.username, user.username)
    res: dict[str, float] = {}
    try:
        portal.start()
        rss0 = rss_mb(portal.pids())
        ratios: dict[str, list[float]] = {"up": [], "down": []}
        for _ in range(args.rounds):
            t = sftp_batch(sshd, known, f"put {src} {remote_dir}/sftp.bin\n")
            sftp_up = size / t / 1e6
            assert sha256_file(remote_dir / "sftp.bin") == want
            t = portal_upload(portal, src, size, str(remote_dir), "portal.bin")
            portal_up = size / t / 1e6
            assert sha256_file(remote_dir / "portal.bin") == want
            dst = work / "got.bin"
            t = sftp_batch(sshd, known, f"get {remote_dir}/sftp.bin {dst}\n")
            sftp_down = size / t / 1e6
            dst.unlink()
            t, got = portal_download(portal, str(remote_dir / "portal.bin"))
            assert got == want
            portal_down = size / t / 1e6
            # each portal run beside the sftp run just before it: the host's drift (a shared
            # machine's speed moves by more than the difference measured) hits both alike
            ratios["up"].append(portal_up / sftp_up)
            ratios["down"].append(portal_down / sftp_down)
            for key, value in (
                ("sftp_up", sftp_up),
                ("sftp_down", sftp_down),
                ("portal_up", portal_up),
                ("portal_down", portal_down),
            ):
                res[key] = max(res.get(key, 0), value)
            print(
                f"sftp {sftp_up:.1f} / {sftp_down:.1f}, portal {portal_up:.1f} / "
                f"{portal_down:.1f} MB/s (up / down)",
                flush=True,
            )
        rss1 = rss_mb(portal.pids())
        (src.parent / "sftp.bin").unlink(missing_ok=True)
        (remote_dir / "sftp.bin").unlink(missing_ok=True)
        (remote_dir / "portal.bin").unlink(missing_ok=True)
        src.unlink()
        # a folder upload of small files
        tree = work / "up"
        tree.mkdir()
        want_tree = make_tree(tree, args.folder_files, 10_000)
        for _ in range(args.rounds):
            t = sftp_batch(sshd, known, f"put -r {tree} {remote_dir}/sftp-up\n")
            res["sftp_folder"] = min(res.get("sftp_folder", 1e9), t)
            t = portal_folder_upload(portal, tree, str(remote_dir))
            res["portal_folder"] = min(res.get("portal_folder", 1e9), t)
            for rel, data in want_tree.items():
                assert (remote_dir / "up" / rel).read_bytes() == data
        # a zip of a folder of small files (made on the machine side)
        zdir = remote_dir / "zipme"
        want_zip = make_tree(zdir, args.zip_files, 2_000)
        subprocess.run(["chown", "-R", f"{user.username}:", str(zdir)], check=True)
        for _ in range(args.rounds):
            got = work / "zip-sftp"
            t = sftp_batch(sshd, known, f"get -r {zdir} {got}\n")
            res["sftp_zip"] = min(res.get("sftp_zip", 1e9), t)
            shutil.rmtree(got)
            t, body = portal_zip(portal, str(zdir))
            res["portal_zip"] = min(res.get("portal_zip", 1e9), t)
            import io
            import zipfile

            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                assert {n: zf.read(f"zipme/{n}") for n in want_zip} == want_zip
        print({k: round(v, 2) for k, v in res.items()}, flush=True)
    finally:
        portal.stop()
        sshd.stop()
        shutil.rmtree(remote_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    table = (
        f"{args.size_mb} MB random file, loopback, best of and median over {args.rounds} rounds "
        f"({time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores)\n\n"
        "| measurement | OpenSSH `sftp` | portal (HTTP) | portal / sftp |\n|---|---|---|---|\n"
        f"| upload MB/s (best) | {res['sftp_up']:.1f} | {res['portal_up']:.1f} | "
        f"{res['portal_up'] / res['sftp_up']:.2f}x |\n"
        f"| upload, portal / sftp run beside it (median, range) | | | "
        f"{span(ratios['up'])} |\n"
        f"| download MB/s (best) | {res['sftp_down']:.1f} | {res['portal_down']:.1f} | "
        f"{res['portal_down'] / res['sftp_down']:.2f}x |\n"
        f"| download, portal / sftp run beside it (median, range) | | | "
        f"{span(ratios['down'])} |\n"
        f"| portal RSS growth over the {args.size_mb} MB runs | | {rss1 - rss0:+.1f} MB | |\n"
        f"| folder upload, {args.folder_files} files of 10 KB (s) | {res['sftp_folder']:.2f} | "
        f"{res['portal_folder']:.2f} | {res['sftp_folder'] / res['portal_folder']:.2f}x |\n"
        f"| folder download, {args.zip_files} files of 2 KB (s; portal: one zip) | "
        f"{res['sftp_zip']:.2f} | {res['portal_zip']:.2f} | "
        f"{res['sftp_zip'] / res['portal_zip']:.2f}x |\n"
    )
    print(table)
    if args.write:
        doc = ROOT / "docs/files.md"
        text = doc.read_text()
        start, end = "<!-- files-bench:start -->", "<!-- files-bench:end -->"
        if start in text:
            head, rest = text.split(start, 1)
            text = head + start + "\n" + table + end + rest.split(end, 1)[1]
        else:
            text += f"\n## Benchmark\n\nRerun: `sudo .venv/bin/python bench/bench_files.py --write`.\n\n{start}\n{table}{end}\n"
        doc.write_text(text)


if __name__ == "__main__":
    main()
