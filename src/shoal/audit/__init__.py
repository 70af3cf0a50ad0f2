"""A node's audit trail: who did what, to which product, signed and chained like product logs.

Every publish, read, grant, policy change, join, revocation, replication, refusal and
repair a node sees is one entry of its audit log, `<home>/audit/`:

    entries.jsonl   one line per entry: {"entry": {...}, "signature": "<base64>"}
    checkpoint      the latest signed note `<node>/_audit`, size, root (after every append)
    tree.json       the tree's right edge and the byte length it covers, written every 64
                    entries, so a new process reads at most that many lines before its
                    first append; derived from the entries and rebuilt whenever it disagrees

An entry is canonical JSON (`shoal.log.canonical_json`) of `seq`, `time` (UTC, ms),
`node`, `who` (the principal: `user:alice`, `node:berlin`, `cli`, `anonymous`), `action`
(publish, read, grant, revoke, policy, join, revocation, replicate, refuse, ...),
`product` (when it concerns one), `detail` (everything else: columns, rows, fragment,
reason, peer ...), `key_id` and `prev` (the leaf hash of the entry before), signed by the
node key. Entries are the leaves of an RFC 9162 tree, as in a product log.

    record(home, action, who, **fields)   append one entry (thread- and process-safe)
    read(home, who=, since=, action=)     entries, oldest first
    verify(home)                          check the chain and checkpoint (HistoryError)
    as_arrow(home) / audit_table(home)    the log as Arrow, for `<node>._audit` in SQL

Modules: `trail` (the files: appending and reading), `values` (what an entry may hold),
`check` (verification), `table` (Arrow).
"""

from __future__ import annotations

from shoal.audit.check import verify
from shoal.audit.table import AUDIT_SCHEMA, as_arrow, audit_table
from shoal.audit.trail import AUDIT_PRODUCT, TAMPER, read, record
from shoal.audit.values import MAX_ENTRY_BYTES, parse_since

__all__ = [
    "AUDIT_PRODUCT",
    "AUDIT_SCHEMA",
    "MAX_ENTRY_BYTES",
    "TAMPER",
    "as_arrow",
    "audit_table",
    "parse_since",
    "read",
    "record",
    "verify",
]
