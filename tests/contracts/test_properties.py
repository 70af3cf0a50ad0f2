"""Property: a contract inferred from data always accepts that same data.

Random Arrow tables (column types from everything a source may yield, random nulls, random
values) go through the publish pipeline's steps: infer, conform batch by batch, count nulls,
mark required, write and reread the contract, check every rule. Nothing may fail.

One documented exception is kept out of the data: uint64 values above 2^63 - 1, which the
inferred int64 column cannot hold (Shoal widens unsigned types to signed ones).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.contracts import ContractCheck, infer_contract, null_counts, with_required
from shoal.engine import trusted_connection
from tests.contracts.util import reload

DAY_SECONDS = 86_400
MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59


def _column(draw, data_type_name: str) -> pa.Array:
    """Draw one random column of the named kind."""
    size = draw(st.shared(st.integers(0, 12), key="rows"))

    def values(strategy):
        return draw(st.lists(st.one_of(st.none(), strategy), min_size=size, max_size=size))

    if data_type_name == "null":
        return pa.nulls(size)
    simple = {
        "bool": (pa.bool_(), st.booleans()),
        "int8": (pa.int8(), st.integers(-(2**7), 2**7 - 1)),
        "int16": (pa.int16(), st.integers(-(2**15), 2**15 - 1)),
        "int32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
        "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
        "uint8": (pa.uint8(), st.integers(0, 2**8 - 1)),
        "uint16": (pa.uint16(), st.integers(0, 2**16 - 1)),
        "uint32": (pa.uint32(), st.integers(0, 2**32 - 1)),
        "uint64": (pa.uint64(), st.integers(0, 2**63 - 1)),
        "float32": (pa.float32(), st.floats(width=32)),
        "float64": (pa.float64(), st.floats()),
        "string": (pa.string(), st.text(max_size=8)),
        "large_string": (pa.large_string(), st.text(max_size=8)),
        "string_view": (pa.string_view(), st.text(max_size=8)),
        "binary": (pa.binary(), st.binary(max_size=8)),
        "large_binary": (pa.large_binary(), st.binary(max_size=8)),
        "fixed_binary": (pa.binary(3), st.binary(min_size=3, max_size=3)),
        "date32": (pa.date32(), st.dates()),
        "date64": (pa.date64(), st.dates()),
    }
    if data_type_name in simple:
        data_type, strategy = simple[data_type_name]
        return pa.array(values(strategy), data_type)
    if data_type_name == "float16":
        return pc.cast(pa.array(values(st.floats(width=16)), pa.float32()), pa.float16())
    if data_type_name == "dictionary":
        return pa.array(values(st.sampled_from(["a", "b", "c"])), pa.string()).dictionary_encode()
    if data_type_name.startswith("decimal"):
        wide = data_type_name == "decimal256"
        precision = draw(st.integers(1, 50 if wide else 38))
        scale = draw(st.integers(0, min(precision, 10)))
        limit = 10 ** (precision - scale) - 1
        numbers = values(
            st.decimals(
                min_value=-limit,
                max_value=limit,
                places=scale,
                allow_nan=False,
                allow_infinity=False,
            )
        )
        decimal_type = (pa.decimal256 if wide else pa.decimal128)(precision, scale)
        return pa.array(numbers, decimal_type)
    if data_type_name == "timestamp":
        unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
        zone = draw(st.sampled_from([None, "UTC", "Europe/Berlin", "+05:30"]))
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
        bound = 2**63 - 1 if unit == "ns" else MAX_SECONDS * per_second
        return pa.array(values(st.integers(-bound, bound)), pa.int64()).cast(
            pa.timestamp(unit, tz=zone)
        )
    if data_type_name == "time":
        unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
        per_day = DAY_SECONDS * {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
        storage = pa.int32() if unit in ("s", "ms") else pa.int64()
        time_type = pa.time32(unit) if unit in ("s", "ms") else pa.time64(unit)
        return pa.array(values(st.integers(0, per_day - 1)), storage).cast(time_type)
    if data_type_name == "struct":
        rows = values(
            st.fixed_dictionaries(
                {
                    "n": st.one_of(st.none(), st.integers(0, 2**16 - 1)),
                    "s": st.one_of(st.none(), st.text(max_size=4)),
                }
            )
        )
        return pa.array(rows, pa.struct([("n", pa.uint16()), ("s", pa.string())]))
    if data_type_name == "list":
        rows = values(st.lists(st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)), max_size=4))
        return pa.array(rows, pa.large_list(pa.int32()))
    raise AssertionError(data_type_name)


KINDS = [
    "null",
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "decimal128",
    "decimal256",
    "string",
    "large_string",
    "string_view",
    "dictionary",
    "binary",
    "large_binary",
    "fixed_binary",
    "date32",
    "date64",
    "timestamp",
    "time",
    "struct",
    "list",
]

NAMES = st.text(alphabet=st.sampled_from("abcXYZ019 _-.\"';é"), min_size=1, max_size=6)


@st.composite
def tables(draw) -> pa.Table:
    names = draw(st.lists(NAMES, min_size=1, max_size=6, unique_by=str.casefold))
    columns = [_column(draw, draw(st.sampled_from(KINDS))) for _ in names]
    return pa.Table.from_arrays(columns, names=names)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(table=tables(), chunk=st.integers(1, 5))
def test_an_inferred_contract_accepts_the_data_it_came_from(table, chunk):
    contract = infer_contract("p", "node", table.schema)
    check = ContractCheck(contract)
    check.check_columns(table.schema)
    conformed = [check.conform(batch) for batch in table.to_batches(max_chunksize=chunk)]
    assert check.failures == []
    assert all(batch is not None for batch in conformed)
    staged = pa.Table.from_batches(conformed, schema=check.arrow_schema)
    assert staged.num_rows == table.num_rows
    with trusted_connection() as con:
        con.register("new_rows", staged)
        counts = null_counts(con, "new_rows", staged.column_names)
        final = reload(with_required(contract, [c for c, n in counts.items() if n == 0]))
        again = ContractCheck(final)
        again.check_columns(staged.schema)
        for batch in staged.to_batches():  # conforming conformed data changes nothing
            same = again.conform(batch)
            assert same is not None and same.schema == batch.schema
            assert same.num_rows == batch.num_rows
        again.check_rows(con, new_rows="new_rows", all_rows="new_rows")
    check.close()
    again.close()
    assert again.failures == []


def test_timestamps_keep_their_instant():
    moment = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    table = pa.table({"t": pa.array([moment], pa.timestamp("ns", tz="Europe/Berlin"))})
    check = ContractCheck(infer_contract("p", "n", table.schema))
    assert check.conform(table.to_batches()[0]).column(0).to_pylist() == [moment]
