"""What goes into an audit entry: checked names, JSON-safe bounded details, times.

Entries record what callers hand over, and some of it comes from outside (file names,
peers' reasons, SQL text), so nothing a caller passes may break the log: names are checked,
detail values are made JSON-safe, and long ones are cut (saying so) so an entry stays
under `MAX_ENTRY_BYTES`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from shoal.errors import UsageError
from shoal.log import canonical_json

__all__ = [
    "MAX_ENTRY_BYTES",
    "as_utc",
    "bounded_detail",
    "check_action",
    "check_text",
    "parse_since",
]

MAX_ENTRY_BYTES = 16 * 1024
_ACTION = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_NAME = 256  # characters of `who` and `product`
# Up to 4 bytes a character for who and product, the fixed fields and the signature.
_DETAIL_BYTES = MAX_ENTRY_BYTES - 3 * 1024
# (longest text, most items) tried in turn until the detail fits: a few long values are
# kept nearly whole, and only a detail that is large everywhere is cut hard.
_CUTS = ((4096, 512), (1024, 128), (256, 32), (64, 8))
_DEPTH = 4  # nesting kept; deeper (or cyclic) structures end in a marker


def check_action(action: object) -> str:
    """Give `action` back if it is a valid action name, else raise UsageError."""
    if not isinstance(action, str) or _ACTION.fullmatch(action) is None:
        raise UsageError(
            f"invalid audit action {action!r}: want 1-64 of a-z, 0-9, '_' and '-', "
            "starting with a letter"
        )
    return action


def check_text(value: object, what: str) -> str:
    """Give a principal or product name back if it can be recorded, else raise UsageError.

    Too long or with control characters is refused rather than cut: two different
    principals must never be recorded as one.
    """
    if not isinstance(value, str):
        raise UsageError(f"audit {what} must be text, not {type(value).__name__}")
    if not value or len(value) > _MAX_NAME or _CONTROL.search(value):
        raise UsageError(
            f"invalid audit {what} {value[:80]!r}: want 1-{_MAX_NAME} characters "
            "and no control characters"
        )
    return _text(value, _MAX_NAME, [])


def bounded_detail(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` as JSON values that fit an entry; cut texts and lists end in a marker and
    set `truncated`."""
    for longest, most in _CUTS:
        cut: list[bool] = [len(fields) > most]
        detail = {
            _text(str(k), 128, cut): _clean(v, longest, most, 0, cut)
            for k, v in islice(fields.items(), most)
        }
        if any(cut):
            detail["truncated"] = True
        if len(canonical_json(detail)) <= _DETAIL_BYTES:
            return detail
    return {"truncated": True, "fields": [_text(str(k), 64, []) for k in islice(fields, 8)]}


def _clean(value: Any, longest: int, most: int, depth: int, cut: list[bool]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 1 << 63 else f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN or Infinity
    if isinstance(value, str):
        return _text(value, longest, cut)
    if isinstance(value, bytes | bytearray | memoryview):
        return _text(bytes(value[: longest // 2 + 1]).hex(), longest, cut)
    if isinstance(value, Mapping | list | tuple | set | frozenset) and depth >= _DEPTH:
        cut.append(True)
        return f"<nested deeper than {_DEPTH} levels>"
    try:
        if isinstance(value, Mapping):
            cut.append(len(value) > most)
            return {
                _text(str(k), 128, cut): _clean(v, longest, most, depth + 1, cut)
                for k, v in islice(value.items(), most)
            }
        if isinstance(value, list | tuple | set | frozenset):
            cut.append(len(value) > most)
            items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
            return [_clean(v, longest, most, depth + 1, cut) for v in islice(items, most)]
        text = str(value)  # paths, times, enums: their text is what a reader wants
    except Exception:  # a hostile __str__, __repr__ or __len__ must not stop the record
        text = f"<unprintable {type(value).__name__}>"
    return _text(text, longest, cut)


def _text(value: str, longest: int, cut: list[bool]) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (undecodable file names) kept as escapes
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(value) <= longest:
        return value
    cut.append(True)
    return f"{value[:longest]}…[{len(value) - longest} more characters]"


_AGO = re.compile(r"(\d{1,7})\s*([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The moment `text` names: an ISO 8601 time (naive means UTC) or a duration ago such
    as `90s`, `15m`, `2h`, `7d`, `4w`; UsageError otherwise."""
    text = text.strip()
    match = _AGO.fullmatch(text)
    try:
        if match is not None:
            seconds = int(match.group(1)) * _UNIT[match.group(2)]
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        return as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        pass
    raise UsageError(
        f"invalid time {text!r}: give an ISO 8601 time (2025-05-01, 2025-05-01T09:30Z) "
        "or a duration ago (90s, 15m, 2h, 7d, 4w)"
    )


def as_utc(value: datetime) -> datetime:
    """`value` with a time zone: naive times are taken as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
