"""The screen the command log reads (screenlog.py): a pyte terminal that also knows the
alternate screen, counts lines scrolled off the top and reads wrapped rows back as lines;
where a typed line starts on a row; output without escape sequences (the echo check); and
what the log writes for input the terminal did not show."""

from __future__ import annotations

import re

import pyte

ALT_MODES = (47, 1047, 1049)
# Logged instead of a line the terminal did not echo (a password at a no-echo prompt).
HIDDEN = "[input hidden: not echoed]"
# A line typed right after output like this is logged as HIDDEN even when it was echoed.
PASSWORD_PROMPT = re.compile(r"(?i)(pass(word|phrase)|PIN)[^\n]*:\s*$")


class Screen(pyte.Screen):
    """pyte's screen plus the alternate screen (pyte 0.8.2 ignores modes 47/1047/1049) and
    a count of lines scrolled off the top (the prompt's row moves with them)."""

    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines)
        self.alt = False
        self.scrolled = 0
        self._saved = None

    def set_mode(self, *modes, **kwargs) -> None:
        if kwargs.get("private") and any(m in ALT_MODES for m in modes) and not self.alt:
            self.alt = True
            self.save_cursor()
            self._saved = {y: dict(line) for y, line in self.buffer.items()}
            self.erase_in_display(2)
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes, **kwargs) -> None:
        if kwargs.get("private") and any(m in ALT_MODES for m in modes) and self.alt:
            self.alt = False
            self.erase_in_display(2)
            for y, line in (self._saved or {}).items():
                self.buffer[y].update(line)
            self._saved = None
            self.restore_cursor()
        super().reset_mode(*modes, **kwargs)

    def select_graphic_rendition(self, *attrs, **kwargs) -> None:
        # pyte 0.8.2 hands `CSI > ... m` (xterm's modifyOtherKeys, vim sends it) here with
        # `private=True`, which its own method does not take: not a rendition, ignored.
        if not kwargs.get("private"):
            super().select_graphic_rendition(*attrs)

    def index(self) -> None:
        top, bottom = self.margins or (0, self.lines - 1)
        if self.cursor.y == bottom and not self.alt:
            self.scrolled += 1
        super().index()

    def row(self, y: int) -> str:
        if y < 0 or y >= self.lines:
            return ""
        line = self.buffer[y]
        return "".join(line[x].data for x in range(self.columns))

    def text(self, y0: int, x0: int, y1: int) -> list[str]:
        """The text from row `y0`, column `x0` to the end of row `y1` as lines: a row filled
        to the right margin wraps into the next one (joined), blank lines are dropped."""
        rows = [self.row(y)[x0 if y == y0 else 0 :] for y in range(y0, max(y1, y0) + 1)]
        lines: list[str] = []
        cur = ""
        for i, r in enumerate(rows):
            full = len(r.rstrip()) == len(r) and r and (i > 0 or x0 + len(r) == self.columns)
            cur += r if full else r.rstrip()
            if not full:
                lines.append(cur)
                cur = ""
        if cur:
            lines.append(cur)
        return [ln.strip() for ln in lines if ln.strip()]


def echo_start(row: str, x0: int, head: str) -> int:
    """Where the longest start of `head` (the typed line up to a Tab) shows in `row` at or
    after `x0`; `x0` if it does not. A start shorter than three characters counts only
    right after a space (the end of a prompt), so a short command is not found inside
    the prompt drawn after the first key."""
    for k in range(min(len(head), 40), 0, -1):
        i = row.find(head[:k], x0)
        if i < 0:
            continue
        if k >= 3 or i == x0 or row[i - 1] == " ":
            return i
    return x0


def strip_escapes(data: bytes, state: int) -> tuple[bytes, int]:
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
