"""Verified replicas with real node processes: placement within residency, failover when the
owner dies mid-query, stale answers, corrupted copies, refusals and rewritten histories.

Each test names, in its docstring, what must hold afterwards.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import threading

import pytest

from shoal.node import Node
from tests.mesh.processes import shoal

from .meshes import (
    build,
    current_holders,
    events,
    placement,
    query,
    read_info,
    stop,
    wait_for_copies,
    wait_until,
    write_orders,
)

pytestmark = [pytest.mark.multiprocess, pytest.mark.faults, pytest.mark.timeout(240)]

SUM = "SELECT count(*) AS n, sum(amount) AS total FROM a.sales"


def _expected(rows: int) -> tuple[int, float]:
    return rows, float(sum(i % 97 for i in range(rows)))


@pytest.fixture
def mesh(tmp_path):
    """a (owner, eu-de), b and c (eu-de), d (us-ca); a.sales with 2 replicas wanted."""
    nodes = build(tmp_path, {"a": "eu-de", "b": "eu-de", "c": "eu-de", "d": "us-ca"})
    try:
        data = write_orders(tmp_path / "orders.parquet", 0, 5000)
        shoal("publish", "sales", str(data), home=nodes["a"].home)
        shoal("replicate", "sales", "--replicas", "2", home=nodes["a"].home)
        wait_for_copies(nodes, "d", "a.sales", 1, {"a", "b", "c"})
        yield nodes, tmp_path
    finally:
        stop(nodes)


def test_copies_are_placed_only_in_allowed_regions(mesh):
    """Afterwards: b and c hold verified copies, d (outside the residency) holds nothing,
    and describe shows the wanted and the actual holders."""
    nodes, _ = mesh
    seen = placement(nodes["d"], "a.sales")
    assert seen["residency"] == "eu-de"
    assert sorted(seen["wanted_holders"]) == ["b", "c"]
    assert {h["node"] for h in seen["holders"]} == {"a", "b", "c"}
    assert not (nodes["d"].home / "replicas").exists()
    for name in ("b", "c"):
        copy = nodes[name].home / "replicas" / "a" / "sales"
        assert (copy / "log" / "checkpoint").read_text() == (
            nodes["a"].home / "products" / "sales" / "log" / "checkpoint"
        ).read_text()
    # The same placement from the CLI, as a user reads it.
    text = shoal("describe", "a.sales", "--at", nodes["d"].http, home=nodes["d"].home).stdout
    assert "residency eu-de; 2 replica(s) wanted, on b, c" in text
    assert "replica b: version 1 (current), up" in text


def test_owner_killed_during_queries_answers_come_from_replicas(mesh):
    """Afterwards: every query that ran while the owner was killed with SIGKILL was
    answered correctly, and the answers after it name a replica and version 1."""
    nodes, _ = mesh
    answers: list[tuple[int, float, str]] = []
    errors: list[str] = []
    done = threading.Event()

    probes = iter(range(1, 1_000_000))

    def ask() -> None:
        while not done.is_set():
            # A filter that differs each time keeps the exact caches out of the way: every
            # query really runs at a holder.
            sql = f"{SUM} WHERE order_id > -{next(probes)}"
            try:
                table = query(nodes["d"], sql)
                node = read_info(table)["a.sales"]["node"]
                answers.append((*table.to_pylist()[0].values(), node))
            except AssertionError as exc:
                errors.append(str(exc))

    workers = [threading.Thread(target=ask) for _ in range(3)]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(answers) >= 10, what="queries before the kill")
    nodes["a"].kill()
    count = len(answers)
    wait_until(lambda: len(answers) >= count + 20, timeout=30, what="queries after the kill")
    done.set()
    for worker in workers:
        worker.join()
    assert not errors
    assert {(n, total) for n, total, _ in answers} == {_expected(5000)}
    assert {node for *_, node in answers[count + 5 :]} <= {"b", "c"}
    info = read_info(query(nodes["d"], f"{SUM} WHERE order_id >= 0"))["a.sales"]
    assert info["version"] == 1 and info["stale"] is False and info["node"] in {"b", "c"}


def test_only_an_older_copy_left_answers_marked_stale(mesh):
    """Afterwards: with the owner and the current replica gone, the answer comes from the
    copy of version 1, says so, and `shoal sql` prints a one-line warning."""
    nodes, tmp_path = mesh
    nodes["c"].process.send_signal(signal.SIGSTOP)  # c misses version 2
    try:
        more = write_orders(tmp_path / "more.parquet", 5000, 1000)
        shoal("publish", "sales", str(more), home=nodes["a"].home)
        wait_for_copies(nodes, "d", "a.sales", 2, {"a", "b"})
        nodes["a"].kill()
        nodes["b"].kill()
    finally:
        nodes["c"].process.send_signal(signal.SIGCONT)
    try:
        table = wait_until(lambda: _try(nodes["d"], SUM), timeout=30, what="an answer from c")
    except Exception:
        print(FAILURES[-3:])
        raise
    info = read_info(table)["a.sales"]
    assert info == {"version": 1, "newest": 2, "node": "c", "stale": True}
    assert tuple(table.to_pylist()[0].values()) == _expected(5000)
    result = shoal("sql", SUM, "--at", nodes["d"].http, home=nodes["d"].home)
    assert "warning: stale answer: read a.sales version 1 from node 'c'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_holder_up_names_the_product_holders_and_states(mesh):
    """Afterwards: the error names a.sales, each holder and its state."""
    nodes, _ = mesh
    for name in ("a", "b", "c"):
        nodes[name].kill()
    wait_until(
        lambda: all(h["state"] == "down" for h in placement(nodes["d"], "a.sales")["holders"]),
        timeout=30,
        what="every holder down",
    )
    response = nodes["d"].call("POST", "/api/v1/query", json={"sql": SUM}, timeout=30)
    assert response.status_code == 503
    message = response.json()["message"]
    assert "no holder of a.sales could answer" in message
    for name in ("a", "b", "c"):
        assert f"{name} (down)" in message


def test_flipped_byte_in_a_copy_is_never_served_and_is_repaired(mesh):
    """Afterwards: the corrupted file was quarantined (an event says so), the answer was
    right, and the copy is whole again and verifies."""
    nodes, _ = mesh
    table_dir = nodes["b"].home / "replicas" / "a" / "sales" / "table"
    data_file = next(table_dir.glob("*.parquet"))
    good = data_file.read_bytes()
    with data_file.open("r+b") as handle:
        handle.seek(len(good) // 2)
        handle.write(bytes([good[len(good) // 2] ^ 0xFF]))
    nodes["a"].kill()
    nodes["c"].kill()  # only b is left to serve: its check must catch the bad file
    response = nodes["d"].call("POST", "/api/v1/query", json={"sql": SUM}, timeout=30)
    assert response.status_code == 503, response.text
    assert "failed its hash check" in response.text
    quarantined = events(nodes["b"].home, "file-quarantined")
    assert [e["file"] for e in quarantined] == [data_file.name]
    assert not data_file.exists()
    nodes["c"].start()  # a holder to repair from
    wait_until(data_file.exists, timeout=30, what="the file fetched again")
    assert data_file.read_bytes() == good
    table = wait_until(lambda: _try(nodes["d"], SUM), timeout=30, what="an answer")
    assert tuple(table.to_pylist()[0].values()) == _expected(5000)


def test_scrub_finds_a_flipped_byte(mesh):
    """Afterwards: `shoal verify` on the replica's home quarantines the bad file, exits 7,
    and the running replica fetches the file again."""
    nodes, _ = mesh
    table_dir = nodes["c"].home / "replicas" / "a" / "sales" / "table"
    data_file = next(table_dir.glob("*.parquet"))
    good = data_file.read_bytes()
    stat = data_file.stat()
    with data_file.open("r+b") as handle:  # same size, and the old modification time back
        handle.seek(10)
        handle.write(bytes([good[10] ^ 1]))
    import os

    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = shoal("verify", home=nodes["c"].home, check=False)
    assert result.returncode == 7, result.stdout + result.stderr
    assert "1 bad file(s) quarantined" in result.stdout
    wait_until(lambda: data_file.exists() and data_file.read_bytes() == good, timeout=30)
    assert shoal("verify", home=nodes["c"].home).returncode == 0


def test_node_in_a_disallowed_region_refuses_and_is_refused(mesh):
    """Afterwards: d holds no copy, reads never went to d, and both d and a recorded a
    refusal."""
    nodes, _ = mesh
    result = shoal("pull", "a.sales", home=nodes["d"].home, check=False)
    assert result.returncode == 6
    assert "may only be stored in eu-de" in result.stderr
    assert events(nodes["d"].home, "copy-refused")[0]["side"] == "replica"
    # A signed request made by d's own key straight to the owner: refused there too.
    d_home = Node.open(nodes["d"].home).home
    path = "/api/v1/replication/a/sales/log"
    with nodes["a"].client(as_home=d_home.root) as as_d:
        response = as_d.get(path, timeout=10)
    assert response.status_code == 403
    refusal = events(nodes["a"].home, "copy-refused")[0]
    assert refusal["peer"] == "d" and refusal["side"] == "source"
    assert not (nodes["d"].home / "replicas").exists()
    plan = nodes["d"].call("POST", "/api/v1/explain", json={"sql": SUM}).json()
    assert "d" not in plan["plan"]["fragments"][0]["holders"]


def test_file_endpoint_refuses_paths_the_log_does_not_name(mesh):
    """Afterwards: hostile paths and unsigned calls get clear errors and nothing else."""
    nodes, _ = mesh
    b_home = Node.open(nodes["b"].home).home
    path = "/api/v1/replication/a/sales/file"
    for hostile in ("../../keys/node.key", "/etc/passwd", "_delta_log/../../log/entries.jsonl"):
        with nodes["a"].client(as_home=b_home.root) as as_b:
            response = as_b.get(path, params={"path": hostile}, timeout=10)
        assert response.status_code == 404, hostile
        assert "has no file" in response.json()["message"]
    with nodes["a"].client(as_home=b_home.root, sign=False) as unsigned_b:
        unsigned = unsigned_b.get(path, params={"path": "x"}, timeout=10)
    assert unsigned.status_code == 403
    with nodes["a"].client(as_home=b_home.root) as as_b:
        bad_name = as_b.get("/api/v1/replication/a/..%2Fkeys/log", timeout=10)
    assert bad_name.status_code in (400, 403, 404)


def test_rewritten_history_is_refused_and_the_copy_kept(mesh):
    """Afterwards: when the owner's home is put back to an old backup and publishes other
    versions, the replicas refuse them (an event says why) and keep version 2."""
    nodes, tmp_path = mesh
    backup = tmp_path / "a-backup"
    nodes["a"].stop()
    shutil.copytree(nodes["a"].home, backup, symlinks=True)
    nodes["a"].start()
    more = write_orders(tmp_path / "more.parquet", 5000, 1000)
    shoal("publish", "sales", str(more), home=nodes["a"].home)
    wait_for_copies(nodes, "d", "a.sales", 2, {"a", "b", "c"})
    kept = (nodes["b"].home / "replicas" / "a" / "sales" / "log" / "checkpoint").read_text()
    nodes["a"].stop()
    shutil.rmtree(nodes["a"].home)
    shutil.copytree(backup, nodes["a"].home, symlinks=True)
    nodes["a"].start()
    other = write_orders(tmp_path / "other.parquet", 9000, 10)
    for _ in range(2):  # versions 2' and 3': a history that forks from version 1
        shoal("publish", "sales", str(other), home=nodes["a"].home)
    wait_until(lambda: events(nodes["b"].home, "pull-refused"), timeout=30, what="b refusing")
    reason = events(nodes["b"].home, "pull-refused")[0]["reason"]
    assert "broken link" in reason or "does not extend" in reason
    assert (nodes["b"].home / "replicas" / "a" / "sales" / "log" / "checkpoint").read_text() == kept
    assert current_holders(nodes["b"], "a.sales", 2) >= {"b"}


FAILURES: list[str] = []


def _try(node, sql):
    """The answer, or None (the error kept in FAILURES, shown when a wait times out)."""
    try:
        return query(node, sql)
    except AssertionError as exc:
        FAILURES.append(str(exc))
        return None


def test_owner_file_that_fails_its_hash_is_fetched_back_from_a_replica(mesh):
    """Afterwards: `shoal verify` on the owner found the flipped byte, quarantined the file,
    put the replica's good copy back (an event says so) and the history verifies."""
    nodes, _ = mesh
    table_dir = nodes["a"].home / "products" / "sales" / "table"
    data_file = next(table_dir.glob("*.parquet"))
    good = data_file.read_bytes()
    with data_file.open("r+b") as handle:
        handle.seek(len(good) // 3)
        handle.write(bytes([good[len(good) // 3] ^ 0x55]))
    result = shoal("verify", home=nodes["a"].home)
    assert f"repaired {data_file.name} from a replica" in result.stderr
    assert data_file.read_bytes() == good
    assert [e["file"] for e in events(nodes["a"].home, "file-repaired")] == [data_file.name]
    assert len(list((nodes["a"].home / "quarantine" / "a" / "sales").iterdir())) == 1


def test_downloads_a_crash_left_whole_or_full_length_finish_at_the_next_pull(mesh):
    """Afterwards: a replica that crashed after its last byte arrived but before the rename
    (a whole `.part`), or with a part as long as the file but wrong, reaches the new version
    at its next pull; neither is asked for the bytes after its end (a 416 for ever)."""
    nodes, tmp_path = mesh
    nodes["b"].kill()
    table_dir = nodes["a"].home / "products" / "sales" / "table"
    before = {p.relative_to(table_dir) for p in table_dir.rglob("*") if p.is_file()}
    shoal(
        "publish",
        "sales",
        str(write_orders(tmp_path / "more.parquet", 0, 6000)),
        home=nodes["a"].home,
    )
    new = [
        table_dir / p
        for p in {p.relative_to(table_dir) for p in table_dir.rglob("*") if p.is_file()} - before
    ]
    commits = [p for p in new if p.suffix == ".json"]
    data = [p for p in new if p.suffix == ".parquet"]
    assert commits and data, new
    incoming = nodes["b"].home / "replicas" / "a" / "sales" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    for path in commits:  # whole: only the rename was missing
        body = path.read_bytes()
        (incoming / f"{hashlib.sha256(body).hexdigest()}.part").write_bytes(body)
    for path in data:  # the right length, one byte wrong
        body = bytearray(path.read_bytes())
        body[len(body) // 2] ^= 0xFF
        (incoming / f"{hashlib.sha256(path.read_bytes()).hexdigest()}.part").write_bytes(body)
    nodes["b"].start()
    wait_until(
        lambda: "b" in current_holders(nodes["c"], "a.sales", 2),
        timeout=60,
        what="b's copy at version 2",
    )
    assert "resuming" not in nodes["b"].log_path.read_text()
    assert not list(incoming.glob("*.part"))
    assert shoal("verify", home=nodes["b"].home).returncode == 0
