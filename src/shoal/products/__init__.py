"""Data products: versioned Delta Lake tables with contracts, and the publish pipeline."""

from __future__ import annotations

from shoal.products.publish import Mode, PublishResult, publish
from shoal.products.store import ProductInfo, ProductStore, VersionInfo

__all__ = ["Mode", "ProductInfo", "ProductStore", "PublishResult", "VersionInfo", "publish"]
