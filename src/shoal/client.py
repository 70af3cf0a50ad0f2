"""The Python API: `shoal.connect(...)` gives a `Mesh` to query, inspect and publish.

    mesh = shoal.connect(profile="eve.shoal-profile")   # as a person, at the profile's node
    mesh = shoal.connect("https://hq-pc:7400", home=".shoal")  # as the node of that home
    mesh = shoal.connect(home=".shoal")                 # a node home on this machine

Both answer the same methods with the same results; a remote error is raised as the same
`ShoalError` class the node raised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

from shoal.config import open_home, resolve_home
from shoal.credentials import Credentials, of_home, of_profile
from shoal.errors import NotFoundError, ShoalError, UnavailableError, UsageError
from shoal.mesh.users import read_profile
from shoal.mesh.wire import error_from_dict
from shoal.node import Node
from shoal.products import Mode
from shoal.results import versions_read

__all__ = ["Mesh", "Result", "connect"]

ARROW_STREAM = "application/vnd.apache.arrow.stream"


class Result:
    """A query result, convertible to the dataframe library of your choice."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def arrow(self) -> pa.Table:
        return self._table

    @property
    def versions(self) -> dict[str, dict[str, Any]]:
        """Per product read: the version, the node it came from, the newest version known
        and whether the answer read an older one (`stale`)."""
        return versions_read(self._table.schema)

    @property
    def stale(self) -> bool:
        """Whether any product was read at an older version than the newest known."""
        return any(info.get("stale") for info in self.versions.values())

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

    def rows(self) -> list[tuple[Any, ...]]:
        """Give the result as a list of plain Python tuples."""
        return [tuple(row.values()) for row in self._table.to_pylist()]

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def __repr__(self) -> str:
        return f"Result({self._table.num_rows} rows, columns={self._table.column_names})"


