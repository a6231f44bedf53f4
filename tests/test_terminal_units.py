"""Pure parts of the terminal: the command-line reconstruction, the ring buffer, the recorder."""

from __future__ import annotations

import json
import os
import time

import pytest

from portal.terminal.linelog import LineTracker
from portal.terminal.recorder import Recorder, prune
from portal.terminal.ring import RingBuffer


@pytest.mark.parametrize(
    "typed, lines",
    [
        (b"ls -la\r", ["ls -la"]),
        (b"ls -lx\x7fa\r", ["ls -la"]),
        (b"ls\x08\x08pwd\r", ["pwd"]),
        (b"rm -rf /\x03echo hi\r", ["echo hi"]),
        (b"junk\x15uptime\r", ["uptime"]),
        (b"echo a b\x17c\r", ["echo a c"]),
        (b"echo one\r\necho two\r", ["echo one", "echo two"]),
        (b"echo one\necho two\n", ["echo one", "echo two"]),
        (b"ls\x1b[Dx\x1b[C\r", ["lsx"]),  # cursor keys skipped (position not modelled)
        (b"\x1b[Aecho hist\r", ["echo hist"]),  # history recall itself is invisible
        (b"\x1bOA\x1b]0;title\x07top\r", ["top"]),
        (b"\x1b[200~line one\nline two\x1b[201~\r", ["line one", "line two"]),
        (b"\x1b[200~a\x7fb\x1b[201~\r", ["ab"]),
        (b"   \r\r\r", []),
        ("echo h\u00e9llo \u2603\r".encode(), ["echo h\u00e9llo \u2603"]),
    ],
)
def test_line_tracker(typed, lines):
    assert LineTracker().feed(typed) == lines


def test_line_tracker_across_chunks_and_split_utf8():
    t = LineTracker()
    data = "echo \u00e9t\u00e9\r".encode()
    out = []
    for i in range(len(data)):
        out += t.feed(data[i : i + 1])
    assert out == ["echo \u00e9t\u00e9"]
    assert t.feed(b"\x1b[") == [] and t.feed(b"A") == [] and t.feed(b"x\r") == ["x"]


def test_line_tracker_is_bounded():
    t = LineTracker()
    assert len(t.feed(b"a" * 100_000 + b"\r")[0]) == 4096


def test_ring_buffer_keeps_the_tail():
    r = RingBuffer(10)
    for chunk in (b"abc", b"defg", b"hijkl"):
        r.append(chunk)
    assert r.snapshot() == b"cdefghijkl" and len(r) == 10
    r.append(b"0123456789XYZ")
    assert r.snapshot() == b"3456789XYZ"
    assert RingBuffer(256 * 1024).capacity >= 256 * 1024


def test_recorder_writes_asciicast_v2(tmp_path):
    rec = Recorder(tmp_path, "s.cast", 80, 24)
    rec.output(b"hello ")
    rec.output("w\u00f6rld\r\n".encode()[:3])  # a split UTF-8 character
    rec.output("w\u00f6rld\r\n".encode()[3:])
    rec.resize(100, 30)
    rec.output(b"after\r\n")
    rec.close()
    lines = (tmp_path / "s.cast").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] == 80 and header["height"] == 24
    events = [json.loads(x) for x in lines[1:]]
    text = "".join(e[2] for e in events if e[1] == "o")
    assert text == "hello w\u00f6rld\r\nafter\r\n"
    assert [e[2] for e in events if e[1] == "r"] == ["100x30"]
    assert oct(os.stat(tmp_path / "s.cast").st_mode & 0o777) == "0o600"


