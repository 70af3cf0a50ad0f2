"""The data contract: a subset of the Open Data Contract Standard (ODCS) v3.1.

    apiVersion: v3.1.0            kind: DataContract          id, name, version (semver), status
    schema:                       exactly one object: the product's table
      - name, physicalName, logicalType: object, properties, quality
        properties:               one per column
          - name, logicalType, physicalType, required, unique, primaryKey,
            primaryKeyPosition, classification, pii (a Shoal extension),
            logicalTypeOptions (pattern, minLength, maxLength, minimum, maximum,
            exclusiveMinimum, exclusiveMaximum, enum), quality,
            properties (object) / items (array)
    customProperties:             [{property, value}], e.g. residency

Fields Shoal knows are validated strictly (no "yes" for true, no 1.0 for a version); fields
it does not know, written by other ODCS tools, are kept as they are so a contract survives a
round trip through Shoal. `enum` in `logicalTypeOptions` is a Shoal extension (ODCS v3.1
has none; v3.2 adds a property-level `enum` of objects).

Quality rules: the ODCS v3.1 library metrics (`rowCount`, `duplicateValues`, `nullValues`,
`missingValues`, `invalidValues`) with one operator each are checked on every publish.
`text` rules describe and `custom` and `sql` rules name other engines; Shoal keeps them but
does not run them (contract SQL would run with Shoal's own rights).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

import pyarrow as pa
from pydantic import BeforeValidator, Field, model_validator

from shoal.contracts import types
from shoal.contracts.quality import PROPERTY_METRICS, SCHEMA_METRICS, QualityRule
from shoal.contracts.types import LogicalType
from shoal.contracts.values import (
    OdcsModel,
    check_bound,
    check_listed_value,
    check_pattern,
)

__all__ = [
    "CLASSIFICATIONS",
    "BaseProperty",
    "Classification",
    "Contract",
    "CustomProperty",
    "ItemProperty",
    "LogicalType",
    "LogicalTypeOptions",
    "SchemaObject",
    "SchemaProperty",
    "parse_semver",
]

Classification = Literal["public", "internal", "confidential", "restricted"]

CLASSIFICATIONS: Final[tuple[Classification, ...]] = (
    "public",
    "internal",
    "confidential",
    "restricted",
)
"""Least to most protective."""

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_API_VERSION = re.compile(r"v3\.\d+\.\d+")

_RANGE_OPTIONS: Final = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_TEXT_OPTIONS: Final = ("pattern", "minLength", "maxLength")
_RULE_OPTIONS: Final = (*_RANGE_OPTIONS, *_TEXT_OPTIONS, "enum")


def _semver_text(value: Any) -> Any:
    if isinstance(value, float | int):
        raise ValueError(f"must be a semantic version such as 1.0.0 (quote it); got {value!r}")
    if isinstance(value, str) and _SEMVER.fullmatch(value) is None:
        raise ValueError(f"must be a semantic version such as 1.0.0; got {value!r}")
    return value


Count = Annotated[int, Field(ge=0)]


class CustomProperty(OdcsModel):
    """One `{property, value}` pair of a `customProperties` list."""

    property: str
    value: Any = None


class LogicalTypeOptions(OdcsModel):
    """Constraints on a property's values (`logicalTypeOptions`)."""

    pattern: str | None = None
    min_length: Count | None = None
    max_length: Count | None = None
    minimum: Any = None
    maximum: Any = None
    exclusive_minimum: Any = None
    exclusive_maximum: Any = None
    enum: list[Any] | None = None
    format: str | None = None
    timezone: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> LogicalTypeOptions:
        if self.pattern is not None:
            check_pattern(self.pattern, "pattern")
        if (
            self.min_length is not None
            and self.max_length is not None
            and self.min_length > self.max_length
        ):
            raise ValueError("minLength is larger than maxLength")
        for side, inclusive, exclusive in (
            ("minimum", self.minimum, self.exclusive_minimum),
            ("maximum", self.maximum, self.exclusive_maximum),
        ):
            if inclusive is not None and exclusive is not None:
                exclusive_name = "exclusive" + side.capitalize()
                raise ValueError(f"set {side} or {exclusive_name}, not both")
        if self.enum is not None:
            if not self.enum:
                raise ValueError("enum needs at least one value")
            if any(value is None or isinstance(value, list | dict) for value in self.enum):
                raise ValueError("enum values must be plain values (no null, lists or maps)")
        return self

    def set_rules(self) -> list[str]:
        """The ODCS names of the value rules set here (pattern, minimum, enum, ...)."""
        data = self.model_dump(by_alias=True, exclude_none=True)
        return [name for name in _RULE_OPTIONS if name in data]


