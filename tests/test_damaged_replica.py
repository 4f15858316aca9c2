"""A tenant whose newest replicated state fails its integrity check (a bad tail of its replica) is not lost
(issue 11 §4): the node keeps the damaged restore aside, serves nothing of it, says so (log, metrics,
health) and names the newest point in time whose state passes, which ``pbfast tenant restore ID --at T``
then restores in place. The bad tail is made of real files: the node itself ships a database damaged on
disk while it was down (one index entry changed), the way a corrupt shipment would look."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
import httpx

from cpcluster import ADMIN, ADMIN_TOKEN, Start, start_cluster, wait_until
from nodetools import forwarded, forwarded_ok, scrape, start_node
from pbfast.timefmt import parse_rfc3339

OWNER = {"email": "owner@example.com", "password": "owner-password-1"}
NAMED = re.compile(r"`pbfast tenant restore bent --at (\S+)`")


def integrity(db_path: Path) -> str:
    connection = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchall()[0][0])
    finally:
        connection.close()


def damage_index(db_path: Path, table: str, record_id: str) -> None:
    """Change one id inside the table's primary-key index on disk (the row keeps its id): the database still
    opens and serves, but ``PRAGMA integrity_check`` reports the index entry missing."""
    connection = apsw.Connection(str(db_path))
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # every page in data.db
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                                  (f"sqlite_autoindex_{table}_1",)).fetchone()[0]
    finally:
        connection.close()
    with open(db_path, "r+b") as file:
        file.seek((root - 1) * page_size)
        page = file.read(page_size)
        at = page.find(record_id.encode())
        assert at > 0, "the id is not in the index's root page"
        replacement = record_id[:-1] + ("a" if record_id[-1] != "a" else "b")
        file.seek((root - 1) * page_size + at)
        file.write(replacement.encode())


def pbfast_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbfast", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PBFAST_ADMIN_TOKEN": ADMIN_TOKEN})


def note_ids(node: str, epoch: int, token: str) -> set[str]:
    listed = forwarded_ok(node, "bent", epoch, "GET", "/api/collections/notes/records?perPage=500", token,
                          timeout=30)
    return {item["id"] for item in listed.json()["items"]}


def add_notes(node: str, epoch: int, token: str, count: int) -> list[str]:
    return [str(forwarded_ok(node, "bent", epoch, "POST", "/api/collections/notes/records", token,
                             {"n": f"note {i}"}).json()["id"]) for i in range(count)]


def test_a_damaged_newest_state_is_kept_aside_and_the_newest_good_point_is_named_and_restored(
        pbfast_process: Start, tmp_path: Path) -> None:
    cp = start_cluster(pbfast_process, tmp_path, 1, node_timeout=30)[0]
    cp_addr = f"127.0.0.1:{cp.http_port}"
    copy = tmp_path / "n1" / "tenants" / "bent"

    process, node = start_node(pbfast_process, "n1", cp_addr, tmp_path)
    wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 1)
    created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "bent", "superuser": OWNER})
    assert created.status_code == 200, created.text
    epoch = created.json()["epoch"]
    token = forwarded_ok(node, "bent", epoch, "POST", "/api/collections/_superusers/auth-with-password",
                         json={"identity": OWNER["email"], "password": OWNER["password"]}).json()["token"]
    forwarded_ok(node, "bent", epoch, "POST", "/api/collections", token,
                 {"name": "notes", "type": "base", "fields": [{"name": "n", "type": "text"}]})
    good = add_notes(node, epoch, token, 30)
    time.sleep(1.5)  # shipped; what follows lands in later seconds of the replica

    # The copy gets damaged while the node is down; the node serves it again and ships it: a bad tail.
    process.stop()
    damage_index(copy / "data.db", "notes", good[0])
    assert integrity(copy / "data.db") != "ok"
    process, node = start_node(pbfast_process, "n1", cp_addr, tmp_path)
    later = add_notes(node, epoch, token, 5)
    time.sleep(1.5)

    # The node is lost with its disk; restarted empty, it finds the newest state damaged.
    process.stop(signal.SIGKILL)
    shutil.rmtree(tmp_path / "n1" / "tenants")
    process, node = start_node(pbfast_process, "n1", cp_addr, tmp_path)

    def named() -> str | None:
        answer = forwarded(node, "bent", epoch, "GET", "/api/collections/notes/records", token, timeout=30)
        assert answer.status_code == 503, answer.text  # never the damaged state
        match = NAMED.search(answer.json()["message"])
        return match.group(1) if match else None

    at = wait_until(named, timeout=90, interval=0.5)
    answer = forwarded(node, "bent", epoch, "GET", "/api/collections/notes/records", token)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    assert answer.json() == {"status": 503, "data": {}, "message": answer.json()["message"]}
    assert "newest replicated state is damaged" in answer.json()["message"]
    assert process.output().count("the newest state of its replica (incarnation") == 1  # not restored again
    metrics = scrape(node)
    assert metrics["pbfast_node_damaged_restores_total"] == 1 and metrics["pbfast_node_damaged_tenants"] == 1
    health = httpx.get(f"{node}/api/health").json()
    assert health["data"]["replication"]["damagedTenants"] == 1
    kept = list((tmp_path / "n1" / "damaged" / "bent").glob("*/*.db"))
    assert len(kept) == 1 and integrity(kept[0]) != "ok"  # kept aside, not deleted
    assert not (tmp_path / "n1" / "tenants" / "bent").exists()  # nothing installed

    # The operator restores the point the node named.
    done = pbfast_cli("tenant", "restore", "bent", f"--at={at}", f"--control-plane-addrs={cp_addr}", "--json")
    assert done.returncode == 0, done.stderr
    restored = httpx.get(f"{cp.url}/api/cp/tenants/bent", headers=ADMIN).json()
    assert restored["restoredFrom"]["at"] == at
    ids = note_ids(node, restored["epoch"], token)
    assert set(good) <= ids and not ids & set(later)  # every write before the damage, nothing after
    assert integrity(copy / "data.db") == "ok"
    metrics = scrape(node)
    assert metrics["pbfast_node_damaged_tenants"] == 0
    assert httpx.get(f"{node}/api/health").json()["data"]["replication"]["damagedTenants"] == 0
    assert parse_rfc3339(at).timestamp() < time.time()


def test_the_search_finds_the_newest_passing_point_in_few_trials() -> None:
    """Galloping back from the newest second, halving, then fractions of the next second: the point found
    passes, nothing newer within 1/32 s does, with ~2 log2(n) + 5 trials."""
    from pbfast.tenant_node.damaged import search  # noqa: PLC0415

    seconds = [1_000_000.0 + s for s in range(0, 600, 2)]  # files in 300 different seconds
    first_bad = 1_000_400.3  # states from here on fail; nothing exists before the first file

    async def scenario(restorable_from: float) -> tuple[str | None, list[float]]:
        tried: list[float] = []

        async def passes(at: str) -> bool | None:
            moment = parse_rfc3339(at).timestamp()
            tried.append(moment)
            return None if moment < restorable_from else moment < first_bad

        return await search(seconds, passes, time.monotonic() + 60), tried

    found, tried = asyncio.run(scenario(seconds[0]))
    assert found is not None
    assert first_bad - 1 / 32 < parse_rfc3339(found).timestamp() < first_bad
    assert len(tried) <= 2 * 9 + 5
    # Older states pruned (no state there): the gallop overshoots into them and looks between again.
    found, tried = asyncio.run(scenario(first_bad - 3))
    assert found is not None and first_bad - 1 / 32 < parse_rfc3339(found).timestamp() < first_bad
    assert len(tried) <= 40

    async def nothing_passes(at: str) -> bool | None:
        return False

    assert asyncio.run(search(seconds, nothing_passes, time.monotonic() + 60)) is None
    assert asyncio.run(search([], nothing_passes, time.monotonic() + 60)) is None
