"""Node keys: Ed25519 key pairs on disk, signatures and key ids.

Only audited primitives from `cryptography`; nothing here invents a scheme.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shoal.errors import ConflictError, ShoalError

__all__ = [
    "NodeKey",
    "generate_key",
    "key_id_of",
    "load_key",
    "public_bytes_from_pem",
    "public_key_from_bytes",
    "verify",
]


class NodeKey:
    """A node's Ed25519 signing key with its public half and a stable key id."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The private half, for libraries that sign with it (PyJWT); never serialise it."""
        return self._private

    @property
    def public_bytes(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_bytes)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def save(self, path: Path) -> None:
        """Write the private key as PKCS#8 PEM readable by its owner only (mode 0600)."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise ConflictError(f"a key already exists at {path}") from exc
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        public_pem = self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        path.with_suffix(".pub").write_bytes(public_pem)


def key_id_of(public_raw: bytes) -> str:
    """Give a key's id: hex of the first 8 bytes of SHA-256 over the raw public key."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def generate_key() -> NodeKey:
    return NodeKey(Ed25519PrivateKey.generate())


def load_key(path: Path) -> NodeKey:
    """Read a node's private key written by `NodeKey.save`."""
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ShoalError(f"cannot read node key {path}: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise ShoalError(f"node key {path} is not an Ed25519 key")
    return NodeKey(private)


def public_bytes_from_pem(pem: bytes) -> bytes:
    """Give the raw 32 bytes of an Ed25519 public key saved as PEM."""
    public = serialization.load_pem_public_key(pem)
    if not isinstance(public, Ed25519PublicKey):
        raise ShoalError("not an Ed25519 public key")
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_bytes(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Tell whether `signature` is `public`'s signature over `message`."""
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True
