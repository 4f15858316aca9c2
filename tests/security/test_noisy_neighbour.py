"""One tenant must not be able to hold the node: its slow statements are stopped by their time limit, its
bursts wait behind its own requests, its database cannot outgrow its quota even inside one transaction, and
every other tenant on the node goes on being served meanwhile. Real all-in-one processes on loopback."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pocketbase"))
from pbharness import ADMIN_TOKEN, create_tenant  # noqa: E402

from helpers import PbfastProcess, free_port  # noqa: E402
from nodetools import scrape  # noqa: E402

pytestmark = pytest.mark.exclusive  # measures a victim tenant's latency

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORD = "a-long-password-123"
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x as id FROM c"
TIME_LIMIT_MESSAGE = "took longer than the tenant's time limit"


class Node:
    def __init__(self, process: PbfastProcess, cp: str, gw: str) -> None:
        self.process, self.cp, self.gw = process, cp, gw
        self.tokens: dict[str, str] = {}

    def tenant(self, tenant_id: str, **settings: object) -> None:
        create_tenant(self.cp, self.gw, tenant_id,
                      {"superuser": {"email": f"root@{tenant_id}.test", "password": PASSWORD}, **settings})
        response = httpx.post(f"{self.gw}/t/{tenant_id}/api/collections/_superusers/auth-with-password",
                              json={"identity": f"root@{tenant_id}.test", "password": PASSWORD}, timeout=30)
        assert response.status_code == 200, response.text
        self.tokens[tenant_id] = response.json()["token"]

    def call(self, tenant_id: str, method: str, path: str, body: object = None,
             timeout: float = 30) -> httpx.Response:
        return httpx.request(method, f"{self.gw}/t/{tenant_id}{path}", json=body, timeout=timeout,
                             headers={"Authorization": self.tokens[tenant_id]})

    def endless_view(self, tenant_id: str) -> None:
        created = self.call(tenant_id, "POST", "/api/collections",
                            {"name": "loop", "type": "view", "listRule": "", "viewQuery": ENDLESS})
        assert created.status_code == 200, created.text


def start(pbfast_process: object, tmp_path: Path, *flags: str) -> Node:
    cp_port, gw_port = free_port(), free_port()
    process = pbfast_process([  # type: ignore[operator]
        "serve", f"--data-dir={tmp_path / 'pbfast'}", f"--http-addr=127.0.0.1:{cp_port}",
        f"--gateway-addr=127.0.0.1:{gw_port}", f"--raft-bind-addr=127.0.0.1:{free_port()}",
        f"--admin-token={ADMIN_TOKEN}", *flags])
    cp, gw = f"http://127.0.0.1:{cp_port}", f"http://127.0.0.1:{gw_port}"
    process.wait_healthy([cp, gw], timeout=30)
    return Node(process, cp, gw)


class Prober:
    """Times ``GET url`` over and over on its own thread until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.get(self.url).status_code
                except httpx.HTTPError as err:
                    self.failures.append(repr(err))
                    continue
                self.latencies.append(time.perf_counter() - started)
                if status != 200:
                    self.failures.append(str(status))
                time.sleep(0.01)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def test_an_endless_view_is_stopped_and_other_tenants_are_served(pbfast_process: object, tmp_path: Path) -> None:
    node = start(pbfast_process, tmp_path, "--request-time-limit=1")
    node.tenant("evil")
    node.tenant("victim")
    node.endless_view("evil")
    answers: list[tuple[int, float, str]] = []

    def list_loop() -> None:
        started = time.monotonic()
        response = httpx.get(f"{node.gw}/t/evil/api/collections/loop/records", timeout=30)
        answers.append((response.status_code, time.monotonic() - started, response.text))

    listers = [threading.Thread(target=list_loop) for _ in range(3)]
    with Prober(f"{node.gw}/t/victim/api/health") as victim:
        for lister in listers:
            lister.start()
        for lister in listers:
            lister.join()
    # evil's three lists ran one after another, each stopped at its limit with a clear answer
    assert sorted(a[0] for a in answers) == [400, 400, 400], answers
    assert all(TIME_LIMIT_MESSAGE in a[2] for a in answers), answers
    assert max(a[1] for a in answers) < 3 * 1 + 2, answers
    # victim was served throughout: it never waited for evil's statements
    assert not victim.failures, victim.failures
    assert len(victim.latencies) > 50
    assert statistics.median(victim.latencies) < 0.05, sorted(victim.latencies)[-10:]
    assert max(victim.latencies) < 0.5, sorted(victim.latencies)[-10:]
    # and evil itself is served normally afterwards
    assert node.call("evil", "GET", "/api/collections").status_code == 200
    samples = scrape(node.cp, ADMIN_TOKEN)
    assert samples['pbfast_node_tenant_db_time_limited_total{tenant="evil"}'] == 3
    assert samples['pbfast_node_tenant_db_time_limited_total{tenant="victim"}'] == 0
    # the control plane's usage tells the operator too (within a heartbeat or two)
    deadline = time.monotonic() + 10
    while True:
        usage = httpx.get(f"{node.cp}/api/cp/tenants/evil", headers=ADMIN).json()["usage"]
        if usage["dbTimeLimited"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert usage["dbTimeLimited"] == 3 and usage["dbWaitSeconds"] > 0, usage


def test_a_read_heavier_than_the_loops_budget_is_answered_from_a_database_thread(pbfast_process: object,
                                                                                  tmp_path: Path) -> None:
    """Reads are tried on the event loop within a small CPU budget; one that needs more is stopped there and
    done again on a database thread: the same answer, no time limit counted, other tenants served meanwhile."""
    node = start(pbfast_process, tmp_path)
    node.tenant("heavy")
    node.tenant("victim")
    count_to = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 400000) SELECT x as id FROM c"
    created = node.call("heavy", "POST", "/api/collections",
                        {"name": "many", "type": "view", "listRule": "", "viewQuery": count_to})
    assert created.status_code == 200, created.text
    with Prober(f"{node.gw}/t/victim/api/health") as victim:
        for _ in range(3):
            listed = httpx.get(f"{node.gw}/t/heavy/api/collections/many/records?perPage=1", timeout=30)
            assert listed.status_code == 200, listed.text
            assert listed.json()["totalItems"] == 400_000 and listed.json()["items"][0]["id"] == "1", listed.text
    assert not victim.failures, victim.failures
    samples = scrape(node.cp, ADMIN_TOKEN)
    assert samples['pbfast_node_tenant_db_time_limited_total{tenant="heavy"}'] == 0


