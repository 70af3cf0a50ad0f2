"""A byte-rate limit shared by the threads of one node's replica downloads.

A shop's back office often shares one modest uplink between the till, the card terminal and
Shoal; a replica catching up on a large product should not take all of it. `ByteRate` is a
token bucket: each download thread asks for the bytes it just received and sleeps until the
node-wide budget allows them, so the limit holds however many files are fetched at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["ByteRate"]


class ByteRate:
    """At most `per_second` bytes per second on average, with bursts of up to one second.

    `per_second` of 0 means no limit (every `take` returns at once). `clock` and `sleep` are
    injectable so the arithmetic is testable without waiting.
    """

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second < 0:
            raise ValueError(f"a byte rate cannot be negative, got {per_second}")
        self.per_second = per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # The moment the bytes granted so far have been paid for; never more than one second
        # in the past, so an idle spell (and the start) buys a burst of one second's worth.
        self._paid_until = clock() - 1.0

    @classmethod
    def from_megabytes(cls, megabytes_per_second: float) -> ByteRate:
        return cls(megabytes_per_second * 1_000_000)

    @property
    def limited(self) -> bool:
        return self.per_second > 0

    def take(self, size: int) -> None:
        """Account for `size` bytes and wait until the rate allows them."""
        if not self.limited or size <= 0:
            return
        with self._lock:
            now = self._clock()
            start = max(self._paid_until, now - 1.0)
            self._paid_until = start + size / self.per_second
            wait = self._paid_until - now
        if wait > 0:
            self._sleep(wait)
