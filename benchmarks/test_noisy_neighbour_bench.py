"""Noisy neighbour: how much one tenant's heavy load slows another tenant on the same node.

An all-in-one (the default ``pbfast serve``), two tenants with the same collection and records. ``quiet`` is
probed with one client viewing records one after another; first alone, then while ``noisy`` runs heavy lists
(filter + sort, 50 per page) and creates at full speed from wrk. The figure: quiet's p99 under load divided
by its p99 alone, measured side by side in one run (goal: <= 2).

``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_noisy_neighbour_bench.py -s -p no:cacheprovider``
(15 s per phase, 3 rounds; the short form: 3 s, one round). ``PBFAST_BENCH_WORKERS=2``: the node with two
worker processes (``--workers=2``). ``PBFAST_BENCH_BEFORE=<a checkout of an older commit, with the extension
.so copied into its pbfast/>``: an all-in-one of that code as well, measured in the same rounds, alternating
with this one (before/after side by side, same load). ``PBFAST_BENCH_FLOOR=1`` (Linux): in each round also the
floor, measured on this checkout's node: quiet probed there while the same noisy load goes to a *separate*
all-in-one whose every thread runs at ``SCHED_IDLE`` (the kernel runs them only when nothing else wants the
core), so the quiet tenant shares nothing with the noisy one but the machine (cores, loopback, the load
generator). No sharing of a node can do better than that; when the node's p99 under load is the floor's, what
is left of the ratio is the machine's.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from bench_tools import needs_tools

from pbharness import ADMIN_TOKEN, create_tenant, start_all_in_one
from test_tenant_api_bench import COLLECTION, _create_collection, _lua_create, _seed

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
WORKERS = os.environ.get("PBFAST_BENCH_WORKERS", "1")
BEFORE = os.environ.get("PBFAST_BENCH_BEFORE", "")
FLOOR = os.environ.get("PBFAST_BENCH_FLOOR") == "1"
ROUNDS = int(os.environ.get("PBFAST_BENCH_ROUNDS", "3" if FULL else "1"))
SECONDS = 15 if FULL else 3  # per phase
SUPERUSER = {"email": "bench@example.com", "password": "bench-password-1"}


@dataclass
class Server:
    name: str
    gw: str
    record: str
    pid: int = 0


def _lowest_priority(pid: int) -> None:
    """Every thread of process ``pid`` (and of its children, e.g. Litestream) to ``SCHED_IDLE``."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return  # a process that ended meanwhile
    for task in tasks:
        try:
            os.sched_setscheduler(int(task.name), os.SCHED_IDLE, os.sched_param(0))
            children = (task / "children").read_text().split()
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue  # a thread that ended meanwhile
        for child in children:
            _lowest_priority(int(child))


def _probe(url: str, seconds: float) -> list[float]:
    """Latencies of back-to-back GETs of ``url`` for ``seconds``."""
    latencies = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = client.get(url)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return latencies


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else values[0]


def _wrk(url: str, script: Path | None, connections: int, seconds: float) -> subprocess.Popen[bytes]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", *(["-s", str(script)] if script else []), url]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _start(pbfast_process: object, data_dir: Path, name: str, tree: str | None) -> Server:
    """An all-in-one (of the code in ``tree``, else this checkout's) with both tenants and their records; the
    floor's (``name`` "floor") runs at the lowest priority."""
    def start(args: list[str]) -> object:
        if tree is None:
            return pbfast_process(args)  # type: ignore[operator]
        # From the tree itself: ``python -m`` puts the working directory first on the path, before PYTHONPATH.
        return pbfast_process(args, env={"PYTHONPATH": tree}, cwd=Path(tree))  # type: ignore[operator]

    process, cp, gw = start_all_in_one(start, data_dir, f"--workers={WORKERS}")
    record = ""
    for tenant in ("noisy", "quiet"):
        create_tenant(cp, gw, tenant, {"superuser": SUPERUSER})
        token = httpx.post(f"{gw}/t/{tenant}/api/collections/_superusers/auth-with-password", timeout=30,
                           json={"identity": SUPERUSER["email"], "password": SUPERUSER["password"]}).json()["token"]
        _create_collection(f"{gw}/t/{tenant}", token)
        record = _seed(data_dir / "tenants" / tenant / "data.db")
    assert process.proc is not None
    if name == "floor":
        _lowest_priority(process.proc.pid)
    return Server(name, gw, record, process.proc.pid)


