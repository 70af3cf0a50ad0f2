"""Data contracts: an Open Data Contract Standard (ODCS) v3.1 subset in YAML.

model.py      the contract's pydantic models (tables, columns, rules)
quality.py    quality rules (rowCount, duplicateValues, ...) and their operators
values.py     the model base and checks on the values rules name
document.py   YAML in and out, read with bounds (size, aliases, duplicate keys)
types.py      Arrow types <-> logical and physical contract types
infer.py      a draft contract from an Arrow schema
conform.py    casting source batches to the contract's schema, counting misfits
failures.py   collecting failures with JSON-safe, PII-masked samples
check.py      ContractCheck: columns, casts and row rules, as the publish pipeline runs them
evolution.py  whether a new contract may replace the current one
"""

from __future__ import annotations

from shoal.contracts.check import ContractCheck, null_counts
from shoal.contracts.document import MAX_CONTRACT_BYTES, dump_contract, load_contract
from shoal.contracts.evolution import check_evolution, describe_changes
from shoal.contracts.infer import infer_contract, with_required
from shoal.contracts.model import (
    Contract,
    CustomProperty,
    ItemProperty,
    LogicalTypeOptions,
    SchemaObject,
    SchemaProperty,
)
from shoal.contracts.quality import QualityRule

__all__ = [
    "MAX_CONTRACT_BYTES",
    "Contract",
    "ContractCheck",
    "CustomProperty",
    "ItemProperty",
    "LogicalTypeOptions",
    "QualityRule",
    "SchemaObject",
    "SchemaProperty",
    "check_evolution",
    "describe_changes",
    "dump_contract",
    "infer_contract",
    "load_contract",
    "null_counts",
    "with_required",
]
