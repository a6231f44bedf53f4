"""A bounded buffer of the most recent output, replayed when a client (re)attaches."""

from __future__ import annotations

from collections import deque

DEFAULT_RING = 256 * 1024


class RingBuffer:
    """Keeps the last `capacity` bytes as a deque of chunks (memory grows only with output)."""

    __slots__ = ("capacity", "_chunks", "_size")

    def __init__(self, capacity: int = DEFAULT_RING):
        self.capacity = capacity
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        if not data:
            return
        if len(data) >= self.capacity:
            self._chunks.clear()
            data = data[-self.capacity :]
            self._chunks.append(data)
            self._size = len(data)
            return
        self._chunks.append(data)
        self._size += len(data)
        while self._size > self.capacity:
            head = self._chunks[0]
            excess = self._size - self.capacity
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess

    def snapshot(self) -> bytes:
        data = b"".join(self._chunks)
        if len(self._chunks) > 1:
            self._chunks.clear()
            self._chunks.append(data)
        return data
