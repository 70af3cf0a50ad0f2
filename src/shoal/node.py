"""A Shoal node: composes the home, the product store, sources and the SQL engine.

The CLI and (later) the servers talk to a `Node`; nothing below this module knows about
them.
"""

from __future__ import annotations

import base64
import difflib
import functools
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from shoal import audit
from shoal.audit import AUDIT_PRODUCT, AUDIT_SCHEMA
from shoal.config import Home, create_home, open_home
from shoal.contracts import Contract, check_evolution, load_contract
from shoal.crypto import generate_key, public_key_from_bytes
from shoal.durable import atomic_write
from shoal.engine import LockedSession, quote_identifier
from shoal.errors import (
    ConflictError,
    NotFoundError,
    RefusedError,
    ShoalError,
    TypeDriftError,
    UnavailableError,
    UsageError,
)
from shoal.events import record_event
from shoal.log import ENTRY_VERSION, Checkpoint, HistoryError
from shoal.mesh.catalog import Catalog, CatalogEntry, encode_schema
from shoal.mesh.health import PeerHealth
from shoal.mesh.joining import check_hub_url, join_mesh
from shoal.mesh.membership import Member, Membership
from shoal.mesh.peers import FragmentClient
from shoal.mesh.placement import MAX_REPLICAS
from shoal.mesh.replication import HolderView, ReplicationSource, Replicator, holders_of
from shoal.mesh.throttle import ByteRate
from shoal.mesh.tokens import SeenRequests, peek_join_token
from shoal.names import check_name, is_valid_name
from shoal.policy import (
    MeshRules,
    Principal,
    ProductPolicy,
    View,
    bind_attributes,
    check_filter,
    decide,
    load_policy,
    parse_policy,
    save_policy,
)
from shoal.products import Mode, ProductInfo, ProductStore, PublishResult, VersionInfo, publish
from shoal.products.columns import ColumnCache, columns_named
from shoal.products.history import ProductHistory, locked_product, recover_all, verify_history
from shoal.products.publish import Progress, check_current_data
from shoal.products.replicas import ReplicaStore, live_files
from shoal.products.stats import estimate_distinct, integer_bounds, value_ranges
from shoal.products.store import Snapshot
from shoal.query import Fragment, QueryPlan, TableRef, execute_plan, plan_query
from shoal.query.always_true import always_true
from shoal.query.bounds import scan_filter
from shoal.query.cache import FragmentCache, ResultKey, fragment_key
from shoal.query.plan_cache import PlanCache
from shoal.query.profile import FragmentRun, QueryProfile, profiled_reader
from shoal.sources import KINDS, SourceOptions, open_source

__all__ = ["Node"]

log = logging.getLogger("shoal.node")

MAX_CONTRACT_BYTES = 1024 * 1024
# Schema metadata of a mesh answer: per product, the version read, where, and if stale.
READ_METADATA = "shoal.read"


