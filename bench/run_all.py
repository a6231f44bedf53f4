"""Run every benchmark and write docs/benchmarks.md: `make bench` (root: the SSH ones start sshd).

Each benchmark prints a Markdown table; this script keeps each one's output in its own section of
docs/benchmarks.md between <!-- NAME:start --> / <!-- NAME:end --> markers (bench_terminal.py
writes its own section). `--only exec,search` runs a subset; `--quick` uses smaller sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"

BENCHES = {
    "exec": (
        ["bench/bench_exec.py"],
        ["bench/bench_exec.py", "-n", "20"],
        "Command exec: OpenSSH client vs the portal (cold, pooled)",
    ),
    "search": (
        ["bench/bench_search.py"],
        ["bench/bench_search.py", "--rows", "100000"],
        "Command-log search over 1,000,000 rows (SQLite FTS5, PostgreSQL tsvector)",
    ),
    "pages": (
        ["bench/bench_pages.py"],
        ["bench/bench_pages.py", "--rows", "100000", "-n", "30"],
        "Dashboard and log pages with 1,000 machines and 1,000,000 command logs",
    ),
    "terminal": (
        ["bench/bench_terminal.py"],
        ["bench/bench_terminal.py", "--sessions", "100"],
        None,
    ),  # writes its own section
}

HEADER = """# Benchmarks

Measured on this project's reference machine (2 cores, 24 GiB, loopback, shared with other
work, so numbers move by tens of percent between runs). Rerun with `make bench`
(`.venv/bin/python bench/run_all.py --only exec,search`, `--quick` for smaller sizes); each
section says how it was produced. Targets come from the issues.
"""


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        return re.sub(
            re.escape(start) + r".*?" + re.escape(end), lambda _m: block, text, flags=re.S
        )
    return text.rstrip() + "\n\n" + block + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--only", default=",".join(BENCHES), help="comma-separated: " + ",".join(BENCHES)
    )
    ap.add_argument("--quick", action="store_true", help="smaller sizes (for a smoke run)")
    args = ap.parse_args()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    DOC.parent.mkdir(exist_ok=True)
    if not DOC.exists():
        DOC.write_text(HEADER)
    failed = []
    for name in chosen:
        full, quick, title = BENCHES[name]
        cmd = [sys.executable, *(quick if args.quick else full)]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            failed.append(name)
            continue
        if title is None:
            continue
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        body = (
            f"## {title}\n\n`python {' '.join(cmd[1:])}` — {stamp}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}\n\n{proc.stdout.strip()}\n"
        )
        text = DOC.read_text()
        if not text.startswith("# Benchmarks"):
            text = HEADER + "\n" + text
        DOC.write_text(replace_section(text, name, body))
    print(f"wrote {DOC.relative_to(ROOT)}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
