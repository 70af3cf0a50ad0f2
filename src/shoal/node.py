"""A Shoal node: composes the home, the product store, sources and the SQL engine.

The CLI and (later) the servers talk to a `Node`; nothing below this module knows about
them.
"""

from __future__ import annotations

import base64
import logging
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from shoal.config import Home, create_home, open_home
from shoal.contracts import Contract, check_evolution, load_contract
from shoal.crypto import generate_key, public_key_from_bytes
from shoal.engine import LockedSession
from shoal.errors import NotFoundError, TypeDriftError, UsageError
from shoal.log import ENTRY_VERSION, Checkpoint, HistoryError
from shoal.names import check_name
from shoal.products import Mode, ProductInfo, ProductStore, PublishResult, VersionInfo, publish
from shoal.products.history import ProductHistory, locked_product, recover_all, verify_history
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
        recover_all(self.products)

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

    # -- history ------------------------------------------------------------------------
    def _history(self, product: str) -> ProductHistory:
        check_name(product, "product")
        if not self.products.exists(product):
            raise NotFoundError(f"no product '{product}' on node '{self.name}'")
        return ProductHistory(self.products, product)

    def verify(self, product: str | None = None) -> list[dict[str, Any]]:
        """Re-hash and re-check the history of one product or all; HistoryError if bad."""
        names = [product] if product is not None else self.products.names()
        trusted = self.home.trusted_keys()
        return [verify_history(self._history(name), trusted) for name in names]

    def verify_against(self, product: str, note: str) -> dict[str, Any]:
        """Prove the local history of `product` extends a checkpoint saved earlier."""
        history = self._history(product)
        try:
            earlier = Checkpoint.parse(note)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        trusted = self.home.trusted_keys()
        if not any(earlier.verify(public_key_from_bytes(k), k) for k in trusted.values()):
            raise HistoryError(
                history.log.origin, "the saved checkpoint is not signed by this node"
            )
        history.log.check_extends(earlier)
        return {"product": product, "checkpoint_size": earlier.size, "size": history.log.size()}

    def log_entries(self, product: str, start: int = 0) -> list[dict[str, Any]]:
        history = self._history(product)
        return [
            entry.body() | {"leaf_hash": entry.leaf_hash().hex()}
            for entry in history.log.entries()[start:]
        ]

    def checkpoint(self, product: str) -> str:
        checkpoint = self._history(product).log.checkpoint()
        if checkpoint is None:
            raise NotFoundError(f"product '{product}' has no checkpoint yet")
        return checkpoint.note()

    def proof(self, product: str, version: int) -> dict[str, Any]:
        """Give the inclusion proof of a version's entry in the latest checkpoint."""
        history = self._history(product)
        entries = history.log.entries()
        matches = [e for e in entries if e.kind == ENTRY_VERSION and e.version == version]
        if not matches:
            raise NotFoundError(f"product '{product}' has no version {version}")
        entry = matches[0]
        checkpoint = history.log.checkpoint()
        size = checkpoint.size if checkpoint is not None else len(entries)
        proof = history.log.inclusion(entry.seq, size)
        return {
            "product": product,
            "version": version,
            "seq": entry.seq,
            "tree_size": size,
            "leaf_hash": base64.b64encode(entry.leaf_hash()).decode(),
            "root": base64.b64encode(history.log.root(size)).decode(),
            "proof": [base64.b64encode(p).decode() for p in proof],
            "entry": entry.body(),
        }

    def rotate_key(self) -> tuple[str, str]:
        """Make a new node key; each product's log records the change, signed by the old key.

        Gives (old key id, new key id).
        """
        old = self.home.key()
        new = generate_key()
        for name in self.products.names():
            with locked_product(self.products, name) as history:
                history.record_key_rotation(old, new, self.name)
        self.home.install_key(new)
        return old.key_id, new.key_id

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
