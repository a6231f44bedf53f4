"""The command log read off the screen (issue 20, section 1), against the real sshd and bash:
commands after a full-screen program, history recall, tab completion, hidden input,
keystrokes inside a full-screen program, a bracketed paste of two lines."""

from __future__ import annotations

import re
import time

import pytest
import requests

from portal.terminal.screen import HIDDEN
from portal.terminal.screenlog import ScreenLog
from tests.fixtures.terminal import wait_for

pytestmark = pytest.mark.timeout(120)

PROMPT = r"\x1b\[\?2004h\$ $"


def _send(t, data: str, pattern: str, timeout: float = 15.0) -> None:
    """Send `data`, then wait for `pattern` in the output that follows it."""
    mark = len(t.out)
    t.send(data)
    rx = re.compile(pattern.encode())
    deadline = time.monotonic() + timeout
    while not rx.search(t.out, mark):
        assert time.monotonic() < deadline, f"{pattern!r} not seen: {bytes(t.out[mark:])!r}"
        try:
            t.recv_one(0.2)
        except Exception:
            pass


def _commands(live_server, auth, owner, sid, n):
    def get():
        r = requests.get(f"{live_server.url}/api/sessions/{sid}", headers=auth(owner), timeout=10)
        cmds = [c["command"] for c in r.json()["commands"]]
        return cmds if len(cmds) >= n else None

    return wait_for(get, timeout=15, interval=0.2)


def test_commands_are_read_off_the_screen(term_env, live_server, auth):
    owner, _machine, open_term = term_env
    t = open_term("cols=100&rows=30")
    sid = t.wait_control("ready")["session_id"]
    _send(t, "export PS1='$ ' HISTFILE=/dev/null; bind 'set enable-bracketed-paste on'\r", PROMPT)
    # a full-screen program (less on the alternate screen), q, then a command
    _send(t, "seq 1 300 | less\r", r"\x1b\[\?1049h")
    _send(t, "jjjGq", r"(?s)\x1b\[\?1049l.*" + PROMPT)
    _send(t, "echo after-less-$((1+1))\r", r"after-less-2\r\n.*" + PROMPT)
    # Up-arrow recall
    _send(t, "\x1b[A\r", r"after-less-2\r\n.*" + PROMPT)
    # tab completion of a unique file name
    _send(t, "cd $(mktemp -d) && echo hi > zqxcomplete-me.txt\r", r"\r\n.*" + PROMPT)
    _send(t, "cat zqxcomp\t", r"complete-me\.txt ")
    _send(t, "\r", r"hi\r\n" + PROMPT)
    # read -s: not echoed
    _send(t, 'read -s -p "Secret> " X; echo got-$((1+1))\r', r"\rSecret> $")
    _send(t, "hunter2-s3cret\r", r"got-2\r\n.*" + PROMPT)
    # vim keystrokes are not commands
    _send(t, "vi -u NONE /dev/null\r", r"\x1b\[\?1049h")
    _send(t, "ihello-in-vim\r:w\r\x1b:q!\r", r"(?s)\x1b\[\?1049l.*" + PROMPT)
    # a bracketed paste of two lines, then Enter
    _send(t, "\x1b[200~echo one-$((0+1))\recho two-$((1+1))\x1b[201~", r"two-\$\(\(1\+1\)\)")
    _send(t, "\r", r"(?s)one-1\r\n.*two-2\r\n.*" + PROMPT)
    _send(t, "echo last-$((2+3))\r", r"last-5\r\n")

    cmds = _commands(live_server, auth, owner, sid, 12)  # the export line and the 11 below
    assert cmds[1:] == [
        "seq 1 300 | less",
        "echo after-less-$((1+1))",
        "echo after-less-$((1+1))",
        "cd $(mktemp -d) && echo hi > zqxcomplete-me.txt",
        "cat zqxcomplete-me.txt",
        'read -s -p "Secret> " X; echo got-$((1+1))',
        HIDDEN,
        "vi -u NONE /dev/null",
        "echo one-$((0+1))",
        "echo two-$((1+1))",
        "echo last-$((2+3))",
    ], cmds
    assert not any("hunter2" in c or "hello-in-vim" in c for c in cmds)
    # each carries its moment in the recording (ms from the session's start), in order
    r = requests.get(f"{live_server.url}/api/sessions/{sid}", headers=auth(owner), timeout=10)
    offsets = [c["offset_ms"] for c in r.json()["commands"]]
    assert all(isinstance(o, int) and o >= 0 for o in offsets) and offsets == sorted(offsets)
    assert offsets[-1] > offsets[0]


def test_continuation_prompts_are_joined_and_marks_are_used():
    """Unit level, on recorded bytes: a multi-line command is one entry; OSC 133 B marks
    where the command starts even when the prompt is not what the cursor says."""
    out: list[str] = []
    g = ScreenLog(lambda lines: out.extend(t for t, _at in lines), 80, 24)
    g.note_output(b"$ ")
    g.note_input(b"for i in 1 2; do\r")
    g.note_output(b"for i in 1 2; do\r\n> ")
    g.note_input(b"echo $i; done\r")
    g.note_output(b"echo $i; done\r\n1\r\n2\r\n\x1b]133;A\x07[me@x]$ \x1b]133;B\x07")
    g.process()
    g.expire(final=True)
    assert out == ["for i in 1 2; do\necho $i; done"]
    # with marks, the command starts at B even if typing began elsewhere
    out.clear()
    g.note_input(b"\x1b[A")  # recall: bash redraws the line
    g.note_output(b"\rls -l\x1b]133;A\x07[me@x]$ \x1b]133;B\x07ls -l")
    g.note_input(b"\r")
    g.note_output(b"\r\n\x1b]133;C\x07total 0\r\n")
    g.process()
    g.expire(final=True)
    assert out == ["ls -l"]


