"""Source batches cast to the contract's Arrow schema, with values that do not fit counted.

Once per source schema, each contract column gets a plan: the source column it reads and
how its values reach the contract's type. A source type that can never become the
contract's (bool -> date, int -> timestamp) is a 'type' failure before any row is read;
a column missing from the data, or one the contract does not know, is reported the same
way (also for fields of struct columns, named `column.field`).

Values then travel one of two ways, always the same way for a given pair of types so a
value is accepted or refused whatever else its batch holds:

* Text to bool, integer, number, decimal, date or timestamp is parsed by DuckDB under a
  strict grammar: "12" is an integer but "1.5", "0x10" and "1_000" are not; "12.50" fits
  decimal(10, 2) but "12.505" does not (no rounding); "2024-01-31" is a date but
  "2024-01-31 10:00" is not (no dropped time); a timestamp may carry an offset (converted
  to UTC). Booleans: true/false, t/f, yes/no, y/n, 1/0 in any case. Surrounding blanks are
  ignored.
* Everything else goes through Arrow's safe cast, which refuses overflow and lost digits
  (int64 -> int8 out of range, 1.5 -> integer, 2^53 + 1 -> float64). On top of Arrow,
  a timestamp with a time of day does not become a date, and a finite double does not
  become an infinite float32. Sub-microsecond digits are dropped: products store
  microseconds.

When a cast fails, the bad values are found without per-row Python: vectorised checks
first (range, whole numbers, digits), then a search over the distinct remaining values
only if Arrow still refuses something. Failures per column accumulate across batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from shoal.contracts import types
from shoal.contracts.failures import MAX_SAMPLES, FailureLog
from shoal.engine import quote_identifier, trusted_connection

__all__ = ["Conformer"]

log = logging.getLogger("shoal.contracts.conform")

# Which source kinds may ever become each target kind.
_ACCEPTS: Final[dict[str, frozenset[str]]] = {
    "bool": frozenset({"null", "bool", "text"}),
    "int": frozenset({"null", "int", "float", "decimal", "text"}),
    "float": frozenset({"null", "int", "float", "decimal", "text"}),
    "decimal": frozenset({"null", "int", "float", "decimal", "text"}),
    "text": frozenset(
        {"null", "bool", "int", "float", "decimal", "text", "binary", "date", "timestamp", "time"}
    ),
    "binary": frozenset({"null", "text", "binary"}),
    "date": frozenset({"null", "date", "timestamp", "text"}),
    "timestamp": frozenset({"null", "date", "timestamp", "text"}),
    "struct": frozenset({"null", "struct"}),
    "list": frozenset({"null", "list"}),
}
_PARSED_FROM_TEXT: Final = frozenset({"bool", "int", "float", "decimal", "date", "timestamp"})

_INTEGER_TEXT: Final = r"[+-]?[0-9]+"
_FLOAT_TEXT: Final = (
    r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(?i:inf|infinity|nan)"
)
_INFINITY_TEXT: Final = r"[+-]?(?i:inf|infinity)"
_BOOL_TEXT: Final = r"(?i:true|false|t|f|yes|no|y|n|1|0)"
_DATE_TEXT: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TIMESTAMP_TEXT: Final = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?"
    r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?"
)
_TEXT_TABLE: Final = "__shoal_text"


@dataclass(frozen=True)
class _Plan:
    """How one contract column is read from one source schema."""

    name: str
    index: int
    target: pa.DataType
    parse_text: bool


class Conformer:
    """Casts batches to `schema` (the contract's columns, in order), logging what cannot fit."""

    def __init__(self, schema: pa.Schema, failures: FailureLog) -> None:
        self.schema = schema
        self._failures = failures
        self._known: list[tuple[pa.Schema, list[_Plan] | None]] = []
        self._con: Any = None

    def check_columns(self, source: pa.Schema) -> bool:
        """Plan the casts from `source`; record columns and types that can never fit.

        Gives whether every column can be read. Recording happens once per source schema.
        """
        return self._plans(source) is not None

    def conform(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """The batch in the contract's column order and types, or None if a value did not fit."""
        plans = self._plans(batch.schema)
        if plans is None:
            return None
        parsed = self._parse_text(batch, [plan for plan in plans if plan.parse_text])
        arrays: list[pa.Array] = []
        fits = True
        for plan in plans:
            if plan.parse_text:
                values, bad = parsed[plan.name]
            else:
                values, bad = _cast(_decode(batch.column(plan.index)), plan.target)
            bad_count = 0 if bad is None else int(pc.sum(bad).as_py() or 0)
            if values is not None and not bad_count:
                arrays.append(values)
                continue
            fits = False
            source_type = batch.schema.field(plan.index).type
            detail = (
                f"value(s) of type {source_type} that do not fit "
                f"{types.physical_type_name(plan.target)}"
            )
            rows = None
            if bad is not None and bad_count:
                # Only the few rows kept as samples are copied, however many are bad.
                rows = batch.take(pc.indices_nonzero(bad).slice(0, MAX_SAMPLES))
            self._failures.add("type", plan.name, bad_count, detail, rows)
        if not fits:
            return None
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _plans(self, source: pa.Schema) -> list[_Plan] | None:
        for known, plans in self._known:
            if known.equals(source):
                return plans
        plans = self._make_plans(source)
        self._known.append((source, plans))
        return plans

    def _make_plans(self, source: pa.Schema) -> list[_Plan] | None:
        names = source.names
        ok = True
        for name in sorted({n for n in names if names.count(n) > 1}):
            self._failures.add(
                "unexpected column", name, 0, f"the data has {names.count(name)} columns named so"
            )
            ok = False
        plans: list[_Plan] = []
        for target in self.schema:
            if target.name not in names:
                self._failures.add(
                    "missing column",
                    target.name,
                    0,
                    "the contract has this column; the data lacks it",
                )
                ok = False
                continue
            index = names.index(target.name)
            problems = _problems(source.field(index).type, target.type, target.name)
            for rule, column, detail in problems:
                self._failures.add(rule, column, 0, detail)
            ok = ok and not problems
            source_kind = _kind(source.field(index).type)
            parse_text = source_kind == "text" and _kind(target.type) in _PARSED_FROM_TEXT
            plans.append(_Plan(target.name, index, target.type, parse_text))
        for name in names:
            if name not in self.schema.names:
                self._failures.add(
                    "unexpected column", name, 0, "the data has this column; the contract lacks it"
                )
                ok = False
        return plans if ok else None

    def _parse_text(
        self, batch: pa.RecordBatch, plans: list[_Plan]
    ) -> dict[str, tuple[pa.Array | None, pa.Array | None]]:
        """Parse text columns in one DuckDB pass: values, and where parsing failed."""
        if not plans:
            return {}
        if self._con is None:
            self._con = trusted_connection()
            # Text without an offset means UTC, whatever the machine's zone.
            self._con.execute("SET TimeZone = 'UTC'")
        sources = [pc.cast(_decode(batch.column(plan.index)), pa.large_string()) for plan in plans]
        columns = [f"c{i}" for i in range(len(plans))]
        table = pa.Table.from_arrays(sources, names=columns)
        select = ", ".join(
            f"{_parse_sql(quote_identifier(column), plan.target)} AS {column}"
            for column, plan in zip(columns, plans, strict=True)
        )
        self._con.register(_TEXT_TABLE, table)
        try:
            parsed = self._con.sql(f"SELECT {select} FROM {_TEXT_TABLE}").to_arrow_table()
        finally:
            self._con.unregister(_TEXT_TABLE)
        result: dict[str, tuple[pa.Array | None, pa.Array | None]] = {}
        for column, source, plan in zip(columns, sources, plans, strict=True):
            values = parsed.column(column).combine_chunks()
            bad = pc.and_(pc.is_valid(source), pc.is_null(values))
            result[plan.name] = (pc.cast(values, plan.target), bad)
        return result


def _parse_sql(column: str, target: pa.DataType) -> str:
    """SQL that parses text `column` into `target`, or gives NULL where the text is not one."""
    text = f"trim({column})"
    kind = _kind(target)
    sql_type = types.duckdb_type(target)

    def matches(pattern: str) -> str:
        return f"regexp_full_match({text}, '{pattern}')"

    if kind == "timestamp":
        # Parsed with its offset, if any, then shown in UTC.
        value = f"TRY_CAST({text} AS TIMESTAMPTZ)"
        if not target.tz:
            value = f"CAST({value} AS TIMESTAMP)"
        return f"CASE WHEN {matches(_TIMESTAMP_TEXT)} THEN {value} END"
    value = f"TRY_CAST({text} AS {sql_type})"
    if kind == "float":
        # "1e39" is a number but not a float32: it must not become infinity unnoticed.
        finite = f"({matches(_INFINITY_TEXT)} OR NOT isinf({value}))"
        return f"CASE WHEN {matches(_FLOAT_TEXT)} AND {finite} THEN {value} END"
    grammar = {
        "bool": _BOOL_TEXT,
        "int": _INTEGER_TEXT,
        "date": _DATE_TEXT,
    }.get(kind) or _decimal_text(target.scale)
    return f"CASE WHEN {matches(grammar)} THEN {value} END"


def _decimal_text(scale: int) -> str:
    # Digits beyond the scale must be zeros, so no value is rounded.
    if scale == 0:
        return r"[+-]?([0-9]+(\.0*)?|\.0+)"
    return rf"[+-]?([0-9]+(\.[0-9]{{0,{scale}}}0*)?|\.[0-9]{{1,{scale}}}0*)"


def _kind(data_type: pa.DataType) -> str:
    """The family a type's values belong to, for deciding what may become what."""
    data_type = types.unwrap(data_type)
    t = pa.types
    checks = (
        (t.is_null, "null"),
        (t.is_boolean, "bool"),
        (t.is_integer, "int"),
        (t.is_floating, "float"),
        (t.is_decimal, "decimal"),
        (lambda d: t.is_string(d) or t.is_large_string(d) or t.is_string_view(d), "text"),
        (
            lambda d: (
                t.is_binary(d)
                or t.is_large_binary(d)
                or t.is_binary_view(d)
                or t.is_fixed_size_binary(d)
            ),
            "binary",
        ),
        (t.is_date, "date"),
        (t.is_timestamp, "timestamp"),
        (t.is_time, "time"),
        (t.is_struct, "struct"),
        (
            lambda d: (
                t.is_list(d)
                or t.is_large_list(d)
                or t.is_fixed_size_list(d)
                or t.is_list_view(d)
                or t.is_large_list_view(d)
            ),
            "list",
        ),
    )
    for check, kind in checks:
        if check(data_type):
            return kind
    return "other"


def _problems(source: pa.DataType, target: pa.DataType, path: str) -> list[tuple[str, str, str]]:
    """Why values of `source` can never become `target`: (rule, column path, detail) each."""
    source_kind, target_kind = _kind(source), _kind(target)
    if source_kind not in _ACCEPTS[target_kind]:
        physical = types.physical_type_name(target)
        return [("type", path, f"the data holds {source}, which can never become {physical}")]
    source = types.unwrap(source)
    if source_kind == "struct" and target_kind == "struct":
        found: list[tuple[str, str, str]] = []
        source_fields = {
            source.field(i).name: source.field(i).type for i in range(source.num_fields)
        }
        target_fields = {
            target.field(i).name: target.field(i).type for i in range(target.num_fields)
        }
        for name, child in target_fields.items():
            if name not in source_fields:
                found.append(("missing column", f"{path}.{name}", "the data's struct lacks it"))
            else:
                found += _problems(source_fields[name], child, f"{path}.{name}")
        found += [
            ("unexpected column", f"{path}.{name}", "the contract's object lacks it")
            for name in source_fields
            if name not in target_fields
        ]
        return found
    if source_kind == "list" and target_kind == "list":
        return _problems(source.value_type, target.value_type, f"{path}[]")
    return []


def _fields(struct: pa.DataType) -> dict[str, pa.DataType]:
    return {struct.field(i).name: struct.field(i).type for i in range(struct.num_fields)}


def _decode(array: pa.Array) -> pa.Array:
    """Plain, compact values of `array`: dictionaries, run-ends and extensions undone.

    Nested arrays are rebuilt from their visible values: Arrow casts a sliced list's or
    struct's whole child arrays, so a bad value in another batch's rows would fail this one,
    and it casts list views wrongly (values go missing).
    """
    data_type = array.type
    if pa.types.is_dictionary(data_type):
        return _decode(array.dictionary_decode())
    if pa.types.is_run_end_encoded(data_type):
        return _decode(pc.run_end_decode(array))
    if isinstance(data_type, pa.BaseExtensionType):
        return _decode(array.storage)
    if pa.types.is_struct(data_type):
        children = [_decode(array.field(i)) for i in range(data_type.num_fields)]
        names = [data_type.field(i).name for i in range(data_type.num_fields)]
        return pa.StructArray.from_arrays(children, names=names, mask=pc.is_null(array))
    if _kind(data_type) != "list":
        return array
    lengths = pc.fill_null(pc.list_value_length(array), 0)
    offsets = pa.concat_arrays(
        [pa.array([0], pa.int32()), pc.cast(pc.cumulative_sum(lengths), pa.int32())]
    )
    values = _decode(pc.list_flatten(array))
    return pa.ListArray.from_arrays(offsets, values, mask=pc.is_null(array))


def _arrow_cast(array: pa.Array, target: pa.DataType) -> pa.Array:
    """Arrow's safe cast, sub-microsecond digits dropped; raises ArrowInvalid on a misfit."""
    options = pc.CastOptions(target, allow_time_truncate=True)
    if pa.types.is_integer(array.type) and pa.types.is_decimal(target):
        # Arrow refuses int64 -> decimal(5, 2) outright, whatever the values; going through
        # a decimal wide enough for any integer checks each value instead.
        wide = pc.cast(array, pa.decimal256(76, target.scale))
        return pc.cast(wide, options=options)
    return pc.cast(array, options=options)


def _cast(array: pa.Array, target: pa.DataType) -> tuple[pa.Array | None, pa.Array | None]:
    """Cast safely: (values, None) when every value fits, else (None, mask of bad values)."""
    if array.type == target:
        return array, None
    try:
        values = _arrow_cast(array, target)
    except pa.ArrowInvalid:
        return None, _bad_values(array, target)
    lost = _lost_on_success(array, values)
    if lost is not None and pc.any(lost).as_py():
        return None, lost
    return values, None


def _lost_on_success(array: pa.Array, values: pa.Array) -> pa.Array | None:
    """Values Arrow casts without complaint although something is lost."""
    source, target = array.type, values.type
    if pa.types.is_timestamp(source) and pa.types.is_date(target):
        back = pc.cast(values, source)
        return pc.fill_null(pc.not_equal(back, array), False)
    if pa.types.is_float64(source) and pa.types.is_float32(target):
        return pc.fill_null(pc.and_(pc.is_finite(array), pc.is_inf(values)), False)
    return None


def _bad_values(array: pa.Array, target: pa.DataType) -> pa.Array:
    """Mask of the values Arrow refuses to cast, found without a Python loop over rows."""
    surely_bad = _surely_bad(array, target)
    bad = pc.fill_null(surely_bad, False) if surely_bad is not None else None
    rest = array if bad is None else array.filter(pc.invert(bad))
    try:
        _arrow_cast(rest, target)
        if bad is not None:
            return bad
    except pa.ArrowInvalid:
        pass
    # Arrow refuses something the quick checks let through: find it among distinct values.
    more = _refused_among(rest, target)
    if bad is None:
        return more
    positions = pc.indices_nonzero(pc.invert(bad))
    flagged = pc.take(positions, pc.indices_nonzero(more))
    extra = pc.is_in(_row_numbers(len(array)), value_set=pc.cast(flagged, pa.int64()))
    return pc.or_(bad, extra)


def _surely_bad(array: pa.Array, target: pa.DataType) -> pa.Array | None:
    """Vectorised checks that flag only values Arrow's safe cast is certain to refuse."""
    source = array.type
    if pa.types.is_float16(source):
        array, source = pc.cast(array, pa.float32()), pa.float32()
    try:
        if pa.types.is_integer(target):
            low, high = types.integer_range(target)
            return _outside(array, low, high, whole=True)
        if pa.types.is_floating(target) and pa.types.is_integer(source):
            # Arrow refuses integers beyond the float's exact-integer range, even if representable.
            limit = 2**24 if pa.types.is_float32(target) else 2**53
            return _outside(array, -limit, limit, whole=False)
        if pa.types.is_decimal(target):
            bound = 10 ** (target.precision - target.scale)
            bad = _outside(array, -bound + 1, bound - 1, whole=False)
            if pa.types.is_decimal(source) and source.scale > target.scale:
                lost = pc.not_equal(pc.round(array, ndigits=target.scale), array)
                bad = lost if bad is None else pc.or_(bad, lost)
            return bad
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # A comparison Arrow cannot make (decimals beyond 38 digits): the slow path decides.
        return None
    return None


def _outside(array: pa.Array, low: int, high: int, *, whole: bool) -> pa.Array | None:
    """Values below `low`, above `high` or (with `whole`) not whole numbers."""
    source = array.type
    checks: list[pa.Array] = []
    if pa.types.is_integer(source):
        source_low, source_high = types.integer_range(source)
        if low > source_low:
            checks.append(pc.less(array, pa.scalar(low, source)))
        if high < source_high:
            checks.append(pc.greater(array, pa.scalar(high, source)))
    elif pa.types.is_floating(source):
        checks.append(pc.invert(pc.is_finite(array)))
        checks.append(pc.less(array, pa.scalar(float(low), source)))
        # float(high) may round up (2^63 - 1 -> 2^63); high + 1 is exact for every int range.
        checks.append(pc.greater_equal(array, pa.scalar(float(high + 1), source)))
        if whole:
            checks.append(pc.not_equal(pc.floor(array), array))
    elif pa.types.is_decimal(source):
        checks.append(pc.less(array, _exact_scalar(low)))
        checks.append(pc.greater(array, _exact_scalar(high)))
        if whole:
            checks.append(pc.not_equal(pc.floor(array), array))
    if not checks:
        return None
    result = checks[0]
    for check in checks[1:]:
        result = pc.or_(result, check)
    return result


def _exact_scalar(value: int) -> pa.Scalar:
    """An Arrow scalar holding the integer `value` exactly (int64, else a decimal)."""
    if -(2**63) <= value < 2**63:
        return pa.scalar(value, pa.int64())
    return pa.scalar(Decimal(value), pa.decimal128(len(str(abs(value))), 0))


def _refused_among(array: pa.Array, target: pa.DataType) -> pa.Array:
    """Mask of the values Arrow refuses, by halving the set of distinct values."""
    try:
        distinct = pc.unique(array)
    except pa.ArrowNotImplementedError:
        distinct = None  # nested values: search the rows themselves
    candidates = array if distinct is None else distinct
    refused = _bisect(candidates, target)
    if distinct is None:
        return pc.is_in(_row_numbers(len(array)), value_set=pa.array(refused, pa.int64()))
    bad_values = distinct.take(pa.array(refused, pa.int64()))
    return pc.fill_null(pc.is_in(array, value_set=bad_values), False)


def _bisect(candidates: pa.Array, target: pa.DataType) -> list[int]:
    """Positions in `candidates` that Arrow refuses to cast on their own."""
    refused: list[int] = []
    pending = [(0, len(candidates))]
    while pending:
        start, length = pending.pop()
        try:
            _arrow_cast(_decode(candidates.slice(start, length)), target)
            continue
        except pa.ArrowInvalid:
            pass
        if length == 1:
            refused.append(start)
            continue
        half = length // 2
        pending.append((start + half, length - half))
        pending.append((start, half))
    if len(refused) > 1000:
        log.debug("found %d refused values one by one", len(refused))
    return refused


def _row_numbers(count: int) -> pa.Array:
    return pa.array(range(count), pa.int64())
