"""Row rules checked by DuckDB over real Arrow data: exact counts and samples."""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from shoal.contracts import ContractCheck, null_counts
from shoal.engine import trusted_connection
from shoal.errors import ContractViolation, UsageError
from tests.contracts.util import check_table, column, failure, make_contract


def values(found, name: str) -> list[Any]:
    return sorted((row[name] for row in found.samples), key=lambda v: (v is None, str(v)))


def test_required_counts_nulls_in_new_rows():
    contract = make_contract([column("a", required=True), column("b", "integer")])
    found = check_table(contract, pa.table({"a": ["x", None, None], "b": [1, 2, 3]}))
    only = failure(found, "required", "a")
    assert only.count == 2
    assert only.samples == [{"a": None, "b": 2}, {"a": None, "b": 3}]
    assert len(found) == 1


def test_required_ignores_rows_already_in_the_product():
    contract = make_contract([column("a", required=True)])
    existing = pa.table({"a": pa.array([None, None], pa.string())})
    assert check_table(contract, pa.table({"a": ["x"]}), existing) == []


def test_pattern_is_a_full_match_and_ignores_nulls():
    contract = make_contract([column("code", logicalTypeOptions={"pattern": "[A-Z]{2}[0-9]{2}"})])
    found = check_table(contract, pa.table({"code": ["AB12", "ab12", "AB123", "xAB12", None]}))
    only = failure(found, "pattern", "code")
    assert only.count == 3
    assert values(only, "code") == ["AB123", "ab12", "xAB12"]
    assert "[A-Z]{2}[0-9]{2}" in only.detail


@pytest.mark.parametrize(
    ("options", "rule", "count", "bad"),
    [
        ({"minimum": 0}, "minimum", 1, [-1]),
        ({"exclusiveMinimum": 0}, "minimum", 2, [-1, 0]),
        ({"maximum": 5}, "maximum", 1, [10]),
        ({"exclusiveMaximum": 5}, "maximum", 2, [10, 5]),
        ({"minimum": 0.5}, "minimum", 2, [-1, 0]),
        ({"maximum": 4.5}, "maximum", 2, [10, 5]),
    ],
)
def test_numeric_bounds(options, rule, count, bad):
    contract = make_contract([column("n", "integer", logicalTypeOptions=options)])
    found = check_table(contract, pa.table({"n": [-1, 0, 3, 5, 10, None]}))
    only = failure(found, rule, "n")
    assert only.count == count
    assert sorted(row["n"] for row in only.samples) == sorted(bad)


def test_decimal_and_float_bounds():
    contract = make_contract(
        [
            column(
                "d", "number", physicalType="decimal128(6, 2)", logicalTypeOptions={"maximum": 9.99}
            ),
            column("f", "number", logicalTypeOptions={"minimum": 0}),
        ]
    )
    data = pa.table(
        {
            "d": pa.array([Decimal("9.99"), Decimal("10.00")], pa.decimal128(6, 2)),
            "f": [float("nan"), -0.5],
        }
    )
    found = check_table(contract, data)
    assert failure(found, "maximum", "d").samples[0]["d"] == "10.00"
    assert failure(found, "minimum", "f").count == 1


def test_date_timestamp_and_time_bounds():
    contract = make_contract(
        [
            column("day", "date", logicalTypeOptions={"minimum": date(2024, 1, 1)}),
            column(
                "at",
                "timestamp",
                physicalType="timestamp[us, tz=UTC]",
                logicalTypeOptions={"maximum": "2024-01-01T00:00:00+02:00"},
            ),
            column("naive", "timestamp", logicalTypeOptions={"exclusiveMinimum": "2024-01-01"}),
            column("opens", "time", logicalTypeOptions={"minimum": "08:00:00"}),
        ]
    )
    data = pa.table(
        {
            "day": pa.array([date(2023, 12, 31), date(2024, 1, 1)]),
            "at": pa.array(
                [datetime(2023, 12, 31, 21, 59), datetime(2023, 12, 31, 22, 1)],
                pa.timestamp("us", tz="UTC"),
            ),
            "naive": pa.array([datetime(2024, 1, 1), datetime(2024, 1, 1, 0, 0, 1)]),
            "opens": ["07:59:59", "08:00:00"],
        }
    )
    found = check_table(contract, data)
    assert failure(found, "minimum", "day").samples[0]["day"] == "2023-12-31"
    assert failure(found, "maximum", "at").samples[0]["at"] == "2023-12-31T22:01:00+00:00"
    assert failure(found, "minimum", "naive").samples[0]["naive"] == "2024-01-01T00:00:00"
    assert failure(found, "minimum", "opens").samples[0]["opens"] == "07:59:59"
    assert all(f.count == 1 for f in found)


