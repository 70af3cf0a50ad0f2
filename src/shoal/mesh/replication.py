"""Verified replicas: what a holder serves, and how a replica pulls and checks new versions.

**Serving.** Any holder of a product (its owner or a replica) answers two signed calls: the
owner's log entries after a given size, with the owner's checkpoint and a consistency proof,
and any file those entries name. Both refuse a caller whose region the product's residency
does not allow, and record the refusal.

**Pulling.** A replica asks the owner first, then the other holders, for the entries after
the ones it holds. Before anything becomes visible it checks, in order: the checkpoint is
signed by the owner and is not smaller than the one it has (no rollback); every new entry
is signed, numbered and linked to the one before (no rewritten history); the tree of all
entries has the checkpoint's root, and the consistency proof from its old checkpoint holds;
every commit file and data file of the new versions has the SHA-256 and size the signed
entries give. Files download in parallel, resume after an interruption (HTTP ranges, kept
under `incoming/`), and are put in place by `ReplicaStore.commit` in one step. All of a
node's downloads share one byte-rate limit (`replication_max_mbps`, none by default).

**Placing.** Each node decides by itself which replicated products it should hold
(`placement.choose_holders` over the members in allowed regions that are not down for
longer than the grace period), pulls those, and drops copies whose residency no longer
allows its region.
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shoal import audit
from shoal.config import Home
from shoal.contracts import load_contract
from shoal.crypto import key_id_of, public_key_from_bytes
from shoal.errors import (
    DiskFullError,
    NotFoundError,
    RefusedError,
    ShoalError,
    UnavailableError,
    UsageError,
)
from shoal.events import record_event
from shoal.log import (
    ENTRY_VERSION,
    ChainCheck,
    Checkpoint,
    FileRef,
    HistoryError,
    LogEntry,
    ProductLog,
)
from shoal.merkle import (
    ProofError,
    consistency_proof,
    root_from_leaf_hashes,
    verify_consistency,
)
from shoal.mesh.catalog import Catalog, CatalogEntry
from shoal.mesh.health import PeerHealth
from shoal.mesh.membership import Member, Membership
from shoal.mesh.peers import signed_headers
from shoal.mesh.placement import Residency, choose_holders, residency_of
from shoal.mesh.throttle import ByteRate
from shoal.mesh.tls import NodeTLS, server_name
from shoal.mesh.wire import error_from_dict
from shoal.products.history import ProductHistory
from shoal.products.replicas import (
    PulledVersions,
    ReplicaStore,
    commit_path,
    disk_full,
    live_files,
    read_lines,
)
from shoal.products.store import ProductStore

__all__ = ["HolderView", "ReplicationSource", "Replicator", "holders_of"]

log = logging.getLogger("shoal.replication")

LOG_PATH = "/api/v1/replication/{owner}/{product}/log"
FILE_PATH = "/api/v1/replication/{owner}/{product}/file"
MAX_ENTRIES_PER_ANSWER = 100_000
CHUNK = 1 << 20
PARALLEL_FILES = 4


# -- who holds what -----------------------------------------------------------------------
@dataclass(frozen=True)
class HolderView:
    """One node that holds (or should hold) a product, as this node sees it."""

    node: str
    size: int  # tree size of the version it holds (0 if none yet)
    delta_version: int
    version: int  # the product version (what users see)
    owner: bool
    state: str  # up, suspect, down, unknown, self

    @property
    def current(self) -> bool:
        return self.size > 0


def holders_of(
    entry: CatalogEntry, members: dict[str, Member], me: str, health: PeerHealth | None
) -> list[HolderView]:
    """The owner and every member announcing a verified copy of `entry`, newest first,
    then the owner before replicas."""

    def state(name: str) -> str:
        if name == me:
            return "self"
        return health.status(name).state.value if health is not None else "unknown"

    try:
        newest = entry.tree_size()
    except ValueError:
        newest = 0
    views = [
        HolderView(
            entry.owner, newest, entry.delta_version, entry.version, True, state(entry.owner)
        )
    ]
    for name, member in sorted(members.items()):
        held = member.holds.get(entry.key)
        if name == entry.owner or held is None:
            continue
        views.append(HolderView(name, *held, False, state(name)))
    return views


# -- serving ------------------------------------------------------------------------------
class ReplicationSource:
    """What this node serves to replicas: its own products and the copies it holds."""

    def __init__(
        self, home: Home, products: ProductStore, replicas: ReplicaStore, membership: Membership
    ) -> None:
        self.home = home
        self.products = products
        self.replicas = replicas
        self.membership = membership

    def _log(self, owner: str, product: str) -> ProductLog:
        if owner == self.home.settings.name:
            if not self.products.exists(product):
                raise NotFoundError(f"no product '{product}' on node '{owner}'")
            return ProductHistory(self.products, product).log
        if not self.replicas.holds(owner, product):
            raise NotFoundError(
                f"node '{self.home.settings.name}' holds no copy of {owner}.{product}"
            )
        return self.replicas.log(owner, product)

    def _contract(self, owner: str, product: str) -> str:
        if owner == self.home.settings.name:
            return self.products.contract_text(product)
        return self.replicas.contract_text(owner, product)

    def check_caller(self, caller: str, owner: str, product: str) -> None:
        """Refuse (and record) a caller outside the product's allowed regions."""
        region = self.membership.member(caller).region
        owner_region = self.membership.member(owner).region
        residency = residency_of_text(self._contract(owner, product), owner_region)
        if not residency.allows(region):
            record_event(
                self.home,
                "copy-refused",
                product=f"{owner}.{product}",
                peer=caller,
                peer_region=region,
                allowed=residency.describe(),
                side="source",
            )
            raise RefusedError(
                f"{owner}.{product} may only be stored in {residency.describe()}; node "
                f"'{caller}' is in {region}",
                hint="the product's contract sets its residency",
            )

    def log_since(self, caller: str, owner: str, product: str, since: int) -> dict[str, Any]:
        """The entries after the first `since`, the checkpoint and a consistency proof."""
        self.check_caller(caller, owner, product)
        product_log = self._log(owner, product)
        checkpoint = product_log.readable_checkpoint()
        if checkpoint is None:
            raise UnavailableError(f"{owner}.{product} has no signed checkpoint yet; try again")
        size = checkpoint.size
        if since > size:
            # The caller holds more than we signed: it is ahead of us, or we were rolled back.
            raise HistoryError(
                f"{owner}/{product}", f"asked for entries after {since}; this holder has {size}"
            )
        if size - since > MAX_ENTRIES_PER_ANSWER:
            raise UsageError(
                f"{owner}.{product} has {size - since} entries to send, more than "
                f"{MAX_ENTRIES_PER_ANSWER} at once"
            )
        lines = read_lines(product_log, 0, size)
        leaves = [_leaf(line) for line in lines]
        proof = consistency_proof(leaves, since, size) if 0 < since < size else []
        return {
            "checkpoint": checkpoint.note(),
            "entries": [line.decode("utf-8") for line in lines[since:]],
            "proof": [p.hex() for p in proof],
            "contract": self._contract(owner, product),
        }

    def file(self, caller: str, owner: str, product: str, path: str) -> Path:
        """A file the signed entries name (a commit or data file), for download."""
        self.check_caller(caller, owner, product)
        product_log = self._log(owner, product)
        checkpoint = product_log.readable_checkpoint()
        entries = product_log.entries()[: checkpoint.size if checkpoint else 0]
        named = {commit_path(e.delta_version) for e in entries if e.kind == ENTRY_VERSION}
        named |= {ref.path for e in entries for ref in e.files_added}
        if path not in named:
            raise NotFoundError(f"{owner}.{product} has no file {path!r}")
        if owner == self.home.settings.name:
            table = self.products.table_dir(product)
        else:
            table = self.replicas.table_dir(owner, product)
        target = table / path
        if not target.is_file():
            raise NotFoundError(f"file {path} of {owner}.{product} is not here (vacuumed?)")
        return target


