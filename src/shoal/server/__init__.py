"""The servers: HTTP control plane, Arrow Flight data plane, mesh sync (see docs/mesh.md)."""
