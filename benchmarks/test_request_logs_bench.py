"""Request logging's cost (issue 17): view-by-id throughput of one tenant with its request logs on (PocketBase's
default, ``logs.maxDays`` 5) and off (``maxDays`` 0), side by side in one run, rounds alternating so that the
machine's load falls on both alike. The goal: logging on keeps ≥ 0.9× the throughput of logging off.

``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_request_logs_bench.py -s -p no:cacheprovider``
(``PBFAST_BENCH_WORKERS=2`` for a node with two worker processes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import apsw
import httpx
from bench_tools import headers_script, needs_tools, node_direct_tenant

from cpcluster import Start
from test_control_plane_bench import run_wrk
from test_cpu_per_request_bench import process_tree_cpu
from test_tenant_api_bench import _create_collection_with_headers, _seed

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
WORKERS = int(os.environ.get("PBFAST_BENCH_WORKERS", "1"))


@needs_tools("wrk")
def test_view_throughput_with_request_logs_on_and_off(pbfast_process: Start, tmp_path: Path) -> None:
    tenant = node_direct_tenant(pbfast_process, tmp_path, (f"--workers={WORKERS}",))
    node, tenant_url, token, headers = tenant.node, tenant.url, tenant.token, tenant.forward
    _create_collection_with_headers(tenant_url, token, headers)
    record = _seed(tenant.data_db)
    script = headers_script(tmp_path / "headers.lua", headers)
    view = f"{tenant_url}/api/collections/bench/records/{record}"

    def logs(max_days: int) -> None:
        answer = httpx.patch(f"{tenant_url}/api/settings", json={"logs": {"maxDays": max_days}},
                             headers={"Authorization": token, **headers}, timeout=30)
        assert answer.status_code == 200, answer.text
        time.sleep(1.2)  # every process reads the settings again within a second

    seconds, rounds = (5, 3) if FULL else (1, 1)
    rates: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}  # the node's CPU microseconds per request
    assert node.proc is not None
    run_wrk(view, script, 32, 1)  # warm-up
    for _ in range(rounds):
        for state, max_days in (("on", 5), ("off", 0)):
            logs(max_days)
            before = process_tree_cpu(node.proc.pid)
            rate, latency, errors = run_wrk(view, script, 32, seconds)
            if state == "on":
                time.sleep(1.5)  # the writer's work for these requests is counted too
            used = process_tree_cpu(node.proc.pid) - before
            assert errors == 0
            rates[state].append(rate)
            cpu[state].append(used / (rate * seconds) * 1e6)
            print(f"\n[bench] view by id, request logs {state}: {rate:,.0f} req/s ({latency}), "
                  f"{cpu[state][-1]:.0f} us CPU per request")
            if state == "on":  # counted before "off" deletes them (PocketBase's reaction to maxDays 0)
                aux = apsw.Connection(str(tenant.data_db.parent / "auxiliary.db"))
                written = aux.execute("SELECT count(*) FROM _logs").fetchone()[0]
                aux.close()
    on, off = sum(rates["on"]) / rounds, sum(rates["off"]) / rounds
    cpu_on, cpu_off = min(cpu["on"]), min(cpu["off"])
    print(f"\n[bench] logs on {on:,.0f} req/s vs off {off:,.0f} req/s = {on / off:.2f}x; CPU per request "
          f"(best round) on {cpu_on:.0f} us vs off {cpu_off:.0f} us = {cpu_off / cpu_on:.2f}x the throughput a "
          f"busy core allows ({written:,} log rows written)")
    assert written > 0 and on > 0
