"""A tenant node's local copies across restarts: a copy is served only under the assignment it was last served
under (the marker beside it, ``pbfast-copy.json``). Real processes: one control plane member, two tenant nodes
sharing moto's S3 server; the rule itself (:func:`judge`) and the marker file are checked directly too."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import httpx
import pytest

from cpcluster import ADMIN, Start, start_cluster, wait_until
from helpers import moto_s3_server
from nodetools import S3_ENV, forwarded, forwarded_ok, scrape, start_node, tenant
from pbfast.tenant_node.local_copy import (
    MARKER_FILE,
    CopyMarker,
    MarkerError,
    Verdict,
    judge,
    read_marker,
    write_marker,
)
from pbfast.tenant_node.replica import ReplicaStore

NODE_TIMEOUT = 2.0  # seconds: how soon the control plane re-places the tenants of a stopped node
BUCKET = "local-copy-test"
OWNER = {"email": "owner@example.com", "password": "owner-password-1"}
OPENED = 'pbfast_node_tenant_opens_total{source="%s"}'


def test_the_rule_for_trusting_a_local_copy(tmp_path: Path) -> None:
    marker = CopyMarker("inc-1", 3, "node-a")
    assert judge(marker, True, "inc-1", 3)[0] is Verdict.CURRENT
    assert judge(CopyMarker("inc-1", 3, shipped=True), True, "inc-1", 3)[0] is Verdict.CURRENT
    assert judge(marker, True, "inc-1", 4)[0] is Verdict.SUPERSEDED  # placed elsewhere (and back) since
    assert judge(marker, True, "inc-1", 2)[0] is Verdict.SUPERSEDED
    assert judge(marker, True, "inc-2", 3)[0] is Verdict.FOREIGN  # the id was deleted and created again
    assert judge(None, True, "inc-1", 1)[0] is Verdict.UNKNOWN  # no marker: maybe an earlier life of the id
    assert judge(None, True, "inc-1", 2)[0] is Verdict.UNKNOWN
    assert judge(None, False, "inc-1", 1)[0] is Verdict.UNKNOWN  # unreadable marker: never trusted

    assert read_marker(tmp_path) is None
    write_marker(tmp_path, marker)
    assert read_marker(tmp_path) == marker
    assert json.loads((tmp_path / MARKER_FILE).read_text()) == {
        "format": 1, "incarnation": "inc-1", "epoch": 3, "node_id": "node-a", "shipped": False}
    assert [p.name for p in tmp_path.iterdir()] == [MARKER_FILE]  # no temporary file left
    (tmp_path / MARKER_FILE).write_text('{"incarnation": "inc-1"')
    with pytest.raises(MarkerError):
        read_marker(tmp_path)


@pytest.fixture
def s3() -> Iterator[str]:
    with moto_s3_server(BUCKET) as endpoint:
        yield endpoint


def note_ids(node: str, epoch: int, token: str) -> set[str]:
    listed = forwarded_ok(node, "shared", epoch, "GET", "/api/collections/notes/records?perPage=500", token,
                          timeout=15)
    return {item["id"] for item in listed.json()["items"]}


def add_note(node: str, epoch: int, token: str, text: str) -> str:
    return str(forwarded_ok(node, "shared", epoch, "POST", "/api/collections/notes/records", token,
                            {"n": text}).json()["id"])


def notes_in(database: Path) -> set[str]:
    """The note ids in a database file (none before the notes collection exists)."""
    connection = apsw.Connection(str(database), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {row[0] for row in connection.execute("SELECT id FROM notes")}
    except apsw.SQLError:
        return set()
    finally:
        connection.close()


def replica_ids(endpoint: str, incarnation: str, tmp_path: Path) -> set[str]:
    """The note ids in the tenant's replica now (restored with the stock litestream CLI)."""
    target = tmp_path / f"replica-{time.monotonic_ns()}.db"
    store = ReplicaStore(BUCKET, endpoint, tmp_path)
    restored = subprocess.run(["litestream", "restore", "-if-replica-exists", "-o", str(target),
                               store.url("shared", incarnation)],
                              env={**store.environment(), **S3_ENV}, capture_output=True, timeout=30)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    return notes_in(target) if target.exists() else set()


