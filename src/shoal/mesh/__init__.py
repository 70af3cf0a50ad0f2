"""The mesh: membership, join tokens, the catalog and peer health (see docs/mesh.md)."""
