"""A sliding-window counter of failed attempts (login, token endpoint) per key: 429 past the limit.

https://www.rfc-editor.org/rfc/rfc6585#section-4

Per process: with N gunicorn workers a guesser gets at most N times the limit per window,
which still turns online guessing from millions of tries a day into a few thousand.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class FailureLimiter:
    """Count failures per key over `window` seconds; `blocked` once `limit` is reached."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _prune(self, key: str, current: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= current - self.window:
            hits.popleft()
        return hits

    def blocked(self, key: str) -> float:
        """Return the seconds to wait before `key` may try again (0 when allowed)."""
        current = time.monotonic()
        with self._lock:
            hits = self._prune(key, current)
            if len(hits) < self.limit:
                return 0.0
            return max(1.0, hits[0] + self.window - current)

    def fail(self, key: str) -> None:
        """Record a failed attempt."""
        current = time.monotonic()
        with self._lock:
            self._prune(key, current).append(current)
            if len(self._hits) > 100_000:  # bound memory under a spray of keys
                self._hits = {k: v for k, v in self._hits.items() if v}

    def reset(self) -> None:
        """Forget every failure (tests)."""
        with self._lock:
            self._hits.clear()
