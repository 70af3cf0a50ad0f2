"""Loading, validating and writing contracts: round trips, strict fields, hostile YAML."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest
import yaml

from shoal.contracts import Contract, dump_contract, load_contract
from shoal.contracts.document import MAX_CONTRACT_BYTES, MAX_DEPTH
from shoal.contracts.model import parse_semver
from shoal.errors import UsageError
from tests.contracts.util import column, contract_data, make_contract

FULL = """\
apiVersion: v3.1.0
kind: DataContract
id: urn:shoal:berlin:customers
name: customers
version: 2.1.0
status: active
domain: berlin
dataProduct: customers
tenant: acme
schema:
  - name: customers
    physicalName: customers_v2
    physicalType: table
    logicalType: object
    properties:
      - name: customer_id
        description: The customer's number
        logicalType: integer
        physicalType: int64
        required: true
        unique: true
        primaryKey: true
        primaryKeyPosition: 1
        classification: internal
        criticalDataElement: true
      - name: email
        logicalType: string
        physicalType: string
        logicalTypeOptions:
          pattern: '[^@]+@[^@]+'
          maxLength: 200
          format: email
        classification: confidential
        pii: true
        tags:
          - contact
      - name: tier
        logicalType: string
        logicalTypeOptions:
          enum:
            - gold
            - silver
        quality:
          - metric: nullValues
            unit: percent
            mustBeLessThan: 5
      - name: joined
        logicalType: date
        logicalTypeOptions:
          minimum: 2000-01-01
      - name: balance
        logicalType: number
        physicalType: decimal128(12, 2)
        logicalTypeOptions:
          exclusiveMinimum: -1000.5
      - name: address
        logicalType: object
        properties:
          - name: city
            logicalType: string
          - name: lines
            logicalType: array
            items:
              logicalType: string
    quality:
      - metric: rowCount
        mustBeBetween:
          - 1
          - 1000000
      - type: sql
        query: SELECT 1
        mustBe: 1
      - type: text
        description: Refreshed nightly.
customProperties:
  - property: residency
    value:
      - eu-de
slaProperties:
  - property: latency
    value: 4
    unit: h
team:
  name: crm
