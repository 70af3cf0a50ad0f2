"""Contract evolution: which changes break consumers, and what a major version allows."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shoal.contracts import check_evolution, describe_changes
from shoal.errors import BreakingChangeError, ConflictError
from tests.contracts.util import column, make_contract

BASE = [
    column("id", "integer", physicalType="int32", required=True, primaryKey=True),
    column("amount", "number", physicalType="float32"),
    column("price", "number", physicalType="decimal128(10, 2)"),
    column("day", "date"),
    column("at", "timestamp"),
    column("opens", "time"),
    column("name", classification="confidential", pii=True),
    column("note", classification="public"),
    column("plain"),
    column("tags", "array", items={"logicalType": "integer", "physicalType": "int16"}),
    column(
        "addr",
        "object",
        properties=[column("city"), column("zip", "integer", physicalType="int32")],
    ),
]


def changed(**changes: dict[str, Any] | None) -> list[dict[str, Any]]:
    """BASE with some columns updated (a dict of fields) or removed (None)."""
    columns = []
    for spec in copy.deepcopy(BASE):
        if spec["name"] in changes:
            update = changes[spec["name"]]
            if update is None:
                continue
            spec.update(update)
        columns.append(spec)
    return columns


def diff(new_columns: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    return describe_changes(make_contract(BASE), make_contract(new_columns))


@pytest.mark.parametrize(
    ("new_columns", "breaking"),
    [
        (changed(name=None), "column 'name' removed"),
        (changed(addr={"properties": [column("city")]}), "column 'addr.zip' removed"),
        (
            changed(id={"physicalType": "int16"}),
            "column 'id' changed type (integer int32 -> integer int16)",
        ),
        (changed(id={"logicalType": "number", "physicalType": "float32"}), "changed type"),
        (
            changed(id={"logicalType": "number", "physicalType": "decimal128(10, 2)"}),
            "changed type",
        ),
        (changed(id={"logicalType": "string", "physicalType": "string"}), "changed type"),
        (changed(amount={"physicalType": "decimal128(20, 2)"}), "changed type"),
        (changed(price={"physicalType": "decimal128(10, 3)"}), "changed type"),
        (changed(price={"physicalType": "decimal128(12, 1)"}), "changed type"),
        (changed(price={"physicalType": "float64"}), "changed type"),
        (changed(at={"logicalType": "date"}), "changed type"),
        (changed(at={"physicalType": "timestamp[us, tz=UTC]"}), "changed type"),
        (
            changed(opens={"logicalType": "string"}),
            "column 'opens' changed type (time string -> string string)",
        ),
        (changed(day={"logicalType": "string"}), "changed type"),
        (
            changed(tags={"items": {"logicalType": "integer", "physicalType": "int8"}}),
            "column 'tags[]' changed type",
        ),
        (changed(addr={"logicalType": "string", "properties": None}), "column 'addr' changed type"),
        (changed(plain={"required": True}), "column 'plain' made required"),
        (changed(plain={"unique": True}), "column 'plain' made unique"),
        (changed(plain={"primaryKey": True}), "column 'plain' made primaryKey"),
        (
            changed(name={"classification": "internal"}),
            "classification lowered (confidential -> internal)",
        ),
        (
            changed(name={"classification": None}),
            "classification lowered (confidential -> internal)",
        ),
        (
            changed(plain={"classification": "public"}),
            "classification lowered (internal -> public)",
        ),
        (changed(name={"pii": False}), "column 'name' no longer marked pii"),
        ([*BASE, column("extra", required=True)], "column 'extra' added as required"),
        ([*BASE, column("extra", primaryKey=True)], "column 'extra' added as required"),
    ],
)
def test_breaking_changes(new_columns, breaking):
    found_breaking, _ = diff(new_columns)
    assert any(breaking in change for change in found_breaking), found_breaking


@pytest.mark.parametrize(
    ("new_columns", "compatible"),
    [
        ([*BASE, column("extra")], "column 'extra' added"),
        (
            changed(addr={"properties": [*BASE[-1]["properties"], column("street")]}),
            "column 'addr.street' added",
        ),
        (
            changed(id={"physicalType": "int64"}),
            "column 'id' widened (integer int32 -> integer int64)",
        ),
        (changed(id={"logicalType": "number", "physicalType": "float64"}), "widened"),
        (changed(id={"logicalType": "number", "physicalType": "decimal128(12, 2)"}), "widened"),
        (changed(amount={"physicalType": "float64"}), "widened"),
        (changed(price={"physicalType": "decimal128(12, 3)"}), "widened"),
        (changed(price={"physicalType": "decimal128(12, 4)"}), "widened"),
        (
            changed(day={"logicalType": "timestamp"}),
            "column 'day' widened (date date32 -> timestamp timestamp[us])",
        ),
        (
            changed(day={"logicalType": "timestamp", "physicalType": "timestamp[us, tz=UTC]"}),
            "widened",
        ),
        (
            changed(tags={"items": {"logicalType": "integer", "physicalType": "int64"}}),
            "column 'tags[]' widened",
        ),
        (
            changed(addr={"properties": [column("city"), column("zip", "integer")]}),
            "column 'addr.zip' widened",
        ),
        (changed(id={"required": False}), "column 'id' no longer required"),
        (changed(id={"primaryKey": False}), "column 'id' no longer primaryKey"),
        (
            changed(plain={"classification": "restricted"}),
            "classification raised (internal -> restricted)",
        ),
        (changed(note={"classification": None}), "classification raised (public -> internal)"),
        (changed(plain={"pii": True}), "column 'plain' marked pii"),
        (changed(plain={"logicalTypeOptions": {"maxLength": 3}}), "column 'plain' rules changed"),
        (list(reversed(BASE)), "columns reordered"),
    ],
)
def test_compatible_changes(new_columns, compatible):
    found_breaking, found_compatible = diff(new_columns)
    assert found_breaking == []
    assert any(compatible in change for change in found_compatible), found_compatible


def test_no_change_is_no_change():
    assert check_evolution(make_contract(BASE), make_contract(BASE)) == []


def test_breaking_changes_need_a_major_version_and_are_all_listed():
    old = make_contract(BASE)
    new = make_contract(changed(name=None, plain={"required": True}), version="1.1.0")
    with pytest.raises(BreakingChangeError) as info:
        check_evolution(old, new)
    message = info.value.message
    assert "contract 1.1.0 breaks consumers of 1.0.0 (2 breaking change(s))" in message
    assert "column 'name' removed" in message and "column 'plain' made required" in message
    assert info.value.hint == "raise the major version (to 2.0.0) to make these changes"
    assert info.value.exit_code == 5


@pytest.mark.parametrize("version", ["2.0.0", "2.0.0-rc.1", "3.1.4"])
def test_a_major_version_allows_breaking_changes(version):
    changes = check_evolution(
        make_contract(BASE), make_contract(changed(name=None), version=version)
    )
    assert f"column 'name' removed (breaking; allowed by version {version})" in changes
    assert f"version 1.0.0 -> {version}" in changes


def test_compatible_changes_may_keep_the_version():
    changes = check_evolution(
        make_contract(BASE), make_contract([*BASE, column("x")], status="deprecated")
    )
    assert changes == ["status active -> deprecated", "column 'x' added"]


@pytest.mark.parametrize("version", ["0.9.0", "1.0.0-rc.1"])
def test_a_lower_version_is_refused_even_without_changes(version):
    with pytest.raises(ConflictError) as info:
        check_evolution(make_contract(BASE), make_contract(BASE, version=version))
    assert not isinstance(info.value, BreakingChangeError)
    assert "is lower than the current 1.0.0" in info.value.message


def test_identity_changes_are_listed():
    _, compatible = describe_changes(make_contract(BASE), make_contract(BASE, id="urn:x", name="u"))
    assert compatible == ["id urn:shoal:test:t -> urn:x", "name t -> u"]


def test_table_rules_and_custom_properties_are_listed():
    old = make_contract(BASE)
    new = make_contract(
        BASE,
        [{"metric": "rowCount", "mustBeGreaterThan": 0}],
        customProperties=[{"property": "residency", "value": ["eu-de"]}],
    )
    _, compatible = describe_changes(old, new)
    assert compatible == ["table quality rules changed", "customProperties changed"]
