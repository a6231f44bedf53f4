"""What crosses processes over Redis is signed: a key derived from SECRET_KEY per purpose.

Whoever can publish on Redis or write its keys (a sidecar, a neighbour on the host network,
a Redis without a password) must not get a shell, close or share someone's session, feed a
watcher fake output, or mint a socket ticket. So every message of the terminal bus carries
an HMAC-SHA256 under a key only the portal's processes can derive (HMAC(SECRET_KEY, label)):

- relay frames (relay.py): `Sender` / `Receiver`, numbered per channel (a replay is older);
- attach requests (relay.py): `attach_mac` over their fields, each attachment id taken once;
- control requests (`<prefix>:ctl`): `ControlSigner`, an envelope with a timestamp and a
  nonce; stale (> MAX_AGE) or already-seen envelopes are dropped;
- tickets and output frames (bus.py): `seal` / `unseal`, bound to the Redis key or channel
  they sit on, so a genuine one moved elsewhere is refused.

What a Redis writer can still do is deny service (delete keys, drop messages): signing
cannot stop that, and docs/security.md says so.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict

log = logging.getLogger(__name__)

RELAY_LABEL = b"portal-terminal-relay-v1"
BUS_LABEL = b"portal-terminal-bus-v1"
MAX_AGE = 30  # seconds a signed control request is good for (clock skew between instances)
SEAL = 16  # bytes of MAC on a sealed blob (HMAC-SHA256, truncated)
HEAD = 32 + 8 + 1  # a relay frame: MAC, sequence number, kind

_ATTACH_FIELDS = ("sid", "aid", "user_id", "tv", "server", "cols", "rows", "peer", "ts")


def derive(secret: str | bytes, label: bytes) -> bytes:
    """The key for one purpose: HMAC-SHA256(SECRET_KEY, label)."""
    if isinstance(secret, str):
        secret = secret.encode()
    return hmac.new(secret, label, hashlib.sha256).digest()


def relay_key(app) -> bytes:
    return derive(app.config["SECRET_KEY"], RELAY_LABEL)


def to_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# ---------------------------------------------------------------- relay frames


def frame_mac(key: bytes, channel: str, head: bytes, payload: bytes) -> bytes:
    return hmac.new(key, channel.encode() + b"\0" + head + payload, hashlib.sha256).digest()


def attach_mac(key: bytes, msg: dict) -> str:
    body = json.dumps({k: msg.get(k) for k in _ATTACH_FIELDS}, sort_keys=True)
    return hmac.new(key, b"attach\0" + body.encode(), hashlib.sha256).hexdigest()


class Sender:
    """One direction of an attachment: signed, numbered frames (published under a lock, so
    they reach Redis in number order)."""

    def __init__(self, bus, key: bytes, channel: str):
        self.bus, self.key, self.channel = bus, key, channel
        self.seq = 0
        self.lock = threading.Lock()

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        with self.lock:
            self.seq += 1
            head = self.seq.to_bytes(8, "big") + kind
            frame = frame_mac(self.key, self.channel, head, payload) + head + payload
            self.bus.publish_relay(self.channel, frame)


class Receiver:
    """Takes a frame only if it is signed for this channel and newer than the last one."""

    def __init__(self, key: bytes, channel: str):
        self.key, self.channel = key, channel
        self.last = 0
        self.lock = threading.Lock()

    def open(self, data: bytes) -> tuple[bytes, bytes] | None:
        if len(data) < HEAD:
            return None
        mac, head, payload = data[:32], data[32:HEAD], data[HEAD:]
        if not hmac.compare_digest(mac, frame_mac(self.key, self.channel, head, payload)):
            log.warning("terminal relay: a forged frame on %s ignored", self.channel)
            return None
        seq = int.from_bytes(head[:8], "big")
        with self.lock:
            if seq <= self.last:
                log.warning("terminal relay: a replayed frame on %s ignored", self.channel)
                return None
            self.last = seq
        return head[8:], payload


# ---------------------------------------------------------------- bus messages


def seal(key: bytes, where: str, data: bytes) -> bytes:
    """`data` with a MAC bound to `where` (a Redis key or channel) in front."""
    mac = hmac.new(key, where.encode() + b"\0" + data, hashlib.sha256).digest()[:SEAL]
    return mac + data


def unseal(key: bytes, where: str, blob: bytes) -> bytes | None:
    """The data of a blob sealed for `where`, or None (forged, or moved from elsewhere)."""
    if not isinstance(blob, bytes) or len(blob) < SEAL:
        return None
    mac, data = blob[:SEAL], blob[SEAL:]
    good = hmac.new(key, where.encode() + b"\0" + data, hashlib.sha256).digest()[:SEAL]
    return data if hmac.compare_digest(mac, good) else None


class ControlSigner:
    """Control requests as signed envelopes: {"m": request, "ts", "n", "sig"}.

    A request is taken once (its nonce is remembered for MAX_AGE, bounded) and only while
    fresh, so a recorded "share" cannot be replayed after the owner unshared."""

    SEEN_MAX = 100_000

    def __init__(self, key: bytes):
        self.key = key
        self.seen: OrderedDict[str, float] = OrderedDict()
        self.lock = threading.Lock()

    def _mac(self, m: dict, ts: int, n: str) -> str:
        body = json.dumps({"m": m, "ts": ts, "n": n}, sort_keys=True, separators=(",", ":"))
        return hmac.new(self.key, b"ctl\0" + body.encode(), hashlib.sha256).hexdigest()

    def wrap(self, msg: dict) -> str:
        ts, n = int(time.time()), secrets.token_hex(12)
        return json.dumps({"m": msg, "ts": ts, "n": n, "sig": self._mac(msg, ts, n)})

    def unwrap(self, raw) -> dict | None:
        try:
            env = json.loads(raw)
            m, ts, n, sig = env["m"], env["ts"], env["n"], env["sig"]
        except (ValueError, TypeError, KeyError):
            return None
        if not (isinstance(m, dict) and isinstance(ts, int) and isinstance(n, str)):
            return None
        if not isinstance(sig, str) or not hmac.compare_digest(sig, self._mac(m, ts, n)):
            log.warning("terminal bus: an unsigned or forged control request ignored")
            return None
        now = time.time()
        if abs(now - ts) > MAX_AGE:
            log.warning("terminal bus: a stale control request ignored")
            return None
        with self.lock:
            while self.seen and (
                next(iter(self.seen.values())) < now or len(self.seen) >= self.SEEN_MAX
            ):
                self.seen.popitem(last=False)
            if n in self.seen:
                log.warning("terminal bus: a replayed control request ignored")
                return None
            self.seen[n] = now + 2 * MAX_AGE
        return m
