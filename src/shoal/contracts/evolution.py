"""Whether a new contract may replace a product's current one.

A change is breaking when consumers or the product's own data could no longer rely on what
the old contract promised. Breaking changes need a higher major version:

* a column (or a field of an object column) removed;
* a type changed other than by widening. Widenings: int8 < int16 < int32 < int64 < float64,
  float32 < float64, an integer to a decimal with room for its digits, a decimal gaining
  scale or precision while keeping its integer digits, date32 -> timestamp. Anything to
  text is not free: readers parsing numbers or dates would break;
* a column made required, a new column added as required or as part of the primary key;
* unique or primaryKey added to an existing column;
* a classification lowered (public < internal < confidential < restricted; a column without
  one counts as internal, Shoal's default) or `pii: true` removed.

Everything else (new optional columns, widenings, loosened rules, raised classifications,
rules and status) is listed for display. A version lower than the current one is refused
outright, breaking or not, because versions name the contract's history and only go up; a
change kept at the same version is allowed when it breaks nothing.
"""

from __future__ import annotations

import pyarrow as pa

from shoal.contracts.infer import DEFAULT_CLASSIFICATION
from shoal.contracts.model import (
    CLASSIFICATIONS,
    BaseProperty,
    Contract,
    SchemaProperty,
    parse_semver,
)
from shoal.errors import BreakingChangeError, ConflictError

__all__ = ["check_evolution", "describe_changes"]

_INTEGER_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19}


def check_evolution(old: Contract, new: Contract) -> list[str]:
    """Refuse `new` as a successor of `old` if it breaks consumers without a major bump.

    Gives the changes as lines for display. Raises ConflictError when `new`'s version is
    lower than `old`'s, BreakingChangeError listing every breaking change otherwise.
    """
    old_version, new_version = parse_semver(old.version), parse_semver(new.version)
    if new_version < old_version:
        raise ConflictError(
            f"contract version {new.version} is lower than the current {old.version}",
            hint="contract versions only go up; give the new contract a higher version",
        )
    breaking, compatible = describe_changes(old, new)
    if breaking and new_version[0] <= old_version[0]:
        lines = [
            f"contract {new.version} breaks consumers of {old.version} "
            f"({len(breaking)} breaking change(s)):",
            *(f"  - {change}" for change in breaking),
        ]
        raise BreakingChangeError(
            "\n".join(lines),
            hint=f"raise the major version (to {old_version[0] + 1}.0.0) to make these changes",
        )
    allowed = [f"{change} (breaking; allowed by version {new.version})" for change in breaking]
    return allowed + compatible


def describe_changes(old: Contract, new: Contract) -> tuple[list[str], list[str]]:
    """The differences between two contracts: (breaking changes, compatible changes)."""
    breaking: list[str] = []
    compatible: list[str] = []
    for field, before, after in (
        ("id", old.id, new.id),
        ("name", old.name, new.name),
        ("version", old.version, new.version),
        ("status", old.status, new.status),
    ):
        if before != after:
            compatible.append(f"{field} {before} -> {after}")
    old_columns = {column.name: column for column in old.columns}
    new_columns = {column.name: column for column in new.columns}
    for name, column in old_columns.items():
        if name not in new_columns:
            breaking.append(f"column '{name}' removed")
        else:
            _compare_column(column, new_columns[name], breaking, compatible)
    for name, column in new_columns.items():
        if name in old_columns:
            continue
        if column.required or column.primary_key:
            breaking.append(f"column '{name}' added as required; the rows already there lack it")
        else:
            compatible.append(f"column '{name}' added")
    common = [name for name in new_columns if name in old_columns]
    if common != [name for name in old_columns if name in new_columns]:
        compatible.append("columns reordered")
    if old.primary_key() != new.primary_key() and set(old.primary_key()) == set(new.primary_key()):
        compatible.append("primary key columns reordered")
    if _dump(old.table.quality) != _dump(new.table.quality):
        compatible.append("table quality rules changed")
    if _dump(old.custom_properties) != _dump(new.custom_properties):
        compatible.append("customProperties changed")
    return breaking, compatible


