"""Each peer's state as seen from this node, from periodic pings with timeouts.

    up       the last ping was answered
    suspect  one or two pings in a row went unanswered (a slow or busy peer)
    down     three or more in a row went unanswered, or it never answered
    unknown  no ping was tried yet

A query does not wait for a timeout on a peer that is down: its fragments go to another
holder of the product, or fail at once naming every holder and its state.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["PeerHealth", "PeerState", "PeerStatus"]

DOWN_AFTER_MISSES = 3


class PeerState(StrEnum):
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PeerStatus:
    state: PeerState
    last_seen: float | None  # epoch seconds of the last answered ping
    misses: int
    error: str
    rtt: float | None = None  # seconds the last answered ping took


class PeerHealth:
    """Thread-safe record of ping results per peer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._misses: dict[str, int] = {}
        self._errors: dict[str, str] = {}
        self._rtt: dict[str, float] = {}

    def answered(self, peer: str, rtt: float | None = None) -> None:
        with self._lock:
            if rtt is not None:
                self._rtt[peer] = rtt
            self._seen[peer] = time.time()
            self._misses[peer] = 0
            self._errors.pop(peer, None)

    def missed(self, peer: str, error: str) -> None:
        with self._lock:
            self._misses[peer] = self._misses.get(peer, 0) + 1
            self._errors[peer] = error

    def status(self, peer: str) -> PeerStatus:
        with self._lock:
            seen = self._seen.get(peer)
            misses = self._misses.get(peer)
            error = self._errors.get(peer, "")
            rtt = self._rtt.get(peer)
        if misses is None:
            state = PeerState.UNKNOWN
        elif misses == 0:
            state = PeerState.UP
        elif misses < DOWN_AFTER_MISSES and seen is not None:
            state = PeerState.SUSPECT
        else:
            state = PeerState.DOWN
        return PeerStatus(state, seen, misses or 0, error, rtt)

    def is_down(self, peer: str) -> bool:
        return self.status(peer).state is PeerState.DOWN
