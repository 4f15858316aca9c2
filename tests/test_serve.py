"""``pbfast serve`` in each mode: real processes on loopback, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from cpcluster import wait_until
from helpers import PbfastProcess, free_port
from pbfast.shutdown import SHUTDOWN_TIMEOUT_SECONDS

HEALTH = {"message": "API is healthy.", "code": 200, "data": {}}


def assert_health(body: dict[str, object], control_plane: bool = False, node: bool = False) -> None:
    """PocketBase's health body; a control plane adds data.raft, a tenant node data.replication."""
    extra = {"raft"} if control_plane else {"replication"} if node else set()
    assert {**body, "data": {}} == HEALTH
    assert set(body["data"]) == extra  # type: ignore[arg-type]

Start = Callable[..., PbfastProcess]


@pytest.mark.exclusive
def test_all_in_one_defaults_start_within_5s(pbfast_process: Start, tmp_path: Path) -> None:
    """``pbfast serve`` with no flags: control plane on 8090 and gateway on 8080, data in ./pb_data; SIGINT stops it
    within the bound, a statement running or not."""
    for port in (8080, 8090):
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=0.5)
            pytest.fail(f"port {port} is already in use on this machine; cannot test the defaults")
        except httpx.TransportError:
            pass
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {"PBFAST_ADMIN_TOKEN": "", "PB_LOG_LEVEL": "INFO"}
    process = pbfast_process(["serve"], env=env, cwd=workdir)
    took = process.wait_healthy(["http://127.0.0.1:8090", "http://127.0.0.1:8080"], timeout=10)
    assert took < 5.0, f"took {took:.2f}s"
    for port in (8080, 8090):
        response = httpx.get(f"http://127.0.0.1:{port}/api/health")
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert_health(response.json(), control_plane=port == 8090)
    token_file = workdir / "pb_data" / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    output = process.output()
    assert str(token_file.resolve()) in output and token not in output  # where, never what
    for prefix in ("[ControlPlane]", "[Gateway]"):
        assert prefix in output
    stop_with_a_statement_running(process, "http://127.0.0.1:8090", "http://127.0.0.1:8080", token, signal.SIGINT)


@pytest.fixture
def all_in_one(pbfast_process: Start, tmp_path: Path) -> tuple[str, str, str]:
    cp_port, gw_port = free_port(), free_port()
    token = "t" * 40
    process = pbfast_process([
        "serve", f"--data-dir={tmp_path / 'data'}", f"--http-addr=127.0.0.1:{cp_port}",
        f"--raft-bind-addr=127.0.0.1:{free_port()}",
        f"--gateway-addr=127.0.0.1:{gw_port}", f"--admin-token={token}", "--base-domain=pb.test",
    ])
    cp, gw = f"http://127.0.0.1:{cp_port}", f"http://127.0.0.1:{gw_port}"
    process.wait_healthy([cp, gw])
    assert not (tmp_path / "data" / "admin.token").exists()  # a given token is never written
    assert token not in process.output()
    return cp, gw, token


def raw_get(base_url: str, path: str, host: str = "127.0.0.1") -> tuple[int, dict[str, object]]:
    """GET with the path sent byte for byte (httpx would normalise ``..`` segments away)."""
    _, _, hostport = base_url.partition("://")
    address, _, port = hostport.partition(":")
    with socket.create_connection((address, int(port)), timeout=5) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def assert_pocketbase_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "message", "data"} and body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    return body


def test_control_plane_api_needs_admin_token(all_in_one: tuple[str, str, str]) -> None:
    cp, _, token = all_in_one
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}, {"Authorization": "Bearer"}):
        assert_pocketbase_error(httpx.get(f"{cp}/api/cp/tenants", headers=headers), 401)
    # With the token the request passes authentication (the tenant API itself arrives with the control plane).
    response = httpx.get(f"{cp}/api/cp/nope", headers={"Authorization": f"Bearer {token}"})
    assert_pocketbase_error(response, 404)