def _compare_column(
    old: SchemaProperty, new: SchemaProperty, breaking: list[str], compatible: list[str]
) -> None:
    where = f"column '{old.name}'"
    _compare_types(old, new, old.name, breaking, compatible)
    for flag, before, after in (
        ("required", old.required, new.required),
        ("unique", old.unique, new.unique),
        ("primaryKey", old.primary_key, new.primary_key),
    ):
        if not before and after:
            breaking.append(f"{where} made {flag}")
        elif before and not after:
            compatible.append(f"{where} no longer {flag}")
    old_level = CLASSIFICATIONS.index(old.classification or DEFAULT_CLASSIFICATION)
    new_level = CLASSIFICATIONS.index(new.classification or DEFAULT_CLASSIFICATION)
    change = f"{CLASSIFICATIONS[old_level]} -> {CLASSIFICATIONS[new_level]}"
    if new_level < old_level:
        breaking.append(f"{where} classification lowered ({change})")
    elif new_level > old_level:
        compatible.append(f"{where} classification raised ({change})")
    if old.pii and not new.pii:
        breaking.append(f"{where} no longer marked pii")
    elif new.pii and not old.pii:
        compatible.append(f"{where} marked pii")
    if _dump(old.logical_type_options) != _dump(new.logical_type_options) or _dump(
        old.quality
    ) != _dump(new.quality):
        compatible.append(f"{where} rules changed")


def _compare_types(
    old: BaseProperty | None,
    new: BaseProperty | None,
    path: str,
    breaking: list[str],
    compatible: list[str],
) -> None:
    """Compare two properties' types, nested fields included."""
    if old is None or new is None:
        return
    before, after = old.arrow_type(), new.arrow_type()
    if old.logical_type != new.logical_type or before != after:
        both_nested = (pa.types.is_struct(before) and pa.types.is_struct(after)) or (
            pa.types.is_list(before) and pa.types.is_list(after)
        )
        if not both_nested:  # nested types are compared field by field below
            change = f"{_type_name(old)} -> {_type_name(new)}"
            if _widens(before, after):
                compatible.append(f"column '{path}' widened ({change})")
            else:
                breaking.append(f"column '{path}' changed type ({change})")
            return
    if pa.types.is_struct(before) and pa.types.is_struct(after):
        old_fields = {child.name: child for child in old.properties or []}
        new_fields = {child.name: child for child in new.properties or []}
        for name, child in old_fields.items():
            if name not in new_fields:
                breaking.append(f"column '{path}.{name}' removed")
            else:
                _compare_types(child, new_fields[name], f"{path}.{name}", breaking, compatible)
        compatible += [
            f"column '{path}.{name}' added" for name in new_fields if name not in old_fields
        ]
    elif pa.types.is_list(before) and pa.types.is_list(after):
        _compare_types(old.items, new.items, f"{path}[]", breaking, compatible)


def _widens(before: pa.DataType, after: pa.DataType) -> bool:
    """Whether every value of type `before` is also, unchanged, a value of type `after`."""
    t = pa.types
    if t.is_signed_integer(before):
        if t.is_signed_integer(after):
            return bool(after.bit_width > before.bit_width)
        if t.is_float64(after):
            return True
        if t.is_decimal(after):
            return bool(after.precision - after.scale >= _INTEGER_DIGITS[before.bit_width])
        return False
    if t.is_float32(before):
        return bool(t.is_float64(after))
    if t.is_decimal(before) and t.is_decimal(after):
        return bool(
            after.scale >= before.scale
            and after.precision - after.scale >= before.precision - before.scale
        )
    if t.is_date(before):
        return bool(t.is_timestamp(after))
    return False


def _type_name(prop: BaseProperty) -> str:
    return f"{prop.logical_type} {prop.physical}"


def _dump(value: object) -> object:
    """Comparable plain data for a model, a list of models, or None."""
    if value is None:
        return None
    if isinstance(value, list):
        return [_dump(item) for item in value]
    dump = getattr(value, "model_dump", None)
    return dump(by_alias=True, exclude_none=True) if dump is not None else value