def test_time_columns_hold_times_of_day():
    contract = make_contract([column("opens", "time")])
    found = check_table(
        contract, pa.table({"opens": ["09:30", "23:59:59.5", "24:00", "9:30", None]})
    )
    only = failure(found, "type", "opens")
    assert (only.count, values(only, "opens")) == (2, ["24:00", "9:30"])


def test_lengths_count_characters():
    contract = make_contract([column("s", logicalTypeOptions={"minLength": 2, "maxLength": 3})])
    found = check_table(contract, pa.table({"s": ["a", "ab", "ééé", "abcd", None]}))
    assert values(failure(found, "minLength", "s"), "s") == ["a"]
    assert values(failure(found, "maxLength", "s"), "s") == ["abcd"]


@pytest.mark.parametrize(
    ("spec", "data", "bad"),
    [
        (
            column("s", logicalTypeOptions={"enum": ["a", "b"]}),
            pa.array(["a", "c", None, "B"]),
            ["B", "c"],
        ),
        (column("i", "integer", logicalTypeOptions={"enum": [1, 2]}), pa.array([1, 3, None]), [3]),
        (
            column(
                "d",
                "number",
                physicalType="decimal128(5, 2)",
                logicalTypeOptions={"enum": [0.1, 2]},
            ),
            pa.array([Decimal("0.10"), Decimal("2.00"), Decimal("0.20")], pa.decimal128(5, 2)),
            ["0.20"],
        ),
        (
            column("f", "number", logicalTypeOptions={"enum": [0.5, 1]}),
            pa.array([0.5, 1.0, 2.0]),
            [2.0],
        ),
    ],
)
def test_enum(spec, data, bad):
    found = check_table(make_contract([spec]), pa.table({spec["name"]: data}))
    only = failure(found, "enum", spec["name"])
    assert only.count == len(bad)
    assert values(only, spec["name"]) == bad


def test_unique_counts_repeats_across_the_whole_product():
    contract = make_contract([column("k", "integer", unique=True), column("v")])
    new = pa.table({"k": [2, 3, 3, None, None], "v": ["b", "c", "c2", "n1", "n2"]})
    existing = pa.table({"k": [1, 2], "v": ["a", "old"]})
    only = failure(check_table(contract, new, existing), "unique", "k")
    assert only.count == 2  # one more 2 and one more 3; nulls are not values
    assert sorted((row["k"], row["v"]) for row in only.samples) == [
        (2, "b"),
        (2, "old"),
        (3, "c"),
        (3, "c2"),
    ]
    assert check_table(contract, new.slice(0, 2), existing.slice(0, 1)) == []


def test_composite_primary_key_in_position_order():
    contract = make_contract(
        [
            column("a", "integer", primaryKey=True, primaryKeyPosition=2),
            column("b", "integer", primaryKey=True, primaryKeyPosition=1),
            column("v"),
        ]
    )
    data = pa.table({"a": [1, 1, 1, None, 2], "b": [1, 1, 2, 3, 1], "v": ["x", "y", "z", "w", "u"]})
    only = failure(check_table(contract, data), "primaryKey", "b,a")
    assert only.count == 2  # (b=1, a=1) twice, and a key with an empty part
    assert sorted(row["v"] for row in only.samples) == ["w", "x", "y"]