def test_gateway_errors_are_pocketbase_shaped(all_in_one: tuple[str, str, str]) -> None:
    _, gw, _ = all_in_one
    assert_pocketbase_error(httpx.get(f"{gw}/t/Bad_Id/api/health"), 400)
    for path in ("/t/../api/health", "/t/acme/../beta/api/health", "/t/%61cme/api/health"):
        status, body = raw_get(gw, path)
        assert status in (400, 404) and set(body) == {"status", "message", "data"}, (path, body)
    assert raw_get(gw, "/t/../api/health")[0] == 400
    assert_pocketbase_error(httpx.get(f"{gw}/t/unknown/api/health"), 404)
    assert_pocketbase_error(httpx.get(f"{gw}/api/health", headers={"Host": "unknown.pb.test"}), 404)
    assert_pocketbase_error(httpx.get(f"{gw}/api/health", headers={"Host": "a.b.pb.test"}), 400)
    assert_pocketbase_error(httpx.get(f"{gw}/no/such/route"), 404)
    assert_pocketbase_error(httpx.post(f"{gw}/api/health"), 405)
    # The server is still up after all of that.
    assert httpx.get(f"{gw}/api/health").json() == HEALTH
    assert_pocketbase_error(httpx.get(f"{gw}/t/unknown/api/health"), 404)


@pytest.mark.parametrize("mode", ["control-plane", "tenant-node", "gateway"])
def test_each_mode_serves_health_and_stops_on_sigterm(pbfast_process: Start, tmp_path: Path, mode: str) -> None:
    port = free_port()
    args = ["serve", f"--mode={mode}", f"--http-addr=127.0.0.1:{port}", "--cluster-token=" + "c" * 32]
    if mode in ("tenant-node", "gateway"):
        args.append(f"--control-plane-addrs=127.0.0.1:{free_port()}")
    if mode != "gateway":
        args.append(f"--data-dir={tmp_path / 'data'}")
    if mode == "control-plane":
        args.append(f"--raft-bind-addr=127.0.0.1:{free_port()}")
    process = pbfast_process(args, env={"PB_LOG_LEVEL": "DEBUG"})
    process.wait_healthy([f"http://127.0.0.1:{port}"])
    body = httpx.get(f"http://127.0.0.1:{port}/api/health").json()
    assert_health(body, mode == "control-plane", mode == "tenant-node")
    if mode == "tenant-node":
        replication = body["data"]["replication"]
        assert replication["running"] is True and replication["lagSeconds"] == 0.0
    prefix = {"control-plane": "[ControlPlane]", "tenant-node": "[TenantNode]", "gateway": "[Gateway]"}[mode]
    assert prefix in process.output()
    started = time.monotonic()
    assert process.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5.0


def test_a_node_starts_in_a_deep_data_dir(pbfast_process: Start, tmp_path: Path) -> None:
    """A data dir whose paths pass the 107-byte limit of Unix socket paths (litestream's control socket lived
    there, and the node could not start)."""
    port = free_port()
    data_dir = tmp_path / ("deep-" * 12) / ("data-" * 12)
    assert len(str(data_dir / "litestream" / "control.sock")) > 108
    process = pbfast_process(["serve", "--mode=tenant-node", f"--http-addr=127.0.0.1:{port}", "--cluster-token=" + "c" * 32,
                              f"--control-plane-addrs=127.0.0.1:{free_port()}", f"--data-dir={data_dir}"])
    process.wait_healthy([f"http://127.0.0.1:{port}"], timeout=20)
    assert httpx.get(f"http://127.0.0.1:{port}/api/health").json()["data"]["replication"]["running"] is True
    assert process.stop(signal.SIGTERM) == 0


def test_port_in_use_fails_clearly(pbfast_process: Start, tmp_path: Path) -> None:
    port = free_port()
    token = "--cluster-token=" + "c" * 32
    first = pbfast_process(["serve", "--mode=control-plane", f"--http-addr=127.0.0.1:{port}",
                            f"--data-dir={tmp_path / 'a'}", token, f"--raft-bind-addr=127.0.0.1:{free_port()}"])
    first.wait_healthy([f"http://127.0.0.1:{port}"])
    second = pbfast_process(["serve", "--mode=control-plane", f"--http-addr=127.0.0.1:{port}",
                             f"--data-dir={tmp_path / 'b'}", token, f"--raft-bind-addr=127.0.0.1:{free_port()}"])
    assert second.proc is not None
    second.proc.wait(10)
    assert second.proc.returncode == 1
    assert f"127.0.0.1:{port}" in second.output()
    assert httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200


