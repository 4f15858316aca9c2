"""Realtime (SSE) on a pbfast tenant, through the all-in-one's gateway: the Python SDK's realtime client and a
raw SSE client speaking what the JS SDK speaks see create/update/delete in commit order, never a record
their rules hide, and a stalled subscriber holds nobody up."""

from __future__ import annotations

import secrets
import threading
import time

import httpx
from pocketbase import PocketBase
from pocketbase.services.realtime_service import MessageData

from pbharness import Backend
from sseclient import RawRealtimeClient


def _superuser(backend: Backend) -> dict[str, str]:
    return {"Authorization": backend.superuser_token}


def _create(backend: Backend, collection: str, body: dict, token: str | None = None) -> dict:
    response = httpx.post(f"{backend.url}/api/collections/{collection}/records", json=body,
                          headers={"Authorization": token or backend.superuser_token}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _subscribed(client: RawRealtimeClient, backend: Backend, collection: str) -> None:
    """Write probe records until the client sees one: its subscription is in place from then on."""
    deadline = time.monotonic() + 10
    while not client.events:
        assert time.monotonic() < deadline, "the subscription never delivered"
        _create(backend, collection, {"title": f"probe-{secrets.token_hex(6)}"})
        client.wait_events(1, timeout=0.3)
    client.events.clear()


def test_python_sdk_sees_create_update_delete_in_order(pbfast_fixture_tenant: Backend) -> None:
    backend = pbfast_fixture_tenant
    pb = PocketBase(backend.url)
    seen: list[tuple[str, str, str]] = []
    arrived = threading.Condition()

    def on_event(message: MessageData) -> None:
        with arrived:
            seen.append((message.action, message.record.id, getattr(message.record, "title", "")))
            arrived.notify_all()

    pb.realtime.subscribe("demo2/*", on_event)
    deadline = time.monotonic() + 10
    while not seen:  # the SDK subscribes on its own thread: probe until its subscription is in place
        assert time.monotonic() < deadline, "the SDK's subscription never delivered"
        _create(backend, "demo2", {"title": f"probe-{secrets.token_hex(6)}"})
        with arrived:
            arrived.wait(0.3)
    with arrived:
        seen.clear()
    ids = [_create(backend, "demo2", {"title": f"t{i}"})["id"] for i in range(5)]
    headers = _superuser(backend)
    assert httpx.patch(f"{backend.url}/api/collections/demo2/records/{ids[2]}", json={"title": "changed"},
                       headers=headers).status_code == 200
    assert httpx.delete(f"{backend.url}/api/collections/demo2/records/{ids[4]}", headers=headers).status_code == 204
    with arrived:
        arrived.wait_for(lambda: len(seen) >= 7, timeout=10)
    assert seen == [*(("create", ids[i], f"t{i}") for i in range(5)), ("update", ids[2], "changed"),
                    ("delete", ids[4], "t4")]
    pb.realtime.unsubscribe()


def test_raw_client_frames_match_pocketbase(pbfast_fixture_tenant: Backend) -> None:
    backend = pbfast_fixture_tenant
    client = RawRealtimeClient(backend.url).connect()
    try:
        assert client.headers["content-type"] == "text/event-stream"
        assert client.headers["cache-control"] == "no-store"
        assert len(client.client_id) == 40 and client.client_id.isalnum()
        topic = 'demo2?options={"query":{"fields":"id,title"}}'
        assert client.subscribe(["demo2/*", topic]).status_code == 204
        _subscribed(client, backend, "demo2")
        created = _create(backend, "demo2", {"title": "hello"})
        events = client.wait_events(2)
        by_name = {event.name: event for event in events}
        assert set(by_name) == {"demo2/*", topic}
        assert all(event.id == client.client_id for event in events)
        assert by_name[topic].data == {"record": {"id": created["id"], "title": "hello"}, "action": "create"}
        assert by_name["demo2/*"].data == {"record": created, "action": "create"}
    finally:
        client.close()