class Node:
    """One node's products and the operations users run on them."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.products = ProductStore(home)
        # Set by the server, which pings peers; a CLI process has no health view.
        self.health: PeerHealth | None = None
        # Called with the profile of every federated query once its result was read (the
        # server exports them as metrics).
        self.on_query: list[Callable[[QueryProfile], None]] = []
        # Keep decoded columns between queries (products/columns.py). Worth it in a server,
        # which answers many queries; a one-shot CLI query reads Parquet, whose row-group
        # statistics skip more than decoding whole columns would save.
        self.keep_columns = False
        # Signed requests this node accepted (HTTP and Flight): each is accepted once.
        self.seen_requests = SeenRequests()
        self._own_fingerprints: dict[str, tuple[str, int, int]] = {}
        self._views: dict[tuple[object, ...], View] = {}
        self._proven: dict[tuple[str, str, int, str], bool] = {}
        self.products.sweep_staging()
        recover_all(self.products)
        self.replicas = ReplicaStore(home)
        self.replicas.recover()

    @classmethod
    def init(cls, root: Path, name: str, region: str = "local") -> Node:
        """Create a new node home at `root` and open it."""
        return cls(create_home(root, name, region))

    @classmethod
    def join(cls, root: Path, hub_url: str, token: str) -> Node:
        """Create a node home from a hub's join token and register it with the hub.

        The token fixes the name and region; nothing is left behind if the hub refuses.
        """
        token = token.strip()
        claims = peek_join_token(token)
        if root.exists() and any(root.iterdir()):
            raise ConflictError(f"{root} is not empty; join with a new --home folder")
        check_hub_url(hub_url)
        node = cls.init(root, claims.name, claims.region)
        try:
            join_mesh(node.home, node.membership, hub_url, token, claims)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return node

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
        self._refuse_copies(product)
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

    def _refuse_copies(self, product: str) -> None:
        """Only a product's owner publishes it: a name of another node's product (held
        here as a read-only copy, or not) is refused with what to do instead."""
        owner, dot, name = product.partition(".")
        if dot and owner != self.name and is_valid_name(owner) and is_valid_name(name):
            held = " (this node holds a read-only copy)" if self.replicas.holds(owner, name) else ""
            raise RefusedError(
                f"{product} belongs to node '{owner}'{held}; only its owner publishes it",
                hint=f"publish on node '{owner}', or publish your own product: `{name}`",
            )

    def publish_table(
        self,
        product: str,
        table: pa.Table,
        *,
        mode: Mode | str = Mode.APPEND,
        key: Sequence[str] | None = None,
    ) -> PublishResult:
        """Publish an Arrow table held in memory (the API's uploads, the Python client)."""
        self._refuse_copies(product)
        self.home.tmp_dir.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.home.tmp_dir) as scratch:
            path = Path(scratch) / "data.parquet"
            pq.write_table(table, path)
            return self.publish(product, str(path), mode=mode, key=key)

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
                result = publish(
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
        audit.record(
            self.home,
            "publish",
            f"local:{self.name}",
            product=f"{self.name}.{product}",
            version=result.version,
            mode=result.mode,
            rows_added=result.rows_added,
            source=_source_kind(source),
        )
        return result

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
    def sql(
        self,
        query: str,
        *,
        only: Sequence[str] | None = None,
        versions: dict[str, int] | None = None,
        inputs: Mapping[str, pa.Table] | None = None,
        principal: Principal | None = None,
    ) -> pa.RecordBatchReader:
        """Run one read-only SQL statement over this node's products (latest versions), as
        `principal` may see them (None: the node's owner, who sees everything).

        `only` limits the products the statement can see (a fragment reads one), which
        also saves opening every other product's table; `versions` pins products to Delta
        table versions.
        """
        names = self.products.names() if only is None else list(only)
        if only is None and principal is None:
            names.append(AUDIT_PRODUCT)  # the owner reads its own audit log as a product
        return self._run_sql(query, self.name, names, versions or {}, inputs, principal)

    def _run_sql(
        self,
        query: str,
        owner: str,
        names: Sequence[str],
        pinned: Mapping[str, int],
        inputs: Mapping[str, pa.Table] | None,
        principal: Principal | None = None,
    ) -> pa.RecordBatchReader:
        """Run `query` over products `names` of `owner` (this node's own, or copies), each
        through `principal`'s policy view."""
        settings = self.home.settings
        session = LockedSession(
            memory_limit=settings.sql_memory_limit, threads=settings.sql_threads
        )
        tables: dict[tuple[str, str], Any] = {}
        views: dict[tuple[str, str], Callable[[str], str]] = {}
        # A plain filtered scan of one product skips the in-memory blocks its WHERE rules out.
        scan = scan_filter(query)
        for name in names:
            if owner == self.name and name == AUDIT_PRODUCT:
                self._check_audit_reader(principal)
                tables[owner, name] = audit.audit_table(self.home)
                continue
            if owner == self.name:
                snapshot = self.products.snapshot(name, pinned.get(name))
            else:
                snapshot = self.replicas.snapshot(owner, name, pinned.get(name))
            view = None
            if principal is not None and not principal.sees_everything_of(owner):
                view = self.view_of(owner, name, snapshot.dataset.schema, principal)
                if view.where and self._passes_every_row(owner, name, snapshot, view.where):
                    view = replace(view, where="")
                if view.whole or view.plain:
                    view = None  # nothing hidden from this caller
            # Hot columns come from memory; what does not fit is read from Parquet. A policy
            # view reads every column (its masks and row filter name their own).
            columns = columns_named(query, snapshot.dataset.schema) if view is None else None
            keep = scan[1] if scan is not None and scan[0].lower() == name.lower() else None
            hot = (
                self.column_cache.table(
                    f"{owner}.{name}", snapshot.delta_version, snapshot.dataset, columns, keep
                )
                if self.keep_columns
                else None
            )
            tables[owner, name] = hot if hot is not None else snapshot.dataset
            if view is not None:
                views[owner, name] = view.sql
        for input_id, table in (inputs or {}).items():
            tables["main", input_id] = table
        session.expose(tables, views=views)
        session.lock()
        return session.run(query)

    def _passes_every_row(self, owner: str, name: str, snapshot: Snapshot, where: str) -> bool:
        """Whether the version's statistics prove row filter `where` true for every row (see
        `query/always_true.py`), judged once per version and filter."""
        key = (owner, name, snapshot.delta_version, where)
        known = self._proven.get(key)
        if known is None:
            if len(self._proven) >= 1024:
                self._proven.clear()
            known = always_true(where, value_ranges(snapshot.dataset))
            self._proven[key] = known
        return known

    # -- the mesh -----------------------------------------------------------------------
    @functools.cached_property
    def membership(self) -> Membership:
        return Membership(self.home)

    @functools.cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.home, self.membership)

    @functools.cached_property
    def fragment_client(self) -> FragmentClient:
        return FragmentClient(
            self.home, self.membership, self.health, timeout=self.home.settings.query_timeout
        )

    def refresh_catalog(self) -> list[CatalogEntry]:
        """Bring this node's own catalog entries up to date; gives those that changed.

        Cheap when nothing changed (one small file read per product), so a running node
        calls it often and sees publishes made by CLI commands on the same home.
        """
        entries = []
        for name in self.products.names():
            fingerprint = self._fingerprint(name)
            if fingerprint is None or self._own_fingerprints.get(name) == fingerprint:
                continue
            entries.append(self._own_entry(name))
            self._own_fingerprints[name] = fingerprint
        return self.catalog.put_own(entries) if self.membership.joined() else []

    def _fingerprint(self, name: str) -> tuple[str, int, int] | None:
        try:
            checkpoint = self.checkpoint(name)
            contract_stamp = self.products.contract_path(name).stat().st_mtime_ns
        except (NotFoundError, OSError):
            return None  # a first publish that is still being written
        try:
            policy_stamp = self._policy_path(name).stat().st_mtime_ns
        except FileNotFoundError:
            policy_stamp = 0
        return checkpoint, contract_stamp + policy_stamp, self.replicas_wanted(name)

    # -- policies -----------------------------------------------------------------------
    def _policy_path(self, product: str) -> Path:
        return self.products.product_dir(product) / "policy.yaml"

    def policy(self, product: str) -> ProductPolicy:
        """An own product's policy (empty: the contract's classifications decide)."""
        if not self.products.exists(product):
            raise NotFoundError(f"no product '{product}' on node '{self.name}'")
        return load_policy(self._policy_path(product))

    def set_policy(self, product: str, policy: ProductPolicy) -> ProductPolicy:
        """Replace an own product's policy; its columns must exist and its row filters
        must bind against the product's data (checked on an empty table of its schema)."""
        self._refuse_copies(product)
        self.policy(product)  # NotFoundError for an unknown product
        schema = self.products.snapshot(product).dataset.schema
        unknown = sorted(set(policy.columns) - set(schema.names))
        if unknown:
            raise UsageError(f"the policy names columns {product} does not have: {unknown}")
        for row_filter in policy.row_filters:
            self._check_row_filter(product, schema, check_filter(row_filter.where))
        problems = self.mesh_rules().problems(policy, self.products.contract(product))
        if problems:
            raise RefusedError(
                f"the policy for {product} asks for less than the mesh's rules allow: "
                + "; ".join(problems),
                hint="`shoal rules show` prints them; the hub sets them",
            )
        save_policy(self._policy_path(product), policy)
        audit.record(
            self.home,
            "policy",
            f"local:{self.name}",
            product=f"{self.name}.{product}",
            policy=policy.model_dump(exclude_defaults=True),
        )
        return policy

    def _check_row_filter(self, product: str, schema: pa.Schema, where: str) -> None:
        """Bind a row filter over an empty table of the product's schema (attributes as
        NULL), so a filter that cannot work is refused when it is set, not when read."""
        bound = bind_attributes(where, Principal("probe", "probe"))
        view = View(tuple((n, quote_identifier(n)) for n in schema.names), bound)
        target = f"{quote_identifier(self.name)}.{quote_identifier(product)}"
        session = LockedSession(memory_limit=self.home.settings.sql_memory_limit)
        try:
            session.expose(
                {(self.name, product): schema.empty_table()},
                views={(self.name, product): view.sql},
            )
            session.columns(f"SELECT * FROM {target}")
        except (ShoalError, duckdb.Error) as exc:
            message = exc.message if isinstance(exc, ShoalError) else str(exc).splitlines()[0]
            raise UsageError(f"row filter {where!r} does not work: {message}") from exc
        finally:
            session.close()

    def grant(self, role: str, product: str, columns: Sequence[str] = ()) -> ProductPolicy:
        """Let `role` read `product`, its confidential columns too (all, or `columns`)."""
        policy = self.policy(product)
        grants = dict(policy.grants)
        grants[role] = list(columns)
        readers = policy.readers
        if readers is not None and role not in readers:
            readers = [*readers, role]
        return self.set_policy(
            product, policy.model_copy(update={"grants": grants, "readers": readers})
        )

    def revoke_grant(self, role: str, product: str) -> ProductPolicy:
        """Take back what `grant` gave `role` on `product`."""
        policy = self.policy(product)
        if role not in policy.grants and (policy.readers is None or role not in policy.readers):
            raise NotFoundError(f"role '{role}' has no grant on {product}")
        grants = {k: v for k, v in policy.grants.items() if k != role}
        readers = None if policy.readers is None else [r for r in policy.readers if r != role]
        return self.set_policy(
            product, policy.model_copy(update={"grants": grants, "readers": readers})
        )

    def mesh_rules(self) -> MeshRules:
        """The hub's mesh-wide rules in force here (none outside a mesh)."""
        return self.membership.rules() if self.membership.joined() else MeshRules()

    def view_of(self, owner: str, product: str, schema: pa.Schema, principal: Principal) -> View:
        """What `principal` may see of `owner.product` served here (own or a copy): the
        owner's policy over the owner's contract."""
        policy_text = self._policy_text(owner, product)
        if owner == self.name:
            contract_path = self.products.contract_path(product)
        else:
            contract_path = self.replicas.directory(owner, product) / "contract.yaml"
        try:
            found = contract_path.stat()
            contract_stamp = (found.st_ino, found.st_size, found.st_mtime_ns)
        except FileNotFoundError:
            contract_stamp = (0, 0, 0)
        # Parsing the policy and the contract costs more than a small fragment: the view
        # is kept while neither file, the schema nor the caller changes.
        rules = self.mesh_rules()
        key = (
            owner,
            product,
            policy_text,
            rules.digest(),
            contract_stamp,
            schema,
            principal.access_key(),
        )
        cached = self._views.get(key)
        if cached is not None:
            return cached
        if owner == self.name:
            policy = parse_policy(policy_text.encode("utf-8"), str(self._policy_path(product)))
            contract = self.products.contract(product)
        else:
            policy = parse_policy(policy_text.encode("utf-8"), f"of {owner}.{product}")
            contract = load_contract(self.replicas.contract_text(owner, product))
        secret = self.membership.mask_secret() if self.membership.joined() else self.name
        view = decide(policy, contract, schema, principal, owner, secret, rules)
        if len(self._views) >= 1024:
            self._views.clear()
        self._views[key] = view
        return view

    # -- replicas -----------------------------------------------------------------------
    def _placement_path(self, product: str) -> Path:
        return self.products.product_dir(product) / "placement.json"

    def replicas_wanted(self, product: str) -> int:
        """How many copies of an own product the owner asked for (`shoal replicate`)."""
        try:
            data = json.loads(self._placement_path(product).read_bytes())
            return int(data["replicas"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            raise ShoalError(f"{self._placement_path(product)} is unreadable: {exc}") from exc

    def set_replicas(self, product: str, replicas: int) -> CatalogEntry:
        """Ask for `replicas` copies of an own product besides this node's; gives its entry.

        The copies go to members in the regions the contract's residency allows.
        """
        owner, _, name = product.rpartition(".")
        if owner and owner != self.name:
            raise RefusedError(
                f"{product} belongs to node '{owner}'; its owner sets its replicas",
                hint=f"run `shoal replicate {name} --replicas N` on node '{owner}'",
            )
        if not 0 <= replicas <= MAX_REPLICAS:
            raise UsageError(f"--replicas must be between 0 and {MAX_REPLICAS}")
        if not self.products.exists(name):
            raise NotFoundError(f"no product '{name}' on node '{self.name}'")
        atomic_write(self._placement_path(name), json.dumps({"replicas": replicas}).encode())
        return self._own_entry(name)

    @functools.cached_property
    def replication_source(self) -> ReplicationSource:
        return ReplicationSource(self.home, self.products, self.replicas, self.membership)

    @functools.cached_property
    def replicator(self) -> Replicator:
        return Replicator(
            self.home,
            self.membership,
            self.catalog,
            self.replicas,
            self.health,
            timeout=self.home.settings.query_timeout,
            grace_seconds=self.home.settings.replica_grace,
            rate=ByteRate.from_megabytes(self.home.settings.replication_max_mbps),
        )

    def pull(self, product: str) -> dict[str, Any]:
        """Bring this node's copy of OWNER.PRODUCT up to date now (what the server does in
        the background); gives what was pulled."""
        owner, _, name = product.rpartition(".")
        if not owner:
            raise UsageError(f"name the product as OWNER.PRODUCT, not {product!r}")
        if owner == self.name:
            raise UsageError(f"{product} is this node's own product; there is nothing to pull")
        outcome = self.replicator.pull(self.catalog.get(owner, name))
        if outcome.error:
            raise UnavailableError(f"could not copy {product}: {outcome.error}")
        if outcome.changed:
            self.membership.announce(holds=self.replicator.holds())
        return {
            "product": product,
            "source": outcome.source,
            "entries_before": outcome.before,
            "entries_after": outcome.after,
            "files": outcome.files,
            "bytes": outcome.bytes,
        }

    def placement(self, entry: CatalogEntry) -> dict[str, Any]:
        """Where a product's copies should be and where they are, as this node sees it."""
        members = self.membership.members() if self.membership.joined() else {}
        views = holders_of(entry, members, self.name, self.health)
        try:
            residency = self.replicator.residency(entry).describe()
            wanted = self.replicator.wanted_holders(entry)
        except (ShoalError, ValueError) as exc:
            residency, wanted = f"unreadable ({exc})", []
        return {
            "residency": residency,
            "replicas_wanted": entry.replicas,
            "wanted_holders": wanted,
            "holders": [
                {
                    "node": v.node,
                    "owner": v.owner,
                    "version": v.version,
                    "entries": v.size,
                    "current": v.size >= views[0].size,
                    "state": v.state,
                }
                for v in views
            ],
        }

    def scrub(self) -> list[dict[str, Any]]:
        """Re-hash every file of this node's products and of the copies it holds (what a
        server does each `scrub_interval`); see `scrub_own` and `scrub_copies`."""
        return self.scrub_own(self.products.names()) + self.scrub_copies()

    def scrub_own(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """Re-hash the files of own products; a bad one is quarantined and fetched back
        from a replica that holds it. Gives one summary per product."""
        return [self._scrub_own(name) for name in names]

    def scrub_copies(self) -> list[dict[str, Any]]:
        """Re-hash every file of the copies this node holds; a bad one is quarantined, never
        served, and fetched again by the next pull. Gives one summary per copy."""
        results = []
        for owner, product in self.replicas.held():
            key = f"{owner}.{product}"
            bad = self.replicas.scrub(owner, product)  # records each bad file as an event
            if bad:
                self.replicator.ready.discard(key)
            size, _, version = self.replicas.visible(owner, product)
            results.append(
                {"product": key, "replica": True, "version": version, "entries": size, "bad": bad}
            )
        return results

    def _scrub_own(self, name: str) -> dict[str, Any]:
        entries = self._history(name).log.entries()
        live = live_files(entries)
        table = self.products.table_dir(name)
        bad = self.replicas.check_table(table, self.name, name, live.values(), quick=False)
        repaired: list[str] = []
        if bad and self.membership.joined():
            repaired = self.replicator.repair_own(name, {path: live[path] for path in bad}, table)
            for path in repaired:
                record_event(self.home, "file-repaired", product=f"{self.name}.{name}", file=path)
        version = max((e.version for e in entries), default=0)
        return {
            "product": f"{self.name}.{name}",
            "replica": False,
            "version": version,
            "entries": len(entries),
            "bad": bad,
            "repaired": repaired,
        }

    def describe_in_mesh(self, name: str) -> list[dict[str, Any]]:
        """`describe` for products anywhere in the mesh, with wanted and actual holders."""
        return [e.detail() | self.placement(e) for e in self.find_products(name)]

    def _own_entry(self, name: str) -> CatalogEntry:
        info = self.products.info(name)
        table = self.products.table(name)
        snapshot = self.products.snapshot(name, table.version())
        return CatalogEntry(
            owner=self.name,
            product=name,
            version=info.version,
            delta_version=table.version(),
            rows=info.rows,
            size_bytes=info.size_bytes,
            last_publish=info.last_publish,
            contract_version=info.contract_version,
            contract=self.products.contract_text(name),
            schema_ipc=encode_schema(table.to_pyarrow_dataset().schema),
            checkpoint=self.checkpoint(name),
            holders=[self.name],
            replicas=self.replicas_wanted(name),
            policy=self._policy_text(self.name, name),
            distinct=estimate_distinct(snapshot.dataset, snapshot.rows),
            bounds=integer_bounds(snapshot.dataset),
        )

    def members_view(self) -> list[dict[str, Any]]:
        """Members with region, endpoints, state, last contact and products held."""
        held: dict[str, int] = {}
        for entry in self.mesh_products():
            for holder in entry.holders:
                held[holder] = held.get(holder, 0) + 1
        rows = []
        for name, member in sorted(self.membership.members().items()):
            if name == self.name:
                state, last_seen = "self", time.time()
            elif self.health is None:
                state, last_seen = "unknown", None
            else:
                status = self.health.status(name)
                state, last_seen = status.state.value, status.last_seen
            rows.append(
                member.summary()
                | {"state": state, "last_seen": last_seen, "products": held.get(name, 0)}
            )
        return rows

    def mesh_products(self) -> list[CatalogEntry]:
        """Every product in the mesh, this node's own included (current even if not joined)."""
        own = {name: self._own_entry(name) for name in self.products.names()}
        entries = [own[name] for name in sorted(own)]
        if self.membership.joined():
            revoked = self.membership.revoked_nodes()
            entries += [
                e for e in self.catalog.entries() if e.owner != self.name and e.owner not in revoked
            ]
        return sorted(entries, key=lambda e: (e.product, e.owner))

    def find_products(self, name: str) -> list[CatalogEntry]:
        """The products `name` means: `owner.product` is one; a bare name is every owner's.

        NotFoundError names close matches when there is none.
        """
        owner, _, product = name.rpartition(".")
        if owner:
            check_name(owner, "node")
        check_name(product, "product")
        everything = self.mesh_products()
        found = [e for e in everything if e.product == product and (not owner or e.owner == owner)]
        if not found:
            known = sorted({e.key for e in everything} | {e.product for e in everything})
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = (
                f"did you mean {', '.join(close)}?"
                if close
                else "`shoal products --mesh` lists them"
            )
            raise NotFoundError(f"no product '{name}' in the mesh", hint=hint)
        return found

    def mesh_tables(self) -> list[TableRef]:
        """Every product this node can query: its own (always current) and the catalog's."""

        tables = {}
        joined = self.membership.joined()
        # Column statistics are made when the node refreshes its catalog entry (see
        # products/stats.py), so only a joined node's own entry carries them.
        catalog = self.catalog.entries() if joined else []
        own_entries = {e.product: e for e in catalog if e.owner == self.name}
        for name in self.products.names():
            snapshot = self.products.snapshot(name)
            entry = own_entries.get(name)
            current = entry is not None and entry.delta_version == snapshot.delta_version
            tables[self.name, name] = TableRef(
                self.name,
                name,
                snapshot.dataset.schema,
                version=snapshot.delta_version,
                rows=snapshot.rows,
                distinct=entry.distinct if current and entry is not None else None,
                bounds=entry.bounds if current and entry is not None else None,
            )
        tables[self.name, AUDIT_PRODUCT] = TableRef(self.name, AUDIT_PRODUCT, AUDIT_SCHEMA)
        if joined:
            members = self.membership.members()
            for member in members:
                if member != self.name:  # each node's log is read where it is written
                    tables[member, AUDIT_PRODUCT] = TableRef(
                        member, AUDIT_PRODUCT, AUDIT_SCHEMA, (member,)
                    )
            for entry in catalog:
                if entry.owner not in members:
                    continue  # a revoked node: its products are out of the mesh with it
                if (entry.owner, entry.product) not in tables:
                    holders, fallbacks = self._routes(entry, members)
                    tables[entry.owner, entry.product] = TableRef(
                        entry.owner,
                        entry.product,
                        entry.arrow_schema(),
                        holders,
                        entry.delta_version if entry.delta_version >= 0 else None,
                        entry.rows,
                        entry.distinct or None,
                        entry.bounds or None,
                        fallbacks,
                    )
        return list(tables.values())

    def _routes(
        self, entry: CatalogEntry, members: Mapping[str, Member]
    ) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
        """Where a fragment over `entry` may run: the holders of its newest version (the
        owner first, then replicas by measured latency, a holder known to be down last),
        and the holders of older versions with theirs (read only when none of those
        answers)."""
        views = holders_of(entry, dict(members), self.name, self.health)
        newest = views[0].size

        def order(view: HolderView) -> tuple[int, int, float]:
            rtt = 0.0 if view.state == "self" else None
            if self.health is not None and rtt is None:
                rtt = self.health.status(view.node).rtt
            return (view.state == "down", 0 if view.owner else 1, rtt if rtt is not None else 1e9)

        current = sorted((v for v in views if v.size >= newest), key=order)
        older = sorted((v for v in views if 0 < v.size < newest), key=lambda v: -v.size)
        return (
            tuple(v.node for v in current),
            tuple((v.node, v.delta_version) for v in older),
        )

    def plan(self, query: str) -> QueryPlan:
        """Split one read-only statement into fragments per node (see docs/query.md); a
        statement asked again over an unchanged catalog reuses its plan."""

        return self.plan_cache.plan(query, self.mesh_tables(), plan_query)

    @functools.cached_property
    def plan_cache(self) -> PlanCache:
        return PlanCache()

    def query(
        self,
        query: str,
        profile: QueryProfile | None = None,
        on_done: Callable[[QueryProfile], None] | None = None,
        *,
        cached: bool = True,
        principal: Principal | None = None,
    ) -> pa.RecordBatchReader:
        """Answer one read-only statement over the products of every node in the mesh, for
        `principal` (None: whoever works on this node's home, its owner): each node that
        serves a part applies that caller's policy views.

        With a `profile`, where the time and the bytes went is recorded in it as the result
        is read; `on_done` (or else the node's `on_query` hooks) runs after the last batch.
        A repeated statement over an unchanged catalog is answered from the exact cache
        unless `cached` is off.
        """
        profile = profile if profile is not None else QueryProfile()
        done = on_done or self._queried
        access = principal.access_key() if principal is not None else "local"
        key = ResultKey(query, access, self._plan_state()) if cached else None
        if key is not None:
            table = self.fragment_cache.get(key)
            if table is not None:
                profile.result_cached = True
                answer = self._cached_answer(principal, query, table)
                return profiled_reader(answer, profile, done)
        started = time.perf_counter()
        plan = profile.plan = self.plan(query)
        profile.planning_seconds += time.perf_counter() - started
        settings = self.home.settings
        reader = execute_plan(
            plan,
            functools.partial(self.run_fragment, profile=profile, principal=principal),
            memory_limit=settings.sql_memory_limit,
            threads=settings.sql_threads,
            profile=profile,
            on_done=done,
        )
        read = self._versions_read(plan, profile)
        reader = _with_metadata(reader, {READ_METADATA: json.dumps(read, sort_keys=True)})
        # A part read at no fixed version (an audit log) may differ next time: not kept.
        unpinned = any(f.version is None for f in plan.fragments)
        if key is None or plan.volatile or unpinned or any(r["stale"] for r in read.values()):
            return reader
        limit = self.fragment_cache.max_bytes // 4  # what the cache would keep at most
        return _kept(reader, limit, lambda table: self.fragment_cache.put(key, table))

    def _versions_read(self, plan: QueryPlan, profile: QueryProfile) -> dict[str, Any]:
        """Per product: the version the answer read, where, and whether it is stale (older
        than the newest checkpoint this node knows of)."""
        members = self.membership.members() if self.membership.joined() else {}
        read: dict[str, Any] = {}
        for fragment in plan.fragments:
            run = profile.runs.get(fragment.id)
            node = run.node if run is not None else fragment.owner
            stale = run is not None and run.stale
            for product in (fragment.product, *(name for name, _ in fragment.also)):
                if product == AUDIT_PRODUCT:
                    continue  # a log, not a versioned product
                key = f"{fragment.owner}.{product}"
                held = members[node].holds.get(key) if node in members else None
                if stale and held is not None:
                    version = held[2]
                else:
                    try:
                        version = self.catalog.get(fragment.owner, product).version
                    except NotFoundError:  # an own product not in the catalog yet
                        version = self.products.latest_version(product)
                try:
                    newest = self.catalog.get(fragment.owner, product).version
                except NotFoundError:
                    newest = version
                read[key] = {"version": version, "newest": newest, "node": node, "stale": stale}
        return read

    def _plan_state(self) -> tuple[object, ...]:
        """What decides a statement's plan here: the catalog and member files (a revoked
        node leaves through the latter) and the own products' latest versions (cheap to
        read: a stat each and a folder listing per product)."""
        catalog: tuple[int, ...] = ()
        for state in ("catalog.json", "mesh.json"):
            try:
                found = (self.home.root / "mesh" / state).stat()
                catalog += (found.st_ino, found.st_size, found.st_mtime_ns)
            except FileNotFoundError:
                catalog += (0,)
        own = tuple(
            (name, self.products.latest_delta_version(name)) for name in self.products.names()
        )
        return catalog, own

    def analyze(self, query: str, principal: Principal | None = None) -> QueryProfile:
        """Run `query` to the end, discarding its rows: its plan and where the time went
        (always planned and run: the whole-answer cache is not used)."""
        profile = QueryProfile()
        for _ in self.query(query, profile, cached=False, principal=principal):
            pass
        return profile

    def _queried(self, profile: QueryProfile) -> None:
        for hook in self.on_query:
            hook(profile)

    def run_fragment(
        self,
        fragment: Fragment,
        profile: QueryProfile | None = None,
        principal: Principal | None = None,
    ) -> pa.RecordBatchReader:
        """Run one fragment where its data is, or answer it from the exact cache when the
        same fragment already ran over the same version.

        The holders are tried in the plan's order; when one is down, cannot be reached,
        times out or lacks the version, the fragment alone goes to the next, and at last
        to a holder of an older version (the run then says it read a stale version).
        """
        holders = fragment.holders or (fragment.owner,)
        run = profile.run(fragment.id, holders[0]) if profile is not None else None
        attempts: list[tuple[str, Fragment]] = [(node, fragment) for node in holders]
        if not fragment.also:  # a co-located statement needs every product at one version
            attempts += [(node, replace(fragment, version=v)) for node, v in fragment.fallbacks]
        failures: list[str] = []
        last: ShoalError | None = None
        for node, attempt in attempts:
            try:
                table = self._run_at(node, attempt, run, principal)
            except (UnavailableError, NotFoundError) as exc:
                last = exc
                failures.append(f"{node} ({self._state_of(node)}): {exc.message}")
                if run is not None:
                    run.failed.append(f"{node}: {exc.message}")
                continue
            if run is not None:
                run.node, run.version = node, attempt.version
                run.stale = attempt is not fragment and attempt.version != fragment.version
            return table.to_reader()
        if len(attempts) == 1 and last is not None:
            raise last  # one holder: its own error says it best
        what = f"{fragment.owner}.{fragment.product}"
        raise UnavailableError(
            f"no holder of {what} could answer; tried " + "; ".join(failures),
            hint=f"start one of its holders again; `shoal describe {what}` lists them",
        )

    def _state_of(self, node: str) -> str:
        if node == self.name:
            return "this node"
        return self.health.status(node).state.value if self.health is not None else "unknown"

    def _run_at(
        self, node: str, fragment: Fragment, run: FragmentRun | None, principal: Principal | None
    ) -> pa.Table:
        """One fragment's whole result from `node` (or the exact cache), as `principal`
        may see it."""
        key = fragment_key(fragment, caller=self._cache_caller(fragment, principal))
        if key is not None:
            cached = self.fragment_cache.get(key)
            if cached is not None:
                if run is not None:
                    run.cached, run.node_seconds = True, 0.0
                self._record_cached_read(
                    principal,
                    f"{fragment.owner}.{fragment.product}",
                    [name for name, _ in fragment.also],
                    cached.schema.names,
                    cached.num_rows,
                    _fragment_hash(fragment.sql),
                    cached="fragment",
                    from_node=node,
                )
                return cached
        started = time.perf_counter()
        if node == self.name:
            table = self.serve_fragment(
                fragment.owner,
                fragment.product,
                fragment.sql,
                fragment.version,
                fragment.also,
                self.fetch_inputs(fragment.inputs, principal),
                principal,
            ).read_all()
            node_seconds: float | None = time.perf_counter() - started
        else:
            token = principal.token if principal is not None else ""
            table, node_seconds = self.fragment_client.run(fragment, node, token)
        if run is not None:
            run.node_seconds = node_seconds
        if key is not None:
            self.fragment_cache.put(key, table)
        return table

    def _cached_answer(
        self, principal: Principal | None, query: str, table: pa.Table
    ) -> pa.RecordBatchReader:
        """A whole answer given again from the exact cache, recorded as a read here once it
        was sent, naming every product it read (from the answer's own metadata)."""
        read = json.loads((table.schema.metadata or {}).get(READ_METADATA.encode(), b"{}"))
        if not read:
            return table.to_reader()  # a statement that read no product (`SELECT 1`)
        first, *others = sorted(read)

        def record(rows: int, complete: bool) -> None:
            self._record_cached_read(
                principal,
                first,
                others,
                table.schema.names,
                rows,
                _fragment_hash(query),
                cached="answer",
                complete=complete,
            )

        return _on_end(table.to_reader(), record)

    def _record_cached_read(
        self,
        principal: Principal | None,
        product: str,
        also: list[str],
        columns: list[str],
        rows: int,
        fragment: str,
        *,
        cached: str,
        from_node: str | None = None,
        complete: bool = True,
    ) -> None:
        """Record a read this node answered from its exact cache: the serving node saw only
        the read that filled the cache, so without this line a repeat would leave no
        trace. `cached` says what was given again ("fragment", whose rows `from_node`
        served first, or a whole "answer")."""
        if product.endswith(f".{AUDIT_PRODUCT}"):
            return  # as at the serving node: reading the audit log is not itself recorded
        who = principal.name if principal is not None else f"local:{self.name}"
        audit.record(
            self.home,
            "read",
            who,
            product=product,
            also=also or None,
            columns=columns,
            rows=rows,
            complete=None if complete else False,
            fragment=fragment,
            cached=cached,
            from_node=from_node,
        )

    def _cache_caller(self, fragment: Fragment, principal: Principal | None) -> str:
        """Who a cached fragment result was computed for, and under which policy: another
        caller, or the same one after a policy change, never gets it."""
        who = principal.access_key() if principal is not None else f"local:{self.name}"
        policy = self._policy_text(fragment.owner, fragment.product)
        return f"{who}|{self.mesh_rules().digest()}|{policy}"

    def _policy_text(self, owner: str, product: str) -> str:
        if product == AUDIT_PRODUCT:
            return ""  # no policy: only its owner, admins and auditors read it
        if owner == self.name:
            try:
                return self._policy_path(product).read_text(encoding="utf-8")
            except FileNotFoundError:
                return ""
        try:
            return self.catalog.get(owner, product).policy
        except NotFoundError:
            return ""

    @functools.cached_property
    def column_cache(self) -> ColumnCache:
        return ColumnCache(self.home.settings.table_cache_mb * 1024 * 1024)

    @functools.cached_property
    def fragment_cache(self) -> FragmentCache:
        return FragmentCache(self.home.settings.fragment_cache_mb * 1024 * 1024)

    def serve_fragment(
        self,
        owner: str,
        product: str,
        sql: str,
        version: int | None = None,
        also: Sequence[tuple[str, int | None]] = (),
        inputs: Mapping[str, pa.Table] | None = None,
        principal: Principal | None = None,
    ) -> pa.RecordBatchReader:
        """Run a fragment a coordinator sent for this node's products: `product` at the
        Delta version it names (the latest if none), and the `also` products with theirs.
        The SQL sees those products only, each through `principal`'s policy view (None:
        this node's own owner), and the `inputs` (fetched results of other fragments, see
        `fetch_inputs`) under their ids."""
        wanted = {product: version, **dict(also)}
        versions = {name: v for name, v in wanted.items() if v is not None}
        if owner == self.name:
            for name in wanted:
                if name != AUDIT_PRODUCT and not self.products.exists(name):
                    raise NotFoundError(f"node '{self.name}' has no product '{name}'")
            reader = self.sql(
                sql,
                only=list(wanted),
                versions=versions or None,
                inputs=inputs,
                principal=principal,
            )
            return self._audited(reader, principal, owner, list(wanted), sql)
        for name in wanted:
            if not self.replicas.holds(owner, name):
                raise NotFoundError(f"node '{self.name}' holds no copy of {owner}.{name}")
            if not self.replicator.may_serve(f"{owner}.{name}"):
                raise UnavailableError(
                    f"node '{self.name}' is catching up its copy of {owner}.{name}; it serves "
                    "again once it has what it missed"
                )
        who = principal if principal is not None else Principal.local(self.name)
        reader = self._run_sql(sql, owner, list(wanted), versions, inputs, who)
        return self._audited(reader, who, owner, list(wanted), sql)

    def _audited(
        self,
        reader: pa.RecordBatchReader,
        principal: Principal | None,
        owner: str,
        products: list[str],
        sql: str,
    ) -> pa.RecordBatchReader:
        """`reader`, recording the read in the audit log once it was sent: who, which
        products, the columns and rows returned, and the fragment's hash (`complete`
        false when the caller stopped reading early)."""
        if products == [AUDIT_PRODUCT]:
            return reader  # reading the audit log is not itself a read worth a line each time
        who = principal.name if principal is not None else f"local:{self.name}"

        def record(rows: int, complete: bool) -> None:
            audit.record(
                self.home,
                "read",
                who,
                product=f"{owner}.{products[0]}",
                also=products[1:] or None,
                columns=reader.schema.names,
                rows=rows,
                complete=None if complete else False,
                fragment=_fragment_hash(sql),
            )

        return _on_end(reader, record)

    def _check_audit_reader(self, principal: Principal | None) -> None:
        """Only this node's owner, admins and auditors read its audit log."""
        if principal is None or principal.sees_everything_of(self.name):
            return
        if principal.role == "auditor":
            return
        audit.record(self.home, "refuse", principal.name, product=f"{self.name}._audit")
        raise RefusedError(f"node '{self.name}' does not show its audit log to you")

    def fetch_inputs(
        self, inputs: Sequence[Fragment], principal: Principal | None = None
    ) -> dict[str, pa.Table]:
        """The results of the fragments a fragment reads besides its own products (the
        small sides of a broadcast join), each run where its data is, or from the cache,
        for the same caller."""
        if not inputs:
            return {}
        with ThreadPoolExecutor(len(inputs), thread_name_prefix="input") as pool:
            futures = {f.id: pool.submit(self.run_fragment, f, None, principal) for f in inputs}
            return {fid: future.result().read_all() for fid, future in futures.items()}


def _on_end(
    reader: pa.RecordBatchReader, done: Callable[[int, bool], None]
) -> pa.RecordBatchReader:
    """`reader`, calling `done(rows, complete)` once it was read to the end or dropped
    (`complete` false when the caller stopped reading early)."""

    def batches() -> Iterator[pa.RecordBatch]:
        rows, complete = 0, False
        try:
            for batch in reader:
                rows += batch.num_rows
                yield batch
            complete = True
        finally:
            done(rows, complete)

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _fragment_hash(sql: str) -> str:
    """The short hash the audit log names a fragment (or a whole statement) by."""
    return hashlib.sha256(sql.encode()).hexdigest()[:16]


def _with_metadata(reader: pa.RecordBatchReader, extra: Mapping[str, str]) -> pa.RecordBatchReader:
    """`reader` with `extra` added to its schema's metadata (what the answer read)."""
    metadata = dict(reader.schema.metadata or {}) | {
        k.encode(): v.encode() for k, v in extra.items()
    }
    schema = reader.schema.with_metadata(metadata)
    return pa.RecordBatchReader.from_batches(schema, reader)


def _kept(
    reader: pa.RecordBatchReader, limit: int, keep: Callable[[pa.Table], None]
) -> pa.RecordBatchReader:
    """`reader`, passing the whole result to `keep` once its last batch was read, if it
    is at most `limit` bytes (a larger result, or one dropped halfway, keeps nothing)."""

    def batches() -> Iterator[pa.RecordBatch]:
        seen: list[pa.RecordBatch] | None = []
        size = 0
        for batch in reader:
            if seen is not None:
                size += batch.nbytes
                if size <= limit:
                    seen.append(batch)
                else:
                    seen = None
            yield batch
        if seen is not None:
            keep(pa.Table.from_batches(seen, schema=reader.schema))

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


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
