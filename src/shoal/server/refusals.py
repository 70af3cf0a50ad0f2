"""Refused requests go into the audit log, without letting a flood of them flood the disk.

Each refusal the servers answer (a bad or missing token, a policy or lock-down refusal) is an
audit entry: who claimed to ask (unchecked: the check is what failed), where, and why. At
most `PER_SECOND` are written each second; the ones left out are counted in the next entry
written, so the log says how many there were without a fsync for each.
"""

from __future__ import annotations

import threading
import time

from shoal import audit
from shoal.config import Home
from shoal.mesh.tokens import request_caller
from shoal.mesh.wire import AUTH_SCHEME

__all__ = ["PER_SECOND", "RefusalLog", "claimed_caller"]

PER_SECOND = 20


def claimed_caller(authorization: str) -> str:
    """Who an authorization header says is asking, unchecked."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token:
        return "unverified:user"
    if scheme == AUTH_SCHEME and token:
        try:
            return f"unverified:node:{request_caller(token)}"
        except Exception:  # a token too broken to name anyone
            return "unverified:node"
    return "anonymous"


class RefusalLog:
    def __init__(self, home: Home, per_second: int = PER_SECOND) -> None:
        self.home = home
        self.per_second = per_second
        self._lock = threading.Lock()
        self._second = 0
        self._written = 0
        self._dropped = 0

    def record(self, who: str, where: str, message: str) -> None:
        now = int(time.monotonic())
        with self._lock:
            if now != self._second:
                self._second, self._written = now, 0
            if self._written >= self.per_second:
                self._dropped += 1
                return
            self._written += 1
            dropped, self._dropped = self._dropped, 0
        audit.record(
            self.home,
            "refuse",
            who,
            at=where,
            reason=message[:500],
            unrecorded_before=dropped or None,
        )