def test_recording_escapes_every_character_json_needs(tmp_path):
    """Every byte value, invalid UTF-8 and characters split across chunks: each event is
    valid JSON and the recorded text is what a UTF-8 decoder (with U+FFFD) makes of it."""
    import codecs
    import random

    from portal.terminal.recorder import json_escape

    every = bytes(range(256))
    assert json.loads(
        b'"' + json_escape('\\" \x1b[0m\t\u00e9\u2028 \U0001f600'.encode()) + b'"'
    ) == ('\\" \x1b[0m\t\u00e9\u2028 \U0001f600')
    rng = random.Random(7)
    alphabet = [bytes((b,)) for b in every] + ["\u00f6\u20ac\U0001f600".encode()] * 20
    alphabet += ["\u2028\u2029\x85".encode()] * 5  # line breaks to str.splitlines
    chunks = [
        b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 300))) for _ in range(60)
    ]
    rec = Recorder(tmp_path, "e.cast", 80, 24)
    for i, chunk in enumerate(chunks):
        rec.output(chunk)
        if i % 7 == 0:
            rec.flush()  # events end at arbitrary bytes, mid-character included
    rec.close()
    events = [json.loads(x) for x in (tmp_path / "e.cast").read_text().splitlines()[1:]]
    expected = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(b"".join(chunks))
    assert "".join(e[2] for e in events) == expected


def test_prune_removes_old_recordings_only(tmp_path):
    old, new = tmp_path / "old.cast", tmp_path / "new.cast"
    old.write_text("{}")
    new.write_text("{}")
    past = time.time() - 10 * 86400
    os.utime(old, (past, past))
    assert prune(tmp_path, 7) == ["old.cast"]
    assert not old.exists() and new.exists()
    assert prune(tmp_path, 0) == []


def test_prune_cli(app, tmp_path):
    rec_dir = app.config["PORTAL_RECORDINGS_DIR"]
    os.makedirs(rec_dir, exist_ok=True)
    path = os.path.join(rec_dir, "x.cast")
    with open(path, "w") as fh:
        fh.write("{}")
    past = time.time() - 400 * 86400
    os.utime(path, (past, past))
    result = app.test_cli_runner().invoke(args=["terminal", "prune-recordings"])
    assert result.exit_code == 0 and "removed 1" in result.output
    assert not os.path.exists(path)


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_echo_gate_logs_echoed_lines_only():
    from portal.terminal.linelog import HIDDEN, EchoGate

    clock = _Clock()
    g = EchoGate(clock)
    # typed and echoed key by key (readline redraws with escapes in between)
    assert g.feed(b"ls") == [] and g.output(b"l\x1b[0ms") == []
    assert g.feed(b"\r") == ["ls"]
    # the whole line in one frame: logged once its echo arrives
    g.output(b"\r\nfile\r\n$ ")
    assert g.feed(b"echo abX\x7fc\r") == []
    assert g.output(b"echo abX\x08\x1b[K") == []
    assert g.output(b"c\r\nabc\r\n$ ") == ["echo abc"]
    # no echo at all (read -s): hidden once other output came and the user types again
    g.output(b"Enter it> ")
    assert g.feed(b"s3cret\r") == []
    assert g.output(b"\r\n$ ") == []
    assert g.feed(b"w") == [HIDDEN]
    assert g.output(b"w") == [] and g.feed(b"ho\r") == []
    assert g.output(b"ho\r\n") == ["who"]
    # ... or after ECHO_WAIT when nothing else happens
    g.feed(b"hunter2\r")
    clock.now += 5
    assert g.expire() == [HIDDEN]
    # typed right after a password prompt: hidden even if echoed (asterisks or not)
    g.output(b"[sudo] password for bob: ")
    assert g.feed(b"pw") == [] and g.output(b"pw") == []
    assert g.feed(b"\r") == [HIDDEN]
    g.output(b"\r\nEnter PIN:\x1b[0m ")
    g.feed(b"1234")
    g.output(b"1234")
    assert g.feed(b"\r") == [HIDDEN]
    # order is kept: an echoed line after a pending one waits for it
    g.output(b"\r\n$ ")
    assert g.feed(b"secret\recho ok\r") == []
    assert g.output(b"echo ok\r\n") == []
    clock.now += 5
    assert g.expire() == [HIDDEN, "echo ok"]
    # a session that ends settles what is left as hidden
    g.feed(b"left\r")
    assert g.expire(final=True) == [HIDDEN]