@pytest.mark.parametrize(
    ("operator", "expected", "passes"),
    [
        ("mustBe", 3, True),
        ("mustBe", 4, False),
        ("mustNotBe", 3, False),
        ("mustNotBe", 4, True),
        ("mustBeGreaterThan", 3, False),
        ("mustBeGreaterThan", 2, True),
        ("mustBeGreaterOrEqualTo", 3, True),
        ("mustBeGreaterOrEqualTo", 4, False),
        ("mustBeLessThan", 3, False),
        ("mustBeLessThan", 4, True),
        ("mustBeLessOrEqualTo", 3, True),
        ("mustBeLessOrEqualTo", 2, False),
        ("mustBeBetween", [3, 5], True),
        ("mustBeBetween", [1, 2], False),
        ("mustNotBeBetween", [1, 3], False),
        ("mustNotBeBetween", [4, 9], True),
    ],
)
def test_row_count_operators(operator, expected, passes):
    contract = make_contract([column("a")], [{"metric": "rowCount", operator: expected}])
    found = check_table(contract, pa.table({"a": ["x", "y", "z"]}))
    assert (found == []) is passes
    if not passes:
        assert (found[0].rule, found[0].column, found[0].count) == ("rowCount", None, 3)
        assert found[0].samples == []


def test_row_count_covers_existing_rows():
    contract = make_contract([column("a")], [{"metric": "rowCount", "mustBeLessOrEqualTo": 2}])
    found = check_table(contract, pa.table({"a": ["x"]}), pa.table({"a": ["y", "z"]}))
    assert failure(found, "rowCount").detail == "rowCount: 3, must be <= 2"


def test_duplicate_values_column_and_table_level():
    contract = make_contract(
        [
            column("a", quality=[{"metric": "duplicateValues", "mustBeLessThan": 2}]),
            column(
                "b",
                quality=[
                    {"metric": "duplicateValues", "mustBeLessOrEqualTo": 10, "unit": "percent"}
                ],
            ),
            column("c"),
        ],
        [
            {
                "name": "one per pair",
                "metric": "duplicateValues",
                "mustBe": 0,
                "arguments": {"properties": ["a", "c"]},
            }
        ],
    )
    data = pa.table(
        {
            "a": ["x", "x", "x", "y", None],
            "b": ["p", "p", "q", "r", "s"],
            "c": ["1", "1", "2", "1", "1"],
        }
    )
    found = check_table(contract, data)
    column_level = failure(found, "duplicateValues", "a")
    assert column_level.count == 2
    assert values(column_level, "a") == ["x", "x", "x"]
    percent = failure(found, "duplicateValues", "b")
    assert (percent.count, percent.detail) == (1, "duplicateValues: 20.00%, must be <= 10")
    pair = failure(found, "duplicateValues", "a,c")
    assert pair.count == 1
    assert pair.detail == "duplicateValues (one per pair): 1, must be = 0"
    assert sorted((row["a"], row["c"]) for row in pair.samples) == [("x", "1"), ("x", "1")]


def test_null_missing_and_invalid_values():
    contract = make_contract(
        [
            column(
                "a", quality=[{"metric": "nullValues", "mustBeLessThan": 30, "unit": "percent"}]
            ),
            column(
                "b",
                quality=[
                    {
                        "metric": "missingValues",
                        "mustBe": 0,
                        "arguments": {"missingValues": [None, "", "N/A"]},
                    }
                ],
            ),
            column(
                "c",
                quality=[
                    {
                        "metric": "invalidValues",
                        "mustBeLessThan": 1,
                        "arguments": {"validValues": ["kg", "g", "lb"], "pattern": "[a-z]+"},
                    }
                ],
            ),
            column(
                "n",
                "integer",
                quality=[
                    {"metric": "missingValues", "mustBe": 0, "arguments": {"missingValues": [-1]}}
                ],
            ),
        ]
    )
    data = pa.table(
        {
            "a": ["x", None, None, "y"],
            "b": ["ok", "", "N/A", None],
            "c": ["kg", "KG", "oz", None],
            "n": [1, -1, None, 2],
        }
    )
    found = check_table(contract, data)
    assert failure(found, "nullValues", "a").count == 2
    assert failure(found, "nullValues", "a").detail == "nullValues: 50.00%, must be < 30"
    assert failure(found, "missingValues", "b").count == 3
    invalid = failure(found, "invalidValues", "c")
    assert (invalid.count, values(invalid, "c")) == (2, ["KG", "oz"])
    assert failure(found, "missingValues", "n").count == 1  # null is not listed as missing


