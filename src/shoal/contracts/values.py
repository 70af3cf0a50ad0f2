"""Building blocks of the contract models: the ODCS model base and checks on rule values.

Rules name values: a regular expression, a bound such as `minimum: 2024-01-01`, a list of
allowed values. Each must make sense for the column's logical type, and a regular
expression must be one DuckDB's engine (RE2) runs, so that a bad rule is refused when the
contract is read, not halfway through a publish.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, PlainValidator
from pydantic.alias_generators import to_camel

__all__ = [
    "Number",
    "OdcsModel",
    "check_bound",
    "check_listed_value",
    "check_pattern",
]

_TIME_OF_DAY: Final = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?")
# RE2 has no look-around, back-references or atomic groups.
_NOT_RE2: Final = re.compile(r"\(\?<?[=!]|\(\?>|\(\?P=|\\[1-9]")


class OdcsModel(BaseModel):
    """Shared settings: ODCS camelCase names, strict known fields, unknown fields kept."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
    )


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number; got {value!r}")
    return value


Number = Annotated[int | float, PlainValidator(_number)]
"""An int or float, never a bool (YAML's `yes` is not 1)."""


def check_pattern(pattern: str, field: str) -> None:
    """Refuse a regular expression that is malformed or that RE2 cannot run."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{field} is not a valid regular expression: {exc}") from None
    if _NOT_RE2.search(pattern):
        raise ValueError(
            f"{field} uses look-around or back-references, which Shoal's engine (RE2) lacks"
        )


def check_bound(logical: str, name: str, value: Any) -> None:
    """Refuse a minimum/maximum that cannot be compared with values of type `logical`."""
    if logical in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number for a {logical}; got {value!r}")
    elif logical == "date":
        if isinstance(value, datetime) or not isinstance(value, date | str):
            raise ValueError(f"{name} must be a date (YYYY-MM-DD); got {value!r}")
        if isinstance(value, str):
            _parse_iso(date.fromisoformat, value, name)
    elif logical == "timestamp":
        if isinstance(value, str):
            _parse_iso(datetime.fromisoformat, value, name)
        elif not isinstance(value, date):
            raise ValueError(f"{name} must be an ISO timestamp; got {value!r}")
    elif logical == "time" and (
        not isinstance(value, str | time) or not _TIME_OF_DAY.fullmatch(str(value))
    ):
        # Unquoted, YAML reads 09:30:00 as a number of seconds.
        raise ValueError(f"{name} must be a quoted time such as '09:30:00'; got {value!r}")


def check_listed_value(logical: str, value: Any) -> None:
    """Refuse an enum (or valid/missing) value that a column of type `logical` cannot hold."""
    if logical == "string" and not isinstance(value, str):
        raise ValueError(f"values listed for a string must be text (quote them); got {value!r}")
    if logical == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"values listed for an integer must be whole numbers; got {value!r}")
    if logical == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"values listed for a number must be numbers; got {value!r}")


def _parse_iso(parse: Callable[[str], object], value: str, name: str) -> None:
    try:
        parse(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an ISO date or timestamp") from None
