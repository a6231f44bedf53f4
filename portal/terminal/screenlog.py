"""The command log read off the screen: a pyte terminal per session.

The output of a session is fed through a terminal emulator (pyte). When Enter is pressed at
the shell's prompt on the primary screen, the command line is read as displayed once the
shell moves past it (the first line feed after Enter): history recall, tab completion,
Ctrl-R and edits are what the screen shows. Lines wrapped at the right margin are joined; a
multi-line command (continuation prompt `> `) is logged as one entry, its lines joined with
newlines; lines pasted together (bracketed paste) are logged one entry per line. Where the
shell emits OSC 133 prompt marks, the `B` mark (end of the prompt) tells where the command
starts; otherwise it starts where the cursor stood when the first key of the line was typed.

Keystrokes while a full-screen program holds the alternate screen (`less`, `man`, `vim`,
`top`) are not commands. Input the terminal did not echo stays out of the log: a line whose
typed characters are not all on the screen, or typed right after a password prompt, is
logged as `HIDDEN`.

Nothing here runs on the keystroke path: the bridge appends to a queue (`note_input`,
`note_output`) and asks for a drain; one thread per process (screenfeed.py) feeds the emulators
in batches. Of a flood of output only the tail is fed, once it pauses or a key comes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, deque

import pyte

from portal.terminal.screen import HIDDEN, PASSWORD_PROMPT, Screen, echo_start, strip_escapes
from portal.terminal.screenfeed import WORKER

log = logging.getLogger(__name__)

MAX_LINE = 4096
FLOOD_KEEP = 32 * 1024  # a batch of output over this is a flood: only its tail is fed
HOLD = 0.5  # seconds a captured line waits for a continuation prompt
_OSC133 = re.compile(rb"\x1b\]133;([A-Za-z])[^\x07\x1b]{0,200}(?:\x07|\x1b\\)")


class _Pending:
    __slots__ = (
        "y",
        "x",
        "scrolled",
        "prompt",
        "typed",
        "at",
        "end",
        "want",
        "matched",
        "lfs",
        "deferred",
    )

    def __init__(self, y, x, scrolled, prompt, typed, at, end) -> None:
        self.y, self.x, self.scrolled = y, x, scrolled
        self.prompt = prompt
        self.typed = typed
        self.at = at
        self.end = end  # the cursor's row (counting scrolled lines) when Enter was pressed
        self.want = typed.replace("\t", "").encode("utf-8", "replace")  # its echo
        self.matched = 0  # bytes of `want` seen in the output so far, in order
        self.lfs = 0  # line feeds seen while the echo was incomplete
        self.deferred = False  # typed ahead: where it starts is found when it is read


class ScreenLog:
    """The command lines of one session (`LiveSession.lines`): `note_input`, `note_output`,
    `drain()`, `expire(final)`; lines go to `emit(lines)` as (text, when) pairs, `when` the
    clock's time of the Enter that ran it."""

    def __init__(self, emit, cols: int = 80, rows: int = 24, clock=time.monotonic) -> None:
        self._emit = emit
        self._clock = clock
        self._events: deque[tuple[bool, bytes]] = deque()
        self._lock = threading.Lock()  # one feeder at a time
        self.screen = Screen(max(cols, 2), max(rows, 2))
        self._stream = pyte.ByteStream(self.screen)
        self._size = (cols, rows)
        # input state
        self._esc: str | None = None
        self._paste = False
        self._typed: list[str] = []
        self._start: tuple[int, int, int, str] | None = None  # y, x, scrolled, prompt text
        self._mark: tuple[int, int, int, str] | None = None  # from OSC 133;B
        self._armed: deque[_Pending] = deque()
        self._held: list[str] | None = None
        self._held_at = 0.0
        self._held_enter = 0.0  # when Enter was pressed on the held command
        self._esc_out = 0
        self._flood = b""  # the tail of a flood of output not fed yet
        self._armed_out = 0  # output bytes fed while commands wait for their echo
        self._last_prompt = ""  # the prompt as the last captured line showed it
        self.dirty = False

    # the bridge (any thread, cheap) -------------------------------------
    def note_input(self, data: bytes) -> None:
        self._events.append((True, data))

    def note_output(self, data: bytes) -> None:
        self._events.append((False, data))

    def resize(self, cols: int, rows: int) -> None:
        self._size = (cols, rows)

    def drain(self) -> list[str]:
        """Ask the worker thread to feed what was noted (returns at once)."""
        WORKER.mark(self)
        return []

    def expire(self, final: bool = False) -> list[str]:
        self.process()
        with self._lock:
            if self._held is not None and (final or self._clock() - self._held_at >= HOLD):
                self._flush()
        return []

    # the worker ------------------------------------------------------------
    def process(self) -> None:
        with self._lock:
            if (self.screen.columns, self.screen.lines) != self._size:
                cols, rows = self._size
                self.screen.resize(max(rows, 2), max(cols, 2))
            events = self._events
            while events:
                is_input, data = events.popleft()
                if is_input:
                    self._flush_flood()  # the screen as it stands before the key
                    self._input(data)
                    continue
                parts, size = [data], len(data)
                while events and not events[0][0]:
                    more = events.popleft()[1]
                    parts.append(more)
                    size += len(more)
                data = b"".join(parts) if len(parts) > 1 else data
                if self._armed:
                    # An Enter waits for its echo and the line feed after it: every byte
                    # counts, up to FLOOD_KEEP of them (an echo comes first, not after a
                    # flood); a command still waiting then is not coming back.
                    self._flush_flood()
                    room = max(FLOOD_KEEP - self._armed_out, 0)
                    self._armed_out += min(room, len(data))
                    self._output(data[:room])
                    data = data[room:]
                    if not data:
                        continue
                    self._give_up()
                    size = len(data)
                if size > FLOOD_KEEP or self._flood:
                    # A flood: the screen it leaves is its last bytes' doing. Hold the tail
                    # and feed it once the output pauses (a batch under FLOOD_KEEP) or a key
                    # comes, not every batch: pyte parses ~1-2 MB/s, and fed every batch it
                    # held the GIL from the output pump (`cat` ran at 4 MB/s, not 40).
                    self._flood = (self._flood + data)[-FLOOD_KEEP:]
                    if size > FLOOD_KEEP:
                        continue
                    data, self._flood = self._flood, b""
                self._output(data)
            if self._held is not None:
                cur = self.screen.row(self.screen.cursor.y).rstrip()
                if (cur and cur != ">") or self._clock() - self._held_at >= HOLD:
                    self._flush()

    def _give_up(self) -> None:
        """The commands still waiting for their echo after FLOOD_KEEP bytes of output are
        logged as hidden (as when their line feeds pass without it)."""
        while self._armed:
            self._log([HIDDEN], self._armed.popleft().at)
        self._armed_out = 0

    def _flush_flood(self) -> None:
        if self._flood:
            data, self._flood = self._flood, b""
            self._output(data)

    # input -------------------------------------------------------------------
    def _input(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        for ch in text:
            if self._esc is not None:
                seq = self._esc + ch
                if seq in ("[", "O", "]") or (
                    seq.startswith("[") and not ("\x40" <= ch <= "\x7e") and len(seq) < 32
                ):
                    self._esc = seq
                    continue
                self._esc = None
                if seq == "[200~":
                    self._paste = True
                elif seq == "[201~":
                    self._paste = False
                self._begin()
                continue
            if ch == "\x1b":
                self._esc = ""
                continue
            if self.screen.alt:
                self._typed.clear()
                self._start = None
                continue
            if ch in ("\r", "\n") and not self._paste:
                if ch == "\n" and self._start is None and not self._typed:
                    continue
                self._enter()
                continue
            self._begin()
            if ch in ("\x7f", "\x08"):
                if self._typed:
                    self._typed.pop()
            elif ch == "\x15":
                self._typed.clear()
            elif ch == "\x17":
                while self._typed and self._typed[-1] == " ":
                    self._typed.pop()
                while self._typed and self._typed[-1] != " ":
                    self._typed.pop()
            elif ch in ("\x03", "\x07"):
                if ch == "\x03":
                    self._typed.clear()
                    self._start = None
            elif ch >= " " and len(self._typed) < MAX_LINE:
                self._typed.append(ch)

    def _begin(self) -> None:
        """The first key of a line: the command starts where the cursor stands (or at the
        OSC 133 B mark)."""
        if self._start is not None or self.screen.alt:
            return
        if self._mark is not None:
            self._start, self._mark = self._mark, None
            return
        s = self.screen
        y, x = s.cursor.y, min(s.cursor.x, s.columns)
        self._start = (y, x, s.scrolled, s.row(y)[:x])

    def _enter(self) -> None:
        self._begin()
        y, x, scrolled, prompt = self._start
        s = self.screen
        cy = s.cursor.y
        while cy > max(y - (s.scrolled - scrolled), 0) and not s.row(cy).strip():
            cy -= 1  # a paste that ends with a newline leaves the cursor on an empty row
        end = cy + s.scrolled
        p = _Pending(y, x, scrolled, prompt, "".join(self._typed), self._clock(), end)
        p.deferred = bool(self._armed)  # typed before the shell read the previous line
        if not p.deferred and p.want:
            # echoed already, wholly or in part (the user waited for a completion, or a
            # paste's echo is still arriving): what the screen shows since the line began
            # counts, in order, and the rest is matched against the output that follows
            top = y - (s.scrolled - scrolled)
            first = s.row(top)[x:] if top >= 0 else ""
            shown = first + "".join(s.row(r) for r in range(max(top + 1, 0), s.cursor.y + 1))
            want, m = p.want, 0
            for b in shown.encode("utf-8", "replace"):
                if b == want[m]:
                    m += 1
                    if m >= len(want):
                        break
            p.matched = m
        if p.deferred:
            p.prompt = self._armed[-1].prompt
        if not self._armed:
            self._armed_out = 0
        self._armed.append(p)
        self._start = None
        self._typed.clear()
        while len(self._armed) > 100:
            self._armed.popleft()

    # output ------------------------------------------------------------------
    def _output(self, data: bytes) -> None:
        pos = 0
        for m in _OSC133.finditer(data):
            self._feed(data[pos : m.start()])
            pos = m.end()
            kind = m.group(1).upper()
            if kind == b"B":
                s = self.screen
                y, x = s.cursor.y, s.cursor.x
                mark = (y, x, s.scrolled, s.row(y)[:x])
                if self._start is not None:  # the shell redrew its prompt: it starts here
                    self._start = mark
                else:
                    self._mark = mark
            elif kind in (b"A", b"C", b"D") and self._held is not None and not self._armed:
                self._flush()
        self._feed(data[pos:])

    def _feed(self, data: bytes) -> None:
        while data:
            if not self._armed:
                self._stream.feed(data)
                return
            i = data.find(b"\n")
            seg = data if i < 0 else data[:i]
            self._echo(seg)
            self._stream.feed(seg)
            if i < 0:
                return
            self._at_line_feed()
            self._stream.feed(b"\n")
            data = data[i + 1 :]

    def _echo(self, seg: bytes) -> None:
        """Match the head line's typed characters against the output, in order."""
        p = self._armed[0]
        if p.matched >= len(p.want):
            return
        text, self._esc_out = strip_escapes(seg, self._esc_out)
        want, m = p.want, p.matched
        for b in text:
            if b == want[m]:
                m += 1
                if m >= len(want):
                    break
        p.matched = m

    def _at_line_feed(self) -> None:
        """A line feed while Enter waits: the shell moves past the command line once its
        echo is complete; a line feed with no progress of the echo means it is not coming."""
        p = self._armed[0]
        s = self.screen
        if p.matched >= len(p.want):
            if p.deferred or s.cursor.y + s.scrolled >= p.end:
                self._capture(self._armed.popleft())
            return
        p.lfs += 1
        if p.matched == 0 and p.deferred:
            # typed ahead: the earlier command's output comes first; it is hidden only if
            # the shell's prompt came and went without it
            prompt = p.prompt.strip()
            gone = bool(prompt) and s.row(s.cursor.y).lstrip().startswith(prompt)
        else:
            gone = p.matched == 0
        if gone or p.lfs > 50 or PASSWORD_PROMPT.search(p.prompt):
            self._armed.popleft()
            self._log([HIDDEN], p.at)

    def _capture(self, p: _Pending) -> None:
        s = self.screen
        if s.alt:
            return
        y0 = p.y - (s.scrolled - p.scrolled)
        y1 = s.cursor.y
        x0 = p.x
        if p.deferred:
            # typed ahead: the shell showed it after its next prompt (the last one seen)
            y0, x0 = y1, 0
            known = self._last_prompt or p.prompt
            for y in range(y1, max(y1 - 5, -1), -1):
                row = s.row(y)
                if known.strip() and row.startswith(known.rstrip()):
                    y0, x0 = y, len(known)
                    break
        elif p.typed and 0 <= y0 < s.lines:
            # The first keys may come before the shell has drawn (all of) its prompt: the
            # command starts where the typed text shows, at or after where typing began.
            x0 = echo_start(s.row(y0), x0, p.typed.split("\t")[0].lstrip())
            if x0 > 0:
                self._last_prompt = s.row(y0)[:x0]
        elif x0 > 0 and 0 <= y0 < s.lines:
            self._last_prompt = s.row(y0)[:x0]
        if y0 < 0:
            y0, x0 = 0, 0
        lines = [ln[:MAX_LINE] for ln in s.text(y0, x0, y1)]
        text = "\n".join(lines)
        if p.typed:
            if PASSWORD_PROMPT.search(p.prompt) or not text:
                self._log([HIDDEN], p.at)
                return
            if Counter(p.typed.replace("\t", "")) - Counter(text):
                self._log([HIDDEN], p.at)  # typed characters the terminal did not show
                return
        if not lines:
            return
        if p.prompt.rstrip() == ">" and self._held is not None:
            self._held[-1] += "\n" + lines[0]
            lines = lines[1:]
            if not lines:
                self._held_at = self._clock()
                return
        if self._held is not None:
            self._flush()
        self._held = lines
        self._held_at = self._clock()
        self._held_enter = p.at

    def _log(self, lines: list[str], at: float) -> None:
        if self._held is not None:
            self._flush()
        self._emit([(line, at) for line in lines])

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held:
            self._emit([(line, self._held_enter) for line in held])
