"""A node's refusals, quarantines and repairs, as entries of its signed audit log.

Kept for the callers that record events by kind (copy-refused, copy-dropped, pull-refused,
file-quarantined, file-repaired): an event is an audit entry whose action is the kind,
recorded by the node itself unless a `who` is given. See `shoal.audit`.
"""

from __future__ import annotations

from typing import Any

from shoal import audit
from shoal.config import Home

__all__ = ["read_events", "record_event"]


def record_event(home: Home, kind: str, **fields: Any) -> dict[str, Any]:
    """Record one event in the audit log; gives it as `read_events` does."""
    who = fields.pop("who", None) or f"node:{home.settings.name}"
    return _as_event(audit.record(home, kind, who, **fields))


def read_events(home: Home, kind: str | None = None) -> list[dict[str, Any]]:
    """Every event recorded (of one kind if given), oldest first: time, kind and the
    fields it was recorded with (every audit entry when no kind is given)."""
    return [_as_event(entry) for entry in audit.read(home, action=kind)]


def _as_event(entry: dict[str, Any]) -> dict[str, Any]:
    event = dict(entry["detail"]) if isinstance(entry["detail"], dict) else {}
    if "product" in entry:
        event["product"] = entry["product"]
    return event | {"time": entry["time"], "kind": entry["action"]}
