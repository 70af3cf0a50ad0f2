"""The Python API: `shoal.connect(home)` gives a `Mesh` to query and publish.

Today a Mesh wraps one local node home; the mesh issue adds remote nodes over HTTP and
Flight behind the same methods.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shoal.config import resolve_home
from shoal.errors import UsageError
from shoal.node import Node
from shoal.products import Mode, ProductInfo, PublishResult

__all__ = ["Mesh", "Result", "connect"]


class Result:
    """A query result, convertible to the dataframe library of your choice."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def arrow(self) -> pa.Table:
        return self._table

    def df(self) -> Any:
        """Give the result as a pandas DataFrame (needs pandas installed)."""
        try:
            return self._table.to_pandas()
        except ImportError as exc:
            raise UsageError("Result.df() needs pandas: pip install pandas") from exc

    def pl(self) -> Any:
        """Give the result as a polars DataFrame (needs polars installed)."""
        try:
            import polars
        except ImportError as exc:
            raise UsageError("Result.pl() needs polars: pip install polars") from exc
        return polars.from_arrow(self._table)

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def __repr__(self) -> str:
        return f"Result({self._table.num_rows} rows, columns={self._table.column_names})"


class Mesh:
    """What a user holds after `connect`: SQL, publishing and the product list."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def node(self) -> Node:
        return self._node

    def sql(self, query: str) -> Result:
        return Result(self._node.sql(query).read_all())

    def products(self) -> list[ProductInfo]:
        return self._node.list_products()

    def publish(
        self,
        name: str,
        data: Any,
        *,
        mode: Mode | str = Mode.APPEND,
        key: list[str] | None = None,
    ) -> PublishResult:
        """Publish `data`: a path or URL of a source, or an Arrow table/pandas/polars frame."""
        if isinstance(data, str | Path):
            return self._node.publish(name, str(data), mode=mode, key=key)
        table = _to_arrow(data)
        with tempfile.TemporaryDirectory(dir=self._node.home.root / "tmp") as scratch:
            path = Path(scratch) / "data.parquet"
            pq.write_table(table, path)
            return self._node.publish(name, str(path), mode=mode, key=key)


def connect(home: str | Path | None = None) -> Mesh:
    """Open the node at `home` (default `$SHOAL_HOME` or `./.shoal`)."""
    return Mesh(Node.open(resolve_home(home)))


def _to_arrow(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "to_arrow"):  # polars
        table = data.to_arrow()
        if isinstance(table, pa.Table):
            return table
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    try:
        return pa.Table.from_pandas(data, preserve_index=False)
    except (TypeError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"cannot publish a {type(data).__name__}: give a path, an Arrow table or a DataFrame"
        ) from exc