def test_admin_token_file_reused_and_guarded(pbfast_process: Start, tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    args = ["serve", "--mode=control-plane", f"--http-addr=127.0.0.1:{port}", f"--data-dir={data}",
            "--cluster-token=" + "c" * 32, f"--raft-bind-addr=127.0.0.1:{free_port()}"]
    first = pbfast_process(args)
    first.wait_healthy([f"http://127.0.0.1:{port}"])
    token = (data / "admin.token").read_text().strip()
    assert first.stop() == 0
    second = pbfast_process(args)
    second.wait_healthy([f"http://127.0.0.1:{port}"])
    response = httpx.get(f"http://127.0.0.1:{port}/api/cp/x", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404  # authenticated with the stored token
    assert second.stop() == 0
    os.chmod(data / "admin.token", 0o644)
    third = pbfast_process(args)
    assert third.proc is not None
    third.proc.wait(10)
    assert third.proc.returncode == 1 and "chmod 600" in third.output()


def test_a_request_without_the_admin_token_is_told_how_to_send_it(pbfast_process: object, tmp_path: Path) -> None:
    """The guide's `curl http://localhost:8090/api/cp/tenants` without a token: 401 saying how to pass the token
    and where an all-in-one keeps it."""
    cp_port, gw_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    process = pbfast_process(["serve", f"--data-dir={data_dir}", f"--http-addr=127.0.0.1:{cp_port}",
                              f"--gateway-addr=127.0.0.1:{gw_port}", f"--raft-bind-addr=127.0.0.1:{free_port()}"])
    process.wait_healthy([f"http://127.0.0.1:{cp_port}"], timeout=30)
    response = httpx.get(f"http://127.0.0.1:{cp_port}/api/cp/tenants")
    assert response.status_code == 401
    message = response.json()["message"]
    assert "Authorization: Bearer" in message and str(data_dir / "admin.token") in message, message
    token = (data_dir / "admin.token").read_text().strip()
    assert httpx.get(f"http://127.0.0.1:{cp_port}/api/cp/tenants",
                     headers={"Authorization": f"Bearer {token}"}).status_code == 200


def _cpu_seconds(pid: int) -> float:
    """The process's CPU time (user + system, all threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_with_a_statement_running(process: PbfastProcess, cp: str, gw: str, token: str, sig: int) -> None:
    """Stop an all-in-one while a request runs a statement that would outlive the stop's bound (its time limit
    is 10 s): the statement is interrupted and the process exits cleanly within SHUTDOWN_TIMEOUT_SECONDS (the
    database threads' join, the tenants' closes and the requests' grace each take what is left of it)."""
    created = httpx.post(f"{cp}/api/cp/tenants", headers={"Authorization": f"Bearer {token}"}, timeout=10,
                         json={"id": "slow", "superuser": {"email": "root@slow.test", "password": "password-1234"}})
    assert created.status_code == 200, created.text
    base = f"{gw}/t/slow"
    login = {"identity": "root@slow.test", "password": "password-1234"}

    def log_in() -> str | None:
        response = httpx.post(f"{base}/api/collections/_superusers/auth-with-password", json=login)
        return str(response.json()["token"]) if response.status_code == 200 else None

    superuser = {"Authorization": wait_until(log_in)}
    answers: list[object] = []

    def slow_statement() -> None:
        query = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000) "
                 "SELECT count(*) FROM c")
        try:
            answers.append(httpx.post(f"{base}/api/sql", headers=superuser, json={"query": query}, timeout=60))
        except httpx.TransportError as err:  # the stop may close the connection unanswered
            answers.append(err)

    assert process.proc is not None
    pid = process.proc.pid
    cpu_before = _cpu_seconds(pid)
    client = threading.Thread(target=slow_statement)
    client.start()
    wait_until(lambda: _cpu_seconds(pid) - cpu_before > 0.3, timeout=20)  # running: the statement burns a core
    assert not answers
    started = time.monotonic()
    assert process.stop(sig, timeout=30) == 0
    took = time.monotonic() - started
    print(f"\n[stop] with a statement running: {took:.2f} s")
    client.join(10)
    output = process.output()
    assert took < SHUTDOWN_TIMEOUT_SECONDS + 0.5, (took, output[-2000:])
    assert "[Server] stopped" in output, output[-2000:]  # the steps ended in time (a watchdog may end the exit)
    assert not client.is_alive() and answers  # answered (an error) or closed: not left waiting


def test_the_stop_watchdog_ends_a_process_that_outlives_the_bound() -> None:
    """What the steps of a stop cannot bound (here: a thread the interpreter's exit waits for) is ended at the
    bound, with the status the stop had, and said in the log."""
    program = ("import logging, threading, time\n"
               "from pbfast.logs import configure_logging\n"
               "from pbfast.shutdown import StopClock\n"
               "configure_logging(logging.INFO)\n"
               "StopClock().start(0.3, 3)\n"
               "threading.Thread(target=time.sleep, args=(60,)).start()\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=False)
    took = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert "[Server] the stop took longer than its bound" in done.stderr + done.stdout
    assert took < 10, took
