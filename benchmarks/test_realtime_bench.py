"""Realtime fan-out and the memory an idle stream costs, through an all-in-one's gateway.

An all-in-one (the default ``pbfast serve``), one tenant with a public collection, N SSE clients (asyncio, in
this process) each subscribed to ``posts/*``. Figures:

- fan-out: for each of W writes, from just before the create request to the moment each client has the
  event; reported as p50/p99 over all deliveries and the p99 of each write's slowest delivery;
- memory per idle stream: the server process's RSS with the N streams open minus before, over N (gateway
  and node are one process in all-in-one, so this is both together).

Short form (CI): 50 clients, 5 writes. Full form, figures in benchmarks/RESULTS.md:
``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_realtime_bench.py -s -p no:cacheprovider``
(``PBFAST_BENCH_IDLE_STREAMS=9500`` for the many-connections run of the per-process test).
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import uvloop

from pbharness import all_in_one_with_public_posts

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
CLIENTS = int(os.environ.get("PBFAST_BENCH_REALTIME_CLIENTS", "1000" if FULL else "50"))
WRITES = int(os.environ.get("PBFAST_BENCH_REALTIME_WRITES", "30" if FULL else "5"))
IDLE_STREAMS = int(os.environ.get("PBFAST_BENCH_IDLE_STREAMS", "2000" if FULL else "50"))
REST_SECONDS = 5 if FULL else 1
SUPERUSER = {"email": "bench@example.com", "password": "bench-password-1"}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class _Stream(asyncio.Protocol):
    """One SSE client on a raw connection: the arrival time of each event, by the record's ``n``.

    A protocol that only looks for ``"n":`` in what arrives: with 1,000 clients in this one process, reading
    line by line (a StreamReader, ``readline`` and a JSON decode per event) cost ~16 ms of CPU per write, time
    every later client's arrival waited for on a 2-core machine, whatever the server."""

    _N = re.compile(rb'"n":(-?\d+)')

    def __init__(self) -> None:
        self.client_id = ""
        self.arrivals: dict[int, float] = {}
        self._pending = b""  # the end of what arrived, after the last complete event
        self._connected: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None

    async def open(self, host: str, port: int, path: str) -> None:
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        await loop.create_connection(lambda: self, host, port)
        assert self._transport is not None
        self._transport.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await self._connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        data = self._pending + data if self._pending else data
        complete = data.rfind(b"\n\n") + 2  # events end with a blank line (chunk framing aside)
        self._pending = data[complete:] if complete > 1 else data
        if complete < 2:
            return
        if not self.client_id:
            found = re.search(rb"id:(\w+)", data)
            if found is None:
                self._pending = data
                return
            self.client_id = found.group(1).decode()
            assert self._connected is not None
            self._connected.set_result(None)
        for number in self._N.findall(data, 0, complete):
            self.arrivals[int(number)] = now

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(AssertionError("stream closed before PB_CONNECT"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _run(gw: str, token: str, pid: int, base: str = "/t/bench", cpu: list[float] | None = None,
               client_cpu: list[float] | None = None, also: tuple[int, ...] = ()) -> tuple[list[float], list[float], float]:
    """Fan-out through ``gw`` to a tenant at ``base`` (``""``: a stock PocketBase); the server's CPU seconds
    during the writes (``pid`` and the processes ``also``) are appended to ``cpu``, this process's (the clients
    reading the events) to ``client_cpu``."""
    url = httpx.URL(gw)
    assert url.host and url.port
    pids = (pid, *also)
    before = sum(_rss_kb(p) for p in pids)
    streams = [_Stream() for _ in range(CLIENTS)]
    for start in range(0, CLIENTS, 100):
        await asyncio.gather(*(s.open(url.host, url.port, f"{base}/api/realtime") for s in streams[start:start + 100]))
    # 1,000 subscriptions over 32 connections: on a machine at load 20-30 some waited over 60 s for one.
    async with httpx.AsyncClient(base_url=f"{gw}{base}", timeout=httpx.Timeout(60, pool=300),
                                 limits=httpx.Limits(max_connections=32)) as client:
        async def subscribe(stream: _Stream) -> None:
            answer = await client.post("/api/realtime", json={"clientId": stream.client_id,
                                                              "subscriptions": ["posts/*"]})
            assert answer.status_code == 204, answer.text

        await asyncio.gather(*(subscribe(s) for s in streams))
        await asyncio.sleep(1.0)
        per_stream_kb = (sum(_rss_kb(p) for p in pids) - before) / CLIENTS
        deliveries: list[float] = []
        slowest: list[float] = []
        cpu_before, client_before = sum(_cpu_seconds(p) for p in pids), time.process_time()
        for n in range(WRITES):
            started = time.perf_counter()
            created = await client.post("/api/collections/posts/records", json={"n": n},
                                        headers={"Authorization": token})
            assert created.status_code == 200, created.text
            deadline = time.monotonic() + 30
            while any(n not in s.arrivals for s in streams):
                assert time.monotonic() < deadline, f"write {n} did not reach every client"
                await asyncio.sleep(0.001)
            latencies = [s.arrivals[n] - started for s in streams]
            deliveries += latencies
            slowest.append(max(latencies))
            await asyncio.sleep(0.05)
        if cpu is not None:
            cpu.append(sum(_cpu_seconds(p) for p in pids) - cpu_before)
        if client_cpu is not None:
            client_cpu.append(time.process_time() - client_before)
    for stream in streams:
        stream.close()
    return deliveries, slowest, per_stream_kb


def _q(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else values[0]


@pytest.mark.timeout(600)
def test_realtime_fanout_and_idle_memory(pbfast_process: object, tmp_path: Path, bench_report: list[str]) -> None:
    process, cp, gw, token = all_in_one_with_public_posts(pbfast_process, tmp_path / "pbfast", "bench", SUPERUSER)
    assert process.proc is not None
    cpu: list[float] = []
    client_cpu: list[float] = []
    deliveries, slowest, per_stream_kb = uvloop.run(_run(gw, token, process.proc.pid, cpu=cpu,  # a fast client side
                                                         client_cpu=client_cpu))
    bench_report.append(
        f"realtime: {CLIENTS} clients, {WRITES} writes: delivery p50 {_q(deliveries, 50) * 1000:.1f} ms, "
        f"p99 {_q(deliveries, 99) * 1000:.1f} ms; slowest delivery per write p99 {_q(slowest, 99) * 1000:.1f} ms; "
        f"{per_stream_kb:.1f} KB per idle stream (gateway + node); server CPU {cpu[0] / WRITES * 1000:.1f} ms "
        f"per write (sleeps between writes included), the clients' {client_cpu[0] / WRITES * 1000:.1f} ms")
    assert len(deliveries) == CLIENTS * WRITES


async def _idle_streams(gw: str, count: int, tenants: list[str], pids: dict[str, int],
                        rest_p99: Callable[[], float]) -> tuple[dict[str, float], float]:
    """KB of RSS per idle subscribed stream, by process (the streams spread over ``tenants``), and the REST
    p99 of another tenant measured while they are open."""
    url = httpx.URL(gw)
    assert url.host and url.port
    before = {name: _rss_kb(pid) for name, pid in pids.items()}
    streams = [_Stream() for _ in range(count)]
    for start in range(0, count, 100):
        await asyncio.gather(*(s.open(url.host, url.port, f"/t/{tenants[(start + n) % len(tenants)]}/api/realtime")
                               for n, s in enumerate(streams[start:start + 100])))
    async with httpx.AsyncClient(base_url=gw, timeout=60, limits=httpx.Limits(max_connections=32)) as client:
        async def subscribe(index: int, stream: _Stream) -> None:
            answer = await client.post(f"/t/{tenants[index % len(tenants)]}/api/realtime",
                                       json={"clientId": stream.client_id, "subscriptions": ["posts/*"]})
            assert answer.status_code == 204, answer.text

        for start in range(0, count, 500):
            await asyncio.gather(*(subscribe(start + n, s) for n, s in enumerate(streams[start:start + 500])))
    await asyncio.sleep(1.0)
    per_stream = {name: (_rss_kb(pid) - before[name]) / count for name, pid in pids.items()}
    loaded_p99 = await asyncio.to_thread(rest_p99)
    for stream in streams:
        stream.close()
    return per_stream, loaded_p99


def _raise_file_limit() -> int:
    """Open files allowed to this process and the servers it starts: the soft limit raised to the hard one
    (each stream is a socket in the client and one in the gateway; before the multiplexed connection to the
    node's holder it was two in the gateway and one in the node)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@pytest.mark.timeout(1200)  # 9,500 streams on a loaded machine
def test_realtime_idle_memory_per_process(tmp_path: Path, bench_report: list[str]) -> None:
    """The same, with the gateway and the tenant node in processes of their own (the production layout), the
    streams spread over tenants of at most 4,000 streams each; and another tenant's REST p99 (a record list,
    wrk) before and while the streams are open."""
    from cpcluster import ADMIN, CLUSTER_TOKEN, start_cluster, start_node, wait_until  # noqa: PLC0415
    from helpers import PbfastProcess, free_port  # noqa: PLC0415
    from test_control_plane_bench import run_wrk  # noqa: PLC0415
    from test_gateway_bench import _latency_ms  # noqa: PLC0415

    started: list[PbfastProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> PbfastProcess:
        process = PbfastProcess(args, tmp_path / f"pbfast-{len(started)}.log", env or {}).start()
        started.append(process)
        return process

    count = IDLE_STREAMS
    limit = _raise_file_limit()
    # One descriptor per stream in the gateway (its client's; the node's streams share one connection).
    assert count + 200 <= limit, f"{count} streams need {count + 200} open files in the gateway and the client; limit {limit}"
    tenants = [f"idle{n}" for n in range((count + 3999) // 4000)]
    try:
        cp = start_cluster(start, tmp_path, 1)[0]
        start_node(start, "node-a", [cp.url], tmp_path / "nodes")
        wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 1)
        port = free_port()
        gateway = start(["serve", "--mode=gateway", f"--http-addr=127.0.0.1:{port}",
                         f"--control-plane-addrs=127.0.0.1:{cp.http_port}", f"--cluster-token={CLUSTER_TOKEN}"])
        gw = f"http://127.0.0.1:{port}"
        gateway.wait_healthy([gw])
        for tenant in [*tenants, "rest"]:
            created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": tenant, "superuser": SUPERUSER},
                                 timeout=10)
            assert created.status_code == 200, created.text
            wait_until(lambda tenant=tenant: httpx.get(f"{gw}/t/{tenant}/api/health").status_code == 200)
            token = httpx.post(f"{gw}/t/{tenant}/api/collections/_superusers/auth-with-password", timeout=30, json={
                "identity": SUPERUSER["email"], "password": SUPERUSER["password"]}).json()["token"]
            made = httpx.post(f"{gw}/t/{tenant}/api/collections", headers={"Authorization": token}, json={
                "name": "posts", "type": "base", "listRule": "", "viewRule": "",
                "fields": [{"name": "n", "type": "number"}]})
            assert made.status_code == 200, made.text

        def rest_p99() -> float:
            _, latency, errors = run_wrk(f"{gw}/t/rest/api/collections/posts/records?perPage=5", None, 16,
                                         REST_SECONDS)
            assert errors == 0
            return _latency_ms(latency, "99")

        quiet_p99 = rest_p99()
        node, gateway_process = started[1].proc, gateway.proc
        assert node is not None and gateway_process is not None
        per_stream, loaded_p99 = uvloop.run(_idle_streams(gw, count, tenants,
                                                          {"node": node.pid, "gateway": gateway_process.pid}, rest_p99))
        bench_report.append(f"realtime: {count} idle streams over {len(tenants)} tenants: {per_stream['node']:.1f} KB "
                            f"each on the tenant node, {per_stream['gateway']:.1f} KB on the gateway; another "
                            f"tenant's list p99 {quiet_p99:.2f} ms without them, {loaded_p99:.2f} ms with them")
    finally:
        for process in started:
            if process.proc is not None and process.proc.poll() is None:
                process.stop()


def _pocketbase_with_posts(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A stock ``pocketbase serve`` with a superuser and a public ``posts`` collection: (process, URL, token)."""
    from helpers import free_port  # noqa: PLC0415
    from pbharness import wait_http  # noqa: PLC0415

    subprocess.run(["pocketbase", "superuser", "upsert", SUPERUSER["email"], SUPERUSER["password"], "--dir",
                    str(data_dir)], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(["pocketbase", "serve", "--dir", str(data_dir), "--http", f"127.0.0.1:{port}"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url)
    token = httpx.post(f"{url}/api/collections/_superusers/auth-with-password", timeout=30,
                       json={"identity": SUPERUSER["email"], "password": SUPERUSER["password"]}).json()["token"]
    made = httpx.post(f"{url}/api/collections", headers={"Authorization": token}, json={
        "name": "posts", "type": "base", "listRule": "", "viewRule": "", "fields": [{"name": "n", "type": "number"}]})
    assert made.status_code == 200, made.text
    return proc, url, token


@pytest.mark.timeout(900)  # pyproject's 120 s is too short for four rounds of 1,000 clients
def test_realtime_side_by_side_with_pocketbase(pbfast_process: object, tmp_path: Path, bench_report: list[str]) -> None:
    """Fan-out and memory per idle stream of one tenant: a pbfast all-in-one (gateway + node, one process) and a
    stock ``pocketbase serve``, the same clients and writes, in alternating rounds
    (``PBFAST_BENCH_SIDE_ROUNDS``, default 2). Goal (issue 16): at least 2x the connections per GB, a fan-out
    p99 no worse."""
    rounds = int(os.environ.get("PBFAST_BENCH_SIDE_ROUNDS", "2"))
    process, cp, gw, token = all_in_one_with_public_posts(pbfast_process, tmp_path / "pbfast", "bench", SUPERUSER)
    assert process.proc is not None
    (tmp_path / "pb").mkdir()
    pocketbase, pb_url, pb_token = _pocketbase_with_posts(tmp_path / "pb", tmp_path / "pocketbase.log")
    try:
        for round_ in range(rounds):
            for name, url, auth, pid, base in (("pbfast", gw, token, process.proc.pid, "/t/bench"),
                                               ("PocketBase", pb_url, pb_token, pocketbase.pid, "")):
                cpu: list[float] = []
                client_cpu: list[float] = []
                deliveries, slowest, per_stream_kb = uvloop.run(_run(url, auth, pid, base, cpu, client_cpu))
                per_gb = (1 << 20) / per_stream_kb if per_stream_kb > 0 else float("inf")
                bench_report.append(
                    f"realtime side by side, round {round_ + 1}, {name}: {CLIENTS} clients, {WRITES} writes: delivery "
                    f"p50 {_q(deliveries, 50) * 1000:.1f} ms, p99 {_q(deliveries, 99) * 1000:.1f} ms, slowest per "
                    f"write p99 {_q(slowest, 99) * 1000:.1f} ms; {per_stream_kb:.1f} KB per idle stream "
                    f"({per_gb:,.0f} streams per GB); server CPU {cpu[0] / WRITES * 1000:.1f} ms per write, "
                    f"the clients' {client_cpu[0] / WRITES * 1000:.1f} ms")
    finally:
        pocketbase.terminate()
        pocketbase.wait(10)


def _trees_to_compare(new_tree: str) -> list[tuple[str, str]]:
    """Old and new tree; in the short form without ``PBFAST_BENCH_OLD_TREE`` the checkout alone (compared with
    itself it would only measure noise, at twice the cost of a CI run)."""
    old_tree = os.environ.get("PBFAST_BENCH_OLD_TREE")
    if old_tree is None and not FULL:
        return [("new", new_tree)]
    return [("old", old_tree or new_tree), ("new", new_tree)]


@pytest.mark.timeout(1800)
def test_realtime_fanout_old_and_new(pbfast_process: object, tmp_path: Path, bench_report: list[str]) -> None:
    """The fan-out of this checkout and of ``PBFAST_BENCH_OLD_TREE`` (another checkout with its extension built
    in place, e.g. a ``git worktree`` of the commit before a change) alternated round by round in one run
    (``PBFAST_BENCH_AB_ROUNDS``, default 2, 1 in the short form; old-new, then new-old): on a shared machine
    only a side-by-side ratio means something. Without ``PBFAST_BENCH_OLD_TREE`` the checkout is compared with itself (the
    noise between rounds)."""
    new_tree = str(Path(__file__).resolve().parent.parent)
    trees = _trees_to_compare(new_tree)
    for round_ in range(int(os.environ.get("PBFAST_BENCH_AB_ROUNDS", "2" if FULL else "1"))):
        for name, tree in trees if round_ % 2 == 0 else trees[::-1]:
            def start(args: list[str], tree: str = tree) -> object:
                return pbfast_process(args, env={"PYTHONPATH": tree}, cwd=Path(tree))  # type: ignore[operator]

            process, _, gw, token = all_in_one_with_public_posts(start, tmp_path / f"{name}-{round_}", "bench",
                                                                 SUPERUSER)
            assert process.proc is not None
            cpu: list[float] = []
            client_cpu: list[float] = []
            deliveries, slowest, per_stream_kb = uvloop.run(_run(gw, token, process.proc.pid, cpu=cpu,
                                                                 client_cpu=client_cpu))
            bench_report.append(
                f"realtime old/new, round {round_ + 1}, {name}: {CLIENTS} clients, {WRITES} writes: delivery p50 "
                f"{_q(deliveries, 50) * 1000:.1f} ms, p99 {_q(deliveries, 99) * 1000:.1f} ms, slowest per write p99 "
                f"{_q(slowest, 99) * 1000:.1f} ms; server CPU {cpu[0] / WRITES * 1000:.1f} ms per write, the "
                f"clients' {client_cpu[0] / WRITES * 1000:.1f} ms; load {os.getloadavg()[0]:.1f}")
            process.stop()


@pytest.mark.timeout(1800)
def test_realtime_fanout_separate_gateway_old_and_new(tmp_path: Path, bench_report: list[str]) -> None:
    """The fan-out in the production layout (control plane, tenant node and gateway in processes of their own):
    one node of this checkout, and two gateways, one of ``PBFAST_BENCH_OLD_TREE`` (default: this checkout) and
    one of this checkout, alternated round by round (``PBFAST_BENCH_AB_ROUNDS``) on the same tenant. The node's
    holder serves both (a connection per stream for a gateway before the multiplexed connection, one
    connection for all its streams after it). Server CPU: node and gateway together."""
    from cpcluster import ADMIN, CLUSTER_TOKEN, start_cluster, start_node, wait_until  # noqa: PLC0415
    from helpers import PbfastProcess, free_port  # noqa: PLC0415

    started: list[PbfastProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> PbfastProcess:
        process = PbfastProcess(args, tmp_path / f"pbfast-{len(started)}.log", env or {}, cwd).start()
        started.append(process)
        return process

    _raise_file_limit()
    new_tree = str(Path(__file__).resolve().parent.parent)
    trees = _trees_to_compare(new_tree)
    try:
        cp = start_cluster(start, tmp_path, 1, node_timeout=60)[0]  # a loaded machine: no lease lost mid-run
        node, _ = start_node(start, "node-a", [cp.url], tmp_path / "nodes")
        wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 1)
        gateways: dict[str, tuple[str, PbfastProcess]] = {}
        for name, tree in trees:
            port = free_port()
            gateway = start(["serve", "--mode=gateway", f"--http-addr=127.0.0.1:{port}",
                             f"--control-plane-addrs=127.0.0.1:{cp.http_port}", f"--cluster-token={CLUSTER_TOKEN}"],
                            {"PYTHONPATH": tree}, Path(tree))
            gateway.wait_healthy([f"http://127.0.0.1:{port}"])
            gateways[name] = (f"http://127.0.0.1:{port}", gateway)
        gw = gateways["new"][0]
        created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "bench", "superuser": SUPERUSER},
                             timeout=10)
        assert created.status_code == 200, created.text
        wait_until(lambda: httpx.get(f"{gw}/t/bench/api/health").status_code == 200)
        token = httpx.post(f"{gw}/t/bench/api/collections/_superusers/auth-with-password", timeout=30, json={
            "identity": SUPERUSER["email"], "password": SUPERUSER["password"]}).json()["token"]
        made = httpx.post(f"{gw}/t/bench/api/collections", headers={"Authorization": token}, json={
            "name": "posts", "type": "base", "listRule": "", "viewRule": "", "fields": [{"name": "n", "type": "number"}]})
        assert made.status_code == 200, made.text
        assert node.proc is not None
        for round_ in range(int(os.environ.get("PBFAST_BENCH_AB_ROUNDS", "2" if FULL else "1"))):
            for name, _ in trees if round_ % 2 == 0 else trees[::-1]:
                url, gateway = gateways[name]
                assert gateway.proc is not None
                cpu: list[float] = []
                client_cpu: list[float] = []
                deliveries, slowest, per_stream_kb = uvloop.run(_run(url, token, node.proc.pid, cpu=cpu,
                                                                     client_cpu=client_cpu, also=(gateway.proc.pid,)))
                bench_report.append(
                    f"realtime separate gateway old/new, round {round_ + 1}, {name}: {CLIENTS} clients, {WRITES} "
                    f"writes: delivery p50 {_q(deliveries, 50) * 1000:.1f} ms, p99 {_q(deliveries, 99) * 1000:.1f} ms, "
                    f"slowest per write p99 {_q(slowest, 99) * 1000:.1f} ms; server CPU (node + gateway) "
                    f"{cpu[0] / WRITES * 1000:.1f} ms per write, the clients' {client_cpu[0] / WRITES * 1000:.1f} ms; "
                    f"RSS {per_stream_kb:.1f} KB per stream; load {os.getloadavg()[0]:.1f}")
                time.sleep(2.0)  # the closed streams are forgotten before the next round
    finally:
        for process in started:
            if process.proc is not None and process.proc.poll() is None:
                process.stop()
