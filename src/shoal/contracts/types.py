"""Arrow types <-> contract types.

A product's data files use a small, Delta-Lake-compatible set of Arrow types, named in the
contract's `physicalType`:

    bool, int8, int16, int32, int64, float32, float64, decimal128(p, s) (p <= 38), string,
    binary, date32, timestamp[us], timestamp[us, tz=UTC], struct (object), list (array)

Every other Arrow type a source may yield is normalised to one of these on inference
(`normalize`): unsigned integers widen to the next signed type (uint64 -> int64), string
variants and times become string, date64 becomes date32, timestamps of any unit become
microseconds (keeping only whether they carry a time zone), float16 becomes float32.
Types with no faithful place in a Delta table (durations, intervals, maps, unions) are
refused rather than silently turned into something else.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

import pyarrow as pa

__all__ = [
    "LIST",
    "LOGICAL_TYPES",
    "PHYSICAL_SCALARS",
    "STRUCT",
    "LogicalType",
    "UnsupportedTypeError",
    "default_physical_type",
    "duckdb_type",
    "integer_range",
    "logical_type_of",
    "normalize",
    "physical_fits_logical",
    "physical_type_name",
    "scalar_arrow_type",
    "unwrap",
]

LogicalType = Literal[
    "string", "integer", "number", "boolean", "date", "timestamp", "time", "object", "array"
]
LOGICAL_TYPES: Final[tuple[LogicalType, ...]] = get_args(LogicalType)

STRUCT: Final = "struct"
LIST: Final = "list"
MAX_DECIMAL_PRECISION: Final = 38

PHYSICAL_SCALARS: Final[dict[str, pa.DataType]] = {
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
    "date32": pa.date32(),
    "timestamp[us]": pa.timestamp("us"),
    "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
}

_DECIMAL = re.compile(r"decimal128\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)")

# Which physical types may carry each logical type. `time` is stored as ISO text because
# Delta Lake has no time-of-day type.
_PHYSICAL_FOR_LOGICAL: Final[dict[str, tuple[str, ...]]] = {
    "string": ("string", "binary"),
    "integer": ("int8", "int16", "int32", "int64"),
    "number": ("float32", "float64", "decimal128"),
    "boolean": ("bool",),
    "date": ("date32",),
    "timestamp": ("timestamp[us]", "timestamp[us, tz=UTC]"),
    "time": ("string",),
    "object": (STRUCT,),
    "array": (LIST,),
}

_UNSIGNED_WIDENED: Final[dict[pa.DataType, pa.DataType]] = {
    pa.uint8(): pa.int16(),
    pa.uint16(): pa.int32(),
    pa.uint32(): pa.int64(),
    pa.uint64(): pa.int64(),
}


class UnsupportedTypeError(ValueError):
    """An Arrow type that a Shoal product cannot store."""


def scalar_arrow_type(physical: str) -> pa.DataType:
    """Give the Arrow type a scalar `physicalType` names; ValueError when it names none."""
    known = PHYSICAL_SCALARS.get(physical)
    if known is not None:
        return known
    match = _DECIMAL.fullmatch(physical)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        if not 1 <= precision <= MAX_DECIMAL_PRECISION or scale > precision:
            raise ValueError(
                f"decimal128 needs 1 <= precision <= {MAX_DECIMAL_PRECISION} and "
                f"0 <= scale <= precision; got {physical}"
            )
        return pa.decimal128(precision, scale)
    choices = ", ".join([*PHYSICAL_SCALARS, "decimal128(p, s)", STRUCT, LIST])
    raise ValueError(f"unknown physicalType {physical!r}; use one of: {choices}")


def physical_type_name(data_type: pa.DataType) -> str:
    """Name a normalised Arrow type the way a contract's `physicalType` does."""
    for name, known in PHYSICAL_SCALARS.items():
        if data_type == known:
            return name
    if pa.types.is_decimal128(data_type):
        return f"decimal128({data_type.precision}, {data_type.scale})"
    if pa.types.is_struct(data_type):
        return STRUCT
    if pa.types.is_list(data_type):
        return LIST
    raise UnsupportedTypeError(f"{data_type} is not one of Shoal's physical types")


def physical_fits_logical(logical: str, physical: str) -> bool:
    """Tell whether a column of logical type `logical` may be stored as `physical`."""
    family = "decimal128" if physical.startswith("decimal128(") else physical
    return family in _PHYSICAL_FOR_LOGICAL.get(logical, ())


def default_physical_type(logical: LogicalType, *, timezone: bool = False) -> str:
    """The physical type a property gets when its contract names only the logical type."""
    if logical == "timestamp":
        return "timestamp[us, tz=UTC]" if timezone else "timestamp[us]"
    if logical == "number":
        return "float64"
    if logical == "integer":
        return "int64"
    return _PHYSICAL_FOR_LOGICAL[logical][0]