def _leaf(line: bytes) -> bytes:
    return LogEntry.from_body(json.loads(line)["entry"]).leaf_hash()


# -- pulling ------------------------------------------------------------------------------
@dataclass
class PullOutcome:
    product: str
    source: str = ""
    before: int = 0
    after: int = 0
    files: int = 0
    bytes: int = 0
    error: str = ""
    refused: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.after != self.before


class Replicator:
    """Pulls the products this node should hold, verifies them and keeps them current."""

    def __init__(
        self,
        home: Home,
        membership: Membership,
        catalog: Catalog,
        replicas: ReplicaStore,
        health: PeerHealth | None = None,
        *,
        timeout: float = 30.0,
        grace_seconds: float = 300.0,
        rate: ByteRate | None = None,
    ) -> None:
        self.home = home
        self.membership = membership
        self.catalog = catalog
        self.replicas = replicas
        self.health = health
        self.timeout = timeout
        self.grace_seconds = grace_seconds
        self.rate = rate or ByteRate(0)
        # Copies that may serve: a copy that was down catches up before it serves again.
        # Only a running server gates them (`started`); a CLI command reads what is there.
        self.ready: set[str] = set()
        self.started = False
        self.on_change: list[Callable[[], None]] = []

    @property
    def me(self) -> str:
        return self.home.settings.name

    def _client(self) -> httpx.Client:
        """A client for holders: mutual TLS with the mesh CA when this node has it."""
        tls = NodeTLS(self.home.root)
        verify = tls.client_context() if tls.ready() else True
        return httpx.Client(timeout=httpx.Timeout(self.timeout, connect=5.0), verify=verify)

    def may_serve(self, key: str) -> bool:
        """Whether the copy of `key` (`owner.product`) has caught up since this start."""
        return not self.started or key in self.ready

    # -- placement ----------------------------------------------------------------------
    def residency(self, entry: CatalogEntry) -> Residency:
        owner_region = self.membership.member(entry.owner).region
        return residency_of_text(entry.contract, owner_region)

    def wanted_holders(self, entry: CatalogEntry) -> list[str]:
        """The replicas `entry` should have, by the members this node sees."""
        if entry.replicas <= 0:
            return []
        residency = self.residency(entry)
        now = time.time()
        candidates = []
        for name, member in self.membership.members().items():
            if name == entry.owner or not residency.allows(member.region):
                continue
            if name != self.me and self.health is not None:
                status = self.health.status(name)
                if status.state.value == "down":
                    last = status.last_seen or 0.0
                    if now - last > self.grace_seconds:
                        continue  # gone too long: its place goes to another node
            candidates.append(name)
        return choose_holders(entry.key, candidates, entry.replicas)

    def step(self) -> list[PullOutcome]:
        """One round: pull what this node should hold, drop what it may not hold."""
        outcomes = []
        entries = {e.key: e for e in self.catalog.entries() if e.owner != self.me}
        for key, entry in entries.items():
            held = self.replicas.holds(entry.owner, entry.product)
            try:
                residency = self.residency(entry)
                wanted = self.me in self.wanted_holders(entry)
            except (ShoalError, ValueError) as exc:
                log.warning("cannot place %s: %s", key, exc)
                continue
            if held and not residency.allows(self.home.settings.region):
                self.replicas.drop(entry.owner, entry.product)
                self.ready.discard(key)
                record_event(
                    self.home,
                    "copy-dropped",
                    product=key,
                    reason=f"residency allows {residency.describe()}",
                )
                continue
            if not (wanted or held):
                continue
            try:
                outcome = self.pull(entry)
            except ShoalError as exc:  # refused here, or out of disk: said once, tried later
                log.error("%s: %s", key, exc.message)
                continue
            outcomes.append(outcome)
            if not outcome.error or not self._any_source_up(entry):
                self.ready.add(key)  # caught up, or nobody to catch up from
        for owner, product in self.replicas.held():
            if f"{owner}.{product}" not in entries:
                self.ready.add(f"{owner}.{product}")  # the catalog forgot it; serve what we have
        return outcomes

    def _any_source_up(self, entry: CatalogEntry) -> bool:
        if self.health is None:
            return True
        views = holders_of(entry, self.membership.members(), self.me, self.health)
        return any(v.state == "up" and v.node != self.me for v in views)

    def holds(self) -> dict[str, tuple[int, int, int]]:
        """What this node announces it holds:
        `owner.product` -> (tree size, Delta version, product version)."""
        return {
            f"{owner}.{product}": self.replicas.visible(owner, product)
            for owner, product in self.replicas.held()
        }

    def repair_own(self, product: str, bad: dict[str, FileRef], table: Path) -> list[str]:
        """Fetch an own product's files that failed their hash back from a replica that
        holds them, verified against the signed hash; gives the paths put back."""
        key = f"{self.me}.{product}"
        members = self.membership.members()
        holders = [
            member
            for name, member in sorted(members.items())
            if name != self.me
            and key in member.holds
            and (self.health is None or not self.health.is_down(name))
        ]
        wanted = {path: (ref.sha256, ref.size) for path, ref in bad.items()}
        staging = self.home.new_tmp_dir(f"repair-{product}-")
        repaired: list[str] = []
        try:
            with self._client() as client:
                for member in holders:
                    path = FILE_PATH.format(owner=self.me, product=product)
                    for name, (sha, size) in list(wanted.items()):
                        try:
                            staged = self._download(client, member, path, name, sha, size, staging)
                        except ShoalError as exc:
                            log.warning("repairing %s from %s: %s", name, member.name, exc)
                            continue
                        staged.replace(table / name)
                        repaired.append(name)
                        del wanted[name]
                    if not wanted:
                        break
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if wanted:
            log.error("%s: no replica could give back %s", key, ", ".join(sorted(wanted)))
        return repaired

    # -- one product --------------------------------------------------------------------
    def pull(self, entry: CatalogEntry, source: str | None = None) -> PullOutcome:
        """Bring the copy of `entry` up to the newest checkpoint a holder has."""
        key = entry.key
        size, _, _ = self.replicas.visible(entry.owner, entry.product)
        outcome = PullOutcome(key, before=size, after=size)
        residency = self.residency(entry)
        if not residency.allows(self.home.settings.region):
            record_event(
                self.home,
                "copy-refused",
                product=key,
                peer=entry.owner,
                region=self.home.settings.region,
                allowed=residency.describe(),
                side="replica",
            )
            outcome.error = (
                f"{key} may only be stored in {residency.describe()}; this node is in "
                f"{self.home.settings.region}"
            )
            raise RefusedError(outcome.error, hint="the product's contract sets its residency")
        missing = self.replicas.missing(entry.owner, entry.product)
        try:
            newest = entry.tree_size()
        except ValueError:
            newest = 0
        if size >= newest and not missing:
            return outcome
        errors = []
        with self._client() as client:
            for holder in self._sources(entry, source):
                try:
                    self._pull_from(client, holder, entry, outcome, missing)
                except (HistoryError, RefusedError) as exc:
                    record_event(
                        self.home, "pull-refused", product=key, peer=holder, reason=exc.message
                    )
                    errors.append(f"{holder}: {exc.message}")
                    outcome.refused.append(holder)
                    continue
                except DiskFullError as exc:
                    outcome.error = exc.message
                    raise
                except ShoalError as exc:
                    errors.append(f"{holder}: {exc.message}")
                    continue
                outcome.source = holder
                outcome.error = ""
                if outcome.changed or outcome.files:
                    audit.record(
                        self.home,
                        "replicate",
                        f"node:{self.me}",
                        product=key,
                        peer=holder,
                        entries=[outcome.before, outcome.after],
                        files=outcome.files,
                        bytes=outcome.bytes,
                    )
                return outcome
        outcome.error = "; ".join(errors) or "no holder to pull from"
        return outcome

    def _sources(self, entry: CatalogEntry, source: str | None) -> list[str]:
        if source is not None:
            return [source]
        views = holders_of(entry, self.membership.members(), self.me, self.health)
        views = [v for v in views if v.node != self.me and v.state != "down"]
        # The owner first (it has the newest), then the replicas with the most entries.
        views.sort(key=lambda v: (not v.owner, -v.size))
        return [v.node for v in views]

    def _pull_from(
        self,
        client: httpx.Client,
        holder: str,
        entry: CatalogEntry,
        outcome: PullOutcome,
        missing: dict[str, FileRef],
    ) -> None:
        owner, product = entry.owner, entry.product
        member = self.membership.member(holder)
        if not member.http:
            raise UnavailableError(f"node '{holder}' has never announced its endpoints")
        product_log = self.replicas.log(owner, product)
        local = product_log.read()
        local_checkpoint = self.replicas.checkpoint(owner, product)
        local_size = local_checkpoint.size if local_checkpoint else 0
        local = local[:local_size]
        path = LOG_PATH.format(owner=owner, product=product)
        answer = self._get_json(client, member, path, {"since": local_size})
        owner_key = self.membership.member(owner).public_key
        pulled_entries, lines, checkpoint = verify_answer(
            f"{owner}/{product}", owner_key, local, local_checkpoint, answer
        )
        contract = answer.get("contract")
        if not isinstance(contract, str) or len(contract) > 1024 * 1024:
            raise UsageError(f"node '{holder}' sent no contract for {owner}.{product}")
        load_contract(contract)  # a contract that does not parse is not kept
        # Files: the commits of the new versions, and the data files live at the end.
        every = [e for e, _ in local] + list(pulled_entries)
        live = live_files(every)
        wanted: dict[str, tuple[str, int | None]] = {}
        for new in pulled_entries:
            if new.kind == ENTRY_VERSION:
                wanted[commit_path(new.delta_version)] = (new.commit_sha256, None)
        for new in pulled_entries:
            for ref in new.files_added:
                if ref.path in live:
                    wanted[ref.path] = (ref.sha256, ref.size)
        for path_, ref in missing.items():
            if path_ in live:
                wanted[path_] = (ref.sha256, ref.size)
        staged = self._download_all(client, member, owner, product, wanted, outcome)
        commits = {
            e.delta_version: staged[commit_path(e.delta_version)]
            for e in pulled_entries
            if e.kind == ENTRY_VERSION
        }
        files = {p: staged[p] for p in wanted if not p.startswith("_delta_log/")}
        if not pulled_entries:
            self.replicas.repair_files(owner, product, files)
        else:
            self.replicas.commit(
                owner,
                product,
                PulledVersions(
                    checkpoint, tuple(lines), tuple(pulled_entries), commits, files, contract
                ),
            )
        outcome.after = checkpoint.size
        log.info(
            "%s.%s: copy at %d entries (from %d) via %s, %d files",
            owner,
            product,
            checkpoint.size,
            local_size,
            holder,
            len(staged),
        )

    def _get_json(
        self, client: httpx.Client, member: Member, path: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        headers = signed_headers(self.home, member.name, "GET", path)
        try:
            response = client.get(
                member.http + path, params=params, headers=headers, extensions=_named(member)
            )
        except httpx.HTTPError as exc:
            raise UnavailableError(f"node '{member.name}' cannot be reached: {exc}") from exc
        return _answer(response, member.name)

    def _download_all(
        self,
        client: httpx.Client,
        member: Member,
        owner: str,
        product: str,
        wanted: dict[str, tuple[str, int | None]],
        outcome: PullOutcome,
    ) -> dict[str, Path]:
        if not wanted:
            return {}
        incoming = self.replicas.incoming(owner, product)
        path = FILE_PATH.format(owner=owner, product=product)
        workers = min(PARALLEL_FILES, len(wanted))
        with ThreadPoolExecutor(workers, thread_name_prefix="pull") as pool:
            futures = {
                name: pool.submit(self._download, client, member, path, name, sha, size, incoming)
                for name, (sha, size) in wanted.items()
            }
            staged = {name: future.result() for name, future in futures.items()}
        outcome.files += len(staged)
        outcome.bytes += sum(p.stat().st_size for p in staged.values())
        return staged

    def _download(
        self,
        client: httpx.Client,
        member: Member,
        path: str,
        name: str,
        sha256: str,
        size: int | None,
        incoming: Path,
    ) -> Path:
        """Fetch one file into `incoming/<sha256>`, resuming a partial download."""
        done = incoming / sha256
        if done.exists():
            if _sha256_of(done) == sha256:
                return done
            done.unlink()
        part = incoming / f"{sha256}.part"
        digest = hashlib.sha256()
        have = 0
        if part.exists():
            with part.open("rb") as handle:
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    digest.update(chunk)
                    have += len(chunk)
            if digest.hexdigest() == sha256 and (size is None or have == size):
                # Every byte arrived before a crash stopped the rename: asking for the bytes
                # after the end would get 416 on every pull, for ever.
                part.replace(done)
                return done
            if size is not None and have >= size:
                part.unlink()
                digest, have = hashlib.sha256(), 0
        headers = signed_headers(self.home, member.name, "GET", path)
        if have:
            headers["range"] = f"bytes={have}-"
            log.info("resuming %s from node '%s' at byte %d", name, member.name, have)
        try:
            with client.stream(
                "GET",
                member.http + path,
                params={"path": name},
                headers=headers,
                extensions=_named(member),
            ) as response:
                if have and response.status_code == 416:
                    # The part is as long as the file but wrong: start it again.
                    response.read()
                    part.unlink(missing_ok=True)
                    return self._download(client, member, path, name, sha256, size, incoming)
                if response.status_code >= 400:
                    response.read()
                    _answer(response, member.name)
                if have and response.status_code != 206:
                    digest, have = hashlib.sha256(), 0  # no range support: start again
                with part.open("ab" if have else "wb") as handle:
                    for chunk in response.iter_bytes(CHUNK):
                        handle.write(chunk)
                        digest.update(chunk)
                        have += len(chunk)
                        self.rate.take(len(chunk))
                        if size is not None and have > size:
                            break
                    handle.flush()
                    os.fdatasync(handle.fileno())
        except OSError as exc:
            if _is_disk_full(exc):
                part.unlink(missing_ok=True)
                product = path.split("/")[4:6]
                raise disk_full(".".join(product), incoming) from exc
            raise
        except httpx.HTTPError as exc:
            raise UnavailableError(
                f"downloading {name} from node '{member.name}' stopped: {exc}; it resumes "
                "at the next pull"
            ) from exc
        if digest.hexdigest() != sha256 or (size is not None and have != size):
            part.unlink(missing_ok=True)
            raise HistoryError(
                path, f"file {name} from node '{member.name}' does not match its signed hash"
            )
        part.replace(done)
        return done


def verify_answer(
    origin: str,
    owner_key: bytes,
    local: Sequence[tuple[LogEntry, bytes]],
    local_checkpoint: Checkpoint | None,
    answer: dict[str, Any],
) -> tuple[list[LogEntry], list[bytes], Checkpoint]:
    """Check a holder's answer against the copy held: gives the new entries, their lines
    and the checkpoint, or raises HistoryError saying what is wrong."""
    try:
        checkpoint = Checkpoint.parse(str(answer["checkpoint"]))
        raw_lines = answer["entries"]
        proof = [bytes.fromhex(p) for p in answer.get("proof", [])]
        if not isinstance(raw_lines, list) or not all(isinstance(x, str) for x in raw_lines):
            raise TypeError("entries must be a list of strings")
    except (KeyError, TypeError, ValueError) as exc:
        raise HistoryError(origin, f"malformed answer: {exc}") from exc
    if checkpoint.origin != origin:
        raise HistoryError(origin, f"the checkpoint is for {checkpoint.origin!r}")
    old_size = len(local)
    if checkpoint.size < old_size:
        raise HistoryError(
            origin, f"offered {checkpoint.size} entries, fewer than the {old_size} held (rollback)"
        )
    if len(raw_lines) != checkpoint.size - old_size:
        raise HistoryError(origin, "the entries do not add up to the checkpoint's size")
    chain = ChainCheck(origin, {key_id_of(owner_key): owner_key})
    for entry, signature in local:
        chain.step(entry, signature)
    new_entries, lines = [], []
    for text in raw_lines:
        line = text.encode("utf-8")
        try:
            record = json.loads(line)
            entry = LogEntry.from_body(record["entry"])
            signature = base64.b64decode(record["signature"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise HistoryError(origin, f"an entry is unreadable: {exc}") from exc
        chain.step(entry, signature)  # sequence, link to the one before, signature
        if entry.product != origin.split("/", 1)[1]:
            raise HistoryError(origin, f"entry {entry.seq} is for product {entry.product!r}")
        new_entries.append(entry)
        lines.append(line)
    leaves = [e.leaf_hash() for e, _ in local] + [e.leaf_hash() for e in new_entries]
    root = root_from_leaf_hashes(leaves)
    if root != checkpoint.root:
        raise HistoryError(origin, "the entries do not match the signed checkpoint")
    signer = chain.key if chain.key is not None else owner_key
    if not checkpoint.verify(public_key_from_bytes(signer), signer):
        raise HistoryError(origin, "the checkpoint is not signed by the owner")
    if local_checkpoint is not None and 0 < old_size < checkpoint.size:
        try:
            verify_consistency(old_size, checkpoint.size, local_checkpoint.root, root, proof)
        except ProofError as exc:
            raise HistoryError(
                origin, f"the new checkpoint does not extend the one held: {exc}"
            ) from exc
    if (
        local_checkpoint is not None
        and old_size == checkpoint.size
        and local_checkpoint.root != root
    ):
        raise HistoryError(origin, "a different history of the same size (fork)")
    return new_entries, lines, checkpoint


def _answer(response: httpx.Response, holder: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        error = error_from_dict(data, fallback=f"HTTP {response.status_code}")
        error.message = f"node '{holder}': {error.message}"
        error.args = (error.message,)
        raise error
    if not isinstance(data, dict):
        raise HistoryError(holder, "the answer is not a JSON object")
    return data


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _named(member: Member) -> dict[str, Any]:
    """Ask for the member's server name: its certificate must be that node's."""
    return {"sni_hostname": server_name(member.name)}


@functools.lru_cache(maxsize=256)
def residency_of_text(contract: str, owner_region: str) -> Residency:
    """The residency rule of a contract's YAML text: parsing a contract takes milliseconds,
    and every replication round asks for every product's rule (at 17 nodes, parsing them
    again each second took over 40% of an idle node's CPU). An unreadable contract raises
    each time, as it is not cached."""
    return residency_of(load_contract(contract), owner_region)