class BaseProperty(OdcsModel):
    """Fields shared by a column (`properties` entry) and an array's `items`."""

    name: str | None = None
    physical_name: str | None = None
    business_name: str | None = None
    description: str | None = None
    logical_type: LogicalType
    physical_type: str | None = None
    logical_type_options: LogicalTypeOptions | None = None
    required: bool | None = None
    unique: bool | None = None
    primary_key: bool | None = None
    primary_key_position: int | None = None
    classification: Classification | None = None
    pii: bool | None = None
    properties: list[SchemaProperty] | None = None
    items: ItemProperty | None = None
    quality: list[QualityRule] | None = None

    @property
    def physical(self) -> str:
        """The physical type, given or defaulted from the logical type."""
        if self.physical_type is not None:
            return self.physical_type
        timezone = bool(self.logical_type_options and self.logical_type_options.timezone)
        return types.default_physical_type(self.logical_type, timezone=timezone)

    @property
    def options(self) -> LogicalTypeOptions:
        return self.logical_type_options or LogicalTypeOptions()

    @property
    def is_nested(self) -> bool:
        return self.logical_type in ("object", "array")

    def arrow_type(self) -> pa.DataType:
        """The Arrow type of this property's values in the product's data files."""
        physical = self.physical
        if physical == types.STRUCT:
            return pa.struct(
                [pa.field(child.name, child.arrow_type()) for child in self.properties or []]
            )
        if physical == types.LIST and self.items is not None:
            return pa.list_(self.items.arrow_type())
        return types.scalar_arrow_type(physical)

    def children(self) -> list[BaseProperty]:
        """Nested properties: an object's properties or an array's items."""
        if self.properties:
            return list(self.properties)
        return [self.items] if self.items is not None else []

    def rule_fields(self) -> list[str]:
        """The names of the checked rules this property sets (required, unique, ...)."""
        found = [
            name
            for name, value in (
                ("required", self.required),
                ("unique", self.unique),
                ("primaryKey", self.primary_key),
            )
            if value
        ]
        found += self.options.set_rules()
        if any(rule.checked for rule in self.quality or []):
            found.append("quality")
        return found

    @model_validator(mode="after")
    def _check(self) -> BaseProperty:
        if self.name is not None and not self.name:
            raise ValueError("name must not be empty")
        self._check_physical_type()
        self._check_nesting()
        self._check_options()
        for rule in self.quality or []:
            if rule.checked:
                self._check_quality(rule)
        return self

    def _check_quality(self, rule: QualityRule) -> None:
        metric = rule.metric_name
        if metric not in PROPERTY_METRICS:
            raise ValueError(f"{metric} is a schema-level metric, not a property's")
        arguments = rule.arguments or {}
        if metric == "duplicateValues" and arguments:
            raise ValueError("a property's duplicateValues rule takes no arguments")
        values = arguments.get("missingValues") or arguments.get("validValues") or []
        if values and self.logical_type not in ("string", "integer", "number"):
            raise ValueError(f"{metric} lists values, which a {self.logical_type} cannot hold")
        for value in values:
            if value is not None or metric != "missingValues":
                check_listed_value(self.logical_type, value)
        if "pattern" in arguments and (self.logical_type, self.physical) != ("string", "string"):
            raise ValueError(f"{metric} has a pattern, which applies only to text")

    def _check_physical_type(self) -> None:
        physical = self.physical
        if physical not in (types.STRUCT, types.LIST):
            try:
                types.scalar_arrow_type(physical)
            except ValueError as exc:
                raise ValueError(f"physicalType: {exc}") from None
        if not types.physical_fits_logical(self.logical_type, physical):
            raise ValueError(
                f"physicalType {physical} does not fit logicalType {self.logical_type}"
            )
        timezone = self.options.timezone
        if (
            timezone is not None
            and self.logical_type == "timestamp"
            and timezone != physical.endswith("tz=UTC]")
        ):
            raise ValueError(f"logicalTypeOptions.timezone {timezone} contradicts {physical}")

    def _check_nesting(self) -> None:
        if self.logical_type == "object":
            if not self.properties:
                raise ValueError("an object needs at least one entry in properties")
            _check_unique_names([child.name for child in self.properties])
        elif self.properties is not None:
            raise ValueError(f"only an object has properties, not a {self.logical_type}")
        if self.logical_type == "array":
            if self.items is None:
                raise ValueError("an array needs items")
        elif self.items is not None:
            raise ValueError(f"only an array has items, not a {self.logical_type}")

    def _check_options(self) -> None:
        options = self.options
        given = options.set_rules()
        logical = self.logical_type
        text = logical == "string" and self.physical == "string"
        allowed: tuple[str, ...] = ()
        if text:
            allowed = (*_TEXT_OPTIONS, "enum")
        elif logical in ("integer", "number"):
            allowed = (*_RANGE_OPTIONS, "enum")
        elif logical in ("date", "timestamp", "time"):
            allowed = _RANGE_OPTIONS
        wrong = [name for name in given if name not in allowed]
        if wrong:
            kind = f"{logical} ({self.physical})" if logical == "string" else logical
            raise ValueError(f"logicalTypeOptions {', '.join(wrong)} do not apply to a {kind}")
        data = options.model_dump(by_alias=True, exclude_none=True)
        for name in _RANGE_OPTIONS:
            if name in data:
                check_bound(logical, name, data[name])
        for value in options.enum or []:
            check_listed_value(logical, value)


