"""The command log's feeding thread: one per process feeds the sessions' screens.

`ScreenLog.drain()` marks its log dirty (`WORKER.mark`, cheap, from the keystroke and output
paths); this thread wakes, waits `PERIOD` so what arrives meanwhile is fed in the same
batch, and calls each dirty log's `process()` (screenlog.py). It knows nothing else of them.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Worker:
    """One thread per process feeds the sessions' emulators, a batch every `PERIOD`."""

    PERIOD = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: set = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def mark(self, gate) -> None:
        if gate.dirty:
            return
        with self._lock:
            gate.dirty = True
            self._dirty.add(gate)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="screenlog", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.PERIOD)  # batch what arrives meanwhile
            with self._lock:
                self._wake.clear()
                gates, self._dirty = self._dirty, set()
                for g in gates:
                    g.dirty = False
            for g in gates:
                try:
                    g.process()
                except Exception:
                    log.exception("command log: feeding the screen failed")


WORKER = Worker()
