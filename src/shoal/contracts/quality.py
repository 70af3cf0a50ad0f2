"""Quality rules (ODCS `quality` entries) and their operators.

Shoal checks the ODCS v3.1 library metrics, each compared with exactly one operator:

    rowCount          table    rows in the product
    duplicateValues   table    rows repeating a combination of arguments.properties
    duplicateValues   column   rows repeating a value already in the column
    nullValues        column   rows without a value
    missingValues     column   rows whose value is in arguments.missingValues (null included
                               when listed)
    invalidValues     column   rows with a value outside arguments.validValues or not
                               matching arguments.pattern

`unit: percent` compares the metric as a percentage of the rows instead. Duplicates count
the rows beyond the first of each value, so [a, a, a, b] has 2.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import model_validator

from shoal.contracts.values import Number, OdcsModel, check_pattern

__all__ = [
    "LIBRARY_METRICS",
    "OPERATORS",
    "PROPERTY_METRICS",
    "SCHEMA_METRICS",
    "QualityRule",
    "holds",
    "operator_text",
]

OPERATORS: Final = (
    "mustBe",
    "mustNotBe",
    "mustBeGreaterThan",
    "mustBeGreaterOrEqualTo",
    "mustBeLessThan",
    "mustBeLessOrEqualTo",
    "mustBeBetween",
    "mustNotBeBetween",
)
LIBRARY_METRICS: Final = (
    "rowCount",
    "duplicateValues",
    "nullValues",
    "missingValues",
    "invalidValues",
)
SCHEMA_METRICS: Final = ("rowCount", "duplicateValues")
PROPERTY_METRICS: Final = ("duplicateValues", "nullValues", "missingValues", "invalidValues")


class QualityRule(OdcsModel):
    """One entry of a `quality` list."""

    type: Literal["library", "text", "sql", "custom"] | None = None
    name: str | None = None
    description: str | None = None
    metric: str | None = None
    rule: str | None = None  # ODCS v3.0 spelling of `metric`
    arguments: dict[str, Any] | None = None
    query: str | None = None
    engine: str | None = None
    implementation: Any = None
    unit: Literal["rows", "percent"] | None = None
    must_be: Number | None = None
    must_not_be: Number | None = None
    must_be_greater_than: Number | None = None
    must_be_greater_or_equal_to: Number | None = None
    must_be_less_than: Number | None = None
    must_be_less_or_equal_to: Number | None = None
    must_be_between: list[Number] | None = None
    must_not_be_between: list[Number] | None = None

    @property
    def kind(self) -> str:
        """library, text, sql or custom (a rule with a metric is a library rule)."""
        if self.type is not None:
            return self.type
        return "library" if self.metric_name else "text"

    @property
    def metric_name(self) -> str | None:
        return self.metric or self.rule

    @property
    def checked(self) -> bool:
        """Whether Shoal checks this rule (text, sql and custom rules it only keeps)."""
        return self.kind == "library"

    def operator(self) -> tuple[str, Any]:
        """The rule's one operator and its value, e.g. ("mustBeGreaterThan", 0)."""
        data = self.model_dump(by_alias=True, exclude_none=True)
        return next((op, data[op]) for op in OPERATORS if op in data)

    @model_validator(mode="after")
    def _check(self) -> QualityRule:
        if not self.checked:
            return self
        metric = self.metric_name
        if metric not in LIBRARY_METRICS:
            choices = ", ".join(LIBRARY_METRICS)
            raise ValueError(f"metric {metric!r} is not one Shoal checks; use one of {choices}")
        data = self.model_dump(by_alias=True, exclude_none=True)
        given = [op for op in OPERATORS if op in data]
        if len(given) != 1:
            raise ValueError(
                f"a {metric} rule needs exactly one operator ({', '.join(OPERATORS)}); "
                f"got {len(given)}"
            )
        for op in ("mustBeBetween", "mustNotBeBetween"):
            bounds = data.get(op)
            if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
                raise ValueError(f"{op} needs two numbers, the smaller first")
        if metric == "rowCount" and self.unit == "percent":
            raise ValueError("rowCount counts rows; unit percent does not apply")
        self._check_arguments(metric)
        return self

    def _check_arguments(self, metric: str) -> None:
        arguments = self.arguments or {}
        if metric == "missingValues":
            values = arguments.get("missingValues")
            if not isinstance(values, list) or not values:
                raise ValueError("missingValues needs arguments.missingValues: a list of values")
        if metric == "invalidValues":
            valid, pattern = arguments.get("validValues"), arguments.get("pattern")
            if valid is None and pattern is None:
                raise ValueError("invalidValues needs arguments.validValues or arguments.pattern")
            if valid is not None and (not isinstance(valid, list) or not valid):
                raise ValueError("arguments.validValues must be a non-empty list")
            if pattern is not None:
                if not isinstance(pattern, str):
                    raise ValueError("arguments.pattern must be text")
                check_pattern(pattern, "arguments.pattern")


def holds(operator: str, expected: Any, value: float) -> bool:
    """Whether a metric's `value` satisfies `operator` with `expected` (ODCS semantics)."""
    if operator == "mustBe":
        return bool(value == expected)
    if operator == "mustNotBe":
        return bool(value != expected)
    if operator == "mustBeGreaterThan":
        return bool(value > expected)
    if operator == "mustBeGreaterOrEqualTo":
        return bool(value >= expected)
    if operator == "mustBeLessThan":
        return bool(value < expected)
    if operator == "mustBeLessOrEqualTo":
        return bool(value <= expected)
    low, high = expected
    inside = bool(low <= value <= high)
    return inside if operator == "mustBeBetween" else not inside


def operator_text(operator: str, expected: Any) -> str:
    """The operator as people write it, e.g. "> 0" or "between 1 and 5"."""
    symbols = {
        "mustBe": "=",
        "mustNotBe": "!=",
        "mustBeGreaterThan": ">",
        "mustBeGreaterOrEqualTo": ">=",
        "mustBeLessThan": "<",
        "mustBeLessOrEqualTo": "<=",
    }
    if operator in symbols:
        return f"{symbols[operator]} {expected}"
    low, high = expected
    where = "between" if operator == "mustBeBetween" else "not between"
    return f"{where} {low} and {high}"
