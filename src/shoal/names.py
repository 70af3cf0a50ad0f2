"""Names users give nodes and products: one rule for both, checked before any I/O."""

from __future__ import annotations

import re

from shoal.errors import UsageError

__all__ = ["NAME_RULE", "check_name", "is_valid_name"]

NAME_RULE = "1-63 characters: lowercase letters, digits and '_', starting with a letter"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_name(name: str, what: str) -> str:
    """Give `name` back when it is a valid node or product name, else raise UsageError."""
    if not is_valid_name(name):
        raise UsageError(f"invalid {what} name {name!r}: must be {NAME_RULE}")
    return name
