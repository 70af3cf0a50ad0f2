"""How errors and identities cross the wire, shared by the servers and every client.

A `ShoalError` travels as its JSON form (`error`, `message`, `hint`) — the HTTP body of a
4xx/5xx answer, or the `extra_info` of a Flight error — and is raised again on the other
side as the same class, so a remote failure reads exactly like a local one.
"""

from __future__ import annotations

import json
from typing import Any

from shoal import errors
from shoal.errors import ShoalError

__all__ = ["AUTH_SCHEME", "error_from_dict", "error_to_bytes"]

AUTH_SCHEME = "Shoal"

_CLASSES: dict[str, type[ShoalError]] = {
    name: cls
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type) and issubclass(cls, ShoalError)
}


def error_to_bytes(error: ShoalError) -> bytes:
    return json.dumps(error.to_dict()).encode()


def error_from_dict(data: Any, *, fallback: str = "the remote node failed") -> ShoalError:
    """Rebuild the error a remote node raised (a plain ShoalError if its class is unknown)."""
    if not isinstance(data, dict):
        return ShoalError(fallback)
    cls = _CLASSES.get(str(data.get("error", "")), ShoalError)
    message = str(data.get("message") or data.get("detail") or fallback)
    hint = data.get("hint")
    if cls is errors.ContractViolation:
        return ShoalError(message, hint=str(hint) if hint else None)
    return cls(message, hint=str(hint) if hint else None)
