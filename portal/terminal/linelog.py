"""Reconstructs the command lines a user types from raw terminal input.

What it sees is keystrokes, not the shell's line buffer: editing with printable
characters, Backspace/DEL, Ctrl-U, Ctrl-W, Ctrl-C (discards the line) and
Enter is followed; cursor keys and other escape sequences are skipped; pasted
text (bracketed or not) is split at its newlines. History recall (Up arrow,
Ctrl-R) and tab completion happen inside the remote shell and are invisible
here: see docs/terminal.md.

`EchoGate` decides which lines may be logged: only those whose typed characters the
terminal echoed back. A password typed at a no-echo prompt (sudo, `read -s`,
`stty -echo`) never comes back in the output, so it is logged as `HIDDEN`, never as text.
"""

from __future__ import annotations

import codecs
import re
import threading
import time
from collections import deque

MAX_LINE = 4096
_PASTE_START = "[200~"
_PASTE_END = "[201~"


class LineTracker:
    """Feed input bytes; returns the completed (non-blank) lines.

    `sink` (optional) hears about every printable character typed (`typed(ch)`), a line
    abandoned (`abandoned()`: Ctrl-C, Ctrl-G, a blank line) and a line ended (`ended(line)`);
    `EchoGate` uses it to check that the terminal echoed what was typed.
    """

    def __init__(self, sink=None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line: list[str] = []
        self._esc: str | None = None  # escape sequence being skipped (after ESC)
        self._paste = False
        self._after_cr = False
        self._sink = sink

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        for ch in self._decoder.decode(data):
            self._char(ch, out)
        return out

    def _commit(self, out: list[str]) -> None:
        line = "".join(self._line).strip()
        self._line.clear()
        if line:
            out.append(line)
            if self._sink is not None:
                self._sink.ended(line)
        elif self._sink is not None:
            self._sink.abandoned()

    def _char(self, ch: str, out: list[str]) -> None:
        if self._esc is not None:
            self._escape(ch)
            return
        after_cr, self._after_cr = self._after_cr, False
        if ch == "\x1b":
            self._esc = ""
        elif ch == "\r":
            self._commit(out)
            self._after_cr = True
        elif ch == "\n":
            if not after_cr:
                self._commit(out)
        elif self._paste:
            if (ch >= " " and ch != "\x7f") or ch == "\t":
                self._add(" " if ch == "\t" else ch, ch)
        elif ch in ("\x7f", "\x08"):
            if self._line:
                self._line.pop()
        elif ch == "\x15":  # Ctrl-U: kill the line
            self._line.clear()
        elif ch == "\x17":  # Ctrl-W: kill the previous word
            while self._line and self._line[-1] == " ":
                self._line.pop()
            while self._line and self._line[-1] != " ":
                self._line.pop()
        elif ch in ("\x03", "\x07"):  # Ctrl-C / Ctrl-G: the line is abandoned
            self._line.clear()
            if self._sink is not None:
                self._sink.abandoned()
        elif ch >= " ":
            self._add(ch)
        # Other control characters (Tab completion, Ctrl-A/E/K...) change nothing we can see.

    def _add(self, ch: str, typed: str | None = None) -> None:
        if len(self._line) < MAX_LINE:
            self._line.append(ch)
        if self._sink is not None:
            self._sink.typed(typed or ch)

    def _escape(self, ch: str) -> None:
        seq = self._esc + ch
        if seq == "[":
            self._esc = seq  # CSI
            return
        if seq == "O" or seq == "]":
            self._esc = seq  # SS3 / OSC
            return
        if seq.startswith("]"):
            # OSC ends with BEL or ST (ESC \\); bounded so garbage cannot swallow input.
            if ch == "\x07" or seq.endswith("\x1b\\") or len(seq) > 256:
                self._esc = None
            else:
                self._esc = seq
            return
        if seq.startswith("O"):
            self._esc = None
            return
        if seq.startswith("["):
            if "\x40" <= ch <= "\x7e" and len(seq) > 1:
                self._esc = None
                if seq == _PASTE_START:
                    self._paste = True
                elif seq == _PASTE_END:
                    self._paste = False
            elif len(seq) > 32:
                self._esc = None
            else:
                self._esc = seq
            return
        # ESC + one character: Alt-key; skipped.
        self._esc = None


# ---------------------------------------------------------------- echo check

HIDDEN = "[input hidden: not echoed]"
ECHO_WAIT = 2.0  # seconds after Enter for a line's echo to arrive
SKIP_MAX = 4096  # printable output bytes that are not the echo before a line counts as hidden
SCAN_MAX = 64 * 1024  # output bytes looked at per waiting line (bounds the CPU under a flood)
TYPED_MAX = 4 * MAX_LINE  # bytes of typed characters kept per line
PENDING_MAX = 1000
TAIL = 256  # bytes of recent output kept for the password-prompt check
PASSWORD_PROMPT = re.compile(r"(?i)(pass(word|phrase)|PIN)[^\n]*:\s*$")


class _Line:
    __slots__ = (
        "text",
        "typed",
        "matched",
        "skipped",
        "scanned",
        "noise",
        "prompted",
        "ended_at",
        "seq",
    )

    def __init__(self) -> None:
        self.text: str | None = None  # set when Enter ends the line
        self.typed = bytearray()  # UTF-8 of every printable character typed on it, in order
        self.matched = 0  # how many of those came back in the output so far
        self.skipped = 0  # printable output bytes seen while waiting that were not the echo
        self.scanned = 0  # output bytes seen while waiting
        self.noise = False  # output other than the echo arrived after Enter
        self.prompted = False  # typed right after a password prompt
        self.ended_at = 0.0
        self.seq = 0

    def waiting(self) -> bool:
        return self.matched < len(self.typed) and self.skipped <= SKIP_MAX

    def verdict(self, now: float, seq: int) -> bool | None:
        """True: log it; False: hidden; None: its echo may still come."""
        if self.prompted or self.skipped > SKIP_MAX:
            return False
        if self.matched >= len(self.typed):
            return True
        if now - self.ended_at >= ECHO_WAIT:
            return False
        if self.noise and seq > self.seq:
            # The terminal said something else after Enter and the user has typed again
            # since: the echo is not coming (a no-echo prompt).
            return False
        return None


def _strip_escapes(data: bytes, state: int) -> tuple[bytes, int]:
    """Output without escape sequences (CSI, OSC/DCS/APC/PM strings, charset designations)."""
    out = bytearray()
    for b in data:
        if state == 0:
            if b == 0x1B:
                state = 1
            else:
                out.append(b)
        elif state == 1:
            if b == 0x5B:
                state = 2
            elif b in (0x5D, 0x50, 0x5F, 0x5E):
                state = 3
            elif b in (0x20, 0x23, 0x25, 0x28, 0x29, 0x2A, 0x2B):
                state = 5
            else:
                state = 0
        elif state == 2:
            if 0x40 <= b <= 0x7E:
                state = 0
        elif state == 3:
            if b == 0x07:
                state = 0
            elif b == 0x1B:
                state = 4
        elif state == 4:
            state = 0 if b == 0x5C else 3
        else:
            state = 0
    return bytes(out), state


class EchoGate:
    """The command lines that are safe to log, from both directions of the terminal.

    `feed(input)` and `output(data)` (any threads) return the lines to log, in typing order:
    the line itself when every printable character typed on it came back in the output
    (escape sequences stripped, other output in between allowed), `HIDDEN` when it did not
    (within ECHO_WAIT after Enter, or before the user typed again after other output), or
    when the line was typed right after output that looks like a password prompt.
    `expire()` (the janitor, every second) settles lines whose echo never came.

    The terminal's hot paths use `note_input`/`note_output` (an append, in the order the
    bytes crossed the bridge) before the bytes move on, and `drain()` after they went out
    (or, for bulk output, when the pump sends it on): the check sees both directions in
    the same order as before, but a keystroke and its echo do not wait for it.
    """

    def __init__(self, clock=time.monotonic, emit=None) -> None:
        # emit(lines), when given, is called with the lock held, so lines settled by
        # different threads reach it in typing order (the methods then return []).
        self._emit = emit
        self._lock = threading.Lock()
        self._clock = clock
        self._tracker = LineTracker(self)
        self._cur = _Line()
        self._pending: deque[_Line] = deque()
        self._tail = bytearray()
        self._esc = 0
        self._seq = 0
        self._events: deque[tuple[bool, bytes]] = deque()  # (is_input, data), see drain()
        self._drain_lock = threading.Lock()

    # LineTracker's sink (called with the lock held) ---------------------
    def typed(self, ch: str) -> None:
        cur = self._cur
        if not cur.typed and not cur.prompted:
            text, _state = _strip_escapes(bytes(self._tail), 0)
            cur.prompted = bool(PASSWORD_PROMPT.search(text.decode("utf-8", "replace")))
        if ch != "\t" and len(cur.typed) < TYPED_MAX:
            cur.typed += ch.encode("utf-8", "replace")

    def abandoned(self) -> None:
        self._cur = _Line()

    def ended(self, line: str) -> None:
        cur, self._cur = self._cur, _Line()
        cur.text = line
        cur.ended_at = self._clock()
        cur.seq = self._seq
        self._pending.append(cur)
        while len(self._pending) > PENDING_MAX:
            self._pending[0].prompted = True  # settle the oldest as hidden
            self._pending.popleft()

    # deferred, in order ----------------------------------------------------
    def note_input(self, data: bytes) -> None:
        """Typed bytes, noted before they are sent to the remote (any thread)."""
        self._events.append((True, data))

    def note_output(self, data: bytes) -> None:
        """Output, noted before any client is sent it (any thread)."""
        self._events.append((False, data))

    def drain(self) -> list[str]:
        """Check what was noted, in noting order. A thread that finds another one draining
        leaves its events to it: that one re-checks for new events after letting go."""
        out: list[str] = []
        events = self._events
        while events and self._drain_lock.acquire(blocking=False):
            try:
                while events:
                    is_input, data = events.popleft()
                    if is_input:
                        out += self.feed(data)
                        continue
                    # Output noted packet by packet is checked in runs of up to SCAN_MAX
                    # bytes (what one call scans anyway): a flood costs a call per run.
                    if events and not events[0][0] and len(data) < SCAN_MAX:
                        parts, size = [data], len(data)
                        while events and not events[0][0] and size < SCAN_MAX:
                            more = events.popleft()[1]
                            parts.append(more)
                            size += len(more)
                        data = b"".join(parts)
                    out += self.output(data)
            finally:
                self._drain_lock.release()
        return out

    # both directions ------------------------------------------------------
    def feed(self, data: bytes) -> list[str]:
        with self._lock:
            self._seq += 1
            self._tracker.feed(data)
            return self._settle()

    def output(self, data: bytes) -> list[str]:
        with self._lock:
            self._tail += data[-TAIL:]
            del self._tail[:-TAIL]
            waiting = self._waiting()
            if not waiting:
                self._esc = 0
                return self._settle() if self._pending else []
            data = data[:SCAN_MAX]
            text, self._esc = _strip_escapes(data, self._esc)
            for b in text:
                # A line whose echo has started gets the byte first, then the oldest line that
                # expects it: a hidden line cannot stall the echo of the lines typed after it.
                hit = None
                for line in waiting:
                    if line.matched and line.typed[line.matched] == b:
                        hit = line
                        break
                if hit is None:
                    for line in waiting:
                        if line.typed[line.matched] == b:
                            hit = line
                            break
                if hit is not None:
                    hit.matched += 1
                    if hit.matched >= len(hit.typed):
                        waiting.remove(hit)
                elif b > 0x20:
                    for line in waiting:
                        line.skipped += 1
                        if line.text is not None:
                            line.noise = True
                    if waiting[0].skipped > SKIP_MAX:
                        waiting = [x for x in waiting if x.waiting()]
                if not waiting:
                    break
            for line in waiting:
                line.scanned += len(data)
                if line.scanned > SCAN_MAX:  # a flood while it waits: give up on its echo
                    line.skipped = SKIP_MAX + 1
            return self._settle()

    def expire(self, final: bool = False) -> list[str]:
        """Settle lines whose echo is overdue; `final` (the session ended): all of them."""
        with self._lock:
            if final:
                for line in self._pending:
                    if line.matched < len(line.typed):
                        line.prompted = True
            return self._settle() if self._pending else []

    def _waiting(self) -> list[_Line]:
        out = [line for line in self._pending if line.waiting()]
        if self._cur.waiting():
            out.append(self._cur)
        return out

    def _settle(self) -> list[str]:
        out: list[str] = []
        now = self._clock()
        while self._pending:
            v = self._pending[0].verdict(now, self._seq)
            if v is None:
                break
            line = self._pending.popleft()
            out.append(line.text if v else HIDDEN)
        if out and self._emit is not None:
            self._emit(out)
            return []
        return out
