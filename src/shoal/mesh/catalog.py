"""The mesh catalog every node holds: each product's owner, contract, schema, latest signed
checkpoint and holders.

Stored in `<home>/mesh/catalog.json`. Each change gets the next number of a local counter,
so a peer can pull "what changed since N" (with the catalog's random epoch, so a reset
catalog is pulled whole). An entry from elsewhere is kept only if its checkpoint is signed by
the owner's key from the member list and is newer than what we hold; the owner's own
entries always win for its products. Nothing here talks to the network.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field, ValidationError

from shoal.config import Home
from shoal.crypto import public_key_from_bytes
from shoal.errors import NotFoundError, UsageError
from shoal.log import Checkpoint
from shoal.mesh.files import JsonFile, mesh_lock
from shoal.mesh.membership import Membership

__all__ = ["Catalog", "CatalogEntry", "encode_schema"]

log = logging.getLogger("shoal.mesh")

MAX_TEXT = 1024 * 1024
MAX_ENTRIES = 10_000


class CatalogEntry(BaseModel):
    """One product as the whole mesh sees it."""

    owner: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    product: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    version: int = Field(ge=0)
    delta_version: int = Field(ge=-1, default=-1, description="the Delta table version; -1 unknown")
    rows: int = Field(ge=0, default=0)
    size_bytes: int = Field(ge=0, default=0)
    last_publish: str = Field(max_length=64, default="")
    contract_version: str = Field(max_length=64, default="")
    contract: str = Field(max_length=MAX_TEXT, default="")
    schema_ipc: str = Field(max_length=MAX_TEXT, description="Arrow IPC schema, base64")
    checkpoint: str = Field(max_length=4096, description="the owner's signed note")
    holders: list[str] = Field(default_factory=list, max_length=1000)
    policy: str = Field(
        default="", max_length=256 * 1024, description="the owner's policy (YAML), if any"
    )
    replicas: int = Field(
        ge=0, le=16, default=0, description="copies wanted besides the owner's (shoal replicate)"
    )
    distinct: dict[str, int] = Field(
        default_factory=dict,
        max_length=4096,
        description="estimated distinct values per column (lower case), for the planner",
    )
    bounds: dict[str, list[int]] = Field(
        default_factory=dict,
        max_length=4096,
        description="[min, max] per integer column (lower case), for pruning whole nodes",
    )
    seq: int = Field(ge=0, default=0, description="the holder catalog's change number")
    revision: float = Field(
        ge=0,
        default=0.0,
        description="when the owner last changed the entry; orders changes at one checkpoint",
    )

    @property
    def key(self) -> str:
        return f"{self.owner}.{self.product}"

    def arrow_schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.schema_ipc)))

    def tree_size(self) -> int:
        return Checkpoint.parse(self.checkpoint).size

    def columns(self) -> list[dict[str, str]]:
        return [{"name": f.name, "type": str(f.type)} for f in self.arrow_schema()]

    def summary(self) -> dict[str, Any]:
        """The entry as product lists show it."""
        return {
            "name": self.key,
            "owner": self.owner,
            "product": self.product,
            "version": self.version,
            "rows": self.rows,
            "size_bytes": self.size_bytes,
            "last_publish": self.last_publish,
            "contract_version": self.contract_version,
            "holders": self.holders,
            "replicas": self.replicas,
        }

    def detail(self) -> dict[str, Any]:
        """The entry as `describe` shows it: with columns, contract and checkpoint."""
        return self.summary() | {
            "columns": self.columns(),
            "contract": self.contract,
            "checkpoint": self.checkpoint,
        }


def encode_schema(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


class Catalog:
    """This node's copy of the mesh catalog."""

    def __init__(self, home: Home, membership: Membership) -> None:
        self.home = home
        self.membership = membership
        self._file = JsonFile(home.root / "mesh" / "catalog.json")
        self._parsed_generation = -1
        self._parsed_entries: dict[str, CatalogEntry] = {}

    def _state(self) -> dict[str, Any]:
        state = self._file.read()
        if state is None:
            return {"epoch": "", "counter": 0, "entries": {}}
        return dict(state)

    @property
    def epoch(self) -> str:
        return str(self._state()["epoch"])

    def position(self) -> tuple[str, int]:
        """(epoch, change counter): any change to the catalog moves it."""
        state = self._state()
        return str(state["epoch"]), int(state["counter"])

    def _parsed(self) -> dict[str, CatalogEntry]:
        """Every entry by key, parsed once per change of the file (queries read them all)."""
        state = self._state()
        if self._parsed_generation != self._file.generation:
            self._parsed_entries = {
                key: CatalogEntry(**e) for key, e in sorted(state["entries"].items())
            }
            self._parsed_generation = self._file.generation
        return self._parsed_entries

    def entries(self) -> list[CatalogEntry]:
        return list(self._parsed().values())

    def get(self, owner: str, product: str) -> CatalogEntry:
        entry = self._parsed().get(f"{owner}.{product}")
        if entry is None:
            raise NotFoundError(f"no product '{owner}.{product}' in the mesh catalog")
        return entry

    def changes_since(self, since: int, epoch: str) -> tuple[str, int, list[CatalogEntry]]:
        """Entries changed after change number `since` (all of them if `epoch` is not ours)."""
        state = self._state()
        if epoch != state["epoch"]:
            since = 0
        changed = [
            CatalogEntry(**e)
            for _, e in sorted(state["entries"].items())
            if int(e.get("seq", 0)) > since
        ]
        return str(state["epoch"]), int(state["counter"]), changed

    # -- changing -----------------------------------------------------------------------
    def put_own(self, entries: list[CatalogEntry]) -> list[CatalogEntry]:
        """Record this node's own products (authoritative); gives the entries that changed."""
        me = self.home.settings.name
        return self._update([e for e in entries if e.owner == me], trust_owner=True)

    def merge(self, raw_entries: list[Any]) -> list[CatalogEntry]:
        """Keep every entry from a peer that verifies and is newer; gives those kept."""
        if not isinstance(raw_entries, list) or len(raw_entries) > MAX_ENTRIES:
            raise UsageError(f"a catalog update must be a list of at most {MAX_ENTRIES} entries")
        entries = []
        for raw in raw_entries:
            try:
                entry = raw if isinstance(raw, CatalogEntry) else CatalogEntry(**raw)
            except (TypeError, ValidationError) as exc:
                log.warning("dropped a malformed catalog entry: %s", exc)
                continue
            if entry.owner == self.home.settings.name:
                continue  # only this node speaks for its own products
            if self._signed_by_owner(entry):
                entries.append(entry)
        return self._update(entries, trust_owner=False)

    def _signed_by_owner(self, entry: CatalogEntry) -> bool:
        try:
            checkpoint = Checkpoint.parse(entry.checkpoint)
            owner = self.membership.member(entry.owner)
        except (ValueError, NotFoundError) as exc:
            log.warning("dropped catalog entry %s: %s", entry.key, exc)
            return False
        if checkpoint.origin != f"{entry.owner}/{entry.product}":
            log.warning(
                "dropped catalog entry %s: checkpoint is for %s", entry.key, checkpoint.origin
            )
            return False
        if not checkpoint.verify(public_key_from_bytes(owner.public_key), owner.public_key):
            log.warning("dropped catalog entry %s: checkpoint not signed by its owner", entry.key)
            return False
        return True

    def _update(self, entries: list[CatalogEntry], *, trust_owner: bool) -> list[CatalogEntry]:
        if not entries:
            return []
        changed: list[CatalogEntry] = []
        with mesh_lock(self.home.root):
            state = self._state()
            if not state["epoch"]:
                state["epoch"] = secrets.token_hex(8)
            held = dict(state["entries"])
            counter = int(state["counter"])
            for entry in entries:
                holders = sorted(set(entry.holders) | {entry.owner})
                entry = entry.model_copy(update={"holders": holders})
                old = held.get(entry.key)
                if old is not None and not _newer(entry, CatalogEntry(**old), trust_owner):
                    continue
                counter += 1
                update: dict[str, Any] = {"seq": counter}
                if trust_owner:
                    update["revision"] = max(
                        time.time(), float(old.get("revision", 0.0)) + 1e-6 if old else 0.0
                    )
                kept = entry.model_copy(update=update)
                held[entry.key] = kept.model_dump()
                changed.append(kept)
            if changed:
                state.update(entries=held, counter=counter, updated=_now())
                self._file.write(state)
        return changed


def _newer(new: CatalogEntry, old: CatalogEntry, trust_owner: bool) -> bool:
    if trust_owner:
        comparable = new.model_dump(exclude={"seq", "revision"})
        return comparable != old.model_dump(exclude={"seq", "revision"})
    try:
        new_size, old_size = new.tree_size(), old.tree_size()
    except ValueError:
        return False
    # A new version wins; at the same version, a later change by the owner (its wanted
    # replicas or contract) does.
    return new_size > old_size or (new_size == old_size and new.revision > old.revision)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