def unwrap(data_type: pa.DataType) -> pa.DataType:
    """See through encodings that do not change what the values mean.

    Dictionary, run-end and extension types (JSON, UUID, ...) hold their values in another
    type; that type is what the contract describes.
    """
    while True:
        if pa.types.is_dictionary(data_type) or pa.types.is_run_end_encoded(data_type):
            data_type = data_type.value_type
        elif isinstance(data_type, pa.BaseExtensionType):
            data_type = data_type.storage_type
        else:
            return data_type


def normalize(data_type: pa.DataType) -> pa.DataType:
    """Give the physical type a product stores for values of `data_type`.

    Raises UnsupportedTypeError for types with no faithful place in a Delta table.
    """
    data_type = unwrap(data_type)
    t = pa.types
    if t.is_null(data_type) or t.is_time(data_type):
        return pa.string()
    if t.is_boolean(data_type) or t.is_signed_integer(data_type):
        return data_type
    if t.is_unsigned_integer(data_type):
        return _UNSIGNED_WIDENED[data_type]
    if t.is_float16(data_type):
        return pa.float32()
    if t.is_floating(data_type):
        return data_type
    if t.is_decimal(data_type):
        return _normalize_decimal(data_type)
    if t.is_string(data_type) or t.is_large_string(data_type) or t.is_string_view(data_type):
        return pa.string()
    if (
        t.is_binary(data_type)
        or t.is_large_binary(data_type)
        or t.is_binary_view(data_type)
        or t.is_fixed_size_binary(data_type)
    ):
        return pa.binary()
    if t.is_date(data_type):
        return pa.date32()
    if t.is_timestamp(data_type):
        return pa.timestamp("us", tz="UTC" if data_type.tz else None)
    if t.is_struct(data_type):
        if data_type.num_fields == 0:
            raise UnsupportedTypeError("a struct without fields cannot be stored")
        children = [
            pa.field(data_type.field(i).name, normalize(data_type.field(i).type))
            for i in range(data_type.num_fields)
        ]
        return pa.struct(children)
    if _is_any_list(data_type):
        return pa.list_(normalize(data_type.value_type))
    raise UnsupportedTypeError(f"{data_type} values cannot be stored in a Shoal product")


def logical_type_of(data_type: pa.DataType) -> LogicalType:
    """The contract's logical type for values of Arrow type `data_type` (before normalising)."""
    data_type = unwrap(data_type)
    t = pa.types
    if t.is_time(data_type):
        return "time"
    if t.is_struct(data_type):
        return "object"
    if _is_any_list(data_type):
        return "array"
    normalised = normalize(data_type)
    if t.is_boolean(normalised):
        return "boolean"
    if t.is_integer(normalised):
        return "integer"
    if t.is_floating(normalised) or t.is_decimal(normalised):
        return "number"
    if t.is_date(normalised):
        return "date"
    if t.is_timestamp(normalised):
        return "timestamp"
    return "string"


def integer_range(data_type: pa.DataType) -> tuple[int, int]:
    """The smallest and largest value an Arrow integer type holds."""
    bits = data_type.bit_width
    if pa.types.is_unsigned_integer(data_type):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def duckdb_type(data_type: pa.DataType) -> str:
    """The DuckDB SQL type for a physical Arrow type (scalars only)."""
    t = pa.types
    names = {
        pa.bool_(): "BOOLEAN",
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.string(): "VARCHAR",
        pa.binary(): "BLOB",
        pa.date32(): "DATE",
    }
    if data_type in names:
        return names[data_type]
    if t.is_decimal(data_type):
        return f"DECIMAL({data_type.precision}, {data_type.scale})"
    if t.is_timestamp(data_type):
        return "TIMESTAMPTZ" if data_type.tz else "TIMESTAMP"
    raise UnsupportedTypeError(f"no DuckDB type for {data_type}")


def _normalize_decimal(data_type: pa.DataType) -> pa.DataType:
    precision, scale = data_type.precision, data_type.scale
    if scale < 0:
        # A negative scale counts in tens, hundreds, ...; Delta needs whole units.
        precision, scale = precision - scale, 0
    if precision > MAX_DECIMAL_PRECISION:
        # Wider than any Delta decimal: a double keeps the magnitude if not every digit.
        return pa.float64()
    return pa.decimal128(precision, scale)


def _is_any_list(data_type: pa.DataType) -> bool:
    t = pa.types
    return bool(
        t.is_list(data_type)
        or t.is_large_list(data_type)
        or t.is_fixed_size_list(data_type)
        or t.is_list_view(data_type)
        or t.is_large_list_view(data_type)
    )
