"""Many tenants, the real workload (issue 14, goal 3): one pbfast all-in-one vs one ``pocketbase serve``
process per tenant behind nginx (how PocketBase is hosted for many apps today), same machine, same run.

Every tenant starts from the same PocketBase data dir (made by stock PocketBase 0.40.6: a public ``posts``
collection of :data:`RECORDS` records), copied once per tenant for both sides. Traffic is uniform over the
tenants, wrk (one thread, :data:`CONNECTIONS` connections) with a mix per request of 70 % view by id, 20 %
list (filter + sort, perPage 20) and 10 % create, through ``/t/{id}/...`` on both sides (pbfast's gateway;
nginx with one keep-alive upstream per tenant). Measured per side, one side at a time:

- throughput and p99 of the mix, after one warm-up request per tenant;
- CPU per request: user + system CPU seconds of every process of the side (from /proc) during the mix, per
  10,000 requests (the figure that does not depend on how many cores the machine has);
- memory: the RSS of every process of the side (pbfast: the all-in-one and its children, Litestream
  included; PocketBase: every ``pocketbase`` process plus nginx) with all tenants open, and their PSS (each
  shared page counted once, split between the processes that map it: the sum of RSS counts the code of the
  ``pocketbase`` binary once per process, so it overstates a process-per-tenant side more than pbfast's);
- first request to an idle tenant: pbfast's tenants closed (the server restarted on its data dir; the
  first request opens the tenant from local disk), PocketBase's process stopped and started on demand (as
  PocketHost hibernates idle apps): the time from the request (or the process start) to its answer.

The process-per-tenant side is measured up to :data:`PB_MAX` tenants, and stops starting processes earlier
if the machine's available memory falls below :data:`MIN_AVAILABLE_MIB`: the mix then runs over the tenants it
could start, and the report says where it stopped.

pbfast keeps every tenant open (``--max-tenants`` = tenants + 10) unless ``PBFAST_BENCH_MAX_TENANTS`` says
otherwise: with fewer, the uniform mix keeps evicting tenants and opening them again (what that costs).

Short form (CI): 4 tenants, 2 s. Full form (figures in benchmarks/RESULTS.md):
``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_many_tenants_bench.py -s -p no:cacheprovider``
(100 and 1,000 tenants, ~7 min; ``PBFAST_BENCH_TENANTS=100`` picks the counts, ``PBFAST_BENCH_PB_MAX`` the cap,
``PBFAST_BENCH_WORKERS=2`` pbfast's ``--workers``, ``PBFAST_BENCH_MAX_TENANTS=500`` its ``--max-tenants``,
``PBFAST_BENCH_FLAGS=--gateway-data-path=python`` any other flags of pbfast's, comma-separated).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import apsw
import httpx
import pytest
from bench_tools import needs_tools

from cpcluster import Start
from helpers import free_port
from pbharness import ADMIN_TOKEN, start_all_in_one, wait_http
from test_control_plane_bench import run_wrk
from test_cpu_per_request_bench import CLOCK_TICKS
from test_gateway_bench import _latency_ms

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
TENANT_COUNTS = [int(n) for n in os.environ.get("PBFAST_BENCH_TENANTS", "100,1000" if FULL else "4").split(",")]
PB_MAX = int(os.environ.get("PBFAST_BENCH_PB_MAX", "1000"))
MIN_AVAILABLE_MIB = 3072  # stop starting PocketBase processes below this much available memory...
PB_GROWTH_MIB = 30  # ...counting what each started one still grows by once served (~7 MiB started, ~32 served)
SECONDS = 10 if FULL else 2
CONNECTIONS = 64
RECORDS = 1_000
COLD_SAMPLES = 20 if FULL else 3
WORKERS = os.environ.get("PBFAST_BENCH_WORKERS")  # pbfast's --workers (default: pbfast's own default)
MAX_OPEN = os.environ.get("PBFAST_BENCH_MAX_TENANTS")  # pbfast's --max-tenants (default: every tenant stays open)
FLAGS = [flag for flag in os.environ.get("PBFAST_BENCH_FLAGS", "").split(",") if flag]  # other pbfast flags
SUPERUSER = ("many@example.com", "many-password-1")
COLLECTION = {
    "name": "posts", "type": "base", "listRule": "", "viewRule": "", "createRule": "",
    "fields": [{"name": "title", "type": "text"}, {"name": "num", "type": "number"},
               {"name": "created", "type": "autodate", "onCreate": True},
               {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True}],
    "indexes": ["CREATE INDEX idx_posts_created ON posts (created)"],
}
MIX_LUA = """
local tenants = {tenants}
math.randomseed(os.time())
request = function()
  local base = "/t/t" .. math.random(0, tenants - 1) .. "/api/collections/posts/records"
  local pick = math.random()
  if pick < 0.7 then
    return wrk.format("GET", base .. "/" .. string.format("%015d", math.random(0, {records} - 1)))
  elseif pick < 0.9 then
    return wrk.format("GET", base .. "?perPage=20&sort=-created&filter=(num%3E%3D500)")
  end
  return wrk.format("POST", base, {{["Content-Type"] = "application/json"}}, '{{"title":"by wrk","num":7}}')
