"""Who sees what of a product: principals, per-product policies, and the view a caller gets.

A product's policy is set by its owner (`products/<name>/policy.yaml`, `shoal policy set`,
`shoal grant`, `shoal revoke`). Without one, the contract's classifications decide:

* `public` and `internal` columns: readable by every member of the mesh;
* `confidential` columns: only for roles granted the product (`shoal grant ROLE NAME`);
  for anyone else they read as NULL (kept, so every caller sees one schema);
* `restricted` columns and columns marked `pii: true`: masked (hashed) for everyone but the
  owner's people and admins.

A policy can also name the roles that may read at all (`readers`), set a rule per column
(`allow`, `deny`, or `mask` by `hash`, `redact`, `partial`, `null`) and filter rows per role
with a SQL predicate that may use the caller's attributes (`region = :region`). The owner's
people (role `owner` of this node, and whoever works on the node's own home) and admins see
everything.

The serving node turns the decision into a view over the product (`View.sql`): the caller's
SQL only ever sees that view, so no query shape (joins, windows, aggregates, errors that
echo values) can reach a masked value or a filtered row.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pyarrow as pa
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from shoal.contracts import Contract
from shoal.durable import atomic_write
from shoal.engine import quote_identifier
from shoal.errors import RefusedError, UsageError
from shoal.names import is_valid_name

__all__ = [
    "BUILT_IN_ROLES",
    "ColumnRule",
    "MeshRules",
    "Principal",
    "ProductPolicy",
    "View",
    "bind_attributes",
    "decide",
    "load_policy",
    "parse_rules",
    "save_policy",
]

BUILT_IN_ROLES = ("admin", "owner", "analyst", "auditor")
MAX_POLICY_BYTES = 256 * 1024
_ATTRIBUTE = re.compile(r":([a-z][a-z0-9_]{0,62})\b")
_ROLE = r"^[a-z][a-z0-9_-]{0,62}$"


def _role_name(role: str) -> str:
    if not re.match(_ROLE, role):
        raise ValueError(f"invalid role name {role!r}")
    return role


RoleName = Annotated[str, AfterValidator(_role_name)]


def _digest(model: BaseModel) -> str:
    """Sixteen hex digits that change whenever the model's content does (cache keys)."""
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Principal:
    """Who a query runs for."""

    name: str  # "user:alice", "node:berlin", "local:berlin"
    role: str
    node: str = ""  # the node a person belongs to (what `owner` is owner of)
    attrs: Mapping[str, str] = field(default_factory=dict)
    # The user token that proves who this is, passed on to the nodes serving the data,
    # which check it themselves ("" for the local owner and for nodes).
    token: str = field(default="", compare=False, repr=False)

    def sees_everything_of(self, owner: str) -> bool:
        """Admins, and the owner's own people, see the owner's products whole."""
        if self.role == "admin":
            return True
        return self.node == owner and (self.role == "owner" or self.name.startswith("local:"))

    def access_key(self) -> str:
        """What decides this principal's views: the cache keeps answers apart by it."""
        attrs = ",".join(f"{k}={v}" for k, v in sorted(self.attrs.items()))
        return f"{self.name}|{self.role}|{self.node}|{attrs}"

    @classmethod
    def local(cls, node: str) -> Principal:
        """Whoever works on a node's own home: its owner."""
        return cls(f"local:{node}", "owner", node)

    @classmethod
    def anonymous(cls) -> Principal:
        """A caller without a token (until the mesh requires one): a plain member."""
        return cls("anonymous", "member")

    @classmethod
    def of_node(cls, node: str) -> Principal:
        """A node asking for itself (no person behind it): a plain member."""
        return cls(f"node:{node}", "member", node)


class ColumnRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["allow", "deny", "mask"] = "allow"
    method: Literal["hash", "redact", "partial", "null"] = "hash"


class RowFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(min_length=1, max_length=100, description="roles it applies to; *")
    where: str = Field(min_length=1, max_length=4096)


class ProductPolicy(BaseModel):
    """A product's policy as its owner writes it (YAML)."""

    model_config = ConfigDict(extra="forbid")

    readers: list[RoleName] | None = Field(
        default=None, max_length=100, description="roles that may read; None: every member"
    )
    grants: dict[str, list[str]] = Field(
        default_factory=dict, description="role -> columns it may see when confidential ([]: all)"
    )
    columns: dict[str, ColumnRule] = Field(default_factory=dict)
    row_filters: list[RowFilter] = Field(default_factory=list, max_length=100)

    def digest(self) -> str:
        return _digest(self)


