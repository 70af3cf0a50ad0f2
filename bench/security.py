"""What policies cost: Q1-Q4 of the federated benchmark asked by an analyst whose policy masks
one column and filters rows, against the same mesh with no policy, in the same run.

The mesh and data are the federated benchmark's (eight stores and hq). First every query is
run on two meshes over the same files, both up, with the runs interleaved: "off" serves
plain HTTP and Flight (`tls: false`) with no policy on any product, asked by the hub node
itself; "on" is the default, mutual TLS between every node and TLS to the client, with a
policy on every store's `orders` (customer_id hashed for everyone, and for analysts the
row filter `amount >= :min_amount`), asked by an analyst with a token from the hub: each
fragment carries the token, the serving node checks it and runs the fragment over the
policy view. Answers are checked against DuckDB first (with the same mask and filter for
the analyst's). Target: on/off at most 1.3x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from shoal.client import Mesh
from shoal.credentials import of_profile
from shoal.localmesh import LocalMesh
from shoal.mesh.tls import NodeTLS
from shoal.mesh.users import Profile, Users
from shoal.node import Node
from shoal.policy import ProductPolicy
from shoal.results import first_difference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_DIR, RESULTS, machine, stats, write_section
from federated import HQ, QUERIES, QUICK_STORES, STORES, store_files

ASKED = [name for name in QUERIES if name.split()[0] in {"Q1", "Q2", "Q3", "Q4"}]
TARGET = 1.3
POLICY = {
    "columns": {"customer_id": {"action": "mask", "method": "hash"}},
    "row_filters": [{"roles": ["analyst"], "where": "amount >= :min_amount"}],
}


def _masked(sql: str, secret: str) -> str:
    """The DuckDB reference of a query as the analyst sees the data."""
    view = (
        "(SELECT * REPLACE (CASE WHEN customer_id IS NULL THEN NULL ELSE "
        f"sha256('{secret}' || CAST(customer_id AS VARCHAR)) END AS customer_id) "
        "FROM orders WHERE amount >= '0')"
    )
    return sql.replace("FROM orders", f"FROM {view} AS orders")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_500_000, help="orders per store node")
    parser.add_argument(
        "--runs", type=int, default=40, help="timed rounds per query (one run per setting each)"
    )
    parser.add_argument("--quick", action="store_true", help="3 stores, small data, 2 runs")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where data is cached")
    parser.add_argument("--results", type=Path, default=None, help="RESULTS.md to update")
    args = parser.parse_args(argv)
    stores = QUICK_STORES if args.quick else STORES
    rows, runs = (20_000, 2) if args.quick else (args.rows, args.runs)
    results = args.results or (None if args.quick else RESULTS)
    files = store_files(stores, rows, args.data_dir)
    lookup_id = rows * len(stores) // 2 + 17
    print(f"security benchmark: {len(stores)} stores x {rows:,} orders, {runs} runs per query")
    peer = duckdb.connect()
    sources = ", ".join(f"'{files[s]}'" for s in stores)
    peer.execute(f"CREATE TABLE orders AS SELECT * FROM read_parquet([{sources}])")

    timings: dict[str, dict[str, list[float]]] = {q: {"off": [], "on": []} for q in ASKED}
    args.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shoal-sec-", dir=args.data_dir) as tmp:
        # Two meshes over the same files, both up, the runs interleaved between them, so
        # both see the same machine: "off" serves plain HTTP and Flight and has no policy;
        # "on" is the default (mutual TLS) with every store's policy.
        off_mesh, on_mesh = LocalMesh(Path(tmp) / "off"), LocalMesh(Path(tmp) / "on")
        try:
            members = [(HQ, "eu-de"), *((s, "eu-de") for s in stores)]
            for mesh, tls in ((off_mesh, False), (on_mesh, True)):
                settings: dict[str, dict[str, object]] = {HQ: {"fragment_cache_mb": 0, "tls": tls}}
                settings.update({name: {"sql_threads": 1, "tls": tls} for name in stores})
                mesh.start(members, settings=settings)
                for name in stores:
                    Node.open(mesh.root / name).publish("orders", str(files[name]))
            hub = Node.open(on_mesh.root / HQ)
            policy = ProductPolicy.model_validate(POLICY)
            for name in stores:
                Node.open(on_mesh.root / name).set_policy("orders", policy)
            for mesh in (off_mesh, on_mesh):
                mesh.wait_for_catalog({f"{s}.orders" for s in stores}, timeout=180)
            token = Users(hub.home, hub.membership).add(
                "ana", "analyst", {"min_amount": "0"}, "", 3600
            )
            # Wait until hq's catalog carries every store's policy (it keys caches by it).
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                entries = {e.key: e for e in Node.open(on_mesh.root / HQ).catalog.entries()}
                if all(entries[f"{s}.orders"].policy for s in stores):
                    break
                time.sleep(0.2)
            secret = hub.membership.mask_secret()
            at = on_mesh.nodes[HQ].http
            ca = NodeTLS(on_mesh.nodes[HQ].home).ca_pem().decode("ascii")
            analyst = Mesh(url=at, credentials=of_profile(Profile(at, token, "ana", ca, HQ), at))
            with off_mesh.nodes[HQ].mesh() as plain, analyst:
                clients = {"off": (plain, False), "on": (analyst, True)}
                for name in ASKED:
                    ours = QUERIES[name][0].format(order_id=lookup_id)
                    theirs = QUERIES[name][1].format(order_id=lookup_id)
                    for setting, (client, masked) in clients.items():
                        reference = _masked(theirs, secret) if masked else theirs
                        want = peer.sql(reference).to_arrow_table()
                        problem = first_difference(
                            want, client.sql(ours).arrow(), ordered="ORDER BY" in theirs
                        )
                        if problem:
                            raise SystemExit(f"{name} ({setting}): answer differs: {problem}")
                    for round_ in range(runs):
                        # Which mesh goes first alternates, so neither always follows.
                        order = list(clients.items())[:: 1 if round_ % 2 == 0 else -1]
                        for setting, (client, _) in order:
                            t0 = time.perf_counter()
                            client.sql(ours)
                            timings[name][setting].append(time.perf_counter() - t0)
                    off = statistics.median(timings[name]["off"]) * 1000
                    on = statistics.median(timings[name]["on"]) * 1000
                    print(f"  {name}: off {off:.1f} ms, on {on:.1f} ms")
        finally:
            on_mesh.stop()
            off_mesh.stop()
    body = _report(stores, rows, runs, timings)
    print(body)
    if results is not None:
        write_section("security", body, results)
    return 0


def _report(
    stores: tuple[str, ...], rows: int, runs: int, timings: dict[str, dict[str, list[float]]]
) -> str:
    lines = [
        "## TLS and policies on against off (bench/security.py)",
        "",
        f"{len(stores)} store nodes x {rows:,} orders and hq, on {machine()}; {runs} runs per "
        "query and setting after one checked warm-up, interleaved between two meshes that "
        "are both up; the coordinators' caches off. Off: plain HTTP and Flight "
        "(`tls: false`), no policy, asked by the hub node itself. On: the default mutual TLS "
        "between nodes and TLS to the client; every store's `orders` hashes `customer_id` "
        "and filters analysts' rows by `amount >= :min_amount`; asked with an analyst's "
        f"token, checked by each serving node. Target: on/off at most {TARGET}x.",
        "",
        "The ratio that decides is the median of the per-round ratios: each round runs a "
        "query once on each mesh, back to back, so both see the same moment of this shared "
        "machine; the ratio of the two medians is shown beside it.",
        "",
        "| query | off median ms (min-max) | on median ms (min-max) | on/off, median of "
        "rounds | on/off, of medians | target |",
        "|---|---|---|---|---|---|",
    ]
    for name in ASKED:
        off, on = stats(timings[name]["off"]), stats(timings[name]["on"])
        of_medians = on["median"] / off["median"] if off["median"] else float("nan")
        paired = statistics.median(
            b / a for a, b in zip(timings[name]["off"], timings[name]["on"], strict=True)
        )
        met = "met" if paired <= TARGET else "missed"
        lines.append(
            f"| {name} | {off['median'] * 1000:.1f} ({off['min'] * 1000:.1f}-"
            f"{off['max'] * 1000:.1f}) | {on['median'] * 1000:.1f} ({on['min'] * 1000:.1f}-"
            f"{on['max'] * 1000:.1f}) | {paired:.2f}x | {of_medians:.2f}x | {met} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
