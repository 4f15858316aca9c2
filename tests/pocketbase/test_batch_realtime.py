"""Realtime events of ``POST /api/batch`` (issue 15), pbfast against stock PocketBase 0.40.6: a batch's
changes are published once it commits; a batch that fails publishes nothing. PocketBase's order of a
batch's events varies from run to run (its broadcasts after the commit run concurrently, even for one
record); pbfast publishes in the items' order, one of PocketBase's possible orders."""

from __future__ import annotations

import secrets
import time

import httpx

from pbharness import Backend
from sseclient import RawRealtimeClient

DEMO2 = "/api/collections/demo2/records"


def _batch(backend: Backend, *requests: dict[str, object]) -> int:
    answer = httpx.post(f"{backend.url}/api/batch", json={"requests": list(requests)},
                        headers={"Authorization": backend.superuser_token}, timeout=30)
    return answer.status_code


def _wait_subscribed(client: RawRealtimeClient, backend: Backend) -> None:
    """Write probe records until the client sees one: its subscription is in place from then on."""
    deadline = time.monotonic() + 10
    while not client.events:
        assert time.monotonic() < deadline, "the subscription never delivered"
        created = httpx.post(f"{backend.url}{DEMO2}", json={"title": f"probe-{secrets.token_hex(6)}"},
                             headers={"Authorization": backend.superuser_token}, timeout=30)
        assert created.status_code == 200, created.text
        client.wait_events(1, timeout=0.3)
    client.events.clear()


def _batch_events(backend: Backend) -> list[tuple[str, str, str]]:
    """A superuser subscribed to demo2: a failing batch, then one creating, updating and deleting; the
    events it receives as (topic, action, title)."""
    client = RawRealtimeClient(backend.url, backend.superuser_token).connect()
    try:
        assert client.subscribe(["demo2/*"]).status_code == 204
        _wait_subscribed(client, backend)
        assert _batch(backend, {"method": "POST", "url": DEMO2, "body": {"title": "rt_rolled_back"}},
                      {"method": "POST", "url": DEMO2, "body": {"title": ""}}) == 400
        assert _batch(backend, {"method": "POST", "url": DEMO2, "body": {"id": "rtbatch00000001", "title": "rt_one"}},
                      {"method": "PATCH", "url": f"{DEMO2}/rtbatch00000001", "body": {"title": "rt_two"}},
                      {"method": "PUT", "url": DEMO2, "body": {"title": "rt_three"}},
                      {"method": "DELETE", "url": f"{DEMO2}/rtbatch00000001"}) == 200
        client.wait_events(4)
        time.sleep(0.3)  # nothing more comes
        return [(e.name, e.data["action"], e.data["record"]["title"]) for e in client.events]
    finally:
        client.close()


def test_a_batch_publishes_its_changes_once_committed_as_pocketbase(stock_pocketbase: Backend,
                                                                    pbfast_fixture_tenant: Backend) -> None:
    stock = _batch_events(stock_pocketbase)
    fast = _batch_events(pbfast_fixture_tenant)
    assert sorted(fast) == sorted(stock)
    assert fast == [("demo2/*", "create", "rt_one"), ("demo2/*", "update", "rt_two"),
                    ("demo2/*", "create", "rt_three"), ("demo2/*", "delete", "rt_two")]  # the items' order
