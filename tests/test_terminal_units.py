"""Pure parts of the terminal: the ring buffer, the recorder, the echo check's escape stripping."""

from __future__ import annotations

import json
import os
import time

import pytest

from portal.terminal.recorder import Recorder, prune
from portal.terminal.ring import RingBuffer


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


def test_strip_escapes_keeps_the_text_across_chunks():
    """The echo check compares typed text with output stripped of escape sequences (CSI,
    OSC strings, charset designations), an escape split between two reads included."""
    from portal.terminal.screen import strip_escapes

    text, state = strip_escapes(b"a\x1b[0mb\x1b]0;title\x07c\x1b(Bd\x1b", 0)
    assert (text, state) == (b"abcd", 1)
    text, state = strip_escapes(b"[Ke\x1b]2;t\x1b\\f", state)
    assert (text, state) == (b"ef", 0)


def test_screen_text_joins_wrapped_rows_and_finds_where_typing_starts():
    """The command log reads a command as the screen shows it: a row filled to the right
    margin continues on the next, a short row ends the line; and the typed text is found
    after the prompt, not inside it."""
    import pyte

    from portal.terminal.screen import Screen, echo_start

    screen = Screen(10, 4)
    stream = pyte.ByteStream(screen)
    stream.feed(b"$ echo abcdefghij\r\nls  \r\n")
    assert screen.text(0, 2, 2) == ["echo abcdefghij", "ls"]
    assert screen.text(0, 0, 0) == ["$ echo abc"]  # row 0 alone, column 0 on
    assert echo_start("$ echo hi", 2, "echo") == 2
    assert echo_start("$ ec", 0, "ec") == 2  # a short start counts after a space
    assert echo_start("[ec]$ ", 0, "ec") == 0  # not inside the prompt: where typing began
    assert echo_start("$ ", 2, "ls") == 2  # not shown: where typing began


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
