"""This process's watch sockets: their caps, and the table the access signals end them from.

Each watch socket costs threads, so a place (per user, per session) is taken after
authentication and before the upgrade, and given back when the request ends (watch.py).
"""

from __future__ import annotations

import threading

from portal import metrics


class Watchers:
    def __init__(self, config):
        # Caps per user and per session (0 = no cap).
        self.cap_user = int(config.get("PORTAL_MAX_WATCHERS_PER_USER", 0) or 0)
        self.cap_session = int(config.get("PORTAL_MAX_WATCHERS_PER_SESSION", 0) or 0)
        self.places: dict[tuple[str, object], int] = {}  # ("u", uid) / ("s", sid) -> n
        self.sockets: set = set()  # live watch sockets (watch.WatchQueue)
        self.lock = threading.Lock()

    def take_place(self, user_id: int, sid: str) -> str | None:
        """A place for a watch socket, taken before its upgrade: None when taken (give it
        back with give_place), else why not (a cap is reached)."""
        user_key, sid_key = ("u", user_id), ("s", sid)
        with self.lock:
            places = self.places
            if self.cap_user and places.get(user_key, 0) >= self.cap_user:
                return (
                    f"you already have {self.cap_user} watch sockets open, the most"
                    " allowed; close one first"
                )
            if self.cap_session and places.get(sid_key, 0) >= self.cap_session:
                return (
                    f"this session already has {self.cap_session} watchers, the most"
                    " allowed; try again later"
                )
            places[user_key] = places.get(user_key, 0) + 1
            places[sid_key] = places.get(sid_key, 0) + 1
        return None

    def give_place(self, user_id: int, sid: str) -> None:
        with self.lock:
            for key in (("u", user_id), ("s", sid)):
                n = self.places.get(key, 0) - 1
                if n > 0:
                    self.places[key] = n
                else:
                    self.places.pop(key, None)

    def add(self, w) -> None:
        """A watch socket: `w` has user_id, machine_id, sid and kick(reason)."""
        with self.lock:
            if w not in self.sockets:
                metrics.WATCHERS_LIVE.inc()
            self.sockets.add(w)

    def remove(self, w) -> None:
        with self.lock:
            if w in self.sockets:
                metrics.WATCHERS_LIVE.dec()
            self.sockets.discard(w)

    def close(self, *, user_id=None, machine_id=None, sid=None, reason: str) -> int:
        """End the watch sockets of a user and/or on a machine (or of a session)."""
        with self.lock:
            hit = [
                w
                for w in self.sockets
                if (user_id is None or w.user_id == user_id)
                and (machine_id is None or w.machine_id == machine_id)
                and (sid is None or w.sid == sid)
            ]
        for w in hit:
            w.kick(reason)
        return len(hit)