class Mesh:
    """What a user holds after `connect`: SQL over the mesh, the catalog, publishing."""

    def __init__(
        self,
        node: Node | None = None,
        *,
        url: str | None = None,
        timeout: float = 300.0,
        credentials: Credentials | None = None,
    ) -> None:
        if (node is None) == (url is None):
            raise UsageError("a Mesh talks to a local node or to a URL, not both")
        self._node = node
        self._credentials = credentials or Credentials()
        self._http = (
            httpx.Client(
                base_url=url,
                timeout=timeout,
                headers=self._credentials.headers,
                verify=self._credentials.verify,
                auth=self._credentials.auth,
            )
            if url is not None
            else None
        )

    @property
    def node(self) -> Node:
        if self._node is None:
            raise UsageError("this Mesh talks to a remote node; there is no local Node")
        return self._node

    # -- SQL ----------------------------------------------------------------------------
    def sql(self, query: str) -> Result:
        """Answer one read-only SELECT over every node's products."""
        return Result(self.sql_reader(query).read_all())

    def sql_reader(self, query: str) -> pa.RecordBatchReader:
        """Like `sql`, but streams the result as Arrow record batches."""
        if self._node is not None:
            return self._node.query(query)
        response = self._call("POST", "/api/v1/query", json={"sql": query}, stream=True)
        try:
            data = response.read()
        finally:
            response.close()
        try:
            return pa.ipc.open_stream(pa.py_buffer(data))
        except pa.ArrowInvalid as exc:
            raise ShoalError(f"the node sent a broken result stream: {exc}") from exc

    def explain(self, query: str, *, analyze: bool = False) -> dict[str, Any]:
        """The plan: fragments per node with what is pushed down, and the coordinator's part.

        With `analyze`, the query also runs (its rows are discarded) and `analysis` says,
        per fragment, the rows and bytes moved, cache hit or miss and the time at the node
        and in transfer, and the time of planning, fetching and merging.
        """
        if self._node is not None:
            if analyze:
                return self._node.analyze(query).report()
            plan = self._node.plan(query)
            return {"plan": plan.to_dict(), "text": plan.explain()}
        body = {"sql": query, "analyze": analyze}
        return dict(self._json("POST", "/api/v1/explain", json=body))

    # -- catalog ------------------------------------------------------------------------
    def products(self) -> list[dict[str, Any]]:
        """Every product in the mesh: name, owner, version, rows, size, holders."""
        if self._node is not None:
            return [e.summary() for e in self._node.mesh_products()]
        return list(self._json("GET", "/api/v1/products"))

    def describe(self, name: str) -> list[dict[str, Any]]:
        """The product(s) a name means, with columns, contract and latest checkpoint."""
        if self._node is not None:
            return self._node.describe_in_mesh(name)
        return list(self._json("GET", f"/api/v1/products/{name}"))

    def nodes(self) -> list[dict[str, Any]]:
        """The mesh's members with region, endpoints and state."""
        if self._node is not None:
            return self._node.members_view()
        return list(self._json("GET", "/api/v1/nodes"))

    # -- publishing ---------------------------------------------------------------------
    def publish(
        self,
        name: str,
        data: Any,
        *,
        mode: Mode | str = Mode.APPEND,
        key: list[str] | None = None,
    ) -> dict[str, Any]:
        """Publish `data` (a path of a source, an Arrow table, a pandas or polars frame)."""
        mode = Mode(mode)
        if self._node is not None:
            if isinstance(data, str | Path):
                return self._node.publish(name, str(data), mode=mode, key=key).to_dict()
            return self._node.publish_table(name, _to_arrow(data), mode=mode, key=key).to_dict()
        if isinstance(data, str | Path):
            from shoal.sources import SourceOptions, open_source

            with open_source(str(data), SourceOptions()) as reader:
                table = reader.read_all()
        else:
            table = _to_arrow(data)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return dict(
            self._json(
                "POST",
                f"/api/v1/products/{name}/versions",
                params={"mode": mode.value, "key": ",".join(key or [])},
                content=sink.getvalue().to_pybytes(),
                headers={"content-type": ARROW_STREAM},
            )
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------
    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ShoalError(f"the node answered {path} with something that is not JSON") from exc

    def _call(
        self, method: str, path: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        assert self._http is not None
        try:
            request = self._http.build_request(
                method, path, extensions=self._credentials.extensions(), **kwargs
            )
            response = self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise UnavailableError(f"{self._http.base_url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise UnavailableError(
                f"cannot reach the node at {self._http.base_url}: {exc}",
                hint="is `shoal serve` running there?",
            ) from exc
        if response.status_code >= 400:
            body = response.read()
            response.close()
            try:
                data = httpx.Response(response.status_code, content=body).json()
            except ValueError:
                data = None
            raise error_from_dict(data, fallback=f"HTTP {response.status_code} from {path}")
        return response


def connect(
    target: str | Path | None = None,
    *,
    home: str | Path | None = None,
    profile: str | Path | None = None,
    url: str | None = None,
) -> Mesh:
    """Connect to a running node as a user with a profile, to a node's URL as a node home on
    this machine, or open a node home.

    `connect(profile="alice.shoal-profile")` talks to the profile's endpoint (or `url`)
    with its token; `connect("https://host:7400", home=".shoal")` talks to that node as the
    node whose home it is (its key signs each call); `connect(home=".shoal")` (or a path as
    the first argument, or nothing: `$SHOAL_HOME` or `./.shoal`) opens the home itself.
    """
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        url = target
    if profile is not None:
        found = read_profile(Path(profile))
        at = (url or found.endpoint).rstrip("/")
        return Mesh(url=at, credentials=of_profile(found, at))
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"invalid URL {url!r}: want https://HOST:PORT")
        at = url.rstrip("/")
        try:
            node_home = open_home(resolve_home(home))
        except NotFoundError as exc:
            raise UsageError(
                f"to talk to {at}, give a profile (`profile=`, `--profile FILE`) or the "
                "home of a node of its mesh (`home=`, `--home DIR`)",
                hint="`shoal user add NAME --role ROLE` on the hub writes a profile",
            ) from exc
        return Mesh(url=at, credentials=of_home(node_home, at))
    return Mesh(Node.open(resolve_home(home if home is not None else target)))


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
