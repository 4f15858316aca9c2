"""Auth throughput against stock PocketBase 0.40.6 (issue 17's performance goals), node direct, side by side in
one run: ``auth-with-password`` (bcrypt dominates, at the cost factor the password was stored with: the same on
both, PocketBase's default) and ``auth-refresh`` (a token check and a new token: pbfast's own work).

``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_auth_bench.py -s -p no:cacheprovider`` (10 s a case).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson
from bench_tools import headers_script, needs_tools, node_direct_tenant, start_pocketbase

from cpcluster import Start
from test_control_plane_bench import run_wrk

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
USER = {"email": "reader@example.com", "password": "reader-password-1"}


def _user_token(base: str, headers: dict[str, str], superuser_token: str) -> str:
    """The benchmark's user in the default ``users`` collection, logged in once."""
    created = httpx.post(f"{base}/api/collections/users/records", headers={"Authorization": superuser_token, **headers},
                         json={**USER, "passwordConfirm": USER["password"]}, timeout=30)
    assert created.status_code == 200, created.text
    login = httpx.post(f"{base}/api/collections/users/auth-with-password", headers=headers, timeout=30,
                       json={"identity": USER["email"], "password": USER["password"]})
    assert login.status_code == 200, login.text
    token: str = login.json()["token"]
    return token


def _scripts(directory: Path, headers: dict[str, str], user_token: str) -> dict[str, Path]:
    body = orjson.dumps({"identity": USER["email"], "password": USER["password"]}).decode()
    password = directory / "password_body.lua"
    password.write_text(f"wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
                        f"wrk.body = '{body}'\n")
    refresh = directory / "refresh_body.lua"
    refresh.write_text(f"wrk.method = \"POST\"\nwrk.headers[\"Authorization\"] = \"{user_token}\"\n")
    return {"auth-with-password": headers_script(directory / "password.lua", headers, then=password),
            "auth-refresh": headers_script(directory / "refresh.lua", headers, then=refresh)}


@needs_tools("wrk", "pocketbase")
def test_auth_pbfast_vs_pocketbase(pbfast_process: Start, tmp_path: Path, bench_report: list[str]) -> None:
    stock = start_pocketbase(tmp_path / "stock" / "pb_data")
    try:
        pb_dir, fast_dir = tmp_path / "pb", tmp_path / "fast"
        pb_dir.mkdir()
        fast_dir.mkdir()
        pb_scripts = _scripts(pb_dir, {}, _user_token(stock.url, {}, stock.token))
        tenant = node_direct_tenant(pbfast_process, tmp_path / "pbfast")
        fast_scripts = _scripts(fast_dir, tenant.forward, _user_token(tenant.url, tenant.forward, tenant.token))
        seconds = 10 if FULL else 2
        for case, connections in (("auth-with-password", 8), ("auth-refresh", 32)):
            path = f"/api/collections/users/{case}"
            pb_rate, pb_latency, pb_errors = run_wrk(stock.url + path, pb_scripts[case], connections, seconds)
            fast_rate, fast_latency, fast_errors = run_wrk(tenant.url + path, fast_scripts[case], connections, seconds)
            assert pb_errors == 0 and fast_errors == 0, (case, pb_errors, fast_errors)
            line = (f"auth: {case}: pocketbase {pb_rate:,.0f} req/s ({pb_latency}) | pbfast {fast_rate:,.0f} req/s "
                    f"({fast_latency}) = {fast_rate / pb_rate:.2f}x pocketbase")
            bench_report.append(line)
            print("\n[bench] " + line)
            assert fast_rate > 0
    finally:
        stock.stop()
