"""A node's home directory: its layout, its settings file and how it is created.

<home>/
  settings.yaml         node settings (the `Settings` model below)
  keys/node.key         Ed25519 private key, mode 0600 (node.pub beside it)
  products/<name>/      one folder per product (see `shoal.products`)
  locks/<product>.lock  held while a publish or contract change of <product> runs
  tmp/                  scratch for publishes; what a dead publish left is swept on open
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shoal.crypto import NodeKey, generate_key, key_id_of, load_key, public_bytes_from_pem
from shoal.errors import ConflictError, NotFoundError, ShoalError, UsageError
from shoal.names import NAME_RULE, check_name, is_valid_name

__all__ = ["DEFAULT_HOME", "HOME_ENV", "Home", "Settings", "create_home", "open_home"]

HOME_ENV = "SHOAL_HOME"
DEFAULT_HOME = Path(".shoal")
SETTINGS_FILE = "settings.yaml"
_REGION_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


class Settings(BaseModel):
    """Everything a node is configured with; each field is documented in the README."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The node's name; also the schema of its products in SQL.")
    region: str = Field(
        default="local",
        description="Jurisdiction label (e.g. eu-de) that residency rules refer to.",
    )
    created_at: str = Field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"),
        description="When `shoal init` created the node (UTC, ISO 8601).",
    )
    sql_memory_limit: str = Field(
        default="2GB",
        description="Memory the node's SQL queries may use together (e.g. 512MB, 4GB).",
    )
    sql_threads: int = Field(
        default=0,
        ge=0,
        description="Threads the node's SQL queries share; 0 lets DuckDB use every core.",
    )
    sql_max_rows: int = Field(
        default=1_000_000,
        ge=1,
        description="Most rows `shoal sql` returns before it stops with an error.",
    )
    publish_file_rows: int = Field(
        default=2_000_000,
        ge=1_000,
        description="Rows per data file a publish writes; bounds memory and file size.",
    )
    query_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds a federated query waits for a node's part before failing.",
    )
    ping_interval: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between health pings and catalog pulls to each peer.",
    )
    fragment_cache_mb: int = Field(
        default=256,
        ge=0,
        description="Memory (MiB) for cached fragment results; 0 turns the cache off.",
    )
    table_cache_mb: int = Field(
        default=1024,
        ge=0,
        description="Memory (MiB) for decoded product columns that queries read; 0 turns it off.",
    )
    replica_grace: float = Field(
        default=300.0,
        ge=0,
        description="Seconds a holder may stay down before its copies are placed elsewhere.",
    )
    scrub_interval: float = Field(
        default=86_400.0,
        ge=0,
        description="Seconds between re-hashes of every stored file; 0 scrubs only on verify.",
    )
    replication_max_mbps: float = Field(
        default=0.0,
        ge=0,
        description="Most MB/s this node's replica downloads use together, so catching up "
        "leaves room on a shared line; 0 means no limit.",
    )
    max_upload_mb: int = Field(
        default=1024,
        ge=1,
        description="Largest data upload (MiB) the HTTP API accepts for a publish.",
    )
    tls: bool = Field(
        default=True,
        description="Serve HTTP and Flight over TLS with the mesh's certificates (mutual "
        "TLS between nodes); turn off only to measure its cost.",
    )
    tls_cert_hours: float = Field(
        default=720.0,
        gt=0,
        le=24 * 398,
        description="Hours a node certificate the hub signs is valid; each node renews its "
        "own when a third of that is left.",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(f"invalid node name {value!r}: must be {NAME_RULE}")
        return value

    @field_validator("region")
    @classmethod
    def _valid_region(cls, value: str) -> str:
        if not value or len(value) > 63 or not set(value) <= _REGION_CHARS:
            raise ValueError(
                f"invalid region {value!r}: use 1-63 lowercase letters, digits, '-' and '_'"
            )
        return value


class Home:
    """An opened node home: paths, settings and the node key."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.settings = settings
        self._key: NodeKey | None = None

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_FILE

    @property
    def key_path(self) -> Path:
        return self.root / "keys" / "node.key"

    @property
    def products_dir(self) -> Path:
        return self.root / "products"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def key(self) -> NodeKey:
        """The node's signing key, read once per Home (a rotation replaces it)."""
        if self._key is None:
            self._key = load_key(self.key_path)
        return self._key

    @property
    def retired_keys_dir(self) -> Path:
        return self.root / "keys" / "retired"

    def trusted_keys(self) -> dict[str, bytes]:
        """The node's current and retired public keys by key id (raw bytes)."""
        paths = [self.key_path.with_suffix(".pub")]
        if self.retired_keys_dir.exists():
            paths += sorted(self.retired_keys_dir.glob("*.pub"))
        keys: dict[str, bytes] = {}
        for path in paths:
            raw = public_bytes_from_pem(path.read_bytes())
            keys[key_id_of(raw)] = raw
        return keys

    def install_key(self, new: NodeKey) -> None:
        """Make `new` the node key; the old key pair moves to keys/retired/<key id>.*"""
        old = self.key()
        self.retired_keys_dir.mkdir(parents=True, exist_ok=True)
        staged = self.key_path.with_name("node.next.key")
        staged.unlink(missing_ok=True)
        staged.with_suffix(".pub").unlink(missing_ok=True)
        new.save(staged)
        self.key_path.replace(self.retired_keys_dir / f"{old.key_id}.key")
        self.key_path.with_suffix(".pub").replace(self.retired_keys_dir / f"{old.key_id}.pub")
        staged.replace(self.key_path)
        staged.with_suffix(".pub").replace(self.key_path.with_suffix(".pub"))
        self._key = new

    def new_tmp_dir(self, prefix: str) -> Path:
        """Make a private scratch folder under `tmp/` (on the home's file system, so a
        finished file can be renamed into place)."""
        self.tmp_dir.mkdir(exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp_dir))


