"""Helpers for the contract tests: contracts from short column lists, checks over tables."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from shoal.contracts import Contract, ContractCheck, load_contract
from shoal.contracts.document import contract_from_data
from shoal.engine import trusted_connection
from shoal.errors import RuleFailure


def contract_data(
    columns: list[dict[str, Any]], quality: list[dict[str, Any]] | None = None, **top: Any
) -> dict[str, Any]:
    """A contract as plain data, one table named `t`, with the given columns."""
    table: dict[str, Any] = {"name": "t", "logicalType": "object", "properties": columns}
    if quality is not None:
        table["quality"] = quality
    data = {
        "apiVersion": "v3.1.0",
        "kind": "DataContract",
        "id": "urn:shoal:test:t",
        "name": "t",
        "version": "1.0.0",
        "status": "active",
        "schema": [table],
    }
    data.update(top)
    return data


def make_contract(
    columns: list[dict[str, Any]], quality: list[dict[str, Any]] | None = None, **top: Any
) -> Contract:
    return contract_from_data(contract_data(columns, quality, **top))


def column(name: str, logical: str = "string", **fields: Any) -> dict[str, Any]:
    return {"name": name, "logicalType": logical, **fields}


def check_table(
    contract: Contract, new: pa.Table, existing: pa.Table | None = None
) -> list[RuleFailure]:
    """Run the whole check on `new` (added to `existing`), as the publish pipeline does."""
    check = ContractCheck(contract)
    check.check_columns(new.schema)
    conformed = [check.conform(batch) for batch in new.to_batches()]
    if check.failures:
        return check.failures
    rows = pa.Table.from_batches([b for b in conformed if b is not None], schema=check.arrow_schema)
    with trusted_connection() as con:
        con.register("incoming", rows)
        con.execute("CREATE VIEW new_rows AS SELECT * FROM incoming")
        if existing is None:
            con.execute("CREATE VIEW all_rows AS SELECT * FROM new_rows")
        else:
            con.register("existing", existing)
            con.execute(
                "CREATE VIEW all_rows AS SELECT * FROM existing UNION ALL BY NAME "
                "SELECT * FROM new_rows"
            )
        check.check_rows(con, new_rows="new_rows", all_rows="all_rows")
    check.close()
    return check.failures


def failure(failures: list[RuleFailure], rule: str, column: str | None = None) -> RuleFailure:
    found = [f for f in failures if f.rule == rule and (column is None or f.column == column)]
    assert len(found) == 1, failures
    return found[0]


def reload(contract: Contract) -> Contract:
    from shoal.contracts import dump_contract

    return load_contract(dump_contract(contract))
