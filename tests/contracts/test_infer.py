"""Draft contracts inferred from Arrow schemas."""

from __future__ import annotations

import pyarrow as pa
import pytest

from shoal.contracts import dump_contract, infer_contract, load_contract, with_required
from shoal.errors import UsageError

SCHEMA = pa.schema(
    [
        ("id", pa.uint32()),
        ("name", pa.large_string()),
        ("price", pa.decimal128(10, 2)),
        ("seen", pa.timestamp("ns", tz="Europe/Berlin")),
        ("day", pa.date64()),
        ("opens", pa.time64("us")),
        ("tags", pa.list_(pa.dictionary(pa.int8(), pa.string()))),
        ("address", pa.struct([("city", pa.string()), ("zip", pa.uint16())])),
        ("blank", pa.null()),
    ]
)


def test_draft_contract_describes_the_schema():
    contract = infer_contract("shops", "berlin", SCHEMA)
    assert (contract.status, contract.version, contract.kind) == ("draft", "1.0.0", "DataContract")
    assert contract.api_version == "v3.1.0"
    assert contract.id == "urn:shoal:berlin:shops"
    assert (contract.domain, contract.data_product, contract.table.name) == (
        "berlin",
        "shops",
        "shops",
    )
    summary = {c["name"]: (c["logical_type"], c["type"]) for c in contract.columns_summary()}
    assert summary == {
        "id": ("integer", "int64"),
        "name": ("string", "string"),
        "price": ("number", "decimal128(10, 2)"),
        "seen": ("timestamp", "timestamp[us, tz=UTC]"),
        "day": ("date", "date32"),
        "opens": ("time", "string"),
        "tags": ("array", "list"),
        "address": ("object", "struct"),
        "blank": ("string", "string"),
    }
    assert all(c.required is False and c.classification == "internal" for c in contract.columns)
    assert contract.arrow_schema().field("address").type == pa.struct(
        [("city", pa.string()), ("zip", pa.int32())]
    )
    assert contract.arrow_schema().field("tags").type == pa.list_(pa.string())


def test_nested_fields_carry_no_rules():
    contract = infer_contract("shops", "berlin", SCHEMA)
    city = contract.column("address").properties[0]
    assert city.required is None and city.classification is None
    assert contract.column("tags").items.logical_type == "string"


def test_draft_round_trips():
    contract = infer_contract("shops", "berlin", SCHEMA)
    text = dump_contract(contract)
    assert dump_contract(load_contract(text)) == text
    assert "status: draft" in text and "version: 1.0.0" in text


def test_with_required_marks_only_the_named_columns():
    contract = infer_contract("shops", "berlin", SCHEMA)
    marked = with_required(contract, ["id", "price"])
    assert [c.name for c in marked.columns if c.required] == ["id", "price"]
    assert not any(c.required for c in contract.columns)  # the original is untouched
    with pytest.raises(ValueError, match="nope"):
        with_required(contract, ["nope"])


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (pa.schema([]), "no columns"),
        (pa.schema([("", pa.int8())]), "empty name"),
        (pa.schema([("a", pa.int8()), ("A", pa.int8())]), "appears twice"),
        (pa.schema([("a", pa.int8()), ("a", pa.int8())]), "appears twice"),
        (pa.schema([("d", pa.duration("s"))]), "column 'd': duration[s] values cannot be stored"),
        (pa.schema([("m", pa.struct([("x", pa.map_(pa.string(), pa.int8()))]))]), "column 'm.x'"),
        (pa.schema([("l", pa.list_(pa.month_day_nano_interval()))]), "column 'l[]'"),
        (pa.schema([("s", pa.struct([("", pa.int8())]))]), "name must not be empty"),
        (pa.schema([("s", pa.struct([]))]), "an object needs at least one entry"),
    ],
)
def test_unusable_schemas_are_usage_errors(schema, message):
    with pytest.raises(UsageError) as info:
        infer_contract("p", "n", schema)
    assert message in info.value.message
