"""The terminal bus: live output to watchers, close and snapshot requests, socket tickets.

`LocalBus` (default) keeps everything in this process. `RedisBus` (when
REDIS_URL is set) carries the same messages over Redis pub/sub, so a watcher or
a DELETE served by another gunicorn worker or another instance reaches the
process that holds the SSH channel; tickets live in Redis with a TTL.

Everything that goes over Redis is signed (signing.py): a sealed MAC on output frames and
tickets, a signed envelope on control requests, signed frames on relays.

Messages on `<prefix>:out:<session>`: b"o" + output, b"s" + nonce(32) + screen,
b"r" + b"COLSxROWS" (the owner resized), b"e" + reason (the session ended). Requests on `<prefix>:ctl`: JSON
{"op": "close"|"share"|"snapshot"|"watching"|"unwatched"|"relay", "sid", ...} (a watcher's
snapshot, lease renewal and leave carry its nonce: the owner counts its watchers by it). A re-attach served by another process than
the owner's talks to it on `<prefix>:relay:<attachment>:i|o` (signed frames, see relay.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from portal import metrics
from portal.terminal import signing

log = logging.getLogger(__name__)

OutputCallback = Callable[[str, str | None, bytes], None]  # kind "o"|"s"|"e", nonce, data
RelayCallback = Callable[[bytes], None]
ControlHandler = Callable[[dict], None]

TICKETS_PER_USER = 20  # outstanding tickets per user; a new one drops the user's oldest
TICKETS_MAX = 100_000  # in-process store; past it the oldest tickets are dropped


class _Subscribers:
    def __init__(self):
        self._lock = threading.Lock()
        self._subs: dict[str, dict[int, OutputCallback]] = {}
        self._next = 0

    def add(self, sid: str, cb: OutputCallback) -> tuple[str, int]:
        with self._lock:
            self._next += 1
            self._subs.setdefault(sid, {})[self._next] = cb
            return (sid, self._next)

    def remove(self, handle: tuple[str, int]) -> None:
        sid, n = handle
        with self._lock:
            group = self._subs.get(sid)
            if group is not None:
                group.pop(n, None)
                if not group:
                    del self._subs[sid]

    def has(self, sid: str) -> bool:
        return sid in self._subs

    def deliver(self, sid: str, kind: str, nonce: str | None, data: bytes) -> None:
        with self._lock:
            cbs = list(self._subs.get(sid, {}).values())
        for cb in cbs:
            try:
                cb(kind, nonce, data)
            except Exception:
                log.exception("terminal bus subscriber failed")


class LocalBus:
    """In-process bus: one gunicorn worker process holds every terminal."""

    kind = "local"

    def __init__(self):
        self._subs = _Subscribers()
        self._relays: dict[str, RelayCallback] = {}  # relay channel -> its one reader here
        self._control: ControlHandler | None = None
        # Insertion order is expiry order (one TTL for every ticket): expired tickets leave
        # from the front, so an insert costs O(expired), never a scan of the store.
        self._tickets: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._by_user: dict[object, deque[str]] = {}
        self._lock = threading.Lock()

    # output ------------------------------------------------------------
    def publish_output(self, sid: str, data: bytes) -> None:
        metrics.BUS_MESSAGES.labels("output").inc()
        self._subs.deliver(sid, "o", None, data)

    def publish_snapshot(self, sid: str, nonce: str, data: bytes) -> None:
        self._subs.deliver(sid, "s", nonce, data)

    def publish_end(self, sid: str, reason: str) -> None:
        self._subs.deliver(sid, "e", None, reason.encode())

    def publish_resize(self, sid: str, cols: int, rows: int) -> None:
        if self._subs.has(sid):
            self._subs.deliver(sid, "r", None, f"{int(cols)}x{int(rows)}".encode())

    def subscribe(self, sid: str, cb: OutputCallback):
        return self._subs.add(sid, cb)

    def unsubscribe(self, handle) -> None:
        self._subs.remove(handle)

    # relay (one reader per channel: an attachment's two ends) -------------
    def publish_relay(self, key: str, data: bytes) -> None:
        metrics.BUS_MESSAGES.labels("relay").inc()
        self._deliver_relay(key, data)

    def subscribe_relay(self, key: str, cb: RelayCallback) -> str:
        self._relays[key] = cb
        return key

    def unsubscribe_relay(self, key: str) -> None:
        self._relays.pop(key, None)

    def _deliver_relay(self, key: str, data: bytes) -> None:
        cb = self._relays.get(key)
        if cb is not None:
            try:
                cb(data)
            except Exception:
                log.exception("terminal bus relay reader failed")

    # control -----------------------------------------------------------
    def set_control_handler(self, fn: ControlHandler | None) -> None:
        self._control = fn

    def request(self, msg: dict) -> None:
        metrics.BUS_MESSAGES.labels("control").inc()
        if self._control is not None:
            self._control(msg)

    # tickets -----------------------------------------------------------
    def put_ticket(self, key: str, payload: dict, ttl: int) -> None:
        """Store a ticket. At most TICKETS_PER_USER per user (the oldest is dropped) and
        TICKETS_MAX in all (likewise): a ticket request never fails for lack of room."""
        now = time.monotonic()
        uid = payload.get("user_id")
        with self._lock:
            while self._tickets:
                first = next(iter(self._tickets))
                if self._tickets[first][0] >= now:
                    break
                self._drop(first)
            mine = self._by_user.setdefault(uid, deque())
            while len(mine) >= TICKETS_PER_USER:
                self._drop(mine[0])
            while len(self._tickets) >= TICKETS_MAX:
                self._drop(next(iter(self._tickets)))
            self._tickets[key] = (now + ttl, payload)
            self._by_user.setdefault(uid, mine).append(key)

    def _drop(self, key: str):
        item = self._tickets.pop(key, None)
        if item is not None:
            uid = item[1].get("user_id")
            mine = self._by_user.get(uid)
            if mine is not None:
                try:
                    mine.remove(key)
                except ValueError:
                    pass
                if not mine:
                    del self._by_user[uid]
        return item

    def take_ticket(self, key: str) -> dict | None:
        with self._lock:
            item = self._drop(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def ticket_count(self, user_id=None) -> int:
        with self._lock:
            if user_id is None:
                return len(self._tickets)
            return len(self._by_user.get(user_id, ()))

    # liveness of other processes (Redis only) ---------------------------
    def heartbeat(self, server_id: str, ttl: int) -> None:
        return None

    def alive(self, server_id: str) -> bool | None:
        return None

    def close(self) -> None:
        self._control = None


class RedisBus(LocalBus):
    """Redis pub/sub: works across gunicorn workers and instances."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = "portal:terminal", secret: str | bytes = ""):
        super().__init__()
        import redis

        if not secret:
            raise ValueError("the Redis terminal bus needs SECRET_KEY to sign its messages")
        self.prefix = prefix
        self.key = signing.derive(secret, signing.BUS_LABEL)
        self.ctl = signing.ControlSigner(self.key)
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        self._thread: threading.Thread | None = None
        self._pubsub = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()

    def _out(self, sid: str) -> str:
        return f"{self.prefix}:out:{sid}"

    def _ensure_listener(self) -> None:
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            ps = self.redis.pubsub(ignore_subscribe_messages=True)
            ps.psubscribe(f"{self.prefix}:out:*", f"{self.prefix}:relay:*")
            ps.subscribe(f"{self.prefix}:ctl")
            # Wait for the subscriptions to be confirmed, so nothing published after
            # subscribe() returns is missed.
            confirmed, deadline = 0, time.monotonic() + 5
            while confirmed < 3 and time.monotonic() < deadline:
                msg = ps.get_message(ignore_subscribe_messages=False, timeout=0.5)
                if msg and msg["type"] in ("subscribe", "psubscribe"):
                    confirmed += 1
            self._pubsub = ps
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._listen, args=(ps,), name="terminal-bus", daemon=True
            )
            self._thread.start()

    def _listen(self, ps) -> None:
        out_prefix = f"{self.prefix}:out:"
        relay_prefix = f"{self.prefix}:relay:"
        ctl = f"{self.prefix}:ctl"
        while not self._stop.is_set():
            try:
                msg = ps.get_message(timeout=0.5)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("terminal bus: Redis connection lost; retrying")
                time.sleep(1)
                continue
            if not msg:
                continue
            channel = (
                msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
            )
            data = msg["data"]
            if channel == ctl:
                payload = self.ctl.unwrap(data)
                if self._control is not None and payload is not None:
                    try:
                        self._control(payload)
                    except Exception:
                        log.exception("terminal bus control handler failed")
            elif channel.startswith(out_prefix):
                data = signing.unseal(self.key, channel, data)
                if not data:
                    continue
                sid = channel[len(out_prefix) :]
                kind = chr(data[0])
                if kind == "s":
                    self._subs.deliver(sid, "s", data[1:33].decode("ascii", "replace"), data[33:])
                elif kind in ("o", "e", "r"):
                    self._subs.deliver(sid, kind, None, data[1:])
            elif channel.startswith(relay_prefix) and isinstance(data, bytes):
                self._deliver_relay(channel[len(relay_prefix) :], data)

    def _publish_out(self, sid: str, data: bytes) -> None:
        metrics.BUS_MESSAGES.labels("output").inc()
        channel = self._out(sid)
        self.redis.publish(channel, signing.seal(self.key, channel, data))

    def publish_output(self, sid: str, data: bytes) -> None:
        self._publish_out(sid, b"o" + data)

    def publish_snapshot(self, sid: str, nonce: str, data: bytes) -> None:
        self._publish_out(sid, b"s" + nonce.encode()[:32].ljust(32, b"-") + data)

    def publish_end(self, sid: str, reason: str) -> None:
        self._publish_out(sid, b"e" + reason.encode())

    def publish_resize(self, sid: str, cols: int, rows: int) -> None:
        self._publish_out(sid, b"r" + f"{int(cols)}x{int(rows)}".encode())

    def subscribe(self, sid: str, cb: OutputCallback):
        self._ensure_listener()
        return super().subscribe(sid, cb)

    def set_control_handler(self, fn: ControlHandler | None) -> None:
        super().set_control_handler(fn)
        if fn is not None:
            self._ensure_listener()

    def publish_relay(self, key: str, data: bytes) -> None:
        metrics.BUS_MESSAGES.labels("relay").inc()
        self.redis.publish(f"{self.prefix}:relay:{key}", data)

    def subscribe_relay(self, key: str, cb: RelayCallback) -> str:
        self._ensure_listener()
        return super().subscribe_relay(key, cb)

    def request(self, msg: dict) -> None:
        metrics.BUS_MESSAGES.labels("control").inc()
        self.redis.publish(f"{self.prefix}:ctl", self.ctl.wrap(msg))

    def put_ticket(self, key: str, payload: dict, ttl: int) -> None:
        # The user's tickets, oldest first, in a list: past TICKETS_PER_USER the oldest go.
        mine = f"{self.prefix}:tickets:{payload.get('user_id')}"
        pipe = self.redis.pipeline()
        where = f"{self.prefix}:ticket:{key}"
        pipe.set(where, signing.seal(self.key, where, json.dumps(payload).encode()), ex=ttl)
        pipe.rpush(mine, key)
        pipe.expire(mine, ttl)
        pipe.lrange(mine, 0, -(TICKETS_PER_USER + 1))
        pipe.ltrim(mine, -TICKETS_PER_USER, -1)
        old = pipe.execute()[3]
        if old:
            self.redis.delete(
                *(f"{self.prefix}:ticket:{k.decode() if isinstance(k, bytes) else k}" for k in old)
            )

    def take_ticket(self, key: str) -> dict | None:
        where = f"{self.prefix}:ticket:{key}"
        blob = self.redis.getdel(where)
        if blob is None:
            return None
        raw = signing.unseal(self.key, where, blob)
        if raw is None:
            log.warning("terminal bus: a forged or moved ticket refused")
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def heartbeat(self, server_id: str, ttl: int) -> None:
        self.redis.set(f"{self.prefix}:alive:{server_id}", "1", ex=ttl)

    def alive(self, server_id: str) -> bool | None:
        return bool(self.redis.exists(f"{self.prefix}:alive:{server_id}"))

    def close(self) -> None:
        super().close()
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=3)
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception:  # noqa: S110 - closing a dead connection
                pass
        try:
            self.redis.close()
        except Exception:  # noqa: S110
            pass


def make_bus(config) -> LocalBus:
    url = config.get("REDIS_URL")
    if url:
        return RedisBus(
            url,
            config.get("PORTAL_TERMINAL_BUS_PREFIX") or "portal:terminal",
            secret=config.get("SECRET_KEY") or "",
        )
    return LocalBus()