def test_restarted_node_serves_its_copy_only_if_the_tenant_never_left(pbfast_process: Start, tmp_path: Path,
                                                                     s3: str) -> None:
    started = time.monotonic()
    cp = start_cluster(pbfast_process, tmp_path, 1, node_timeout=NODE_TIMEOUT)[0]
    cp_addr = f"127.0.0.1:{cp.http_port}"
    storage = (f"--s3-endpoint={s3}", f"--s3-bucket={BUCKET}")
    node_a_dir = tmp_path / "node-a"
    copy_a = node_a_dir / "tenants" / "shared"

    def node_a() -> tuple[object, str]:
        return start_node(pbfast_process, "node-a", cp_addr, tmp_path, storage, S3_ENV)

    process_a, url_a = node_a()
    wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 1)
    created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "shared", "superuser": OWNER})
    assert created.status_code == 200 and created.json()["nodeId"] == "node-a", created.text
    incarnation, epoch = created.json()["incarnation"], created.json()["epoch"]
    token = forwarded_ok(url_a, "shared", epoch, "POST", "/api/collections/_superusers/auth-with-password",
                         json={"identity": OWNER["email"], "password": OWNER["password"]}).json()["token"]
    forwarded_ok(url_a, "shared", epoch, "POST", "/api/collections", token,
                 {"name": "notes", "type": "base", "fields": [{"name": "n", "type": "text"}]})
    first = add_note(url_a, epoch, token, "a1")
    assert read_marker(copy_a) == CopyMarker(incarnation, epoch, "node-a", shipped=False)

    # 1. A plain restart (kill -9), the tenant never left: A serves its own copy, no restore.
    process_a.stop(signal.SIGKILL)  # type: ignore[attr-defined]
    process_a, url_a = node_a()
    assert note_ids(url_a, epoch, token) == {first}
    metrics = scrape(url_a)
    assert metrics[OPENED % "disk"] == 1 and metrics[OPENED % "replica"] == 0
    assert tenant(cp.url, "shared")["epoch"] == epoch

    # 2. A dies; the control plane re-places the tenant on B, which takes a write.
    second = add_note(url_a, epoch, token, "a2")
    wait_until(lambda: second in replica_ids(s3, incarnation, tmp_path), timeout=10, interval=0.2)
    _, url_b = start_node(pbfast_process, "node-b", cp_addr, tmp_path, storage, S3_ENV)
    process_a.stop(signal.SIGKILL)  # type: ignore[attr-defined]
    wait_until(lambda: tenant(cp.url, "shared")["nodeId"] == "node-b", timeout=NODE_TIMEOUT + 5)
    epoch_b = tenant(cp.url, "shared")["epoch"]
    assert epoch_b == epoch + 1
    assert note_ids(url_b, epoch_b, token) == {first, second}
    from_b = add_note(url_b, epoch_b, token, "b1")

    # 3. A comes back with its old copy; the tenant is moved back to A: A restores B's state from the
    #    replica and keeps its own copy, out of service, under retired/.
    process_a, url_a = node_a()
    wait_until(lambda: {n["id"]: n["status"] for n in httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN)
                        .json()["items"]}.get("node-a") == "up", timeout=5)
    assert read_marker(copy_a) == CopyMarker(incarnation, epoch, "node-a", shipped=False)
    # A stale gateway still routing the tenant to A with its old epoch: A does not remember giving it up
    # (it restarted), but the control plane does not assign it to A, so A opens nothing.
    wait_until(lambda: scrape(url_a)["pbfast_node_lease_valid"] == 1, timeout=5)
    stale = forwarded(url_a, "shared", epoch, "GET", "/api/collections/notes/records", token)
    assert stale.status_code == 503 and stale.headers["x-pbfast-moved"] == "1", stale.text
    assert scrape(url_a)["pbfast_node_open_tenants"] == 0
    back = httpx.post(f"{cp.url}/api/cp/tenants/shared/move", headers=ADMIN, json={"nodeId": "node-a"},
                      timeout=30)
    assert back.status_code == 200, back.text
    epoch_back = back.json()["epoch"]
    assert note_ids(url_a, epoch_back, token) == {first, second, from_b}
    metrics = scrape(url_a)
    assert metrics[OPENED % "replica"] == 1 and metrics[OPENED % "disk"] == 0
    restored_by = 'pbfast_node_latest_restores_total{by="%s"}'
    assert metrics[restored_by % "node"] == 1 and metrics[restored_by % "litestream"] == 0  # no process spawned
    retired = list((node_a_dir / "retired").glob("shared-*"))
    assert len(retired) == 1, retired
    assert read_marker(retired[0]) == CopyMarker(incarnation, epoch, "node-a", shipped=False)
    assert notes_in(retired[0] / "data.db") == {first, second}
    assert read_marker(copy_a) == CopyMarker(incarnation, epoch_back, "node-a", shipped=False)
    assert "not serving the local copy: it was last served here under epoch 1" in process_a.output()  # type: ignore[attr-defined]

    # 4. A stops cleanly (its final state confirmed in the replica), B takes the tenant and a write, and it
    #    comes back to A again: this copy is deleted, not retired, and A again serves B's write.
    process_a.stop(signal.SIGTERM)  # type: ignore[attr-defined]
    assert read_marker(copy_a) == CopyMarker(incarnation, epoch_back, "node-a", shipped=True)
    wait_until(lambda: tenant(cp.url, "shared")["nodeId"] == "node-b", timeout=NODE_TIMEOUT + 5)
    epoch_b = tenant(cp.url, "shared")["epoch"]
    again_b = add_note(url_b, epoch_b, token, "b2")
    process_a, url_a = node_a()
    wait_until(lambda: {n["id"]: n["status"] for n in httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN)
                        .json()["items"]}.get("node-a") == "up", timeout=5)
    back = httpx.post(f"{cp.url}/api/cp/tenants/shared/move", headers=ADMIN, json={"nodeId": "node-a"},
                      timeout=30)
    assert back.status_code == 200, back.text
    assert note_ids(url_a, back.json()["epoch"], token) == {first, second, from_b, again_b}
    assert len(list((node_a_dir / "retired").glob("shared-*"))) == 1
    assert "removed the local copy (not serving the local copy" in process_a.output()  # type: ignore[attr-defined]
    print(f"\n[local copy] whole scenario {time.monotonic() - started:.1f} s")


