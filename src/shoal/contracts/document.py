"""Contract YAML in and out, with reading bounded because contracts come from anyone.

Reading refuses, as a `UsageError` naming the problem:

* more than 1 MiB of text, or text that is not UTF-8;
* YAML that is malformed, uses tags beyond plain data (`yaml.SafeLoader` only), or repeats a
  key in one mapping;
* YAML that expands to more than `MAX_NODES` nodes or nests deeper than `MAX_DEPTH`: aliases
  make a few lines expand exponentially ("billion laughs"), which would exhaust memory and CPU
  in validation;
* anything that is not a valid contract (see `shoal.contracts.model`), with the path of each
  bad field, e.g. `schema[0].properties[2] (amount).logicalType`.

Writing gives stable YAML: fields in ODCS order, unknown fields after the known ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from shoal.contracts.model import Contract
from shoal.errors import UsageError

__all__ = [
    "MAX_CONTRACT_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "contract_from_data",
    "dump_contract",
    "load_contract",
]

MAX_CONTRACT_BYTES: Final = 1024 * 1024
MAX_NODES: Final = 200_000
MAX_DEPTH: Final = 64
_MAX_ERRORS_SHOWN: Final = 10

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_contract(source: str | bytes | os.PathLike[str]) -> Contract:
    """Read and validate a contract from YAML text (str or bytes) or from a file path."""
    if isinstance(source, os.PathLike):
        data = _read_file(Path(source))
    elif isinstance(source, bytes):
        data = source
    else:
        data = source.encode("utf-8")
    if len(data) > MAX_CONTRACT_BYTES:
        raise UsageError("the contract is larger than 1 MiB; refusing to read it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the contract is not UTF-8 text: {exc}") from exc
    return contract_from_data(_parse_yaml(text))


def contract_from_data(data: Any) -> Contract:
    """Validate already-parsed contract data (a mapping), with errors naming each field."""
    if not isinstance(data, dict):
        kind = "nothing" if data is None else type(data).__name__
        raise UsageError(f"a contract must be a YAML mapping of fields; got {kind}")
    try:
        return Contract.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_describe(exc, data)) from None


def dump_contract(contract: Contract) -> str:
    """Give the contract as YAML text, fields in a stable order."""
    data = contract.model_dump(by_alias=True, exclude_none=True)
    return yaml.dump(
        data,
        Dumper=_IndentedDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


class _IndentedDumper(yaml.SafeDumper):
    """Indent list items under their key, the way ODCS examples are written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONTRACT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read contract file {path}: {exc.strerror}") from exc
    return data


def _parse_yaml(text: str) -> Any:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise UsageError(f"the contract is not valid YAML: {exc}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_shape(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise UsageError(f"the contract is not valid YAML: {exc}") from None
    except RecursionError:
        raise UsageError(f"the contract nests deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _check_shape(root: yaml.Node) -> None:
    """Walk the YAML graph as construction would, aliases expanded, within fixed bounds."""
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    visited = 0
    while stack:
        node, depth = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise UsageError(
                f"the contract expands to more than {MAX_NODES:,} YAML nodes "
                "(too large, or aliases that multiply); refusing to read it"
            )
        if depth > MAX_DEPTH:
            raise UsageError(f"the contract nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                _check_key(key, seen)
                stack.append((value, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)


def _check_key(key: yaml.Node, seen: set[str]) -> None:
    line = key.start_mark.line + 1
    if isinstance(key, yaml.ScalarNode) and key.tag == _MERGE_TAG:
        return
    if not isinstance(key, yaml.ScalarNode) or key.tag != _STR_TAG:
        shown = key.value if isinstance(key, yaml.ScalarNode) else "a list or mapping"
        raise UsageError(f"line {line}: key {shown!r} is not text; quote it")
    if key.value in seen:
        raise UsageError(f"line {line}: key {key.value!r} appears twice in the same mapping")
    seen.add(key.value)


def _describe(exc: ValidationError, data: dict[str, Any]) -> str:
    errors = exc.errors()
    lines = [f"the contract is not valid ({len(errors)} problem(s)):"]
    for error in errors[:_MAX_ERRORS_SHOWN]:
        where = _location(error["loc"], data)
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"  - {where}: {message}" if where else f"  - {message}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return "\n".join(lines)


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """Spell a pydantic error location as a path, naming list entries that have a name."""
    text = ""
    current = data
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            current = current[part] if isinstance(current, list) and part < len(current) else None
            if isinstance(current, dict) and isinstance(current.get("name"), str):
                text += f" ({current['name']})"
        else:
            text += f".{part}" if text else part
            current = current.get(part) if isinstance(current, dict) else None
    return text
