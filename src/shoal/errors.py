"""Shoal's exceptions: one root, each class with a user-facing message and an exit code.

    ShoalError                  exit 1   something went wrong that has no better class
    ├── UsageError              exit 2   the command, its options or an input file are wrong
    │   └── SourceError         exit 2   a source cannot be read (unknown kind, bad file, ...)
    │       └── TypeDriftError  exit 2   a late value does not fit its sampled column type
    ├── ContractViolation       exit 3   the data breaks its product's data contract
    ├── NotFoundError           exit 4   a node home, product, version or file does not exist
    ├── ConflictError           exit 5   the change clashes with existing state
    │   └── BreakingChangeError exit 5   a new contract breaks consumers without a major bump
    ├── RefusedError            exit 6   not allowed: permission or SQL lock-down
    │   ├── LockdownError       exit 6   user SQL tried to leave its sandbox
    │   └── TokenError          exit 6   a join token or signed request is forged, used or expired
    ├── UnavailableError        exit 8   a node needed for the answer did not respond in time
    └── DiskFullError           exit 9   the disk holding the node home has no space left

Each class carries `exit_code` (for the CLI) and `http_status` (for the servers) as class
attributes, so callers never map errors by hand.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

__all__ = [
    "BreakingChangeError",
    "ConflictError",
    "ContractViolation",
    "DiskFullError",
    "LockdownError",
    "NotFoundError",
    "RefusedError",
    "RuleFailure",
    "ShoalError",
    "SourceError",
    "TokenError",
    "TypeDriftError",
    "UnavailableError",
    "UsageError",
]


class ShoalError(Exception):
    """Root of every error Shoal raises on purpose; `str(err)` is the message for users."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, Any]:
        """Give the error as JSON-ready data for `--json` output and HTTP responses."""
        data: dict[str, Any] = {"error": type(self).__name__, "message": self.message}
        if self.hint:
            data["hint"] = self.hint
        return data


class UsageError(ShoalError):
    exit_code = 2
    http_status = 400


class SourceError(UsageError):
    """A source could not be read: unknown kind, unreadable or malformed file."""


class TypeDriftError(SourceError):
    """A value late in a file does not fit the type sniffed from a sample of its rows.

    Reading again with exact types (every row looked at) fixes it; a publish does that by
    itself, since a failed publish has written nothing.
    """


class NotFoundError(ShoalError):
    exit_code = 4
    http_status = 404


class ConflictError(ShoalError):
    exit_code = 5
    http_status = 409


class BreakingChangeError(ConflictError):
    """A contract change would break consumers and its major version was not raised."""


class RefusedError(ShoalError):
    exit_code = 6
    http_status = 403


class LockdownError(RefusedError):
    """User SQL tried something the locked-down engine does not allow."""


class TokenError(RefusedError):
    """A join token, certificate or signed request failed its checks."""


class UnavailableError(ShoalError):
    """A peer that holds needed data did not answer within the timeout, or is down."""

    exit_code = 8
    http_status = 503


class DiskFullError(ShoalError):
    """The disk holding the node home ran out of space (or quota) while Shoal wrote to it.

    Transient: what was being written is rolled back or left for crash recovery, and the
    same command works once space is freed. `folder` is the node home that is full.
    """

    exit_code = 9
    http_status = 507  # Insufficient Storage

    # delta-rs reports the OS error as text only (its OSError and DeltaError carry no errno).
    _TEXTS: ClassVar[tuple[str, ...]] = (
        "No space left on device",
        "Disk quota exceeded",
        "os error 28",
        "os error 122",
    )

    def __init__(self, message: str, *, product: str, folder: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.product = product
        self.folder = folder

    @classmethod
    def explains(cls, exc: BaseException) -> bool:
        """Tell whether `exc` (or what it was raised from) is the disk running out of space."""
        seen = 0
        current: BaseException | None = exc
        while current is not None and seen < 8:
            if isinstance(current, ShoalError):
                return False  # already explained to the user by a Shoal error
            if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
                return True
            if any(text in str(current) for text in cls._TEXTS):
                return True
            current = current.__cause__ or current.__context__
            seen += 1
        return False

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["product"] = self.product
        data["folder"] = self.folder
        return data


class RuleFailure:
    """One failed contract rule: which rule, how many rows broke it, and a few of them."""

    __slots__ = ("column", "count", "detail", "rule", "samples")

    def __init__(
        self,
        rule: str,
        column: str | None,
        count: int,
        detail: str,
        samples: list[dict[str, Any]] | None = None,
    ) -> None:
        self.rule = rule
        self.column = column
        self.count = count
        self.detail = detail
        self.samples = samples or []

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "column": self.column,
            "count": self.count,
            "detail": self.detail,
            "samples": self.samples,
        }

    def __repr__(self) -> str:
        return f"RuleFailure({self.rule!r}, {self.column!r}, count={self.count})"


class ContractViolation(ShoalError):  # noqa: N818 -- the name the issue and users use
    """The data breaks its contract; nothing was written. `failures` lists each failed rule."""

    exit_code = 3
    http_status = 422

    def __init__(self, product: str, failures: list[RuleFailure]) -> None:
        lines = [f"data for product '{product}' breaks its contract; nothing was written:"]
        for failure in failures:
            where = f" on column '{failure.column}'" if failure.column else ""
            count = f" {failure.count:,} bad row(s);" if failure.count else ""
            lines.append(f"  - {failure.rule}{where}:{count} {failure.detail}")
            lines.extend(f"      e.g. {sample}" for sample in failure.samples[:5])
        super().__init__("\n".join(lines))
        self.product = product
        self.failures = failures

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["product"] = self.product
        data["failures"] = [failure.to_dict() for failure in self.failures]
        return data