class MeshRules(BaseModel):
    """What the hub sets for the whole mesh, and no product's policy can open up.

    `readers`: the roles that may read any product at all (None: every role). `floors`: the
    least protection a column of a classification (or marked `pii`) gets for anyone but the
    owner's people and admins: `mask` (hashed, unless the product's policy asks for more)
    or `deny`. The hub signs them into its announcement; every serving node applies them.
    """

    model_config = ConfigDict(extra="forbid")

    readers: list[RoleName] | None = Field(default=None, max_length=100)
    floors: dict[Literal["restricted", "confidential", "pii"], Literal["mask", "deny"]] = Field(
        default_factory=dict
    )

    def digest(self) -> str:
        return _digest(self)

    def floor_of(self, column: Any) -> str | None:
        """The strongest floor that applies to a contract column (None: no floor)."""
        floors: dict[str, str] = {str(k): str(v) for k, v in self.floors.items()}
        found = [floors.get(getattr(column, "classification", None) or "internal")]
        if getattr(column, "pii", False):
            found.append(floors.get("pii"))
        ranked = [f for f in found if f is not None]
        return max(ranked, key=_STRENGTH.__getitem__) if ranked else None

    def problems(self, policy: ProductPolicy, contract: Contract) -> list[str]:
        """Where `policy` asks for less than these rules allow (checked when it is set)."""
        described = {c.name.lower(): c for c in contract.columns}
        found = []
        for name, rule in sorted(policy.columns.items()):
            floor = self.floor_of(described.get(name.lower()))
            if floor is not None and _STRENGTH[rule.action] < _STRENGTH[floor]:
                found.append(f"column {name!r}: the mesh's rules ask at least {floor!r}")
        if self.readers is not None:
            for role in sorted({*(policy.readers or []), *policy.grants}):
                if role not in self.readers and role not in ("admin", "owner"):
                    found.append(f"role {role!r}: the mesh's rules let it read no product")
        return found


_STRENGTH = {"allow": 0, "mask": 1, "deny": 2}


def parse_rules(raw: bytes, where: str) -> MeshRules:
    """Mesh rules from YAML or JSON text, with clear errors."""
    return _parse_yaml(MeshRules, raw, f"rules {where}")


def load_policy(path: Path) -> ProductPolicy:
    """The policy in `path` (an empty policy when there is none), with clear errors."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ProductPolicy()
    return parse_policy(raw, str(path))


def parse_policy(raw: bytes, where: str) -> ProductPolicy:
    return _parse_yaml(ProductPolicy, raw, f"policy {where}")


_Model = TypeVar("_Model", bound=BaseModel)


def _parse_yaml(model: type[_Model], raw: bytes, what: str) -> _Model:
    """`model` from YAML (or JSON) text of at most MAX_POLICY_BYTES; UsageError naming
    `what` and the first wrong field otherwise."""
    if len(raw) > MAX_POLICY_BYTES:
        raise UsageError(f"{what} is larger than {MAX_POLICY_BYTES // 1024} KiB")
    try:
        data = yaml.safe_load(raw.decode("utf-8")) or {}
        return model.model_validate(data)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{what} is not YAML: {exc}") from exc
    except ValidationError as exc:
        error = exc.errors()[0]
        place = ".".join(str(p) for p in error["loc"])
        raise UsageError(f"{what}: {place}: {error['msg']}") from exc


def save_policy(path: Path, policy: ProductPolicy) -> None:
    text = yaml.safe_dump(policy.model_dump(exclude_defaults=True), sort_keys=True)
    atomic_write(path, text.encode("utf-8"))


@dataclass(frozen=True)
class View:
    """What a principal sees of one product: per column its expression (None: denied) and
    the rows it may see."""

    columns: tuple[tuple[str, str | None], ...]
    where: str = ""
    whole: bool = False  # nothing hidden: the product itself
    denied: tuple[str, ...] = ()  # shown as NULL

    @property
    def plain(self) -> bool:
        """Every column as it is and every row: the view hides nothing."""
        return not self.where and all(expr == quote_identifier(name) for name, expr in self.columns)

    def sql(self, source: str) -> str:
        """A SELECT over `source` (quoted) giving exactly what the principal may see."""
        shown = [
            f"{expr} AS {quote_identifier(name)}" for name, expr in self.columns if expr is not None
        ]
        if not shown:
            raise RefusedError("no column of this product is visible to you")
        where = f" WHERE {self.where}" if self.where else ""
        return f"SELECT {', '.join(shown)} FROM {source}{where}"

    def describe(self) -> dict[str, Any]:
        return {
            "denied": list(self.denied),
            "masked": [
                name
                for name, expr in self.columns
                if expr is not None and expr != quote_identifier(name) and name not in self.denied
            ],
            "row_filter": self.where,
        }


def decide(
    policy: ProductPolicy,
    contract: Contract,
    schema: pa.Schema,
    principal: Principal,
    owner: str,
    mask_secret: str,
    rules: MeshRules | None = None,
) -> View:
    """The view `principal` gets of a product of node `owner` under the product's policy
    within the mesh's rules; RefusedError if none."""
    if principal.sees_everything_of(owner):
        return View(tuple((f.name, quote_identifier(f.name)) for f in schema), whole=True)
    rules = rules or MeshRules()
    if rules.readers is not None and principal.role not in rules.readers:
        raise RefusedError(
            f"the mesh's rules let role '{principal.role}' read no product",
            hint="the hub sets them: `shoal rules show`",
        )
    if policy.readers is not None and principal.role not in policy.readers:
        raise RefusedError(
            f"role '{principal.role}' may not read this product",
            hint="its owner can allow it: `shoal grant ROLE NAME`",
        )
    described = {c.name.lower(): c for c in contract.columns}
    granted = policy.grants.get(principal.role)
    columns: list[tuple[str, str | None]] = []
    denied: list[str] = []
    for arrow_field in schema:
        name = arrow_field.name
        column = described.get(name.lower())
        rule = policy.columns.get(name)
        if rule is None:
            rule = _default_rule(column, name, granted)
        floor = rules.floor_of(column)
        if floor is not None and _STRENGTH[rule.action] < _STRENGTH[floor]:
            rule = ColumnRule(action="deny") if floor == "deny" else ColumnRule(action="mask")
        if rule.action == "deny":
            # Kept as a typed NULL, not dropped: every node and the planner see one schema,
            # so `*` and plans made from the catalog hold whoever asks.
            columns.append((name, f"CAST(NULL AS {_duck_type(arrow_field.type)})"))
            denied.append(name)
        elif rule.action == "mask":
            columns.append((name, _mask(name, arrow_field.type, rule.method, mask_secret)))
        else:
            columns.append((name, quote_identifier(name)))
    filters = [
        f"({bind_attributes(f.where, principal)})"
        for f in policy.row_filters
        if principal.role in f.roles or "*" in f.roles
    ]
    return View(tuple(columns), " AND ".join(filters), denied=tuple(denied))


