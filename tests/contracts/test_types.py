"""Arrow types and contract types: normalising, naming, parsing."""

from __future__ import annotations

import pyarrow as pa
import pytest

from shoal.contracts import types

UTC_US = pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize(
    ("source", "physical", "logical"),
    [
        (pa.bool_(), "bool", "boolean"),
        (pa.int8(), "int8", "integer"),
        (pa.int16(), "int16", "integer"),
        (pa.int32(), "int32", "integer"),
        (pa.int64(), "int64", "integer"),
        (pa.uint8(), "int16", "integer"),
        (pa.uint16(), "int32", "integer"),
        (pa.uint32(), "int64", "integer"),
        (pa.uint64(), "int64", "integer"),
        (pa.float16(), "float32", "number"),
        (pa.float32(), "float32", "number"),
        (pa.float64(), "float64", "number"),
        (pa.decimal128(10, 2), "decimal128(10, 2)", "number"),
        (pa.decimal256(38, 0), "decimal128(38, 0)", "number"),
        (pa.decimal32(5, 2), "decimal128(5, 2)", "number"),
        (pa.decimal64(12, 3), "decimal128(12, 3)", "number"),
        (pa.decimal128(5, -2), "decimal128(7, 0)", "number"),
        (pa.decimal256(50, 4), "float64", "number"),
        (pa.string(), "string", "string"),
        (pa.large_string(), "string", "string"),
        (pa.string_view(), "string", "string"),
        (pa.dictionary(pa.int32(), pa.string()), "string", "string"),
        (pa.dictionary(pa.int8(), pa.int16()), "int16", "integer"),
        (pa.null(), "string", "string"),
        (pa.binary(), "binary", "string"),
        (pa.large_binary(), "binary", "string"),
        (pa.binary_view(), "binary", "string"),
        (pa.binary(16), "binary", "string"),
        (pa.uuid(), "binary", "string"),
        (pa.json_(), "string", "string"),
        (pa.run_end_encoded(pa.int32(), pa.string()), "string", "string"),
        (pa.date32(), "date32", "date"),
        (pa.date64(), "date32", "date"),
        (pa.timestamp("s"), "timestamp[us]", "timestamp"),
        (pa.timestamp("ns"), "timestamp[us]", "timestamp"),
        (pa.timestamp("ms", tz="Europe/Berlin"), "timestamp[us, tz=UTC]", "timestamp"),
        (pa.timestamp("us", tz="+02:00"), "timestamp[us, tz=UTC]", "timestamp"),
        (pa.time32("s"), "string", "time"),
        (pa.time64("ns"), "string", "time"),
        (pa.struct([("a", pa.uint8())]), "struct", "object"),
        (pa.list_(pa.int8()), "list", "array"),
        (pa.large_list(pa.string()), "list", "array"),
        (pa.list_(pa.int8(), 3), "list", "array"),
        (pa.list_view(pa.int8()), "list", "array"),
    ],
)
def test_normalize_names_and_logical_types(source, physical, logical):
    assert types.physical_type_name(types.normalize(source)) == physical
    assert types.logical_type_of(source) == logical
    assert types.physical_fits_logical(logical, physical)


def test_nested_types_normalise_their_children():
    source = pa.struct(
        [
            ("a", pa.uint32()),
            ("b", pa.large_list(pa.timestamp("ns"))),
            ("c", pa.dictionary(pa.int8(), pa.string())),
        ]
    )
    assert types.normalize(source) == pa.struct(
        [("a", pa.int64()), ("b", pa.list_(pa.timestamp("us"))), ("c", pa.string())]
    )


@pytest.mark.parametrize(
    "source",
    [
        pa.duration("s"),
        pa.month_day_nano_interval(),
        pa.map_(pa.string(), pa.int64()),
        pa.struct([]),
        pa.list_(pa.duration("ms")),
        pa.dense_union([pa.field("a", pa.int8())]),
    ],
)
def test_types_without_a_faithful_place_are_refused(source):
    with pytest.raises(types.UnsupportedTypeError):
        types.normalize(source)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bool", pa.bool_()),
        ("int32", pa.int32()),
        ("float32", pa.float32()),
        ("decimal128(10, 2)", pa.decimal128(10, 2)),
        ("decimal128(38,0)", pa.decimal128(38, 0)),
        ("timestamp[us]", pa.timestamp("us")),
        ("timestamp[us, tz=UTC]", UTC_US),
        ("date32", pa.date32()),
        ("binary", pa.binary()),
    ],
)
def test_scalar_physical_types_parse(text, expected):
    assert types.scalar_arrow_type(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "int",
        "double",
        "decimal128(0, 0)",
        "decimal128(39, 2)",
        "decimal128(5, 6)",
        "timestamp[ns]",
        "VARCHAR(3)",
    ],
)
def test_other_physical_types_are_refused(text):
    with pytest.raises(ValueError):
        types.scalar_arrow_type(text)


def test_duckdb_types():
    assert types.duckdb_type(pa.decimal128(12, 2)) == "DECIMAL(12, 2)"
    assert types.duckdb_type(UTC_US) == "TIMESTAMPTZ"
    assert types.duckdb_type(pa.timestamp("us")) == "TIMESTAMP"
    assert types.duckdb_type(pa.int8()) == "TINYINT"
    with pytest.raises(types.UnsupportedTypeError):
        types.duckdb_type(pa.list_(pa.int8()))


def test_integer_ranges():
    assert types.integer_range(pa.int8()) == (-128, 127)
    assert types.integer_range(pa.uint64()) == (0, 2**64 - 1)
