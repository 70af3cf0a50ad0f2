"""A node's record of what it refused or repaired, for operators to read.

`<home>/events.jsonl`, one JSON object per line (time, kind, and what the event concerns),
appended with fdatasync. The security issue's signed audit trail takes these over; until
then this is where a refused copy, a quarantined file or a rejected history is told.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from typing import Any

from shoal.config import Home

__all__ = ["read_events", "record_event"]

_LOCK = threading.Lock()
MAX_EVENT_BYTES = 64 * 1024


def record_event(home: Home, kind: str, **fields: Any) -> dict[str, Any]:
    """Append one event; gives it."""
    event = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "kind": kind}
    event |= {key: value for key, value in fields.items() if value is not None}
    line = json.dumps(event, sort_keys=True, default=str).encode()[:MAX_EVENT_BYTES] + b"\n"
    with _LOCK:
        fd = os.open(home.root / "events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
            os.fdatasync(fd)
        finally:
            os.close(fd)
    return event


def read_events(home: Home, kind: str | None = None) -> list[dict[str, Any]]:
    """Every event recorded (of one kind if given), oldest first; unreadable lines skipped."""
    try:
        raw = (home.root / "events.jsonl").read_bytes()
    except FileNotFoundError:
        return []
    events = []
    for line in raw.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash
        if isinstance(event, dict) and (kind is None or event.get("kind") == kind):
            events.append(event)
    return events