def _default_rule(column: Any, name: str, granted: list[str] | None) -> ColumnRule:
    classification = getattr(column, "classification", None) or "internal"
    ungranted = granted is None or (granted and name not in granted)
    if classification == "confidential" and ungranted:
        return ColumnRule(action="deny")
    if classification == "restricted" or getattr(column, "pii", False):
        return ColumnRule(action="mask", method="hash")
    return ColumnRule()


def _mask(name: str, arrow_type: pa.DataType, method: str, secret: str) -> str:
    column = quote_identifier(name)
    text = f"CAST({column} AS VARCHAR)"
    if method == "null":
        return f"CAST(NULL AS {_duck_type(arrow_type)})"
    if method == "redact":
        return f"CASE WHEN {column} IS NULL THEN NULL ELSE '[redacted]' END"
    if method == "partial":
        # An e-mail keeps its domain, anything else its last two characters.
        return (
            f"CASE WHEN {column} IS NULL THEN NULL WHEN strpos({text}, '@') > 0 "
            f"THEN '***' || substr({text}, strpos({text}, '@')) "
            f"ELSE '***' || right({text}, 2) END"
        )
    literal = "'" + secret.replace("'", "''") + "'"
    return f"CASE WHEN {column} IS NULL THEN NULL ELSE sha256({literal} || {text}) END"


def _duck_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    if pa.types.is_date(arrow_type):
        return "DATE"
    return "VARCHAR"


def bind_attributes(where: str, principal: Principal) -> str:
    """`where` with `:attribute` replaced by the caller's value as a SQL string; an
    attribute the caller does not have makes the filter match nothing."""

    def value(match: re.Match[str]) -> str:
        found = principal.attrs.get(match.group(1))
        if found is None:
            return "NULL"  # compares as unknown: no row passes
        return "'" + str(found).replace("'", "''") + "'"

    return _ATTRIBUTE.sub(value, where)


def check_filter(where: str) -> str:
    """Refuse a row filter that is not one plain predicate (checked when it is set)."""
    if ";" in where or "--" in where or "/*" in where:
        raise UsageError("a row filter is one SQL predicate, without ';' or comments")
    return where


def parse_attrs(items: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` pairs from the command line."""
    attrs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not is_valid_name(key) or len(value) > 256:
            raise UsageError(f"--attr wants KEY=VALUE (key: lowercase name), not {item!r}")
        attrs[key] = value
    return attrs


def policy_summary(policy: ProductPolicy) -> str:
    return json.dumps(policy.model_dump(exclude_defaults=True), sort_keys=True)
