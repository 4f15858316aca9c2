"""Held realtime streams across versions: a gateway in front of a node whose stream holder does not speak the
multiplexed connection (a node from before it, or one with ``PBFAST_STREAM_MUX=off``) reads each stream over a
connection of its own instead of failing, and the gateway's held-stream settings are flags (real processes on
loopback: a control plane, one tenant node, one native gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cpcluster import ADMIN, CLUSTER_TOKEN, start_cluster, wait_until
from helpers import PbfastProcess, free_port
from nodetools import scrape, start_node
from raw_sse import clean_end, next_record_n, open_stream

PASSWORD = "password-1234"
STREAMS = 5


@contextlib.contextmanager
def _cluster(tmp: Path, node_env: dict[str, str]) -> Iterator[tuple[str, PbfastProcess, str, str]]:
    """``(control plane URL, node, node URL, gateway URL)``; the node started with ``node_env``."""
    started: list[PbfastProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> PbfastProcess:
        process = PbfastProcess(args, tmp / f"pbfast-{len(started)}.log", env or {}).start()
        started.append(process)
        return process

    try:
        cp = start_cluster(start, tmp, 1, node_timeout=120)[0]
        node, node_url = start_node(start, "node-a", f"127.0.0.1:{cp.http_port}", tmp / "nodes", (), node_env)
        wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 1)
        port = free_port()
        gateway = start(["serve", "--mode=gateway", f"--http-addr=127.0.0.1:{port}",
                         f"--control-plane-addrs=127.0.0.1:{cp.http_port}", f"--cluster-token={CLUSTER_TOKEN}",
                         "--gateway-held-stream-limit-kb=1024", "--gateway-held-streams-budget-mb=64",
                         "--gateway-held-stream-timeout=20"])
        gateway.wait_healthy([f"http://127.0.0.1:{port}"])
        yield cp.url, node, node_url, f"http://127.0.0.1:{port}"
    finally:
        for process in started:
            if process.proc is not None and process.proc.poll() is None:
                process.stop(signal.SIGKILL)


def _tenant_with_posts(cp: str, gw: str, tenant_id: str) -> str:
    """A new tenant with a public ``posts`` collection; a superuser token."""
    created = httpx.post(f"{cp}/api/cp/tenants", headers=ADMIN, timeout=10, json={
        "id": tenant_id, "superuser": {"email": f"root@{tenant_id}.test", "password": PASSWORD}})
    assert created.status_code == 200, created.text
    wait_until(lambda: httpx.get(f"{gw}/t/{tenant_id}/api/health").status_code == 200)
    login = httpx.post(f"{gw}/t/{tenant_id}/api/collections/_superusers/auth-with-password", timeout=30,
                       json={"identity": f"root@{tenant_id}.test", "password": PASSWORD})
    token = str(login.json()["token"])
    made = httpx.post(f"{gw}/t/{tenant_id}/api/collections", headers={"Authorization": token}, timeout=30, json={
        "name": "posts", "type": "base", "listRule": "", "viewRule": "", "fields": [{"name": "n", "type": "number"}]})
    assert made.status_code == 200, made.text
    return token


async def _scenario(cp: str, node: PbfastProcess, node_url: str, gw: str, tenant_id: str) -> dict[str, float]:
    """Streams subscribe through the gateway, get an event, and end cleanly when the node stops; the gateway's
    metrics while they were open."""
    token = _tenant_with_posts(cp, gw, tenant_id)
    streams = await asyncio.gather(*(open_stream(gw, tenant_id) for _ in range(STREAMS)))
    async with httpx.AsyncClient(base_url=f"{gw}/t/{tenant_id}", timeout=30) as client:
        for _, _, client_id in streams:
            answer = await client.post("/api/realtime", json={"clientId": client_id, "subscriptions": ["posts/*"]})
            assert answer.status_code == 204, answer.text
        created = await client.post("/api/collections/posts/records", json={"n": 5}, headers={"Authorization": token})
        assert created.status_code == 200, created.text
    assert [await next_record_n(reader) for reader, _, _ in streams] == [5] * STREAMS
    assert scrape(node_url)["pbfast_node_realtime_streams"] == STREAMS
    metrics = scrape(gw)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)  # a node's stop ends its streams cleanly: the SDKs reconnect
    for reader, _, _ in streams:
        await clean_end(reader)
    for _, writer, _ in streams:
        writer.close()
    return metrics


@pytest.mark.parametrize("mux", ["off", "on"])
def test_a_gateway_reads_held_streams_of_a_node_without_the_mux_over_a_connection_each(
        tmp_path: Path, mux: str) -> None:
    with _cluster(tmp_path, {"PBFAST_STREAM_MUX": mux}) as (cp, node, node_url, gw):
        metrics = asyncio.run(_scenario(cp, node, node_url, gw, "mixed"))
    # With the mux the streams share the tenant's one connection; without it none is made (each stream has its
    # own connection to the holder, as with a node from before the mux).
    assert metrics["pbfast_gateway_held_streams"] == (STREAMS if mux == "on" else 0)
    assert metrics["pbfast_gateway_held_connections"] == (1 if mux == "on" else 0)
    assert metrics["pbfast_gateway_held_records_dropped_total"] == 0