def _round(server: Server, creates: Path, seconds: float, noisy_at: Server | None = None) -> tuple[float, float]:
    """Quiet alone, then under noisy (on ``noisy_at``: the floor; else on the same node); prints the figures,
    returns the p50 and p99 ratios."""
    view = f"{server.gw}/t/quiet/api/collections/bench/records/{server.record}"
    _probe(view, 0.5)  # warm up
    alone = _probe(view, seconds)

    if noisy_at is not None:
        _lowest_priority(noisy_at.pid)  # threads started since
    name = server.name if noisy_at is None else f"{noisy_at.name} (noisy on its own node at SCHED_IDLE)"
    target = noisy_at or server
    lists = f"{target.gw}/t/noisy/api/collections/bench/records?perPage=50&sort=-created&filter=(num%3E%3D2000)"
    load = [_wrk(lists, None, 16, seconds + 1),
            _wrk(f"{target.gw}/t/noisy/api/collections/bench/records", creates, 8, seconds + 1)]
    time.sleep(0.5)
    noisy: list[float] = []
    prober = threading.Thread(target=lambda: noisy.extend(_probe(view, seconds - 0.5)))
    prober.start()
    prober.join()
    outputs = [process.communicate()[0].decode() for process in load]
    rates = [next((line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")), "?")
             for out in outputs]
    assert noisy and alone
    ratio50 = _p(noisy, 50) / _p(alone, 50)
    ratio99 = _p(noisy, 99) / _p(alone, 99)
    print(f"\n[bench] {name} --workers={WORKERS} quiet tenant, views: alone p50 {_p(alone, 50) * 1000:.2f} ms "
          f"p99 {_p(alone, 99) * 1000:.2f} ms ({len(alone)} req) | under a noisy neighbour (lists {rates[0]} req/s, "
          f"creates {rates[1]} req/s): p50 {_p(noisy, 50) * 1000:.2f} ms p99 {_p(noisy, 99) * 1000:.2f} ms "
          f"({len(noisy)} req) | p50 ratio {ratio50:.2f}, p99 ratio {ratio99:.2f} | load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    return ratio50, ratio99


@needs_tools("wrk")
@pytest.mark.timeout(max(120, 60 + ROUNDS * (1 + bool(BEFORE) + FLOOR) * (2 * SECONDS + 5)))  # 120 s: pyproject's
def test_quiet_tenant_under_a_noisy_one(pbfast_process: object, tmp_path: Path) -> None:
    servers = [_start(pbfast_process, tmp_path / "this", "this", None)]
    if BEFORE:
        servers.append(_start(pbfast_process, tmp_path / "before", "before", BEFORE))
    floor = _start(pbfast_process, tmp_path / "floor", "floor", None) if FLOOR else None
    creates = _lua_create(tmp_path / "create.lua")
    ratios: dict[str, list[tuple[float, float]]] = {server.name: [] for server in servers}
    if floor is not None:
        ratios[floor.name] = []
    for _ in range(ROUNDS):
        for server in servers:
            ratios[server.name].append(_round(server, creates, SECONDS))
        if floor is not None:
            ratios[floor.name].append(_round(servers[0], creates, SECONDS, noisy_at=floor))
    for name, measured in ratios.items():
        print(f"[bench] {name} --workers={WORKERS}, {ROUNDS} round(s): p50 ratio "
              f"{' '.join(f'{r50:.2f}' for r50, _ in measured)}; p99 ratio {' '.join(f'{r99:.2f}' for _, r99 in measured)}")
    assert ADMIN_TOKEN  # the all-in-one used the test admin token
    assert COLLECTION["name"] == "bench"
