"""A Shoal node: composes the home, the product store, sources and the SQL engine.

The CLI and (later) the servers talk to a `Node`; nothing below this module knows about
them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from shoal.config import Home, create_home, open_home
from shoal.contracts import Contract, check_evolution, load_contract
from shoal.engine import LockedSession
from shoal.errors import TypeDriftError, UsageError
from shoal.names import check_name
from shoal.products import Mode, ProductInfo, ProductStore, PublishResult, VersionInfo, publish
from shoal.products.history import locked_product
from shoal.products.publish import Progress, check_current_data
from shoal.sources import KINDS, SourceOptions, open_source

__all__ = ["Node"]

log = logging.getLogger("shoal.node")

MAX_CONTRACT_BYTES = 1024 * 1024


class Node:
    """One node's products and the operations users run on them."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.products = ProductStore(home)
        self.products.sweep_staging()

    @classmethod
    def init(cls, root: Path, name: str, region: str = "local") -> Node:
        """Create a new node home at `root` and open it."""
        return cls(create_home(root, name, region))

    @classmethod
    def open(cls, root: Path) -> Node:
        return cls(open_home(root))

    @property
    def name(self) -> str:
        return self.home.settings.name

    # -- publishing ---------------------------------------------------------------------
    def publish(
        self,
        product: str,
        source: str,
        *,
        mode: Mode | str = Mode.APPEND,
        key: Sequence[str] | None = None,
        contract_file: Path | None = None,
        options: SourceOptions | None = None,
        progress: Progress | None = None,
    ) -> PublishResult:
        """Read `source` and publish it as the next version of `product`.

        Names and options are checked before any I/O; a failed publish writes nothing.
        """
        check_name(product, "product")
        try:
            mode = Mode(mode)
        except ValueError as exc:
            choices = ", ".join(m.value for m in Mode)
            raise UsageError(f"unknown mode {mode!r}; choose one of {choices}") from exc
        contract = read_contract_file(contract_file) if contract_file is not None else None
        base = options or SourceOptions()
        try:
            return self._publish_once(product, source, mode, key, contract, base, progress)
        except TypeDriftError:
            # The sampled types missed a late value; nothing was written, so read the
            # source again looking at every row.
            log.info("re-reading %s with exact column types", source)
            exact = replace(base, exact_types=True)
            return self._publish_once(product, source, mode, key, contract, exact, progress)

    def _publish_once(
        self,
        product: str,
        source: str,
        mode: Mode,
        key: Sequence[str] | None,
        contract: Contract | None,
        options: SourceOptions,
        progress: Progress | None,
    ) -> PublishResult:
        scratch = self.home.new_tmp_dir(f"source-{product}-")
        try:
            with open_source(source, replace(options, scratch_dir=scratch)) as reader:
                return publish(
                    self.products,
                    product,
                    reader,
                    mode=mode,
                    key=key,
                    contract=contract,
                    source_kind=_source_kind(source),
                    progress=progress,
                )
        finally:
            _remove_tree(scratch)

    # -- inspecting ---------------------------------------------------------------------
    def list_products(self) -> list[ProductInfo]:
        return [self.products.info(name) for name in self.products.names()]

    def describe(self, product: str) -> ProductInfo:
        return self.products.info(check_name(product, "product"))

    def history(self, product: str) -> list[VersionInfo]:
        return self.products.history(check_name(product, "product"))

    def contract(self, product: str) -> Contract:
        return self.products.contract(check_name(product, "product"))

    def contract_text(self, product: str) -> str:
        return self.products.contract_text(check_name(product, "product"))

    def set_contract(self, product: str, contract_file: Path) -> Contract:
        """Replace a product's contract; a breaking change needs a higher major version.

        The current data must also satisfy the new contract, so a product never stands
        in breach of its own contract.
        """
        check_name(product, "product")
        new = read_contract_file(contract_file)
        with locked_product(self.products, product):
            current = self.products.contract(product)
            check_evolution(current, new)
            check_current_data(self.products, product, new)
            self.products.write_contract(product, new)
        return new

    # -- SQL ----------------------------------------------------------------------------
    def sql(self, query: str) -> pa.RecordBatchReader:
        """Run one read-only SQL statement over this node's products (latest versions)."""
        settings = self.home.settings
        session = LockedSession(
            memory_limit=settings.sql_memory_limit, threads=settings.sql_threads
        )
        tables = {(self.name, name): self.products.dataset(name) for name in self.products.names()}
        session.expose(tables)
        session.lock()
        return session.run(query)


def read_contract_file(path: Path) -> Contract:
    """Load a contract file given on the command line, with clear errors."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"cannot read contract file {path}: {exc.strerror}") from exc
    if size > MAX_CONTRACT_BYTES:
        raise UsageError(f"contract file {path} is larger than 1 MiB; refusing to read it")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read contract file {path}: {exc}") from exc
    return load_contract(text)


def _source_kind(spec: str) -> str:
    """Name the source's kind for the history, never its credentials."""
    for kind in KINDS:
        if kind.matches(spec):
            return kind.name
    return ""


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
