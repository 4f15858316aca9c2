"""The gateway's proxy hop: a small GET through ``pbfast serve --mode=gateway`` vs the same node direct vs nginx.

One control plane, one tenant node, one tenant; wrk (one thread, 32 connections) asks for the tenant's
``/api/health`` (the smallest request that runs the node's whole tenant path: fencing, quota, pin):

- direct: the node's ``/t/{id}/api/health`` with the cluster token and epoch headers (what a gateway sends),
- gateway: ``/t/{id}/api/health`` on the pbfast gateway's native data path with one thread (route resolve,
  header rewrite, pooled keep-alive),
- nginx: the same node behind nginx as a reverse proxy (one worker, upstream keepalive 64, HTTP/1.1,
  the two x-pbfast headers set by ``proxy_set_header``),
- gateway-python: the gateway with ``--gateway-data-path=python`` (throughput only, for the record).

Throughput at 32 connections, and the p50 of one connection at a time (a hop's added latency without
queueing). Loopback, sharing the machine's cores with wrk and the node. Short by default (CI); long form:
``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_gateway_bench.py -s -p no:cacheprovider``
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from bench_tools import headers_script, needs_tools, node_direct_tenant

from cpcluster import CLUSTER_TOKEN, Start
from helpers import free_port
from test_control_plane_bench import run_wrk
from test_cpu_per_request_bench import process_tree_cpu

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
TENANT = "bench"

NGINX_CONF = """
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream node {{
        server {node};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://node;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header x-pbfast-cluster-token "{token}";
            proxy_set_header x-pbfast-epoch "{epoch}";
        }}
    }}
}}
"""


def _latency_ms(line: str, label: str) -> float:
    """``p50``/``p99`` in ms from wrk's latency distribution line (``50%    1.23ms 99%  4.56ms``)."""
    match = re.search(label + r"%\s+([\d.]+)(us|ms|s)\b", line)
    assert match is not None, line
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _start_nginx(tmp: Path, node: str, epoch: int, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""  # workers of a root master would run as nobody
    conf.write_text(NGINX_CONF.format(tmp=tmp, node=node, port=port, token=CLUSTER_TOKEN, epoch=epoch, user=user,
                                      workers=workers))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen([nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(f"{url}/t/{TENANT}/api/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"nginx did not come up: {(tmp / 'error.log').read_text(errors='replace')}")
        time.sleep(0.05)


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _start_gateway(start: Start, cp_port: int, extra: list[str]) -> tuple[str, int]:
    """A gateway with ``extra`` flags: its URL and its process id."""
    port = free_port()
    process = start(["serve", "--mode=gateway", f"--http-addr=127.0.0.1:{port}",
                     f"--control-plane-addrs=127.0.0.1:{cp_port}", f"--cluster-token={CLUSTER_TOKEN}", *extra])
    url = f"http://127.0.0.1:{port}"
    process.wait_healthy([url])
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/t/{TENANT}/api/health").status_code != 200:  # the route reached the gateway
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert process.proc is not None
    return url, process.proc.pid


@needs_tools("wrk", "nginx")
@pytest.mark.timeout(900 if FULL else 120)  # the long form runs for minutes
def test_gateway_vs_direct_vs_nginx(pbfast_process: Start, tmp_path: Path) -> None:
    tenant = node_direct_tenant(pbfast_process, tmp_path, tenant_id=TENANT, with_superuser=False)
    cp, node_url, epoch = tenant.control_plane, tenant.node_url, tenant.epoch
    # Like for like: one gateway thread against one nginx worker; the Python data path for the record.
    native_url, native_pid = _start_gateway(pbfast_process, cp.http_port, ["--gateway-threads=1"])
    python_url, python_pid = _start_gateway(pbfast_process, cp.http_port, ["--gateway-data-path=python"])
    gateway_pids = {"gateway": native_pid, "gateway-python": python_pid}

    header_lua = headers_script(tmp_path / "headers.lua", tenant.forward)
    nginx, nginx_url = _start_nginx(tmp_path / "nginx", node_url.removeprefix("http://"), epoch)
    others: list[subprocess.Popen[bytes]] = []
    try:
        path = f"/t/{TENANT}/api/health"
        # Every case sends the two headers (wrk's Lua costs it time too; proxies drop client-sent ones).
        cases = {"direct": (node_url + path, header_lua), "gateway": (native_url + path, header_lua),
                 "nginx": (nginx_url + path, header_lua), "gateway-python": (python_url + path, header_lua)}
        if FULL:  # both with their defaults on this machine: a thread / a worker per CPU
            nginx_auto, nginx_auto_url = _start_nginx(tmp_path / "nginx-auto", node_url.removeprefix("http://"),
                                                      epoch, workers=os.cpu_count() or 1)
            others.append(nginx_auto)
            cases["gateway-auto"] = (_start_gateway(pbfast_process, cp.http_port, [])[0] + path, header_lua)
            cases["nginx-auto"] = (nginx_auto_url + path, header_lua)
        seconds, rounds = (8, 3) if FULL else (2, 1)
        best: dict[str, tuple[float, float, float]] = {}
        quiet: dict[str, float] = {}  # p50 of one connection at a time: the latency a hop adds
        # the gateway process's CPU microseconds per request: when the node is the bottleneck (a quiet
        # machine), both data paths reach its rate, and only their cost tells them apart
        cpu_us: dict[str, float] = {}
        names = list(cases)
        for round_number in range(rounds):
            for name in names[round_number % len(names):] + names[:round_number % len(names)]:
                url, script = cases[name]
                cpu_before = process_tree_cpu(gateway_pids[name]) if name in gateway_pids else 0.0
                rate, latency, errors = run_wrk(url, script, 32, seconds)
                assert errors == 0, (name, errors)
                if name in gateway_pids:
                    used = (process_tree_cpu(gateway_pids[name]) - cpu_before) / (rate * seconds) * 1e6
                    cpu_us[name] = min(cpu_us.get(name, float("inf")), used)
                if name not in best or rate > best[name][0]:
                    best[name] = (rate, _latency_ms(latency, "50"), _latency_ms(latency, "99"))
                if name in ("direct", "gateway", "nginx"):
                    _, latency, errors = run_wrk(url, script, 1, seconds)
                    assert errors == 0, (name, errors)
                    quiet[name] = min(quiet.get(name, float("inf")), _latency_ms(latency, "50"))
    finally:
        for process in (nginx, *others):
            process.terminate()
            process.wait(10)
    for name, (rate, p50, p99) in best.items():
        print(f"\n[bench] GET tenant /api/health, {name}, 32 connections: {rate:,.0f} req/s, p50 {p50:.2f} ms, "
              f"p99 {p99:.2f} ms")
    for name, p50 in quiet.items():
        print(f"[bench] GET tenant /api/health, {name}, 1 connection: p50 {p50 * 1000:.0f} us")
    direct, through_gateway, through_nginx = best["direct"][0], best["gateway"][0], best["nginx"][0]
    added = quiet["gateway"] - quiet["direct"]
    print(f"[bench] gateway/direct = {through_gateway / direct:.2f}, nginx/direct = {through_nginx / direct:.2f}, "
          f"gateway/nginx = {through_gateway / through_nginx:.2f}, "
          f"native/python data path = {through_gateway / best['gateway-python'][0]:.2f} req/s, "
          f"{cpu_us['gateway'] / cpu_us['gateway-python']:.2f} CPU per request "
          f"({cpu_us['gateway']:.0f} vs {cpu_us['gateway-python']:.0f} us), "
          f"p50 added over direct: gateway {added * 1000:.0f} us, nginx {(quiet['nginx'] - quiet['direct']) * 1000:.0f} us")
    if "gateway-auto" in best:
        print(f"[bench] defaults (a thread / a worker per CPU): gateway/nginx = "
              f"{best['gateway-auto'][0] / best['nginx-auto'][0]:.2f}")
    # Floors that catch a regression on a noisy shared machine; the measured figures go to RESULTS.md.
    assert through_gateway > 0.6 * through_nginx
    assert cpu_us["gateway"] < 0.8 * cpu_us["gateway-python"], cpu_us
    assert added < 1.0
