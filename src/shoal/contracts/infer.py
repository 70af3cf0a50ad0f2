"""A draft contract for data that has none yet, read off its Arrow schema.

The draft promises only what the schema shows: every column with its normalised type,
nothing required, every column classified `internal` (neither public nor sensitive until
its owner says so). The publish pipeline then calls `with_required` with the columns in
which it saw no nulls, so the first publish's data fixes which columns must stay filled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import pyarrow as pa
from pydantic import ValidationError

from shoal.contracts import types
from shoal.contracts.model import (
    Classification,
    Contract,
    ItemProperty,
    SchemaObject,
    SchemaProperty,
)
from shoal.contracts.types import LogicalType
from shoal.errors import UsageError

__all__ = ["DEFAULT_CLASSIFICATION", "DRAFT_VERSION", "infer_contract", "with_required"]

DRAFT_VERSION: Final = "1.0.0"
DEFAULT_CLASSIFICATION: Final[Classification] = "internal"
API_VERSION: Final = "v3.1.0"


def infer_contract(product: str, owner: str, schema: pa.Schema) -> Contract:
    """Draft a contract (status draft, version 1.0.0) for product `owner.product`."""
    if not len(schema):
        raise UsageError("the data has no columns; a product needs at least one")
    columns = [_column(field) for field in schema]
    try:
        table = SchemaObject(
            name=product,
            physical_name=product,
            physical_type="table",
            logical_type="object",
            properties=columns,
        )
        return Contract(
            api_version=API_VERSION,
            kind="DataContract",
            id=f"urn:shoal:{owner}:{product}",
            name=product,
            version=DRAFT_VERSION,
            status="draft",
            domain=owner,
            data_product=product,
            schema=[table],
        )
    except ValidationError as exc:  # e.g. two columns whose names differ only by case
        raise UsageError(f"cannot describe the data: {_first_message(exc)}") from None


def with_required(contract: Contract, columns_without_nulls: Iterable[str]) -> Contract:
    """Give a copy of `contract` in which the named top-level columns are required."""
    wanted = set(columns_without_nulls)
    unknown = wanted - set(contract.column_names())
    if unknown:
        raise ValueError(f"columns not in the contract: {sorted(unknown)}")
    updated = contract.model_copy(deep=True)
    for column in updated.columns:
        if column.name in wanted:
            column.required = True
    return updated


def _column(field: pa.Field) -> SchemaProperty:
    if not field.name:
        raise UsageError("a column has an empty name; every column needs one")
    try:
        return _field(field.name, field.type, field.name, top_level=True)
    except ValidationError as exc:
        raise UsageError(f"column {field.name!r}: {_first_message(exc)}") from None


def _field(
    name: str, data_type: pa.DataType, path: str, *, top_level: bool = False
) -> SchemaProperty:
    """Describe a column or a struct's field, its nested fields included."""
    logical, physical, properties, items = _parts(data_type, path)
    # Only columns carry rules and classifications; nested fields share their column's.
    return SchemaProperty(
        name=name,
        logical_type=logical,
        physical_type=physical,
        required=False if top_level else None,
        classification=DEFAULT_CLASSIFICATION if top_level else None,
        properties=properties,
        items=items,
    )


def _parts(
    data_type: pa.DataType, path: str
) -> tuple[LogicalType, str, list[SchemaProperty] | None, ItemProperty | None]:
    """Logical type, physical type, and the struct fields or list items of one type."""
    try:
        logical = types.logical_type_of(data_type)
        # Nested types are checked field by field below, so an error names the field.
        nested = {"object": types.STRUCT, "array": types.LIST}
        physical = nested.get(logical) or types.physical_type_name(types.normalize(data_type))
    except types.UnsupportedTypeError as exc:
        raise UsageError(f"column {path!r}: {exc}") from None
    value_type = types.unwrap(data_type)
    properties = None
    items = None
    if logical == "object":
        fields = (value_type.field(i) for i in range(value_type.num_fields))
        properties = [_field(f.name, f.type, f"{path}.{f.name}") for f in fields]
    elif logical == "array":
        item_logical, item_physical, item_properties, item_items = _parts(
            value_type.value_type, f"{path}[]"
        )
        items = ItemProperty(
            logical_type=item_logical,
            physical_type=item_physical,
            properties=item_properties,
            items=item_items,
        )
    return logical, physical, properties, items


def _first_message(exc: ValidationError) -> str:
    found = exc.errors()
    return str(found[0]["msg"]).removeprefix("Value error, ") if found else str(exc)
