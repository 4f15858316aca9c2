"""Request logging's cost (issue 17): view-by-id throughput of one tenant with its request logs on (PocketBase's
default, ``logs.maxDays`` 5) and off (``maxDays`` 0), side by side in one run, rounds alternating so that the
machine's load falls on both alike. The goal: logging on keeps ≥ 0.9× the throughput of logging off.

``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_request_logs_bench.py -s -p no:cacheprovider``
(``PBFAST_BENCH_WORKERS=2`` for a node with two worker processes; ``PBFAST_BENCH_BASELINE=<a checkout of an
earlier commit, its .so copied in>`` runs a second node from that tree beside this one, rounds alternating
between the two, to compare a change with what came before in the same run; ``PBFAST_BENCH_ROUNDS`` rounds, 3
by default).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import httpx
import pytest
from bench_tools import NodeTenant, headers_script, needs_tools, node_direct_tenant

from cpcluster import Start
from helpers import PbfastProcess
from test_control_plane_bench import run_wrk
from test_cpu_per_request_bench import process_tree_cpu
from test_tenant_api_bench import _create_collection_with_headers, _seed

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
WORKERS = int(os.environ.get("PBFAST_BENCH_WORKERS", "1"))
BASELINE = os.environ.get("PBFAST_BENCH_BASELINE", "")
ROUNDS = int(os.environ.get("PBFAST_BENCH_ROUNDS", "3"))


@dataclass
class _Node:
    """One node's tenant under test and what its rounds measured."""

    name: str
    tenant: NodeTenant
    view: str
    script: Path
    rates: dict[str, list[float]] = field(default_factory=lambda: {"on": [], "off": []})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"on": [], "off": []})  # µs of CPU per request
    written: int = 0

    def logs(self, max_days: int) -> None:
        answer = httpx.patch(f"{self.tenant.url}/api/settings", json={"logs": {"maxDays": max_days}},
                             headers={"Authorization": self.tenant.token, **self.tenant.forward}, timeout=30)
        assert answer.status_code == 200, answer.text
        time.sleep(1.2)  # every process reads the settings again within a second


def _node(start: Start, directory: Path, name: str) -> _Node:
    tenant = node_direct_tenant(start, directory, (f"--workers={WORKERS}",))
    _create_collection_with_headers(tenant.url, tenant.token, tenant.forward)
    record = _seed(tenant.data_db)
    return _Node(name, tenant, f"{tenant.url}/api/collections/bench/records/{record}",
                 headers_script(directory / "headers.lua", tenant.forward))


@needs_tools("wrk")
@pytest.mark.timeout(120 + ROUNDS * 2 * (2 if BASELINE else 1) * 15)  # pyproject's 120 s is too short for the long form
def test_view_throughput_with_request_logs_on_and_off(pbfast_process: Start, tmp_path: Path) -> None:
    nodes = [_node(pbfast_process, tmp_path / "this", "this tree")]
    if BASELINE:
        def baseline(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                     program: list[str] | None = None) -> PbfastProcess:
            return pbfast_process(args, {**(env or {}), "PYTHONPATH": BASELINE}, cwd, program)
        nodes.insert(0, _node(baseline, tmp_path / "baseline", f"baseline {Path(BASELINE).name}"))
    seconds, rounds = (5, ROUNDS) if FULL else (1, 1)
    for node in nodes:
        run_wrk(node.view, node.script, 32, 1)  # warm-up
    for _ in range(rounds):
        for node in nodes:
            for state, max_days in (("on", 5), ("off", 0)):
                node.logs(max_days)
                process = node.tenant.node.proc
                assert process is not None
                before = process_tree_cpu(process.pid)
                rate, latency, errors = run_wrk(node.view, node.script, 32, seconds)
                # The writer's work for these requests is counted too; with logs off the node idles as long (its
                # idle CPU, timers and heartbeats, falls on both alike)
                time.sleep(1.5)
                used = process_tree_cpu(process.pid) - before
                node.rates[state].append(rate)
                node.cpu[state].append(used / (rate * seconds) * 1e6)
                refused = f", {errors:,} not 2xx (e.g. a loaded machine's missed heartbeats fenced the node)" if errors else ""
                print(f"\n[bench] {node.name}: view by id, request logs {state}: {rate:,.0f} req/s ({latency}), "
                      f"{node.cpu[state][-1]:.0f} us CPU per request{refused}")
                if state == "on":  # counted before "off" deletes them (PocketBase's reaction to maxDays 0)
                    aux = apsw.Connection(str(node.tenant.data_db.parent / "auxiliary.db"))
                    count = aux.execute("SELECT count(*) FROM _logs").fetchone()
                    node.written = count[0] if count is not None else 0
                    aux.close()
    for node in nodes:
        on, off = sum(node.rates["on"]) / rounds, sum(node.rates["off"]) / rounds
        cpu_on, cpu_off = min(node.cpu["on"]), min(node.cpu["off"])
        print(f"\n[bench] {node.name}: logs on {on:,.0f} req/s vs off {off:,.0f} req/s = {on / off:.2f}x; CPU per "
              f"request (best round) on {cpu_on:.0f} us vs off {cpu_off:.0f} us = {cpu_off / cpu_on:.2f}x the "
              f"throughput a busy core allows ({node.written:,} log rows written in the last round)")
        assert node.written > 0 and on > 0
