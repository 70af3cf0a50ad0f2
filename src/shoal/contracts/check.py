"""Checking data against its contract, the way the publish pipeline needs it.

    check = ContractCheck(contract)
    check.check_columns(reader.schema)          # missing, unexpected, never-castable columns
    for batch in reader:
        conformed = check.conform(batch)        # contract order and types; None on bad values
    check.check_rows(con, new_rows="new_rows", all_rows="all_rows")
    check.raise_if_failed("sales")              # ContractViolation listing every failure

`check_rows` runs one aggregate query over the new rows (required, pattern, bounds,
lengths, enum) and one over the whole product as it will be after the publish (unique,
primary key, quality metrics), then one small query per failed rule for up to 5 sample
rows. Nothing runs per row in Python, so ten million rows check in seconds.

Counting: each rule reports the rows that break it, except the duplicate rules (unique,
primaryKey, duplicateValues), which count the rows beyond the first of each value: the rows
that would have to go for the values to be unique. A primary key also fails on rows where a
key column is empty. Value rules ignore nulls; `required` is what forbids them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, Final

import duckdb
import pyarrow as pa

from shoal.contracts import types
from shoal.contracts.conform import Conformer
from shoal.contracts.failures import MAX_SAMPLES, FailureLog
from shoal.contracts.model import Contract, SchemaProperty
from shoal.contracts.quality import QualityRule, holds, operator_text
from shoal.engine import quote_identifier
from shoal.errors import RuleFailure, ShoalError, UsageError

__all__ = ["ContractCheck", "null_counts"]

log = logging.getLogger("shoal.contracts.check")

_COPIES: Final = "__shoal_copies"
_TIME_TEXT: Final = r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?"
_MAX_LISTED: Final = 10
# ODCS value constraints Shoal keeps but does not check yet; a warning says so.
_UNCHECKED_OPTIONS: Final = frozenset(
    {"multipleOf", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties"}
)


@dataclass(frozen=True)
class _Measure:
    """One number the aggregate query computes, and how to judge and illustrate it.

    Without `operator` the number counts bad rows and must be 0.
    """

    rule: str
    column: str | None
    sql: str
    params: tuple[Any, ...]
    detail: str
    samples_where: str | None = None
    samples_params: tuple[Any, ...] = ()
    duplicate_keys: tuple[str, ...] = ()
    key_nulls_too: bool = False
    operator: tuple[str, Any] | None = None
    percent: bool = False


class ContractCheck:
    """Checks data against one contract, collecting every failure before raising."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.arrow_schema: pa.Schema = contract.arrow_schema()
        masked = [column.name for column in contract.columns if _holds_pii(column)]
        self._log = FailureLog(masked)
        self._conformer = Conformer(self.arrow_schema, self._log)
        unchecked = [
            rule.name or rule.kind
            for rule in _all_quality(contract)
            if not rule.checked and rule.kind != "text"
        ]
        unchecked += [
            f"{column.name}.{option}"
            for column in contract.columns
            for option in (column.options.model_extra or {})
            if option in _UNCHECKED_OPTIONS
        ]
        if unchecked:
            log.warning(
                "contract %s has rules Shoal does not check: %s", contract.id, ", ".join(unchecked)
            )

    @property
    def failures(self) -> list[RuleFailure]:
        return self._log.failures

    def check_columns(self, source_schema: pa.Schema) -> None:
        """Record columns missing from the data, unknown to the contract, or never castable."""
        self._conformer.check_columns(source_schema)

    def conform(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """`batch` in the contract's column order and types; None if any value did not fit."""
        return self._conformer.conform(batch)

    def check_rows(
        self, con: Any, *, new_rows: str = "new_rows", all_rows: str = "all_rows"
    ) -> None:
        """Check the row rules; `con` is a DuckDB connection with both relations as views.

        `new_rows` holds the conformed incoming rows, `all_rows` the product as it will be
        after this publish. Both may name the same relation.
        """
        new_measures, all_measures = self._measures()
        if new_rows == all_rows:
            self._run(con, all_rows, new_measures + all_measures)
        else:
            self._run(con, new_rows, new_measures)
            self._run(con, all_rows, all_measures)

    def raise_if_failed(self, product: str) -> None:
        """Raise ContractViolation for `product` if anything failed so far."""
        self._log.raise_if_failed(product)

    def close(self) -> None:
        self._conformer.close()

    def __enter__(self) -> ContractCheck:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _measures(self) -> tuple[list[_Measure], list[_Measure]]:
        new: list[_Measure] = []
        whole: list[_Measure] = []
        for column in self.contract.columns:
            new += _value_rules(column)
            if column.unique:
                whole.append(_duplicates("unique", (column.name,), "repeat a value"))
            for rule in column.quality or []:
                if rule.checked:
                    whole.append(_column_quality(column, rule))
        key = self.contract.primary_key()
        if key:
            whole.append(_primary_key(key))
        for rule in self.contract.table.quality or []:
            if rule.checked:
                whole.append(_table_quality(rule))
        return new, whole

    def _run(self, con: Any, relation: str, measures: list[_Measure]) -> None:
        if not measures:
            return
        source = quote_identifier(relation)
        select = ", ".join(["count(*)", *(m.sql for m in measures)])
        params = [p for m in measures for p in m.params]
        row = _query(con, f"SELECT {select} FROM {source}", params)[0]
        total = int(row[0])
        for measure, value in zip(measures, row[1:], strict=True):
            self._judge(con, source, measure, value or 0, total)

    def _judge(self, con: Any, source: str, measure: _Measure, value: float, total: int) -> None:
        detail = measure.detail
        if measure.operator is None:
            if not value:
                return
        else:
            op, expected = measure.operator
            metric = 100.0 * value / total if measure.percent and total else value
            if holds(op, expected, metric):
                return
            shown = f"{metric:.2f}%" if measure.percent else f"{metric:,}"
            detail = f"{detail}: {shown}, must be {operator_text(op, expected)}"
        rows = _samples(con, source, measure)
        self._log.add(measure.rule, measure.column, int(value), detail, rows)


def null_counts(con: Any, relation: str, columns: Sequence[str]) -> dict[str, int]:
    """How many nulls each of `columns` holds in `relation` (one query)."""
    if not columns:
        return {}
    counts = ", ".join(f"count(*) FILTER (WHERE {quote_identifier(c)} IS NULL)" for c in columns)
    row = _query(con, f"SELECT {counts} FROM {quote_identifier(relation)}", [])[0]
    return {column: int(count) for column, count in zip(columns, row, strict=True)}


def _value_rules(column: SchemaProperty) -> list[_Measure]:
    """Rules each new row must meet on its own: required and logicalTypeOptions."""
    name = column.name
    q = quote_identifier(name)
    found: list[_Measure] = []

    def add(rule: str, where: str, params: tuple[Any, ...], detail: str) -> None:
        sql = f"count(*) FILTER (WHERE {where})"
        found.append(_Measure(rule, name, sql, params, detail, where, params))

    if column.required:
        add("required", f"{q} IS NULL", (), "a required column is empty (null)")
    if column.logical_type == "time":
        # Stored as text (Delta has no time type), so the type is checked here.
        add(
            "type",
            f"{q} IS NOT NULL AND NOT regexp_full_match({q}, ?)",
            (_TIME_TEXT,),
            "is not a time of day (HH:MM, HH:MM:SS or HH:MM:SS.ffffff)",
        )
    options = column.options
    if options.pattern is not None:
        add(
            "pattern",
            f"{q} IS NOT NULL AND NOT regexp_full_match({q}, ?)",
            (options.pattern,),
            f"does not match the pattern {options.pattern}",
        )
    comparisons = (
        ("minimum", options.minimum, "<", "is below the minimum"),
        ("minimum", options.exclusive_minimum, "<=", "is not above the exclusive minimum"),
        ("maximum", options.maximum, ">", "is above the maximum"),
        ("maximum", options.exclusive_maximum, ">=", "is not below the exclusive maximum"),
    )
    for rule, bound, op, text in comparisons:
        if bound is not None:
            placeholder, value = _bound_param(column, bound)
            add(rule, f"{q} {op} {placeholder}", (value,), f"{text} {bound}")
    if options.min_length is not None:
        add(
            "minLength",
            f"length({q}) < ?",
            (options.min_length,),
            f"is shorter than {options.min_length} character(s)",
        )
    if options.max_length is not None:
        add(
            "maxLength",
            f"length({q}) > ?",
            (options.max_length,),
            f"is longer than {options.max_length} character(s)",
        )
    if options.enum is not None:
        listed, values = _list_param(column, options.enum)
        add(
            "enum",
            f"{q} IS NOT NULL AND NOT list_contains({listed}, {q})",
            (values,),
            f"is not one of {_few(options.enum)}",
        )
    return found


def _column_quality(column: SchemaProperty, rule: QualityRule) -> _Measure:
    q = quote_identifier(column.name)
    metric = rule.metric_name or ""
    arguments = rule.arguments or {}
    label = f"{metric} ({rule.name})" if rule.name else metric
    if metric == "duplicateValues":
        measure = _duplicates(metric, (column.name,), "repeat a value")
        return _with_operator(measure, rule, label)
    where = f"{q} IS NULL"
    params: tuple[Any, ...] = ()
    if metric == "missingValues":
        listed = arguments["missingValues"]
        values = [v for v in listed if v is not None]
        conditions = [where] if None in listed else []
        if values:
            placeholder, param = _list_param(column, values)
            conditions.append(f"list_contains({placeholder}, {q})")
            params = (param,)
        where = " OR ".join(conditions)
    elif metric == "invalidValues":
        conditions = []
        params_list: list[Any] = []
        if "validValues" in arguments:
            placeholder, param = _list_param(column, arguments["validValues"])
            conditions.append(f"NOT list_contains({placeholder}, {q})")
            params_list.append(param)
        if "pattern" in arguments:
            conditions.append(f"NOT regexp_full_match({q}, ?)")
            params_list.append(arguments["pattern"])
        where = f"{q} IS NOT NULL AND ({' OR '.join(conditions)})"
        params = tuple(params_list)
    sql = f"count(*) FILTER (WHERE {where})"
    measure = _Measure(metric, column.name, sql, params, label, where, params)
    return _with_operator(measure, rule, label)


def _table_quality(rule: QualityRule) -> _Measure:
    metric = rule.metric_name or ""
    label = f"{metric} ({rule.name})" if rule.name else metric
    if metric == "rowCount":
        return _with_operator(_Measure(metric, None, "count(*)", (), label), rule, label)
    columns = tuple(str(c) for c in (rule.arguments or {})["properties"])
    return _with_operator(_duplicates(metric, columns, "repeat a combination"), rule, label)


def _with_operator(measure: _Measure, rule: QualityRule, label: str) -> _Measure:
    return replace(measure, detail=label, operator=rule.operator(), percent=rule.unit == "percent")


def _duplicates(rule: str, columns: tuple[str, ...], what: str) -> _Measure:
    """Rows beyond the first of each non-null value (or combination) of `columns`."""
    quoted = [quote_identifier(c) for c in columns]
    filled = " AND ".join(f"{q} IS NOT NULL" for q in quoted)
    key = f"({', '.join(quoted)})"
    sql = f"count(*) FILTER (WHERE {filled}) - count(DISTINCT {key}) FILTER (WHERE {filled})"
    label = ", ".join(columns)
    detail = f"row(s) {what} of ({label}) already in the product"
    return _Measure(rule, ",".join(columns), sql, (), detail, duplicate_keys=columns)


def _primary_key(columns: list[str]) -> _Measure:
    quoted = [quote_identifier(c) for c in columns]
    empty = " OR ".join(f"{q} IS NULL" for q in quoted)
    repeats = _duplicates("primaryKey", tuple(columns), "")
    sql = f"count(*) FILTER (WHERE {empty}) + {repeats.sql}"
    detail = (
        f"the primary key ({', '.join(columns)}) is empty or repeats a key already in the product"
    )
    return _Measure(
        "primaryKey",
        ",".join(columns),
        sql,
        (),
        detail,
        duplicate_keys=tuple(columns),
        key_nulls_too=True,
    )


def _samples(con: Any, source: str, measure: _Measure) -> pa.Table | None:
    """Up to MAX_SAMPLES rows that break the rule (the rows sharing a repeated value)."""
    if measure.duplicate_keys:
        quoted = [quote_identifier(c) for c in measure.duplicate_keys]
        keys = ", ".join(quoted)
        filled = " AND ".join(f"{q} IS NOT NULL" for q in quoted)
        where = f"({filled} AND {_COPIES} > 1)"
        if measure.key_nulls_too:
            where += " OR " + " OR ".join(f"{q} IS NULL" for q in quoted)
        sql = (
            f"SELECT * EXCLUDE ({_COPIES}) FROM (SELECT *, count(*) OVER (PARTITION BY {keys}) "
            f"AS {_COPIES} FROM {source}) WHERE {where} ORDER BY {keys} LIMIT {MAX_SAMPLES}"
        )
        return _query(con, sql, [], arrow=True)
    if measure.samples_where is None:
        return None
    sql = f"SELECT * FROM {source} WHERE {measure.samples_where} LIMIT {MAX_SAMPLES}"
    return _query(con, sql, list(measure.samples_params), arrow=True)


def _query(con: Any, sql: str, params: list[Any], *, arrow: bool = False) -> Any:
    try:
        if arrow:
            return con.sql(sql, params=params or None).to_arrow_table()
        # fetchall, not fetchone: DuckDB keeps a half-read result open and refuses more work.
        return con.execute(sql, params).fetchall()
    except duckdb.InvalidInputException as exc:
        # A pattern RE2 rejects despite the checks at load, or a value that will not cast.
        raise UsageError(f"cannot check the contract's rules: {_first_line(exc)}") from exc
    except duckdb.Error as exc:
        raise ShoalError(f"checking the contract's rules failed: {_first_line(exc)}") from exc


def _bound_param(column: SchemaProperty, bound: Any) -> tuple[str, Any]:
    """SQL placeholder and value for a minimum/maximum, typed like the column."""
    if column.logical_type == "date":
        value = date.fromisoformat(bound) if isinstance(bound, str) else bound
        return "CAST(? AS DATE)", value
    if column.logical_type == "timestamp":
        moment = datetime.fromisoformat(bound) if isinstance(bound, str) else bound
        if not isinstance(moment, datetime):
            moment = datetime(moment.year, moment.month, moment.day)
        aware = column.arrow_type().tz is not None
        # Compare in UTC whatever the session's zone; a bound without a zone means UTC.
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        if not aware:
            return "CAST(? AS TIMESTAMP)", moment.replace(tzinfo=None)
        return "CAST(? AS TIMESTAMPTZ)", moment
    if column.logical_type == "time":
        return "?", str(bound)
    return "?", bound


def _list_param(column: SchemaProperty, values: list[Any]) -> tuple[str, list[Any]]:
    """SQL placeholder and value for a list compared with the column's values."""
    arrow_type = column.arrow_type()
    sql_type = types.duckdb_type(arrow_type)
    if pa.types.is_decimal(arrow_type):
        # As text, so DECIMAL parses each exactly instead of going through a double.
        return f"CAST(? AS {sql_type}[])", [str(v) for v in values]
    if pa.types.is_floating(arrow_type):
        return f"CAST(? AS {sql_type}[])", [float(v) for v in values]
    return f"CAST(? AS {sql_type}[])", list(values)


def _few(values: list[Any]) -> str:
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED])
    return shown + (f", ... ({len(values)} values)" if len(values) > _MAX_LISTED else "")


def _holds_pii(column: SchemaProperty) -> bool:
    return bool(column.pii) or any(_nested_pii(child) for child in column.children())


def _nested_pii(prop: Any) -> bool:
    return bool(prop.pii) or any(_nested_pii(child) for child in prop.children())


def _all_quality(contract: Contract) -> list[QualityRule]:
    rules = list(contract.table.quality or [])
    for column in contract.columns:
        rules += column.quality or []
    return rules


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
