"""The Redis terminal bus takes only what the portal's processes signed (portal/terminal/
signing.py), on the real local Redis: control requests (close, share, snapshot, watching,
relay) need a fresh envelope signed with the key derived from SECRET_KEY and are taken once;
output frames to watchers need their MAC, bound to the session's channel."""

from __future__ import annotations

import json
import queue
import time
import uuid

import pytest
import redis

from portal.terminal import signing
from portal.terminal.bus import RedisBus

REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "test-secret-for-the-bus-" + "x" * 16


@pytest.fixture
def bus():
    prefix = f"test-bus-{uuid.uuid4().hex[:12]}"
    b = RedisBus(REDIS_URL, prefix, secret=SECRET)
    raw = redis.Redis.from_url(REDIS_URL)
    yield b, raw, prefix
    b.close()
    keys = list(raw.scan_iter(f"{prefix}:*"))
    if keys:
        raw.delete(*keys)
    raw.close()


def _drain(q: queue.Queue, timeout: float = 0.5) -> list:
    out = []
    try:
        while True:
            out.append(q.get(timeout=timeout))
    except queue.Empty:
        return out


def test_control_requests_need_a_fresh_signed_envelope_taken_once(bus):
    b, raw, prefix = bus
    got: queue.Queue = queue.Queue()
    b.set_control_handler(got.put)
    ctl = f"{prefix}:ctl"
    share = {"op": "share", "sid": "s1", "shared": True}

    raw.publish(ctl, json.dumps(share))  # bare, as before signing
    other = signing.ControlSigner(signing.derive("another-secret", signing.BUS_LABEL))
    raw.publish(ctl, other.wrap(share))  # signed with another key
    mine = signing.ControlSigner(signing.derive(SECRET, signing.BUS_LABEL))
    env = json.loads(mine.wrap(share))
    env["m"] = {**share, "sid": "s2"}  # a genuine envelope with its request changed
    raw.publish(ctl, json.dumps(env))
    stale_ts = int(time.time()) - signing.MAX_AGE - 5
    stale = {"m": share, "ts": stale_ts, "n": "n-stale"}
    stale["sig"] = mine._mac(share, stale_ts, "n-stale")  # genuine, but too old
    raw.publish(ctl, json.dumps(stale))
    raw.publish(ctl, b"\xff not json")
    assert _drain(got) == []

    b.request(share)  # what a worker sends
    assert _drain(got) == [share]
    sent = mine.wrap(share)  # a fresh envelope, then the same bytes again
    raw.publish(ctl, sent)
    raw.publish(ctl, sent)
    assert _drain(got) == [share]  # the replay is dropped


def test_output_frames_need_their_mac_for_their_own_session(bus):
    b, raw, prefix = bus
    got: queue.Queue = queue.Queue()
    b.subscribe("s1", lambda kind, nonce, data: got.put((kind, data)))
    b.subscribe("s2", lambda kind, nonce, data: got.put(("other-" + kind, data)))

    raw.publish(f"{prefix}:out:s1", b"orm -rf ~ # fake output")  # unsigned
    raw.publish(f"{prefix}:out:s1", b"\0" * signing.SEAL + b"ofake")  # a wrong MAC
    assert _drain(got) == []

    b.publish_output("s1", b"real output")
    b.publish_end("s1", "the shell exited")
    assert _drain(got) == [("o", b"real output"), ("e", b"the shell exited")]

    # A genuine frame of s1, moved to s2's channel, is refused there.
    key = signing.derive(SECRET, signing.BUS_LABEL)
    raw.publish(f"{prefix}:out:s2", signing.seal(key, f"{prefix}:out:s1", b"ofrom s1"))
    assert _drain(got) == []


def test_a_bus_without_a_secret_is_refused():
    with pytest.raises(ValueError, match="SECRET_KEY"):
        RedisBus(REDIS_URL, "test-bus-nosecret", secret="")