def test_a_tenant_time_limit_set_in_the_control_plane(pbfast_process: object, tmp_path: Path) -> None:
    node = start(pbfast_process, tmp_path, "--request-time-limit=30")
    node.tenant("evil", requestTimeLimitMs=300)
    node.endless_view("evil")
    started = time.monotonic()
    response = httpx.get(f"{node.gw}/t/evil/api/collections/loop/records", timeout=30)
    assert response.status_code == 400 and "0.3 s" in response.text, response.text
    assert time.monotonic() - started < 2
    # changed later: applies from the next request on
    patched = httpx.patch(f"{node.cp}/api/cp/tenants/evil", json={"requestTimeLimitMs": 800}, headers=ADMIN)
    assert patched.status_code == 200 and patched.json()["requestTimeLimitMs"] == 800, patched.text
    deadline = time.monotonic() + 10
    while True:
        response = httpx.get(f"{node.gw}/t/evil/api/collections/loop/records", timeout=30)
        if "0.8 s" in response.text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 400 and "0.8 s" in response.text, response.text
    invalid = httpx.patch(f"{node.cp}/api/cp/tenants/evil", json={"requestTimeLimitMs": -1}, headers=ADMIN)
    assert invalid.status_code == 400 and "requestTimeLimitMs" in invalid.json()["data"], invalid.text


def test_a_burst_waits_behind_its_own_tenant(pbfast_process: object, tmp_path: Path) -> None:
    node = start(pbfast_process, tmp_path, "--request-time-limit=0.5", "--tenant-queue-limit=2")
    node.tenant("evil")
    node.tenant("victim")
    node.endless_view("evil")
    statuses: list[int] = []

    def list_loop() -> None:
        statuses.append(httpx.get(f"{node.gw}/t/evil/api/collections/loop/records", timeout=30).status_code)

    burst = [threading.Thread(target=list_loop) for _ in range(8)]
    with Prober(f"{node.gw}/t/victim/api/health") as victim:
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join()
    # one runs, two wait: the rest are refused at once with 429 (never queued without bound)
    assert statuses.count(429) >= 4 and set(statuses) <= {400, 429}, statuses
    assert not victim.failures and max(victim.latencies) < 0.5, (victim.failures, sorted(victim.latencies)[-5:])
    refused = httpx.get(f"{node.gw}/t/evil/api/collections/loop/records", timeout=30)
    assert refused.status_code == 400  # the queue drained: served again
    samples = scrape(node.cp, ADMIN_TOKEN)
    assert samples['pbfast_node_tenant_db_rejected_total{tenant="evil"}'] == statuses.count(429)


def test_storage_quota_holds_inside_one_write(pbfast_process: object, tmp_path: Path) -> None:
    node = start(pbfast_process, tmp_path)
    node.tenant("small", storageQuotaMB=2)
    created = node.call("small", "POST", "/api/collections", {
        "name": "notes", "type": "base", "createRule": "", "listRule": "",
        "fields": [{"name": "body", "type": "json", "maxSize": 20 << 20}]})
    assert created.status_code == 200, created.text
    # one request that alone would take the database well past its quota: refused, nothing of it kept
    huge = node.call("small", "POST", "/api/collections/notes/records", {"body": "x" * (5 << 20)})
    assert huge.status_code == 403 and "storage quota" in huge.json()["message"], huge.text
    listed = node.call("small", "GET", "/api/collections/notes/records")
    assert listed.status_code == 200 and listed.json()["totalItems"] == 0
    database = tmp_path / "pbfast" / "tenants" / "small" / "data.db"
    assert database.stat().st_size <= 2 << 20
    # below the quota writes go on
    assert node.call("small", "POST", "/api/collections/notes/records", {"body": "fits"}).status_code == 200


@pytest.mark.parametrize("flag", ["--request-time-limit=-1", "--db-threads=0", "--tenant-queue-limit=0",
                                  "--sqlite-memory-limit-mb=10"])
def test_engine_flags_are_checked(pbfast_process: object, tmp_path: Path, flag: str) -> None:
    process = pbfast_process(["serve", f"--data-dir={tmp_path}", flag])  # type: ignore[operator]
    assert process.proc.wait(30) == 2
    assert "pbfast: error:" in process.output()
