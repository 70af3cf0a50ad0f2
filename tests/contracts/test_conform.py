"""Conforming batches to the contract: casts, text parsing, and values that do not fit."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.contracts import ContractCheck
from shoal.contracts.conform import _arrow_cast, _cast
from shoal.errors import ContractViolation
from tests.contracts.util import column, failure, make_contract


def conform_column(values: pa.Array, logical: str, physical: str | None = None, **fields):
    """Conform one column; give (values or None, the check) for assertions."""
    spec = column("x", logical, **fields)
    if physical:
        spec["physicalType"] = physical
    check = ContractCheck(make_contract([spec]))
    batch = pa.record_batch({"x": values})
    check.check_columns(batch.schema)
    out = check.conform(batch)
    return (None if out is None else out.column(0).to_pylist()), check


def bad_count(check: ContractCheck) -> int:
    return failure(check.failures, "type", "x").count


def test_columns_come_out_in_contract_order_and_types():
    contract = make_contract([column("a", "integer"), column("b"), column("c", "number")])
    check = ContractCheck(contract)
    batch = pa.record_batch(
        {"c": pa.array([1, 2], pa.int8()), "b": ["x", "y"], "a": pa.array([3, 4], pa.uint8())}
    )
    check.check_columns(batch.schema)
    out = check.conform(batch)
    assert out.schema == check.arrow_schema
    assert out.to_pylist() == [{"a": 3, "b": "x", "c": 1.0}, {"a": 4, "b": "y", "c": 2.0}]
    assert check.failures == []


@pytest.mark.parametrize(
    ("logical", "physical", "texts", "expected"),
    [
        (
            "integer",
            "int64",
            ["1", " 2 ", "+3", "-4", "007", None, "1.5", "0x10", "1_000", "", "x", "1e3"],
            [1, 2, 3, -4, 7, None],
        ),
        ("integer", "int8", ["127", "128", "-129"], [127]),
        (
            "number",
            "float64",
            ["1.5", "1e3", ".5", "5.", "-inf", "NaN", "1,5", "abc", "1.5.1"],
            [1.5, 1000.0, 0.5, 5.0, float("-inf"), "nan"],
        ),
        ("number", "float32", ["1e38", "inf", "1e39"], [pytest.approx(1e38), float("inf")]),
        (
            "number",
            "decimal128(10, 2)",
            ["12.50", "12.500", "-0.5", ".25", "7", "12.505", "1e3", "999999999.99"],
            [
                Decimal("12.50"),
                Decimal("12.50"),
                Decimal("-0.50"),
                Decimal("0.25"),
                Decimal("7.00"),
            ],
        ),
        ("number", "decimal128(5, 0)", ["12", "12.0", "12.5"], [Decimal("12"), Decimal("12")]),
        (
            "boolean",
            "bool",
            ["true", "FALSE", "t", "F", "yes", "No", "y", "n", "1", "0", "2", "on"],
            [True, False, True, False, True, False, True, False, True, False],
        ),
        (
            "date",
            "date32",
            ["2024-01-31", "2024-02-30", "2024-01-31 10:00", "31.01.2024"],
            [date(2024, 1, 31)],
        ),
        (
            "timestamp",
            "timestamp[us]",
            [
                "2024-01-31",
                "2024-01-31 10:00",
                "2024-01-31T10:00:00+02:00",
                "2024-01-31T10:00:00.1234567Z",
                "yesterday",
            ],
            [
                datetime(2024, 1, 31),
                datetime(2024, 1, 31, 10),
                datetime(2024, 1, 31, 8),
                datetime(2024, 1, 31, 10, 0, 0, 123456),
            ],
        ),
    ],
)
def test_text_is_parsed_strictly(logical, physical, texts, expected):
    values, check = conform_column(pa.array(texts, pa.string()), logical, physical)
    good = len(expected)
    if good == len(texts):
        assert [("nan" if v != v else v) for v in values] == expected
        return
    assert values is None
    assert bad_count(check) == len(texts) - good
    # The good values parse as expected when alone.
    alone, check = conform_column(pa.array(texts[:good], pa.string()), logical, physical)
    assert check.failures == []
    assert [("nan" if v != v else v) for v in alone] == expected


def test_text_to_timestamp_with_zone_keeps_the_instant():
    values, _ = conform_column(
        pa.array(["2024-01-31T10:00:00+02:00", "2024-01-31 10:00"]),
        "timestamp",
        "timestamp[us, tz=UTC]",
    )
    assert [v.isoformat() for v in values] == [
        "2024-01-31T08:00:00+00:00",
        "2024-01-31T10:00:00+00:00",
    ]


def test_parsed_text_keeps_row_order_in_big_batches():
    numbers = pa.array(range(300_000), pa.int64())
    values, check = conform_column(pc.cast(numbers, pa.string()), "integer")
    assert check.failures == []
    assert values == numbers.to_pylist()


def test_text_columns_in_any_string_encoding_parse():
    for array in (
        pa.array(["1", "2"], pa.large_string()),
        pa.array(["1", "2"], pa.string_view()),
        pa.array(["1", "2", "1"]).dictionary_encode(),
    ):
        values, check = conform_column(array, "integer")
        assert check.failures == [], array.type
        assert values[:2] == [1, 2]


@pytest.mark.parametrize(
    ("source", "logical", "physical", "bad"),
    [
        (pa.array([1, 200, -300, None]), "integer", "int8", 2),
        (pa.array([1, 2**40], pa.uint64()), "integer", "int32", 1),
        (pa.array([2**63, 1], pa.uint64()), "integer", "int64", 1),
        (
            pa.array([1.0, 1.5, float("nan"), float("inf"), 3e9, -2.0, 2.0**63]),
            "integer",
            "int64",
            4,
        ),
        (pa.array([1.0, 127.0, 128.0, -128.0, -129.0]), "integer", "int8", 2),
        (pa.array([1.5, 2.0], pa.float16()), "integer", "int8", 1),
        (pa.array([Decimal("1.00"), Decimal("1.50")], pa.decimal128(10, 2)), "integer", "int64", 1),
        (pa.array([Decimal("1e20"), Decimal("1")], pa.decimal128(38, 0)), "integer", "int64", 1),
        (pa.array([2**53, 2**53 + 1, -(2**53) - 1]), "number", "float64", 2),
        (pa.array([2**24, 2**24 + 1]), "number", "float32", 1),
        (
            pa.array([Decimal("1.2300"), Decimal("1.2345")], pa.decimal128(10, 4)),
            "number",
            "decimal128(10, 2)",
            1,
        ),
        (pa.array([999, 1000, -1000]), "number", "decimal128(5, 2)", 2),
        (pa.array([1.005, 1e10, float("nan")]), "number", "decimal128(5, 2)", 2),
        (pa.array([1e300, float("inf"), 1.0]), "number", "float32", 1),
        (
            pa.array([datetime(2024, 1, 1), datetime(2024, 1, 1, 10)], pa.timestamp("us")),
            "date",
            "date32",
            1,
        ),
        (pa.array([b"ok", b"\xff", b"\xfe", b"\xff"]), "string", "string", 3),
    ],
)
def test_values_that_do_not_fit_are_counted_exactly(source, logical, physical, bad):
    values, check = conform_column(source, logical, physical)
    assert values is None
    assert bad_count(check) == bad


@pytest.mark.parametrize(
    ("source", "logical", "physical", "expected"),
    [
        (pa.array([1, None], pa.uint8()), "integer", "int16", [1, None]),
        (pa.array([1.5], pa.float16()), "number", "float32", [1.5]),
        (pa.array([3], pa.int32()), "number", "float64", [3.0]),
        (pa.array([3]), "number", "decimal128(5, 2)", [Decimal("3.00")]),
        (pa.array([1.005]), "number", "decimal128(5, 2)", [Decimal("1.00")]),
        (pa.array([Decimal("1.5")], pa.decimal128(5, 1)), "number", "float64", [1.5]),
        (
            pa.array([1_000_000_001], pa.timestamp("ns")),
            "timestamp",
            "timestamp[us]",
            [datetime(1970, 1, 1, 0, 0, 1)],
        ),
        (pa.array([date(2024, 1, 2)], pa.date64()), "date", "date32", [date(2024, 1, 2)]),
        (pa.array([date(2024, 1, 2)]), "timestamp", "timestamp[us]", [datetime(2024, 1, 2)]),
        (pa.array([7, None]), "string", "string", ["7", None]),
        (pa.array([True]), "string", "string", ["true"]),
        (pa.array([None, None], pa.null()), "date", "date32", [None, None]),
        (pa.array(["é"]), "string", "binary", ["é".encode()]),
        (pa.array([b"0" * 16], pa.binary(16)).cast(pa.uuid()), "string", "binary", [b"0" * 16]),
    ],
)
def test_safe_casts_succeed(source, logical, physical, expected):
    values, check = conform_column(source, logical, physical)
    assert check.failures == []
    assert values == expected


def test_time_of_day_becomes_iso_text():
    values, check = conform_column(pa.array([37_800_000_000], pa.time64("us")), "time", "string")
    assert check.failures == []
    assert values == ["10:30:00.000000"]


def test_failures_accumulate_across_batches_with_five_samples():
    contract = make_contract([column("n", "integer"), column("tag")])
    check = ContractCheck(contract)
    batches = [
        pa.record_batch(
            {
                "n": [f"{i}" if i % 3 else "bad" for i in range(b * 10, b * 10 + 10)],
                "tag": ["t"] * 10,
            }
        )
        for b in range(3)
    ]
    check.check_columns(batches[0].schema)
    results = [check.conform(batch) for batch in batches]
    assert results == [None, None, None]
    found = failure(check.failures, "type", "n")
    assert found.count == 10  # 0, 3, 6, ..., 27
    assert found.samples == [{"n": "bad", "tag": "t"}] * 5
    with pytest.raises(ContractViolation) as info:
        check.raise_if_failed("p")
    assert info.value.failures[0].rule == "type"


def test_samples_are_json_safe_and_mask_personal_data():
    contract = make_contract(
        [
            column("n", "integer"),
            column("email", pii=True),
            column("when", "timestamp", physicalType="timestamp[us, tz=UTC]"),
            column("price", "number", physicalType="decimal128(6, 2)"),
            column("raw", physicalType="binary"),
        ]
    )
    check = ContractCheck(contract)
    batch = pa.record_batch(
        {
            "n": ["x"],
            "email": ["ann@example.com"],
            "when": pa.array([datetime(2024, 1, 1, 10)], pa.timestamp("ns", tz="UTC")),
            "price": pa.array([Decimal("1.50")], pa.decimal128(6, 2)),
            "raw": [b"\x00\x01"],
        }
    )
    check.check_columns(batch.schema)
    assert check.conform(batch) is None
    sample = failure(check.failures, "type", "n").samples[0]
    assert sample == {
        "n": "x",
        "email": "***",
        "when": "2024-01-01T10:00:00+00:00",
        "price": "1.50",
        "raw": "0001",
    }
    json.dumps(sample, allow_nan=False)


def test_columns_that_can_never_fit_fail_before_any_row():
    contract = make_contract(
        [
            column("d", "date"),
            column("t", "timestamp"),
            column("b", "boolean"),
            column("s", "object", properties=[column("a", "integer")]),
        ]
    )
    check = ContractCheck(contract)
    schema = pa.schema(
        [("d", pa.bool_()), ("t", pa.int64()), ("b", pa.int8()), ("s", pa.list_(pa.int8()))]
    )
    check.check_columns(schema)
    details = {(f.rule, f.column): f.detail for f in check.failures}
    assert details == {
        ("type", "d"): "the data holds bool, which can never become date32",
        ("type", "t"): "the data holds int64, which can never become timestamp[us]",
        ("type", "b"): "the data holds int8, which can never become bool",
        ("type", "s"): "the data holds list<item: int8>, which can never become struct",
    }
    empty = pa.record_batch([pa.array([], field.type) for field in schema], schema=schema)
    assert check.conform(empty) is None
    assert len(check.failures) == 4  # recorded once per schema, not per batch


def test_missing_unexpected_and_repeated_columns():
    contract = make_contract(
        [
            column("a"),
            column("b"),
            column("s", "object", properties=[column("x", "integer"), column("y")]),
        ]
    )
    check = ContractCheck(contract)
    schema = pa.schema(
        [
            ("a", pa.string()),
            ("extra", pa.int8()),
            ("extra", pa.int8()),
            ("s", pa.struct([("x", pa.int8()), ("z", pa.int8())])),
        ]
    )
    check.check_columns(schema)
    assert {(f.rule, f.column) for f in check.failures} == {
        ("unexpected column", "extra"),
        ("missing column", "b"),
        ("missing column", "s.y"),
        ("unexpected column", "s.z"),
    }


def test_nested_values_cast_and_decode():
    contract = make_contract(
        [
            column(
                "s",
                "object",
                properties=[
                    column("city"),
                    column(
                        "zips", "array", items={"logicalType": "integer", "physicalType": "int32"}
                    ),
                ],
            )
        ]
    )
    zips = pa.ListViewArray.from_arrays(
        pa.array([2, 0], pa.int32()),
        pa.array([2, 1], pa.int32()),
        pa.array([1, 2, 3, 4], pa.int16()),
    )
    city = pa.array(["b", "p"]).dictionary_encode()
    source = pa.StructArray.from_arrays([zips, city], names=["zips", "city"])
    check = ContractCheck(contract)
    batch = pa.record_batch({"s": source})
    check.check_columns(batch.schema)
    out = check.conform(batch)
    assert check.failures == []
    assert out.column(0).to_pylist() == [{"city": "b", "zips": [3, 4]}, {"city": "p", "zips": [1]}]


def test_bad_values_inside_nested_columns_are_counted():
    contract = make_contract(
        [column("l", "array", items={"logicalType": "integer", "physicalType": "int8"})]
    )
    values, check = conform_column(
        pa.array([[1, 2], [300], None, [1, 1000]]),
        "array",
        items={"logicalType": "integer", "physicalType": "int8"},
    )
    assert values is None
    assert bad_count(check) == 2
    assert contract.column("l").arrow_type() == pa.list_(pa.int8())


def test_run_end_encoded_columns_decode():
    values, check = conform_column(pc.run_end_encode(pa.array(["1", "1", "2"])), "integer")
    assert check.failures == []
    assert values == [1, 1, 2]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.none(),
            st.integers(-(2**70), 2**70).map(float),
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-300, 300).map(lambda i: i / 2),
        ),
        max_size=30,
    ),
    target=st.sampled_from([pa.int8(), pa.int16(), pa.int64(), pa.decimal128(6, 2)]),
)
def test_bad_value_masks_match_arrow_value_by_value(values, target):
    """The vectorised count agrees with casting each value on its own."""
    array = pa.array(values, pa.float64())
    _, bad = _cast(array, target)
    expected = []
    for value in values:
        try:
            _arrow_cast(pa.array([value], pa.float64()), target)
            expected.append(False)
        except pa.ArrowInvalid:
            expected.append(True)
    got = [False] * len(values) if bad is None else bad.to_pylist()
    assert got == expected


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=30),
    target=st.sampled_from(
        [pa.int8(), pa.int32(), pa.float32(), pa.float64(), pa.decimal128(4, 1)]
    ),
)
def test_integer_masks_match_arrow_value_by_value(values, target):
    array = pa.array(values, pa.int64())
    _, bad = _cast(array, target)
    expected = []
    for value in values:
        try:
            _arrow_cast(pa.array([value], pa.int64()), target)
            expected.append(False)
        except pa.ArrowInvalid:
            expected.append(True)
    assert ([False] * len(values) if bad is None else bad.to_pylist()) == expected


def test_a_bad_value_in_another_batch_does_not_fail_this_one():
    """Batches are often slices of one table; casts must look only at their own rows."""
    contract = make_contract(
        [
            column("l", "array", items={"logicalType": "integer", "physicalType": "int8"}),
            column("s", "object", properties=[column("n", "integer", physicalType="int8")]),
        ]
    )
    table = pa.table(
        {
            "l": pa.array([[1], [2], [3], [1000]]),
            "s": pa.array([{"n": 1}, {"n": 2}, {"n": 3}, {"n": 1000}]),
        }
    )
    check = ContractCheck(contract)
    check.check_columns(table.schema)
    first, second = table.to_batches(max_chunksize=2)
    assert check.conform(first) is not None
    assert check.conform(second) is None
    assert failure(check.failures, "type", "l").count == 1
    assert failure(check.failures, "type", "s").count == 1