class SchemaProperty(BaseProperty):
    """One column of the product (or one field of an object column)."""

    name: str


class ItemProperty(BaseProperty):
    """The element type of an array (`items`); its name is optional."""


class SchemaObject(OdcsModel):
    """The product's table: its columns and its table-level quality rules."""

    name: str
    physical_name: str | None = None
    physical_type: str | None = None
    business_name: str | None = None
    description: str | None = None
    logical_type: Literal["object"] | None = None
    properties: list[SchemaProperty]
    quality: list[QualityRule] | None = None

    @model_validator(mode="after")
    def _check(self) -> SchemaObject:
        if not self.properties:
            raise ValueError("properties: a table needs at least one column")
        names = [prop.name for prop in self.properties]
        _check_unique_names(names)
        for prop in self.properties:
            for child in prop.children():
                _refuse_nested_rules(child, prop.name)
        positions = [
            position
            for p in self.properties
            if p.primary_key and (position := p.primary_key_position) is not None and position != -1
        ]
        if len(positions) != len(set(positions)) or any(pos < 1 for pos in positions):
            raise ValueError("primaryKeyPosition must be distinct numbers from 1 up")
        for rule in self.quality or []:
            if not rule.checked:
                continue
            if rule.metric_name not in SCHEMA_METRICS:
                raise ValueError(f"{rule.metric_name} is a property-level metric, not a table's")
            if rule.metric_name == "duplicateValues":
                columns = (rule.arguments or {}).get("properties")
                if not isinstance(columns, list) or not columns:
                    raise ValueError(
                        "a table's duplicateValues rule needs arguments.properties: the columns"
                    )
                unknown = [c for c in columns if c not in names]
                if unknown:
                    raise ValueError(f"duplicateValues names unknown columns: {unknown}")
        return self