end
"""
NGINX_CONF = """
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
{user}
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{upstreams}
    map $tenant $app {{
{routes}
    }}
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/t/(?<tenant>[a-z0-9]+)(?<rest>/.*)$ {{
            proxy_pass http://$app$rest$is_args$args;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


@dataclass
class Side:
    """One side's figures at one tenant count."""

    name: str
    tenants: int
    rate: float
    p99_ms: float
    errors: int
    cpu_per_10k: float  # CPU seconds of the side per 10,000 requests of the mix
    rss_mib: float
    pss_mib: float
    cold_ms: list[float]

    def line(self) -> str:
        cold = f"p50 {statistics.median(self.cold_ms):.0f} ms, max {max(self.cold_ms):.0f} ms" if self.cold_ms \
            else "n/a"
        return (f"many tenants: {self.name:<26} {self.tenants:>5} tenants: {self.rate:8.0f} req/s, p99 "
                f"{self.p99_ms:7.1f} ms, non-2xx {self.errors}, CPU {self.cpu_per_10k:5.1f} s per 10k requests, RSS "
                f"{self.rss_mib:8.0f} MiB (PSS {self.pss_mib:6.0f} MiB), first request to an idle tenant {cold}")


def _template(directory: Path) -> Path:
    """A PocketBase data dir made by stock PocketBase: the superuser, ``posts`` and its seeded records."""
    data = directory / "pb_data"
    subprocess.run(["pocketbase", "superuser", "upsert", *SUPERUSER, "--dir", str(data)], check=True,
                   capture_output=True)
    port = free_port()
    process = subprocess.Popen(["pocketbase", "serve", "--dir", str(data), "--http", f"127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url)
        token = httpx.post(f"{url}/api/collections/_superusers/auth-with-password",
                           json={"identity": SUPERUSER[0], "password": SUPERUSER[1]}).json()["token"]
        created = httpx.post(f"{url}/api/collections", json=COLLECTION, headers={"Authorization": token}, timeout=30)
        assert created.status_code == 200, created.text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    rng = random.Random(7)
    connection = apsw.Connection(str(data / "data.db"))
    with connection:
        connection.executemany(
            "INSERT INTO posts (id, title, num, created, updated) VALUES (?, ?, ?, ?, ?)",
            ((f"{i:015d}", f"title {rng.random():.6f}", float(i),
              f"2025-01-01 00:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
              f"2025-01-01 00:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z") for i in range(RECORDS)))
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return data


def _copy_data(template: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("data.db", "auxiliary.db"):
        if (template / name).exists():
            shutil.copyfile(template / name, target / name)


def _tree_rss_mib(pids: list[int]) -> float:
    """The RSS of ``pids`` and all their descendants."""
    return _tree_memory_mib(pids, "/status", "VmRSS:")


def _tree_pss_mib(pids: list[int]) -> float:
    """The PSS of ``pids`` and all their descendants (a page shared by n processes counts 1/n in each)."""
    return _tree_memory_mib(pids, "/smaps_rollup", "Pss:")


def _tree_memory_mib(pids: list[int], file: str, field: str) -> float:
    """The sum of ``field`` (kB) in ``/proc/<pid><file>`` over ``pids`` and all their descendants."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(status.parent.name))
    total, seen, todo = 0, set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}{file}").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _tree_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` and their live descendants (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(status.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    total, seen, todo = 0.0, set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            total += times.get(pid, 0.0)
            todo.extend(children.get(pid, []))
    return total


def _mix(url: str, tenants: int, directory: Path, pids: list[int]) -> tuple[float, float, int, float]:
    """Warm every tenant, then the mixed traffic: ``(req/s, p99 ms, non-2xx, CPU s per 10k requests)``, the CPU
    of ``pids`` and their descendants."""
    script = directory / f"mix-{tenants}.lua"
    script.write_text(MIX_LUA.format(tenants=tenants, records=RECORDS))
    with httpx.Client(timeout=60) as client:
        for i in range(tenants):
            answer = client.get(f"{url}/t/t{i}/api/collections/posts/records/{0:015d}")
            assert answer.status_code == 200, answer.text
    cpu_before = _tree_cpu(pids)
    rate, latency, errors = run_wrk(url, script, CONNECTIONS, SECONDS)
    cpu = _tree_cpu(pids) - cpu_before
    return rate, _latency_ms(latency, "99"), errors, cpu / (rate * SECONDS) * 10_000


def _first_request_ms(url: str, tenant: str) -> float:
    started = time.perf_counter()
    answer = httpx.get(f"{url}/t/{tenant}/api/collections/posts/records/{1:015d}", timeout=60)
    assert answer.status_code == 200, answer.text
    return (time.perf_counter() - started) * 1000


def _pbfast_side(start: Start, template: Path, tenants: int, directory: Path) -> Side:
    data_dir = directory / "pbfast"
    for i in range(tenants):
        _copy_data(template, data_dir / "tenants" / f"t{i}")
    max_open = int(MAX_OPEN) if MAX_OPEN else tenants + 10
    extra = (f"--max-tenants={max_open}", *([f"--workers={WORKERS}"] if WORKERS else []), *FLAGS)
    process, cp, gw = start_all_in_one(start, data_dir, *extra)
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        for i in range(tenants):
            created = client.post(f"{cp}/api/cp/tenants", json={"id": f"t{i}"})
            assert created.status_code == 200, created.text
    deadline = time.monotonic() + 120 + tenants  # a copy without pbfast's marker: its first open probes the replica

    def served(i: int) -> None:  # placed (those created before the node joined are placed after) and routed
        while httpx.get(f"{gw}/t/t{i}/api/health", timeout=60).status_code != 200:
            assert time.monotonic() < deadline, f"tenant t{i} was never served"
            time.sleep(0.05)

    with ThreadPoolExecutor(8) as pool:  # first opens overlap (each waits on a litestream process)
        list(pool.map(served, range(tenants)))
    assert process.proc is not None
    rate, p99, errors, cpu = _mix(gw, tenants, directory, [process.proc.pid])
    rss, pss = _tree_rss_mib([process.proc.pid]), _tree_pss_mib([process.proc.pid])
    # Idle tenants: the server restarted on its data dir holds every tenant closed until its first request.
    process.stop()
    process, cp, gw = start_all_in_one(start, data_dir, *extra)
    deadline = time.monotonic() + 60
    while httpx.get(f"{gw}/t/t0/api/health").status_code != 200:  # the routes reached the gateway (t0 opened)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sample = random.Random(3).sample(range(1, tenants), min(COLD_SAMPLES, tenants - 1))
    cold = [_first_request_ms(gw, f"t{i}") for i in sample]
    process.stop()
    name = "pbfast (one all-in-one)" if max_open >= tenants else f"pbfast (--max-tenants={max_open})"
    return Side(name, tenants, rate, p99, errors, cpu, rss, pss, cold)


def _start_pocketbase(data: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["pocketbase", "serve", "--dir", str(data), "--http", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def _nginx(directory: Path, ports: list[int]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    upstreams = "".join(f"    upstream t{i} {{ server 127.0.0.1:{p}; keepalive 8; }}\n" for i, p in enumerate(ports))
    routes = "".join(f"        t{i} t{i};\n" for i in range(len(ports)))
    user = "user root;" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=directory, user=user, upstreams=upstreams, routes=routes, port=port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen([nginx, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{url}/t/t0/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (directory / "error.log").read_text()
            time.sleep(0.05)
        yield url, process
    finally:
        process.send_signal(signal.SIGQUIT)
        process.wait(timeout=10)


def _pocketbase_side(template: Path, tenants: int, directory: Path) -> tuple[Side | None, str]:
    """The process-per-tenant side over as many of ``tenants`` as it could start (None if none), and why it
    stopped before ``tenants`` ("" when it did not)."""
    processes: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    stopped = ""
    try:
        for i in range(tenants):
            if i >= PB_MAX:
                stopped = f"stopped at {i} processes (PBFAST_BENCH_PB_MAX={PB_MAX})"
                break
            if i % 20 == 0 and _available_mib() - i * PB_GROWTH_MIB < MIN_AVAILABLE_MIB:
                stopped = (f"stopped at {i} processes: {_available_mib():.0f} MiB of memory left, "
                           f"~{i * PB_GROWTH_MIB} MiB of it needed once they are served")
                break
            data = directory / f"t{i}"
            _copy_data(template, data)
            ports.append(free_port())
            processes.append(_start_pocketbase(data, ports[-1]))
        if not processes:
            return None, stopped
        serving = len(processes)
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}", timeout=120)
        with _nginx(directory / "nginx", ports) as (url, nginx):
            rate, p99, errors, cpu = _mix(url, serving, directory, [p.pid for p in processes] + [nginx.pid])
            rss = _tree_rss_mib([p.pid for p in processes] + [nginx.pid])
            pss = _tree_pss_mib([p.pid for p in processes] + [nginx.pid])
            cold = []
            for i in random.Random(3).sample(range(serving), min(COLD_SAMPLES, serving)):
                processes[i].send_signal(signal.SIGTERM)  # hibernated
                processes[i].wait(timeout=30)
                started = time.perf_counter()
                processes[i] = _start_pocketbase(directory / f"t{i}", ports[i])
                while True:  # what a PocketHost-style proxy does: start the app, forward once it listens
                    try:
                        if httpx.get(f"{url}/t/t{i}/api/collections/posts/records/{1:015d}",
                                     timeout=5).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.005)
                cold.append((time.perf_counter() - started) * 1000)
        return Side("PocketBase (one per tenant)", serving, rate, p99, errors, cpu, rss, pss, cold), stopped
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _report(report: list[str], line: str) -> None:
    print(f"\n[bench] {line}", flush=True)  # at once: a long run stopped half-way still shows what it measured
    report.append(line)


@needs_tools("wrk", "nginx", "pocketbase")
@pytest.mark.timeout(3600 if FULL else 120)  # 1,000 tenants: minutes of first opens and process starts per side
def test_many_tenants_pbfast_vs_one_pocketbase_per_tenant(pbfast_process: Start, tmp_path: Path,
                                                          bench_report: list[str]) -> None:
    template = _template(tmp_path / "template")
    for tenants in TENANT_COUNTS:
        fast = _pbfast_side(pbfast_process, template, tenants, tmp_path / f"fast-{tenants}")
        _report(bench_report, fast.line())
        stock, stopped = _pocketbase_side(template, tenants, tmp_path / f"stock-{tenants}")
        if stopped:
            _report(bench_report, f"many tenants: PocketBase (one per tenant)  {tenants:>5} tenants: {stopped}")
        if stock is None:
            continue
        _report(bench_report, stock.line())
        _report(bench_report, f"many tenants: {tenants} tenants (PocketBase: {stock.tenants}), pbfast / PocketBase: throughput "
                            f"{fast.rate / stock.rate:.2f}x, p99 {fast.p99_ms / stock.p99_ms:.2f}x, CPU per request "
                            f"{fast.cpu_per_10k / stock.cpu_per_10k:.2f}x, memory per tenant "
                            f"{fast.rss_mib / fast.tenants / (stock.rss_mib / stock.tenants):.2f}x (RSS), "
                            f"{fast.pss_mib / fast.tenants / (stock.pss_mib / stock.tenants):.2f}x (PSS)")
        assert fast.errors == 0 and stock.errors == 0
