"""granian's RSGI vs ASGI interface, embedded on uvloop as pbfast runs it, side by side in one run.

``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_interface_bench.py -s -p no:cacheprovider``
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from bench_tools import needs_tools

from helpers import free_port

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
SERVER = Path(__file__).with_name("interface_server.py")


def _serve(kind: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), kind, str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/health", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{kind} server did not start")


@needs_tools("wrk")
def test_rsgi_vs_asgi_health() -> None:
    from test_control_plane_bench import run_wrk  # noqa: PLC0415 - shares the wrk parser

    seconds = 8 if FULL else 2
    rates: dict[str, list[float]] = {"rsgi": [], "asgi": []}
    for _ in range(2 if FULL else 1):
        for kind in ("rsgi", "asgi"):
            proc, url = _serve(kind)
            try:
                rate, latency, non_2xx = run_wrk(url + "/api/health", None, 32, seconds)
                assert non_2xx == 0
                rates[kind].append(rate)
                print(f"\n[bench] embedded granian {kind.upper()}: {rate:,.0f} req/s ({latency})")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
    ratio = max(rates["rsgi"]) / max(rates["asgi"])
    print(f"\n[bench] RSGI/ASGI throughput ratio: {ratio:.2f}")