"""


def test_full_contract_round_trips_byte_for_byte():
    contract = load_contract(FULL)
    assert dump_contract(contract) == FULL
    assert dump_contract(load_contract(dump_contract(contract))) == FULL


def test_unknown_fields_are_kept_at_every_level():
    contract = load_contract(FULL)
    dumped = yaml.safe_load(dump_contract(contract))
    assert dumped["team"] == {"name": "crm"}
    assert dumped["slaProperties"][0]["unit"] == "h"
    first = dumped["schema"][0]["properties"][0]
    assert first["criticalDataElement"] is True
    assert dumped["schema"][0]["properties"][1]["tags"] == ["contact"]
    assert dumped["schema"][0]["quality"][1] == {"type": "sql", "query": "SELECT 1", "mustBe": 1}


def test_known_fields_come_first_in_odcs_order():
    data = yaml.safe_load(FULL)
    shuffled = dict(reversed(list(data.items())))
    text = dump_contract(load_contract(yaml.safe_dump(shuffled, sort_keys=False)))
    keys = list(yaml.safe_load(text))
    assert keys[:6] == ["apiVersion", "kind", "id", "name", "version", "status"]
    assert keys[-2:] == ["team", "slaProperties"]  # unknown fields after, in their own order
    assert yaml.safe_load(text) == yaml.safe_load(FULL)


def test_accessors():
    contract = load_contract(FULL)
    assert contract.column_names() == [
        "customer_id",
        "email",
        "tier",
        "joined",
        "balance",
        "address",
    ]
    assert contract.primary_key() == ["customer_id"]
    assert contract.custom_property("residency") == ["eu-de"]
    assert contract.custom_property("nothing") is None
    assert contract.column("email").pii
    assert contract.columns[3].options.minimum == date(2000, 1, 1)
    summary = {c["name"]: c for c in contract.columns_summary()}
    assert summary["balance"]["type"] == "decimal128(12, 2)"
    assert summary["tier"]["rules"] == "one of gold, silver; nullValues"
    assert summary["email"]["classification"] == "confidential"
    assert contract.arrow_schema() == pa.schema(
        [
            ("customer_id", pa.int64()),
            ("email", pa.string()),
            ("tier", pa.string()),
            ("joined", pa.date32()),
            ("balance", pa.decimal128(12, 2)),
            ("address", pa.struct([("city", pa.string()), ("lines", pa.list_(pa.string()))])),
        ]
    )


def test_physical_type_defaults_from_the_logical_type():
    contract = make_contract(
        [
            column("a", "integer"),
            column("b", "number"),
            column("c", "timestamp"),
            column("d", "timestamp", logicalTypeOptions={"timezone": True}),
            column("e", "time"),
            column("f", "boolean"),
        ]
    )
    assert [str(f.type) for f in contract.arrow_schema()] == [
        "int64",
        "double",
        "timestamp[us]",
        "timestamp[us, tz=UTC]",
        "string",
        "bool",
    ]


def test_primary_key_follows_positions():
    contract = make_contract(
        [
            column("a", primaryKey=True, primaryKeyPosition=2),
            column("b"),
            column("c", primaryKey=True, primaryKeyPosition=1),
        ]
    )
    assert contract.primary_key() == ["c", "a"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "Other"}, "kind: Input should be 'DataContract'"),
        ({"apiVersion": "v2.2.2"}, "apiVersion 'v2.2.2' is not supported"),
        ({"version": "1.0"}, "version: must be a semantic version"),
        ({"version": 1.0}, "version: must be a semantic version such as 1.0.0 (quote it)"),
        ({"version": "01.0.0"}, "version: must be a semantic version"),
        ({"id": 5}, "id: Input should be a valid string"),
        ({"status": ""}, "status must not be empty"),
        ({"schema": []}, "describes one table; got 0"),
        ({"schema": "orders"}, "schema: Input should be a valid list"),
        ({"customProperties": [{"value": 1}]}, "customProperties[0].property: Field required"),
    ],
)
def test_bad_top_level_fields_name_the_field(change, message):
    data = contract_data([column("a")])
    data.update(change)
    with pytest.raises(UsageError) as info:
        load_contract(yaml.safe_dump(data))
    assert message in info.value.message


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (column("a", "int"), "properties[1] (a).logicalType: Input should be 'string'"),
        (column("a", "integer", physicalType="int128"), "unknown physicalType 'int128'"),
        (column("a", "integer", physicalType="string"), "physicalType string does not fit"),
        (column("a", "number", physicalType="decimal128(40, 2)"), "precision <= 38"),
        (column("a", required="yes"), "required: Input should be a valid boolean"),
        (column("a", required=1), "required: Input should be a valid boolean"),
        (column("a", classification="secret"), "classification: Input should be 'public'"),
        (column("a", pii="true"), "pii: Input should be a valid boolean"),
        (column("", "string"), "name must not be empty"),
        ({"logicalType": "string"}, "properties[1].name: Field required"),
        (column("a", "object"), "an object needs at least one entry in properties"),
        (column("a", "array"), "an array needs items"),
        (column("a", properties=[column("b")]), "only an object has properties"),
        (column("a", logicalTypeOptions={"pattern": "[a"}), "not a valid regular expression"),
        (column("a", logicalTypeOptions={"pattern": "(?=a)a"}), "look-around"),
        (column("a", logicalTypeOptions={"minLength": -1}), "greater than or equal to 0"),
        (column("a", logicalTypeOptions={"minLength": 3, "maxLength": 2}), "minLength is larger"),
        (column("a", "integer", logicalTypeOptions={"pattern": "x"}), "pattern do not apply"),
        (column("a", logicalTypeOptions={"minimum": 1}), "minimum do not apply to a string"),
        (column("a", "integer", logicalTypeOptions={"minimum": "1"}), "must be a number"),
        (column("a", "integer", logicalTypeOptions={"minimum": True}), "must be a number"),
        (
            column("a", "integer", logicalTypeOptions={"minimum": 1, "exclusiveMinimum": 0}),
            "set minimum or exclusiveMinimum, not both",
        ),
        (column("a", "date", logicalTypeOptions={"maximum": "2024-13-01"}), "not an ISO date"),
        (column("a", "time", logicalTypeOptions={"maximum": 3600}), "quoted time"),
        (column("a", logicalTypeOptions={"enum": []}), "enum needs at least one value"),
        (column("a", logicalTypeOptions={"enum": [1, 2]}), "must be text (quote them)"),
        (column("a", "integer", logicalTypeOptions={"enum": [1.5]}), "whole numbers"),
        (column("a", "boolean", logicalTypeOptions={"enum": [True]}), "enum do not apply"),
        (
            column("a", "string", physicalType="binary", logicalTypeOptions={"maxLength": 3}),
            "do not apply to a string (binary)",
        ),
        (
            column(
                "a",
                "timestamp",
                physicalType="timestamp[us]",
                logicalTypeOptions={"timezone": True},
            ),
            "timezone True contradicts",
        ),
        (column("a", quality=[{"metric": "rowCount", "mustBe": 1}]), "schema-level metric"),
        (column("a", quality=[{"metric": "nullValues"}]), "exactly one operator"),
        (column("a", quality=[{"metric": "nullValues", "mustBe": 0, "mustNotBe": 1}]), "got 2"),
        (column("a", quality=[{"metric": "nullValues", "mustBe": "0"}]), "must be a number"),
        (column("a", quality=[{"metric": "nope", "mustBe": 0}]), "metric 'nope' is not one"),
        (
            column("a", quality=[{"metric": "nullValues", "mustBeBetween": [5, 1]}]),
            "the smaller first",
        ),
        (
            column("a", quality=[{"metric": "missingValues", "mustBe": 0}]),
            "arguments.missingValues",
        ),
        (column("a", quality=[{"metric": "invalidValues", "mustBe": 0}]), "validValues or"),
        (
            column(
                "a",
                "integer",
                quality=[{"metric": "invalidValues", "mustBe": 0, "arguments": {"pattern": "x"}}],
            ),
            "applies only to text",
        ),
        (column("a", quality=[{"metric": "nullValues", "mustBe": 0, "unit": "pct"}]), "unit"),
        (
            column("a", "object", properties=[column("b", required=True)]),
            "a.b: rules on nested fields are not checked yet (required)",
        ),
        (
            column(
                "a", "array", items={"logicalType": "integer", "logicalTypeOptions": {"minimum": 0}}
            ),
            "a[]: rules on nested fields",
        ),
        (column("a", "object", properties=[column("b"), column("B")]), "appears twice"),
    ],
)
def test_bad_columns_name_the_field(bad, message):
    with pytest.raises(UsageError) as info:
        make_contract([column("ok"), bad] if bad.get("name") != "ok" else [bad])
    assert message in info.value.message, info.value.message


@pytest.mark.parametrize(
    ("columns", "quality", "message"),
    [
        ([column("a"), column("A")], None, "column 'A' appears twice (names ignore case: 'a')"),
        ([], None, "a table needs at least one column"),
        ([column("a")], [{"metric": "nullValues", "mustBe": 0}], "property-level metric"),
        ([column("a")], [{"metric": "duplicateValues", "mustBe": 0}], "arguments.properties"),
        (
            [column("a")],
            [{"metric": "duplicateValues", "mustBe": 0, "arguments": {"properties": ["b"]}}],
            "unknown columns: ['b']",
        ),
        ([column("a")], [{"metric": "rowCount", "mustBe": 1, "unit": "percent"}], "counts rows"),
        (
            [
                column("a", primaryKey=True, primaryKeyPosition=1),
                column("b", primaryKey=True, primaryKeyPosition=1),
            ],
            None,
            "primaryKeyPosition must be distinct",
        ),
    ],
)
def test_bad_tables_name_the_problem(columns, quality, message):
    with pytest.raises(UsageError) as info:
        make_contract(columns, quality)
    assert message in info.value.message


def test_text_and_custom_rules_are_kept_unchecked():
    contract = make_contract(
        [column("a", quality=[{"type": "custom", "engine": "soda", "implementation": "x"}])],
        [{"type": "text", "description": "fresh"}],
    )
    assert not contract.columns[0].quality[0].checked
    assert not contract.table.quality[0].checked


def test_many_errors_are_listed_and_capped():
    data = contract_data([column(f"c{i}", "bogus") for i in range(15)])
    with pytest.raises(UsageError) as info:
        load_contract(yaml.safe_dump(data))
    assert "15 problem(s)" in info.value.message
    assert "... and 5 more" in info.value.message


# -- hostile YAML ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "got nothing"),
        ("- a\n- b\n", "got list"),
        ("just text", "got str"),
        ("not: [valid", "not valid YAML"),
        ("\x00\x01", "not valid YAML"),
        ("a: 1\na: 2\n", "key 'a' appears twice"),
        ("1: x\n", "key '1' is not text"),
        ("? [a]\n: x\n", "is not text"),
        ("a: !!python/object:os.system {}\n", "not valid YAML"),
        ("a: !!binary aGk=\nb: !custom x\n", "not valid YAML"),
        ("[" * 5000, "nests deeper"),
    ],
)
def test_hostile_yaml_is_a_usage_error(text, message):
    with pytest.raises(UsageError) as info:
        load_contract(text)
    assert message in info.value.message


def test_alias_bombs_are_refused_quickly():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    with pytest.raises(UsageError, match="expands to more than"):
        load_contract("\n".join(lines))


def test_recursive_aliases_are_refused():
    with pytest.raises(UsageError):
        load_contract("a: &a [*a]\n")


def test_deep_nesting_is_refused():
    text = "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)
    with pytest.raises(UsageError, match="nests deeper"):
        load_contract(text)


def test_plain_aliases_still_work():
    data = contract_data([column("a")])
    text = yaml.safe_dump(data) + "x-defaults: &d {owner: crm}\nx-copy: *d\n"
    assert load_contract(text).model_extra["x-copy"] == {"owner": "crm"}


def test_huge_text_and_files_are_refused(tmp_path):
    big = "# padding\n" * (MAX_CONTRACT_BYTES // 10 + 1)
    with pytest.raises(UsageError, match="larger than 1 MiB"):
        load_contract(big)
    path = tmp_path / "big.yaml"
    path.write_text(big)
    with pytest.raises(UsageError, match="larger than 1 MiB"):
        load_contract(path)


def test_files_and_bytes_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(FULL, encoding="utf-8")
    assert load_contract(path) == load_contract(FULL.encode("utf-8"))
    with pytest.raises(UsageError, match="not UTF-8"):
        load_contract(b"\xff\xfe")
    with pytest.raises(UsageError, match="cannot read"):
        load_contract(tmp_path / "missing.yaml")


def test_semver_precedence():
    ordered = [
        "0.9.9",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
        "2.0.0",
    ]
    assert sorted(ordered, key=parse_semver) == ordered
    assert parse_semver("1.0.0+build.5") == parse_semver("1.0.0")
    with pytest.raises(ValueError):
        parse_semver("1.0")


def test_contract_is_a_pydantic_model_with_odcs_names():
    contract = load_contract(FULL)
    assert isinstance(contract, Contract)
    data = contract.model_dump(by_alias=True, exclude_none=True)
    assert data["apiVersion"] == "v3.1.0"
    assert data["schema"][0]["properties"][0]["primaryKeyPosition"] == 1