def resolve_home(home: str | Path | None) -> Path:
    """Give the home folder: the argument, else `$SHOAL_HOME`, else `./.shoal`."""
    if home is not None and str(home) != "":
        return Path(home)
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else DEFAULT_HOME


def create_home(root: Path, name: str, region: str = "local") -> Home:
    """Create a node home at `root`; fail and change nothing when one is already there.

    The home is built in a sibling temporary folder and renamed into place, so a crash
    never leaves half a home behind.
    """
    check_name(name, "node")
    try:
        settings = Settings(name=name, region=region)
    except ValidationError as exc:
        raise UsageError(_first_error(exc)) from exc
    if (root / SETTINGS_FILE).exists():
        raise ConflictError(f"a Shoal node already lives in {root}; nothing was changed")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConflictError(
            f"{root} exists and is not empty; choose another --home or empty it first"
        )
    parent = root.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.init-", dir=parent))
    except OSError as exc:
        raise UsageError(f"cannot create node home in {parent}: {exc.strerror}") from exc
    try:
        (staging / "keys").mkdir(mode=0o700)
        (staging / "products").mkdir()
        (staging / "tmp").mkdir()
        generate_key().save(staging / "keys" / "node.key")
        _write_settings(staging / SETTINGS_FILE, settings)
        staging.chmod(0o755)
        staging.replace(root)  # an empty `root` is replaced atomically
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Home(root, settings)


def open_home(root: Path) -> Home:
    """Open an existing node home, with a clear error when there is none."""
    path = root / SETTINGS_FILE
    if not path.exists():
        raise NotFoundError(
            f"no Shoal node in {root}",
            hint="create one with `shoal init --name NAME`, or pass --home / set SHOAL_HOME",
        )
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        settings = Settings.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ShoalError(f"cannot read {path}: {exc}") from exc
    except ValidationError as exc:
        raise ShoalError(f"bad settings in {path}: {_first_error(exc)}") from exc
    return Home(root, settings)


def _write_settings(path: Path, settings: Settings) -> None:
    text = yaml.safe_dump(settings.model_dump(), sort_keys=False)
    path.write_text(text, encoding="utf-8")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")