def test_echo_gate_gives_up_under_a_flood():
    from portal.terminal.linelog import HIDDEN, SCAN_MAX, EchoGate

    g = EchoGate(_Clock())
    g.feed(b"ab")  # typed while a flood of blank lines scrolls by
    for _ in range(SCAN_MAX // 4096 + 2):
        g.output(b"\n" * 4096)
    assert not g._waiting()  # the flood is no longer scanned byte by byte
    g.output(b"ab")
    assert g.feed(b"\r") == [HIDDEN]


def test_echo_gate_checks_noted_bytes_in_noting_order():
    """The bridge notes bytes as they cross it and checks them after they went out: the
    verdicts are the same as checking on the spot, including the password-prompt guard."""
    from portal.terminal.linelog import HIDDEN, EchoGate

    g = EchoGate(_Clock())
    g.note_input(b"ls")
    g.note_output(b"ls")
    g.note_input(b"\r")
    assert g.drain() == ["ls"]
    g.note_output(b"\r\n[sudo] password for bob: ")
    g.note_input(b"pw\r")  # typed after the prompt was noted, checked later: still hidden
    g.note_output(b"pw")
    assert g.drain() == [HIDDEN]
    assert g.drain() == []  # nothing left


def test_echo_gate_drain_never_strands_a_noted_event():
    """A thread that finds another one draining leaves its bytes to it; the drainer picks
    them up before it lets go, so no line waits for the next keystroke to be checked."""
    import threading

    from portal.terminal.linelog import EchoGate

    emitted: list[str] = []
    late: list[list[str]] = []

    def emit(lines):
        emitted.extend(lines)
        if lines == ["one"]:  # while this thread drains, another notes and tries to drain
            t = threading.Thread(target=lambda: (g.note_input(b"\r"), late.append(g.drain())))
            t.start()
            t.join()

    g = EchoGate(_Clock(), emit=emit)
    g.note_input(b"one\r")
    g.note_input(b"two")
    g.note_output(b"one")  # "one" is logged here; the other thread's Enter comes next
    g.note_output(b"two")
    g.drain()
    assert late == [[]]  # the other thread left its Enter to the drainer ...
    assert emitted == ["one", "two"]  # ... which checked it before returning


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (None, "(10000, 20, 100) True"),
        ("", "(700, 10, 10) False"),
        ("5000,10,50", "(5000, 10, 50) True"),
        ("ten", "(700, 10, 10) False"),
    ],
)
def test_gunicorn_worker_tunes_the_garbage_collector(env, expected):
    """The worker hook (run in a fresh interpreter, as gunicorn would): app objects frozen,
    young collections rarer; PORTAL_GC_THRESHOLD overrides, "" leaves the defaults."""
    import subprocess
    import sys

    code = (
        "import gc, portal.gunicorn_conf as c; c.post_worker_init(None); "
        "print(gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    environ = {k: v for k, v in os.environ.items() if k != "PORTAL_GC_THRESHOLD"}
    if env is not None:
        environ["PORTAL_GC_THRESHOLD"] = env
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == expected, out.stderr


def test_only_the_end_closes_a_session_row(app, make_user, make_machine):
    """A status write that races the end (a resize after the session was marked closed)
    leaves the row open; the end's own write closes it with its reason."""
    from portal.extensions import db
    from portal.terminal.models import TerminalSession
    from portal.terminal.writer import write_status

    owner = make_user("ender")
    machine = make_machine(owner, name="end-box")
    with app.app_context():
        row = TerminalSession(machine_id=machine.id, user_id=owner.id, status="active")
        db.session.add(row)
        db.session.commit()
        sid = row.id
        write_status(sid, "closed", 100, 30, None, (5, 7))  # the racing status write
        db.session.commit()
        row = db.session.get(TerminalSession, sid)
        assert row.status == "active" and (row.cols, row.bytes_out) == (100, 7)
        write_status(sid, "closed", 100, 30, "closed by its user", (5, 9))  # the end
        db.session.commit()
        row = db.session.get(TerminalSession, sid)
        assert (row.status, row.close_reason, row.bytes_out) == ("closed", "closed by its user", 9)
        db.session.remove()
