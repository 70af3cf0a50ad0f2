"""Row filters proven true for every row from column ranges: what is proven, and, as much,
what never is (anything unproven keeps the filter)."""

from __future__ import annotations

import pytest

from shoal.products.stats import ValueRange
from shoal.query.always_true import always_true

RANGES = {
    "amount": ValueRange(0.5, 950.0, nulls=False, floating=True),
    "qty": ValueRange(1, 20, nulls=False, floating=False),
    "store": ValueRange(7, 7, nulls=False, floating=False),
    "coupon": ValueRange(0, 9, nulls=True, floating=False),
    "big": ValueRange(2**60, 2**60 + 1, nulls=False, floating=False),
}


@pytest.mark.parametrize(
    "where",
    [
        "amount >= '0'",  # a bound attribute: a string literal read as the column's type
        "amount > 0.4",
        "amount >= 0.5",
        "0 <= amount",  # mirrored
        "qty >= 1",
        "qty > 0",
        "qty <= 20",
        "qty < 21",
        "qty >= -5",
        "store = 7",
        "store = '7'",
        "7 = store",
        "qty BETWEEN 1 AND 20",
        "qty BETWEEN '0' AND '100'",
        "(qty >= 1) AND (amount >= 0)",
        "qty >= 1 AND store = 7 AND amount > -1",
        "QTY >= 1",  # identifiers are case-insensitive
        '"qty" >= 1',
        "big >= 1152921504606846976",  # 2**60: ints compared exactly, never as floats
        "qty >= +1",
    ],
)
def test_filters_true_for_every_row_are_proven(where):
    assert always_true(where, RANGES)


@pytest.mark.parametrize(
    "where",
    [
        "amount >= 1",  # some rows fail
        "amount <= 1000",  # NaN, left out of float statistics, fails an upper bound
        "amount < 1000",
        "amount = 0.5",
        "amount BETWEEN 0 AND 1000",
        "qty >= 2",
        "qty < 20",
        "store = 8",
        "coupon >= 0",  # NULLs fail every comparison
        "missing >= 0",  # no statistics
        "qty >= 1 OR qty < 0",  # ORs are not judged
        "qty >= 1 AND coupon >= 0",
        "NOT qty < 1",
        "qty IN (1, 2)",
        "qty >= '1_0'",  # Python reads it, DuckDB does not cast it: the query must fail
        "qty >= '1.5'",
        "amount >= 'nan'",
        "amount >= 'inf'",
        "amount >= '-inf'",
        "qty >= x",
        "qty >= 1 + 0",
        "t.qty >= 1",  # another table's column
        "qty >= (SELECT 0)",
        "big >= 1152921504606846977",  # 2**60 + 1: a float would round it away
        "",
        "qty >=",  # does not parse
        "((((" * 200,
    ],
)
def test_everything_else_is_not_proven(where):
    assert not always_true(where, RANGES)


def test_no_ranges_prove_nothing():
    assert not always_true("qty >= 1", {})
