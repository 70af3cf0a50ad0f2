"""Where a product's copies live: residency from the contract, holders by rendezvous hashing.

Residency is a data rule, so it lives in the product's contract: a `customProperties` entry
`residency` whose value is a region, a list of regions, or `any`. Without one, the product
may only live in its owner's region.

Every node decides on its own whether it should hold a copy, from what it sees: the members
in an allowed region that are not known to have been down for longer than the grace period.
Rendezvous (highest random weight) hashing makes that choice the same on every node that
sees the same members, and moves only the copies it must when a node joins or leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from shoal.contracts import Contract
from shoal.errors import UsageError

__all__ = ["ANY_REGION", "Residency", "choose_holders", "residency_of"]

ANY_REGION = "any"
MAX_REPLICAS = 16


@dataclass(frozen=True)
class Residency:
    """The regions a product may be stored and read in; `regions` None allows all."""

    regions: frozenset[str] | None

    def allows(self, region: str) -> bool:
        return self.regions is None or region in self.regions

    def describe(self) -> str:
        return ANY_REGION if self.regions is None else ", ".join(sorted(self.regions))


def residency_of(contract: Contract, owner_region: str) -> Residency:
    """The contract's residency rule; the owner's region only when it sets none."""
    value = contract.custom_property("residency")
    if value is None:
        return Residency(frozenset({owner_region}))
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise UsageError(
            "the contract's residency must be a region, a list of regions, or 'any'",
            hint="e.g. customProperties: [{property: residency, value: [eu-de, eu-fr]}]",
        )
    regions = {item.strip().lower() for item in items}
    if ANY_REGION in regions:
        return Residency(None)
    return Residency(frozenset(regions))


def choose_holders(product: str, candidates: Iterable[str], replicas: int) -> list[str]:
    """The `replicas` candidates that should hold a copy of `product` (`owner.product`).

    Each candidate's weight is a hash of the product and its name; the highest weights win.
    The candidates must already be the allowed, live nodes other than the owner.
    """
    if replicas < 0 or replicas > MAX_REPLICAS:
        raise UsageError(f"replicas must be between 0 and {MAX_REPLICAS}")

    def weight(node: str) -> bytes:
        return hashlib.sha256(f"{product}\n{node}".encode()).digest()

    return sorted(set(candidates), key=weight, reverse=True)[:replicas]