def test_a_copy_written_during_an_uninterrupted_stay_is_current() -> None:
    marker = CopyMarker("inc-1", 3, "node-a")
    # put back on node-a under epoch 5 (a move or restore that did not go through); it has been there since 2
    assert judge(marker, True, "inc-1", 5, placed_since=2, node_id="node-a")[0] is Verdict.CURRENT
    assert judge(marker, True, "inc-1", 5, placed_since=3, node_id="node-a")[0] is Verdict.CURRENT
    assert judge(marker, True, "inc-1", 5, placed_since=4, node_id="node-a")[0] is Verdict.SUPERSEDED  # left since
    assert judge(marker, True, "inc-1", 5, placed_since=2, node_id="node-b")[0] is Verdict.SUPERSEDED
    assert judge(marker, True, "inc-1", 5, placed_since=None, node_id="node-a")[0] is Verdict.SUPERSEDED
    assert judge(marker, True, "inc-2", 5, placed_since=2, node_id="node-a")[0] is Verdict.FOREIGN


def test_the_control_plane_tracks_an_uninterrupted_stay_on_a_node() -> None:
    from pbfast.control_plane.registry import Registry  # noqa: PLC0415

    registry = Registry()
    for node in ("n1", "n2"):
        registry.register_node(node, f"http://127.0.0.1:9/{node}", 10, 1.0, _doApply=True)
    record = {"id": "acme", "storageQuotaMB": None, "apiRequestsQuota": None, "durability": "async",
              "status": "active", "nodeId": "n1", "moving": None, "incarnation": "inc-1", "superuser": None,
              "usage": {"apiRequests": 0, "periodStart": 0, "storageBytes": 0}, "createdAt": 1.0, "updatedAt": 1.0}
    registry.create_tenant(record, _doApply=True)

    def placed() -> tuple[str | None, int, int | None]:
        tenant = registry.tenant("acme")
        assert tenant is not None
        return tenant["nodeId"], tenant["epoch"], tenant["placedSince"]

    assert placed() == ("n1", 1, 1)
    registry.assign([("acme", "n1", 1)], 2.0, _doApply=True)  # put back on the same node
    assert placed() == ("n1", 2, 1)
    registry.assign([("acme", "n2", 2)], 3.0, _doApply=True)  # moved
    assert placed() == ("n2", 3, 3)
    registry.assign([("acme", None, 3)], 4.0, _doApply=True)  # unplaced
    assert placed() == (None, 4, None)
    registry.assign([("acme", "n2", 4)], 5.0, _doApply=True)  # placed anew on the node it had before
    assert placed() == ("n2", 5, 5)
