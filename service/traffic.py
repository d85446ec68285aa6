"""How requests arrive, as the batcher needs to know it: often, and while others are in flight?

Waiting for more work pays only when more is coming. One client sending a request after another
never overlaps its own requests (the next comes once this one is answered), so waiting would
only add to each; many clients at once do overlap, and a batch gathered a little longer runs
more rows for about the cost of fewer.
"""

from __future__ import annotations

# Requests overlap when, on average, more than this share of them arrive with another in flight.
OVERLAPPING = 0.2
SMOOTHING = 0.3  # weight of the newest arrival in the moving averages


class Arrivals:
    """Moving averages of the gap between requests and of their overlap with others."""

    def __init__(self, max_wait_s: float) -> None:
        self._max_wait_s = max_wait_s
        self._last = 0.0
        self._gap = 0.0  # seconds between arrivals
        self._overlap = 0.0  # share of arrivals that found another request in flight

    def note(self, now: float, in_flight: int) -> None:
        """A request arrived at `now` (time.monotonic()), `in_flight` others unanswered."""
        if self._last:
            self._gap += SMOOTHING * (now - self._last - self._gap)
        self._last = now
        self._overlap += SMOOTHING * (min(in_flight, 1) - self._overlap)

    def more_are_coming(self) -> bool:
        """Whether waiting up to `max_wait_s` is likely to gather more work: requests come
        more often than that, and while others are in flight."""
        return self._gap < self._max_wait_s and self._overlap > OVERLAPPING
