"""Requests per API key and minute, counted in memory and folded into the shared counter.

Counting each request in the database cost a write transaction per request. Instead each process
counts its own hits and adds them to the key's row in ``rate_limits`` (the fixed window every
replica shares) at most about once per :data:`FOLD_EVERY_MS`, sooner when its unfolded hits reach
a tenth of the limit, and at once when the shared window it knows of has ended. A request is
judged on the shared count seen at the last fold plus this process's hits since.

The approximation: one process alone is exact. With several, a process does not see the others'
hits until its next fold, so a key can overshoot the limit by roughly what the other processes
count between two folds (at most a tenth of the limit each, usually far less). Hits of a key a
process stops seeing are never folded (at most a tenth of the limit), and the state of the
least recently used keys beyond :data:`MAX_KEYS` is dropped with its unfolded hits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiki.platform.domain.errors import RateLimited

WINDOW_MS = 60_000
FOLD_EVERY_MS = 1_000
FOLD_FRACTION = 10  # fold early once unfolded hits reach limit / FOLD_FRACTION
MAX_KEYS = 10_000

# Adds ``hits`` to the shared counter; returns its count in the current window and the window's start.
Fold = Callable[[int], Awaitable[tuple[int, int]]]


@dataclass(slots=True)
class _Window:
    shared: int = 0  # the shared count after our last fold (our folded hits included)
    start: int | None = None  # the shared window's start; None: never folded
    folded_at: int = 0
    pending: int = 0  # our hits since the last fold
    folding: bool = False


class ApiRateLimiter:
    """Per-process state of the per-key limits; times are the IAM clock's milliseconds."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    async def hit(self, key_id: str, limit: int, now: int, fold: Fold) -> None:
        """Count one request of ``key_id``; raise :class:`RateLimited` past ``limit`` in the window.

        ``fold`` runs when this hit makes a fold due and none is in flight for the key; requests
        arriving meanwhile count locally. A failed fold keeps its hits for the next one.
        """
        window = self._window(key_id)
        window.pending += 1
        if not window.folding and self._due(window, limit, now):
            hits, window.pending, window.folding = window.pending, 0, True
            try:
                window.shared, window.start = await fold(hits)
                window.folded_at = now
            except BaseException:
                window.pending += hits
                raise
            finally:
                window.folding = False
        shared = window.shared if window.start is not None and now < window.start + WINDOW_MS else 0
        if shared + window.pending > limit:
            ends = (window.start or now) + WINDOW_MS
            raise RateLimited("too many requests for this API key", retry_after_s=(ends - now + 999) // 1000)

    def _window(self, key_id: str) -> _Window:
        window = self._windows.get(key_id)
        if window is None:
            window = self._windows[key_id] = _Window()
            while len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(key_id)
        return window

    @staticmethod
    def _due(window: _Window, limit: int, now: int) -> bool:
        if window.start is None or now >= window.start + WINDOW_MS:
            return True  # never folded, or the shared window ended: the counter restarts
        if not 0 <= now - window.folded_at < FOLD_EVERY_MS:
            return True  # (a clock that moved back also folds)
        return window.pending >= max(1, limit // FOLD_FRACTION)
