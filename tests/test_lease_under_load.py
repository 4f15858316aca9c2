"""A loaded machine is not a partition: an all-in-one next to CPU hogs (the outside benchmarks run 100+
PocketBase processes beside pbfast on one machine) keeps its lease, so it keeps serving its tenant: no
fence in its log, no 503. Real process, real hogs at normal priority, killed in ``finally``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from cpcluster import Start

sys.path.insert(0, str(Path(__file__).parent / "pocketbase"))
from pbharness import create_tenant, start_all_in_one  # noqa: E402

HOGS = 8  # busy loops at the same priority as pbfast, on a 2-core machine: 4+ runnable threads per core
LOADED_SECONDS = 25.0
CLIENTS = 2


def _hammer(url: str, until: float, statuses: dict[int | str, int], lock: threading.Lock) -> None:
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < until:
            try:
                status: int | str = client.get(url).status_code
            except httpx.HTTPError as err:  # a starved server may be slow; an error is counted, not raised
                status = type(err).__name__
            with lock:
                statuses[status] = statuses.get(status, 0) + 1


@pytest.mark.exclusive
def test_all_in_one_beside_cpu_hogs_keeps_serving(pbfast_process: Start, tmp_path: Path) -> None:
    process, cp, gw = start_all_in_one(pbfast_process, tmp_path / "data")
    create_tenant(cp, gw, "busy")
    hogs: list[subprocess.Popen[bytes]] = []
    statuses: dict[int | str, int] = {}
    lock = threading.Lock()
    try:
        hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(HOGS)]
        until = time.monotonic() + LOADED_SECONDS
        clients = [threading.Thread(target=_hammer, args=(f"{gw}/t/busy/api/health", until, statuses, lock))
                   for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(LOADED_SECONDS + 60)
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
    output = process.output()
    print(f"\n[lease under load] {HOGS} hogs, {LOADED_SECONDS:.0f} s: answers {statuses}")
    assert "no heartbeat acknowledged" not in output, output[-4000:]
    assert set(statuses) == {200}, statuses