class Contract(OdcsModel):
    """A product's data contract. Load one with `load_contract`, write one with `dump_contract`."""

    api_version: str
    kind: Literal["DataContract"]
    id: str
    name: str | None = None
    version: Annotated[str, BeforeValidator(_semver_text)]
    status: str
    domain: str | None = None
    data_product: str | None = None
    tenant: str | None = None
    schema_: list[SchemaObject] = Field(alias="schema")
    custom_properties: list[CustomProperty] | None = None

    @model_validator(mode="after")
    def _check(self) -> Contract:
        if _API_VERSION.fullmatch(self.api_version) is None:
            raise ValueError(
                f"apiVersion {self.api_version!r} is not supported; Shoal reads ODCS v3 (v3.1.0)"
            )
        if not self.id:
            raise ValueError("id must not be empty")
        if not self.status:
            raise ValueError("status must not be empty")
        if len(self.schema_) != 1:
            raise ValueError(
                f"schema: a product contract describes one table; got {len(self.schema_)}"
            )
        return self

    @property
    def table(self) -> SchemaObject:
        return self.schema_[0]

    @property
    def columns(self) -> list[SchemaProperty]:
        return self.table.properties

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of the product's data files, columns in contract order.

        Every field is nullable: `required` is a rule checked on publish, and a Delta column
        made non-nullable later could not take the rows already written.
        """
        return pa.schema([pa.field(column.name, column.arrow_type()) for column in self.columns])

    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def column(self, name: str) -> SchemaProperty:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def primary_key(self) -> list[str]:
        """The primary key's columns in `primaryKeyPosition` order (empty when none)."""
        keyed = [(i, c) for i, c in enumerate(self.columns) if c.primary_key]

        def position(item: tuple[int, SchemaProperty]) -> tuple[int, int]:
            index, column = item
            pos = column.primary_key_position
            return (pos if pos is not None and pos >= 1 else 10**9, index)

        return [column.name for _, column in sorted(keyed, key=position)]

    def custom_property(self, name: str) -> Any:
        """The value of a top-level custom property, or None."""
        for item in self.custom_properties or []:
            if item.property == name:
                return item.value
        return None

    def columns_summary(self) -> list[dict[str, Any]]:
        """One plain dict per column for listings: name, type, flags and rules."""
        return [
            {
                "name": column.name,
                "type": column.physical,
                "logical_type": column.logical_type,
                "required": bool(column.required),
                "unique": bool(column.unique),
                "primary_key": bool(column.primary_key),
                "classification": column.classification or "",
                "pii": bool(column.pii),
                "rules": _rules_text(column),
            }
            for column in self.columns
        ]


def parse_semver(text: str) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
    """A sort key that orders versions by semantic-versioning precedence.

    A pre-release sorts before its release (1.0.0-rc.1 < 1.0.0); build metadata is ignored.
    """
    match = _SEMVER.fullmatch(text)
    if match is None:
        raise ValueError(f"not a semantic version: {text!r}")
    major, minor, patch = (int(match.group(i)) for i in (1, 2, 3))
    if match.group(4) is None:
        return major, minor, patch, 1, ()
    # Numeric identifiers compare as numbers and sort before alphanumeric ones.
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in match.group(4).split(".")
    )
    return major, minor, patch, 0, identifiers


def _check_unique_names(names: Sequence[str | None]) -> None:
    # DuckDB and Delta match column names without regard to case, so "Amount" and "amount"
    # would be one column there.
    seen: dict[str, str] = {}
    for name in names:
        if name is None:
            continue
        folded = name.casefold()
        if folded in seen:
            raise ValueError(f"column {name!r} appears twice (names ignore case: {seen[folded]!r})")
        seen[folded] = name


def _refuse_nested_rules(prop: BaseProperty, path: str) -> None:
    where = f"{path}.{prop.name}" if prop.name else f"{path}[]"
    rules = prop.rule_fields()
    if rules:
        raise ValueError(
            f"{where}: rules on nested fields are not checked yet ({', '.join(rules)}); "
            "put them on top-level columns"
        )
    for child in prop.children():
        _refuse_nested_rules(child, where)


def _rules_text(column: SchemaProperty) -> str:
    """A short, human summary of a column's value rules for listings."""
    options = column.options
    parts: list[str] = []
    if options.pattern is not None:
        parts.append(f"pattern {options.pattern}")
    for label, value in (
        (">=", options.minimum),
        (">", options.exclusive_minimum),
        ("<=", options.maximum),
        ("<", options.exclusive_maximum),
    ):
        if value is not None:
            parts.append(f"{label} {value}")
    if options.min_length is not None:
        parts.append(f"length >= {options.min_length}")
    if options.max_length is not None:
        parts.append(f"length <= {options.max_length}")
    if options.enum is not None:
        parts.append("one of " + ", ".join(str(v) for v in options.enum))
    for rule in column.quality or []:
        if rule.checked and rule.metric_name:
            parts.append(rule.metric_name)
    return "; ".join(parts)


BaseProperty.model_rebuild()
SchemaProperty.model_rebuild()
ItemProperty.model_rebuild()
