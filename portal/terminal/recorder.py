"""asciicast v2 recordings, written off the hot path.

The bridge only appends `(time, kind, bytes)` to a list; one flusher thread per
process decodes, JSON-encodes and writes every ~0.5 s, and hands the file's buffer to
the OS every `DISK_FLUSH_INTERVAL` s, so a live session's recording is never more than
a few seconds behind. A session whose pending data passes `SYNC_FLUSH` bytes (disk
slower than the terminal) flushes in the caller's thread instead, so memory stays
bounded. Past `max_bytes` of output (PORTAL_RECORDING_MAX_BYTES) the recording stops:
a visible notice and an asciicast marker ("m") event end it; the session goes on.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import threading
import time
import weakref
from pathlib import Path

log = logging.getLogger(__name__)

# RFC 8259, section 7: in a JSON string, control characters, '"' and '\\' must be escaped.
_ESCAPES = {c: b"\\u%04x" % c for c in range(0x20)}
_ESCAPES.update(
    {
        0x08: b"\\b",
        0x09: b"\\t",
        0x0A: b"\\n",
        0x0C: b"\\f",
        0x0D: b"\\r",
        0x22: b'\\"',
        0x5C: b"\\\\",
    }
)
_PLAIN = bytes(c for c in range(256) if c not in _ESCAPES)
# Valid unescaped in JSON, but line breaks to Python's str.splitlines (and U+2028/9 to
# older JavaScript): escaped too, so a .cast stays one event per line for every reader.
_LINE_BREAKS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


_ORDER = (0x5C, *sorted(c for c in _ESCAPES if c != 0x5C))  # backslash first: escapes add some


def json_escape(utf8: bytes) -> bytes:
    """`utf8` (valid UTF-8) escaped for the inside of a JSON string; non-ASCII kept as is.

    Terminal output is mostly printable text with a few kinds of control characters, so:
    one pass keeps only the bytes that need escaping, then one `replace` per kind present.
    Several times cheaper than `json.dumps` on decoded text (no decode and re-encode
    around it either): the recording was the biggest CPU cost of a `cat` flood.
    """
    special = utf8.translate(None, _PLAIN)
    if special:
        for c in _ORDER:
            if c in special:
                utf8 = utf8.replace(bytes((c,)), _ESCAPES[c])
    if not utf8.isascii():
        for seq, escaped in _LINE_BREAKS:
            utf8 = utf8.replace(seq, escaped)
    return utf8


SYNC_FLUSH = 4 * 1024 * 1024
FLUSH_INTERVAL = 0.5
DISK_FLUSH_INTERVAL = 2.0
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


class Recorder:
    def __init__(
        self,
        directory: str | os.PathLike,
        name: str,
        cols: int,
        rows: int,
        env=None,
        max_bytes: int = 0,
    ):
        self.path = Path(directory) / name
        self.max_bytes = max(0, int(max_bytes or 0))  # output bytes recorded; 0 = no cap
        self.recorded = 0
        self.truncated = False
        self._dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: list[tuple[float, str, bytes | str]] = []
        self._pending_bytes = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._closed = False
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fh = os.fdopen(fd, "wb", buffering=256 * 1024)
        header = {
            "version": 2,
            "width": int(cols),
            "height": int(rows),
            "timestamp": int(time.time()),
            "env": {"TERM": (env or {}).get("TERM", "xterm-256color"), "SHELL": "/bin/sh"},
        }
        self._fh.write(json.dumps(header).encode() + b"\n")
        self._dirty = True  # the header alone makes a valid (empty) recording: on disk soon
        _flusher.add(self)

    def output(self, data: bytes) -> None:
        if self._closed or self.truncated:
            return
        with self._lock:
            if self.truncated:
                return
            t = time.monotonic() - self._start
            if self.max_bytes and self.recorded + len(data) > self.max_bytes:
                keep = self.max_bytes - self.recorded
                if keep > 0:
                    self._pending.append((t, "o", data[:keep]))
                self.recorded = self.max_bytes
                self.truncated = True
                label = f"recording stopped: size limit of {self.max_bytes} bytes reached"
                notice = f"\r\n\x1b[0m[portal: {label}; the session goes on]\r\n"
                self._pending.append((t, "o", notice.encode()))
                self._pending.append((t, "m", label))
            else:
                self._pending.append((t, "o", data))
                self.recorded += len(data)
            self._pending_bytes += len(data)
            big = self._pending_bytes >= SYNC_FLUSH
        if big:
            self.flush()

    def resize(self, cols: int, rows: int) -> None:
        if self._closed:
            return
        with self._lock:
            self._pending.append((time.monotonic() - self._start, "r", f"{cols}x{rows}"))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending:
            return
        with self._write_lock:
            if self._fh.closed:
                return
            lines: list[bytes] = []
            # Output chunks that arrive close together become one event (smaller files).
            cur_t, cur = None, []
            for t, kind, data in pending:
                if kind == "o":
                    if cur_t is None:
                        cur_t = t
                    cur.append(data)
                    if t - cur_t < 0.01:
                        continue
                if cur:
                    self._output_event(lines, cur_t, b"".join(cur))
                    cur_t, cur = None, []
                if kind in ("r", "m"):
                    lines.append(json.dumps([round(t, 6), kind, data]).encode() + b"\n")
            if cur:
                self._output_event(lines, cur_t, b"".join(cur))
            try:
                self._fh.writelines(lines)
                self._dirty = self._dirty or bool(lines)
            except OSError:
                log.exception("recording %s: write failed", self.path.name)

    def _output_event(self, lines: list[bytes], t: float, data: bytes) -> None:
        """An "o" event line: the bytes as UTF-8 (a character split between chunks is kept
        for the next one, invalid bytes become U+FFFD), JSON-escaped."""
        if not (data.isascii() and not self._decoder.getstate()[0]):
            data = self._decoder.decode(data).encode("utf-8")
        if data:  # pieces, not one concatenation: a flood's event is megabytes
            lines += (b'[%r, "o", "' % round(t, 6), json_escape(data), b'"]\n')

    def flush_to_disk(self) -> None:
        """Hand what was written to the OS (the flusher thread, every DISK_FLUSH_INTERVAL s):
        a live session's recording can be fetched and played up to a few seconds ago."""
        with self._write_lock:
            if not self._dirty or self._fh.closed:
                return
            try:
                self._fh.flush()
            except OSError:
                log.exception("recording %s: write failed", self.path.name)
            self._dirty = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _flusher.discard(self)
        self.flush()
        with self._write_lock:
            try:
                self._fh.close()
            except OSError:
                pass


class _Flusher:
    def __init__(self):
        self._recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, rec: Recorder) -> None:
        with self._lock:
            self._recorders.add(rec)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="terminal-recorder", daemon=True
                )
                self._thread.start()

    def discard(self, rec: Recorder) -> None:
        with self._lock:
            self._recorders.discard(rec)

    def _run(self) -> None:
        last_disk = time.monotonic()
        while True:
            time.sleep(FLUSH_INTERVAL)
            with self._lock:
                recs = list(self._recorders)
            to_disk = time.monotonic() - last_disk >= DISK_FLUSH_INTERVAL
            if to_disk:
                last_disk = time.monotonic()
            for rec in recs:
                try:
                    rec.flush()
                    if to_disk:
                        rec.flush_to_disk()
                except Exception:
                    log.exception("recording flush failed")


_flusher = _Flusher()


def prune(directory: str | os.PathLike, days: int) -> list[str]:
    """Delete .cast files older than `days` days; returns the names removed."""
    if days is None or days <= 0:
        return []
    root = Path(directory)
    if not root.is_dir():
        return []
    cutoff = time.time() - days * 86400
    removed = []
    for path in root.glob("*.cast"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path.name)
        except OSError:
            continue
    return removed