def test_a_paste_whose_echo_is_half_shown_at_enter_is_still_two_commands():
    """The race CI met: Enter (and the next line, typed ahead) reach the log while the
    paste's echo is only half on the screen. What is shown counts, in order; the rest is
    matched in the output that follows, so the command output `p1` is never a command and
    the typed-ahead line is not taken for hidden input."""
    out: list[str] = []
    g = ScreenLog(lambda lines: out.extend(t for t, _at in lines), 80, 24)
    g.note_output(b"$ ")
    g.note_input(b"\x1b[200~echo p$((1+0))\recho p$((1+1))\r\x1b[201~")
    g.note_output(b"\x1b[7mecho p$((1+0))\r\necho p$(")  # half the echo so far
    g.note_input(b"\recho p$((1+2))\r")
    g.note_output(b"(1+1))\r\n\x1b[27m\r\np1\r\np2\r\n$ echo p$((1+2))\r\np3\r\n$ ")
    g.process()
    g.expire(final=True)
    assert out == ["echo p$((1+0))", "echo p$((1+1))", "echo p$((1+2))"]


def test_a_line_typed_before_the_prompt_is_drawn_leaves_the_prompt_out():
    """The first keys can reach the log before the shell's first prompt does."""
    out: list[str] = []
    g = ScreenLog(lambda lines: out.extend(t for t, _at in lines), 80, 24)
    g.note_input(b"echo abX\x7fc\r")
    g.note_output(b"\x1b[?2004hme@vm:~$ echo abX\x08\x1b[Kc\r\n\x1b[?2004l\rabc\r\n")
    g.note_output(b"\x1b[?2004hme@vm:~$ ")
    g.process()
    g.expire(final=True)
    assert out == ["echo abc"]


@pytest.mark.parametrize("drawn", [0, 9, 25])
def test_a_paste_before_the_prompt_is_fully_drawn_leaves_the_prompt_out(drawn):
    """What CI met: the paste (and a line typed ahead) reach the log when the shell has
    drawn none, part or all of its prompt. Recorded bash 5.2 output, split at `drawn`."""
    prompt = b"\x1b[?2004hportaltest@vm:~$ "
    echo = (
        b"\x1b[7mecho p$((1+0))\x1b[27m\r\n\r\x1b[7mecho p$((1+1))\x1b[27m\r\n\r"
        + b"\x1b[A\x1b[A" + b"\x1b[C" * 17
        + b"echo p$((1+0))\r\n\recho p$((1+1))\r\n\r\x1b[A\r\n\x1b[?2004l\rp1\r\np2\r\n"
        + prompt + b"echo p$((1+2))\r\n\x1b[?2004l\rp3\r\n" + prompt
    )  # fmt: skip
    out: list[str] = []
    g = ScreenLog(lambda lines: out.extend(t for t, _at in lines), 80, 24)
    g.note_output(prompt + b"echo ready\r\n\x1b[?2004l\rready\r\n")
    g.note_output(prompt[:drawn])
    g.note_input(b"\x1b[200~echo p$((1+0))\recho p$((1+1))\r\x1b[201~")
    g.note_input(b"\recho p$((1+2))\r")
    g.note_output(prompt[drawn:] + echo)
    g.process()
    g.expire(final=True)
    assert out == ["echo p$((1+0))", "echo p$((1+1))", "echo p$((1+2))"]


def test_a_flood_of_output_feeds_the_screen_only_its_tail(monkeypatch):
    """`cat` of 8 MB after a command: the emulator sees the bytes up to the command's echo
    and line feed, then only a flood's tail once the output pauses (pyte parses ~1-2 MB/s;
    fed every batch, it held the GIL from the output pump and `cat` ran at 4 MB/s). The
    command before and the one after are both logged, read off a screen that is right."""
    from portal.terminal import screenlog

    fed: list[int] = []
    feed = ScreenLog._output
    monkeypatch.setattr(ScreenLog, "_output", lambda self, d: (fed.append(len(d)), feed(self, d)))
    out: list[str] = []
    g = ScreenLog(lambda lines: out.extend(t for t, _at in lines), 80, 24)
    g.note_output(b"$ ")
    g.note_input(b"cat big.txt\r")
    g.note_output(b"cat big.txt\r\n")
    chunk = (b"y" * 79 + b"\r\n") * 800  # 64 KB
    for _ in range(128):  # 8 MB, a batch of two chunks at a time
        g.note_output(chunk)
        g.note_output(chunk)
        g.process()
    g.note_output(b"$ ")  # the flood ends with the prompt
    g.process()
    assert sum(fed) <= 3 * screenlog.FLOOD_KEEP, sum(fed)
    assert g.screen.display[-1].rstrip() == "$"  # the screen as the flood left it
    g.note_input(b"echo after\r")
    g.note_output(b"echo after\r\nafter\r\n$ ")
    g.process()
    g.expire(final=True)
    assert out == ["cat big.txt", "echo after"]


def test_a_command_whose_echo_never_completes_is_hidden_after_a_flood():
    """A command still waiting for its echo after FLOOD_KEEP bytes of output is logged as
    hidden, and the rest of the flood is not fed byte by byte."""
    from portal.terminal import screenlog
    from portal.terminal.screen import HIDDEN

    out: list[str] = []
    g = ScreenLog(lambda lines: out.extend(t for t, _at in lines), 80, 24)
    g.note_output(b"$ ")
    g.note_input(b"secret\r")
    g.note_output(b"z" * (4 * screenlog.FLOOD_KEEP))  # no echo, no line feed
    g.process()
    g.expire(final=True)
    assert out == [HIDDEN]
    assert not g._armed