def test_all_rules_run_in_one_query_per_relation_plus_one_per_failure():
    contract = make_contract(
        [
            column("k", "integer", unique=True, required=True, logicalTypeOptions={"minimum": 0}),
            column(
                "s", logicalTypeOptions={"pattern": "[a-z]+", "maxLength": 3, "enum": ["a", "b"]}
            ),
        ],
        [{"metric": "rowCount", "mustBeGreaterThan": 0}],
    )
    data = pa.table({"k": [1, 2, 2], "s": ["a", "b", "zzzz"]})
    calls: list[str] = []

    class Spy:
        def __init__(self, con):
            self.con = con

        def execute(self, sql, params=None):
            calls.append(sql)
            return self.con.execute(sql, params)

        def sql(self, sql, params=None):
            calls.append(sql)
            return self.con.sql(sql, params=params)

    check = ContractCheck(contract)
    with trusted_connection() as con:
        con.register("new_rows", data)
        con.register("all_rows", data)
        check.check_rows(Spy(con), new_rows="new_rows", all_rows="all_rows")
    assert {(f.rule, f.count) for f in check.failures} == {
        ("unique", 1),
        ("maxLength", 1),
        ("enum", 1),
    }
    assert len(calls) == 2 + 3


def test_same_relation_for_new_and_all_rows_is_one_query():
    contract = make_contract([column("k", "integer", unique=True, required=True)])
    check = ContractCheck(contract)
    with trusted_connection() as con:
        con.register("rows", pa.table({"k": [1, None, 1]}))
        check.check_rows(con, new_rows="rows", all_rows="rows")
    assert {(f.rule, f.count) for f in check.failures} == {("required", 1), ("unique", 1)}


def test_odd_column_names_are_quoted():
    name = 'we"ird name; DROP'
    contract = make_contract([column(name, required=True, unique=True)])
    found = check_table(contract, pa.table({name: ["a", "a", None]}))
    assert {(f.rule, f.column, f.count) for f in found} == {
        ("required", name, 1),
        ("unique", name, 1),
    }


def test_samples_mask_personal_data_and_are_json_safe():
    contract = make_contract(
        [
            column("email", required=True, pii=True),
            column("price", "number", physicalType="decimal128(5, 2)"),
            column("day", "date"),
        ]
    )
    data = pa.table(
        {
            "email": pa.array([None], pa.string()),
            "price": pa.array([Decimal("1.50")], pa.decimal128(5, 2)),
            "day": [date(2024, 5, 1)],
        }
    )
    sample = failure(check_table(contract, data), "required", "email").samples[0]
    assert sample == {"email": "***", "price": "1.50", "day": "2024-05-01"}
    json.dumps(sample, allow_nan=False)


def test_raise_if_failed_lists_every_failure():
    contract = make_contract(
        [column("a", required=True), column("b", logicalTypeOptions={"maxLength": 1})]
    )
    check = ContractCheck(contract)
    with trusted_connection() as con:
        con.register("rows", pa.table({"a": [None], "b": ["xx"]}))
        check.check_rows(con, new_rows="rows", all_rows="rows")
    with pytest.raises(ContractViolation) as info:
        check.raise_if_failed("shop")
    assert [f.rule for f in info.value.failures] == ["required", "maxLength"]
    assert "data for product 'shop' breaks its contract" in info.value.message
    ContractCheck(make_contract([column("a")])).raise_if_failed("shop")  # nothing failed


def test_rules_shoal_does_not_run_are_logged(caplog):
    contract = make_contract(
        [column("a", "integer", logicalTypeOptions={"multipleOf": 5})],
        [{"type": "sql", "name": "fresh", "query": "SELECT 1", "mustBe": 1}],
    )
    with caplog.at_level(logging.WARNING, logger="shoal.contracts.check"):
        ContractCheck(contract)
    assert "rules Shoal does not check: fresh, a.multipleOf" in caplog.text


def test_a_pattern_the_engine_refuses_is_a_usage_error():
    # Python accepts possessive quantifiers; RE2 does not.
    contract = make_contract([column("a", logicalTypeOptions={"pattern": "a*+"})])
    with pytest.raises(UsageError, match="cannot check the contract's rules"):
        check_table(contract, pa.table({"a": ["a"]}))


def test_null_counts():
    with trusted_connection() as con:
        con.register(
            "rows", pa.table({"a": [1, None, None], "b c": ["x", "y", None], "d": [1, 2, 3]})
        )
        assert null_counts(con, "rows", ["a", "b c", "d"]) == {"a": 2, "b c": 1, "d": 0}
        assert null_counts(con, "rows", []) == {}
