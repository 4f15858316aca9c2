"""Realtime (SSE) on a pbfast tenant, through the all-in-one's gateway: the Python SDK's realtime client and a
raw SSE client speaking what the JS SDK speaks see create/update/delete in commit order, never a record
their rules hide, and a stalled subscriber holds nobody up."""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from pocketbase import PocketBase
from pocketbase.services.realtime_service import MessageData

from fixture_data import USER1, USER2
from pbharness import ADMIN_TOKEN, Backend, copy_fixture, create_tenant, start_all_in_one
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


def _collection(backend: Backend, body: dict) -> dict:
    response = httpx.post(f"{backend.url}/api/collections", json=body, headers=_superuser(backend), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _member_token(backend: Backend, email: str) -> tuple[str, str]:
    member = _create(backend, "members", {"email": email, "password": "secret-123456",
                                          "passwordConfirm": "secret-123456"})
    response = httpx.post(f"{backend.url}/api/collections/members/auth-with-password",
                          json={"identity": email, "password": "secret-123456"}, timeout=30)
    assert response.status_code == 200, response.text
    return member["id"], response.json()["token"]


def test_events_follow_each_clients_rules_at_the_time_of_the_event(pbfast_fixture_tenant: Backend) -> None:
    backend = pbfast_fixture_tenant
    _collection(backend, {"name": "members", "type": "auth"})
    owner_rule = "owner = @request.auth.id"
    _collection(backend, {"name": "notes", "type": "base", "listRule": owner_rule, "viewRule": owner_rule,
                          "fields": [{"name": "title", "type": "text"}, {"name": "owner", "type": "text"}]})
    first, first_token = _member_token(backend, "first@example.com")
    second, second_token = _member_token(backend, "second@example.com")
    clients = {name: RawRealtimeClient(backend.url, token).connect() for name, token in
               (("first", first_token), ("second", second_token), ("guest", ""),
                ("superuser", backend.superuser_token))}
    try:
        for client in clients.values():
            assert client.subscribe(["notes/*"]).status_code == 204
        mine = _create(backend, "notes", {"title": "first's", "owner": first})
        theirs = _create(backend, "notes", {"title": "second's", "owner": second})
        assert [e.data["record"]["id"] for e in clients["superuser"].wait_events(2)] == [mine["id"], theirs["id"]]
        assert [(e.name, e.data) for e in clients["first"].wait_events(1)] == [
            ("notes/*", {"record": mine, "action": "create"})]
        assert [e.data["record"]["id"] for e in clients["second"].wait_events(1)] == [theirs["id"]]
        assert clients["guest"].events == []

        # A rule changed while subscribed applies to the next event; a record topic needs the view rule.
        changed = httpx.patch(f"{backend.url}/api/collections/notes", json={"listRule": ""},
                              headers=_superuser(backend))
        assert changed.status_code == 200, changed.text
        assert clients["second"].subscribe(["notes/*", f"notes/{mine['id']}"]).status_code == 204
        assert httpx.patch(f"{backend.url}/api/collections/notes/records/{mine['id']}", json={"title": "edited"},
                           headers=_superuser(backend)).status_code == 200
        assert [e.data["action"] for e in clients["guest"].wait_events(1)] == ["update"]
        assert [(e.name, e.data["action"]) for e in clients["second"].wait_events(2)][1:] == [("notes/*", "update")]

        # A delete is checked against the deleted record's values.
        assert httpx.patch(f"{backend.url}/api/collections/notes", json={"listRule": owner_rule},
                           headers=_superuser(backend)).status_code == 200
        assert httpx.delete(f"{backend.url}/api/collections/notes/records/{theirs['id']}",
                            headers=_superuser(backend)).status_code == 204
        assert clients["superuser"].wait_events(4)[-1].data["action"] == "delete"
        assert [e.data["action"] for e in clients["second"].wait_events(3)][-1] == "delete"
        assert [e.data["action"] for e in clients["first"].wait_events(2)] == ["create", "update"]
        assert [e.data["action"] for e in clients["guest"].events] == ["update"]

        # Only a guest may take an auth; another auth is refused as PocketBase refuses it.
        refused = clients["first"].subscribe(["notes/*"], token=second_token)
        assert refused.status_code == 403
        assert refused.json() == {"data": {}, "message": "The current and the previous request authorization "
                                  "don't match.", "status": 403}
        assert clients["guest"].subscribe(["notes/*"], token=first_token).status_code == 204
    finally:
        for client in clients.values():
            client.close()


def _post_answers(backend: Backend, client_id: str) -> list[tuple[int, object]]:
    """``POST /api/realtime`` answers to malformed and valid bodies, for a live client ``client_id``."""
    long_topic = "x" * 2501
    bodies: list[tuple[str, bytes]] = [
        ("application/json", b""), ("application/json", b"x"), ("application/json", b"[]"),
        ("application/json", b"{}"), ("application/json", b'{"clientId":""}'),
        ("application/json", b'{"clientId":"unknown"}'), ("application/json", b'{"clientId":123}'),
        ("application/json", b'{"clientId":"unknown","subscriptions":"x"}'),
        ("application/json", b'{"clientId":"unknown","subscriptions":[1]}'),
        ("application/json", b'{"clientId":"unknown","subscriptions":["a",null]}'),
        ("application/json", b'{"clientId":"%b"}' % (b"a" * 256)),
        ("application/json", b'{"clientId":"","subscriptions":[%b]}' % b",".join([b'"t"'] * 1001)),
        ("application/json", b'{"clientId":"unknown","subscriptions":["ok","%b","%b"]}'
         % (long_topic.encode(), long_topic.encode())),
        ("application/x-www-form-urlencoded", b"clientId=unknown&subscriptions=a"),
        ("application/json", b'{"clientId":"%b","subscriptions":["demo2/*"]}' % client_id.encode()),
    ]
    answers = []
    for content_type, body in bodies:
        response = httpx.post(f"{backend.url}/api/realtime", content=body, headers={"content-type": content_type},
                              timeout=30)
        answers.append((response.status_code, response.json() if response.content else None))
    superuser = httpx.post(f"{backend.url}/api/realtime", json={"clientId": client_id, "subscriptions": []},
                           headers=_superuser(backend), timeout=30)
    guest_again = httpx.post(f"{backend.url}/api/realtime", json={"clientId": client_id}, timeout=30)
    answers += [(superuser.status_code, None), (guest_again.status_code, guest_again.json())]
    return answers


def _auth_transition_answers(backend: Backend, client_id: str) -> list[tuple[int, object]]:
    """realtime_test.go's auth cases of a live client: guest -> a user, the same user again, another user,
    a guest; then its 1,000 subscriptions (the limit) replacing the old ones."""
    answers = []
    for headers in ({}, USER1, USER1, USER2, {}):
        response = httpx.post(f"{backend.url}/api/realtime", headers=headers, timeout=30,
                              json={"clientId": client_id, "subscriptions": ["test1", "test2"]})
        answers.append((response.status_code, response.json() if response.content else None))
    response = httpx.post(f"{backend.url}/api/realtime", headers=USER1, timeout=30,
                          json={"clientId": client_id, "subscriptions": [str(n) for n in range(1000)]})
    answers.append((response.status_code, response.json() if response.content else None))
    return answers


def _live_client_answers(backend: Backend, client_id: str) -> list[tuple[int, object]]:
    """realtime_test.go's "existing client" cases not above, on a live guest client: 1,001 subscriptions (one
    over the limit), a topic of 2,501 characters (one over) and of 2,500, no subscriptions, then the guest client
    taken over by a superuser ("guest -> authorized superuser") and that superuser again ("same auth")."""
    bodies: list[tuple[dict[str, str], list[str]]] = [
        ({}, [f"test{n}" for n in range(1001)]), ({}, ["abc", "a" * 2501]), ({}, ["abc", "a" * 2500]), ({}, []),
        (_superuser(backend), ["test1", "test2"]), (_superuser(backend), ["test1", "test2"])]
    answers = []
    for headers, subscriptions in bodies:
        response = httpx.post(f"{backend.url}/api/realtime", headers=headers, timeout=30,
                              json={"clientId": client_id, "subscriptions": subscriptions})
        answers.append((response.status_code, response.json() if response.content else None))
    return answers


def test_subscription_answers_match_pocketbase(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend) -> None:
    answers = {}
    for backend in (stock_pocketbase, pbfast_fixture_tenant):
        clients = [RawRealtimeClient(backend.url).connect() for _ in range(3)]
        try:
            answers[backend.name] = (_post_answers(backend, clients[0].client_id)
                                     + _auth_transition_answers(backend, clients[1].client_id)
                                     + _live_client_answers(backend, clients[2].client_id))
        finally:
            for client in clients:
                client.close()
    assert answers["pbfast"] == answers["pocketbase"]
    live = answers["pocketbase"][-6:]
    assert [status for status, _ in live] == [400, 400, 204, 204, 204, 204], live


def _stalled_subscriber(backend: Backend, topic: str) -> socket.socket:
    """An SSE connection that subscribes to ``topic`` and then never reads (a small receive buffer)."""
    url = httpx.URL(backend.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((url.host, url.port))
    sock.sendall(f"GET {url.path}/api/realtime HTTP/1.1\r\nHost: {url.host}\r\n\r\n".encode())
    received = b""
    while b"PB_CONNECT" not in received or b"\n\n" not in received.split(b"PB_CONNECT", 1)[1]:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    client_id = received.split(b"\nid:", 1)[1].split(b"\n", 1)[0].decode()
    answer = httpx.post(f"{backend.url}/api/realtime", json={"clientId": client_id, "subscriptions": [topic]})
    assert answer.status_code == 204, answer.text
    return sock


def test_a_stalled_subscriber_delays_nobody_and_is_dropped(pbfast_process: object, tmp_path: Path) -> None:
    # granian buffers a stream's writes without limit, so what drops a client that stopped reading is the
    # gateway's client idle timeout (short here); until then its events pile up on the node.
    data_dir = tmp_path / "pbfast"
    copy_fixture(data_dir / "tenants" / "fixture")
    _, cp, gw = start_all_in_one(pbfast_process, data_dir, "--gateway-client-idle-timeout=3")
    create_tenant(cp, gw, "fixture")
    backend = Backend("pbfast", f"{gw}/t/fixture")
    backend.login()
    _collection(backend, {"name": "feed", "type": "base", "listRule": "",
                          "fields": [{"name": "body", "type": "editor"}]})
    stalled = _stalled_subscriber(backend, "feed/*")
    reader = RawRealtimeClient(backend.url).connect()
    try:
        assert reader.subscribe(["feed/*"]).status_code == 204
        body = "x" * 200_000
        delays = []
        for count in range(1, 41):  # 8 MB of events: far more than the stalled client's buffers
            _create(backend, "feed", {"body": body})
            written = time.monotonic()
            reader.wait_events(count, timeout=10)
            assert len(reader.events) == count, f"event {count} not delivered"
            delays.append(time.monotonic() - written)
        assert max(delays) < 2.0, delays
        # The stalled client was dropped: once it reads, its connection ends well short of the 40 events
        # (with it, what the node had buffered for it).
        time.sleep(5)  # past the gateway's client idle timeout
        stalled.settimeout(10)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := stalled.recv(1 << 16):
                received += chunk
        assert received.count(b"event:feed/*") < 40
    finally:
        stalled.close()
        reader.close()


def test_connection_limits_answer_429_and_free_up(pbfast_process: object, tmp_path: Path) -> None:
    data_dir = tmp_path / "pbfast"
    data_dir.mkdir()
    _, cp, gw = start_all_in_one(pbfast_process, data_dir, "--realtime-max-per-tenant=2",
                                 "--realtime-max-per-node=3")
    for tenant_id in ("one", "two"):
        create_tenant(cp, gw, tenant_id)
    first = [RawRealtimeClient(f"{gw}/t/one").connect() for _ in range(2)]
    try:
        refused = httpx.get(f"{gw}/t/one/api/realtime", timeout=10)
        assert refused.status_code == 429
        assert refused.json() == {"status": 429, "data": {},
                                  "message": "Too many realtime connections for this tenant; retry later."}
        other = RawRealtimeClient(f"{gw}/t/two").connect()
        first.append(other)
        full = httpx.get(f"{gw}/t/two/api/realtime", timeout=10)
        assert full.status_code == 429 and full.json()["message"].startswith("Too many realtime connections on")
        metrics = httpx.get(f"{cp}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text
        assert "\npbfast_node_realtime_streams 3\n" in metrics, metrics
        first.pop(0).close()  # a closed stream frees its place
        time.sleep(0.5)
        first.append(RawRealtimeClient(f"{gw}/t/one").connect())
    finally:
        for client in first:
            client.close()


def _auth_changes_scenario(backend: Backend) -> list[str]:
    """A member subscribes to a collection only signed-in clients may list; its record is updated, then its
    password changed: which events it still receives."""
    _collection(backend, {"name": "members", "type": "auth"})
    _collection(backend, {"name": "news", "type": "base", "listRule": "@request.auth.id != ''",
                          "fields": [{"name": "t", "type": "text"}]})
    member, token = _member_token(backend, "member@example.com")
    client = RawRealtimeClient(backend.url, token).connect()
    try:
        assert client.subscribe(["news/*"]).status_code == 204
        steps: list[tuple[str, dict]] = [("before", {}), ("after-update", {"emailVisibility": True}),
                                         ("after-password", {"password": "changed-12345", "passwordConfirm":
                                                             "changed-12345"})]
        for label, change in steps:
            if change:
                answer = httpx.patch(f"{backend.url}/api/collections/members/records/{member}", json=change,
                                     headers=_superuser(backend), timeout=30)
                assert answer.status_code == 200, answer.text
            _create(backend, "news", {"t": label})
        _create(backend, "news", {"t": "last"})
        time.sleep(0.5)
        return [event.data["record"]["t"] for event in client.events]
    finally:
        client.close()


def test_a_password_change_drops_the_clients_auth_as_in_pocketbase(stock_pocketbase: Backend,
                                                                      pbfast_fixture_tenant: Backend) -> None:
    stock = _auth_changes_scenario(stock_pocketbase)
    assert stock == ["before", "after-update"]
    assert _auth_changes_scenario(pbfast_fixture_tenant) == stock


def _cascade_scenario(backend: Backend) -> list[tuple[str, str, str]]:
    """Deletes that cascade (a kid deleted with its parent, a reference removed from a tag), then a truncate:
    the events a superuser subscribed to all three collections receives, as (topic, action, name)."""
    parents = _collection(backend, {"name": "parents", "type": "base", "listRule": "",
                                    "fields": [{"name": "name", "type": "text"}]})
    relation = {"type": "relation", "collectionId": parents["id"]}
    _collection(backend, {"name": "kids", "type": "base", "listRule": "", "fields": [
        {"name": "name", "type": "text"}, {**relation, "name": "parent", "cascadeDelete": True, "maxSelect": 1}]})
    _collection(backend, {"name": "tags", "type": "base", "listRule": "", "fields": [
        {"name": "name", "type": "text"}, {**relation, "name": "refs", "maxSelect": 5}]})
    first = _create(backend, "parents", {"name": "p1"})["id"]
    second = _create(backend, "parents", {"name": "p2"})["id"]
    _create(backend, "kids", {"name": "k1", "parent": first})
    _create(backend, "tags", {"name": "t1", "refs": [first, second]})
    client = RawRealtimeClient(backend.url, backend.superuser_token).connect()
    try:
        assert client.subscribe(["parents/*", "kids/*", "tags/*"]).status_code == 204
        headers = _superuser(backend)
        assert httpx.delete(f"{backend.url}/api/collections/parents/records/{first}", headers=headers).status_code == 204
        client.wait_events(3)
        assert httpx.delete(f"{backend.url}/api/collections/parents/truncate", headers=headers).status_code == 204
        client.wait_events(5)
        time.sleep(0.3)
        return [(e.name, e.data["action"], e.data["record"]["name"]) for e in client.events]
    finally:
        client.close()


def test_cascaded_changes_send_their_events_as_in_pocketbase(stock_pocketbase: Backend,
                                                              pbfast_fixture_tenant: Backend) -> None:
    stock = _cascade_scenario(stock_pocketbase)
    assert len(stock) == 5, stock
    ours = _cascade_scenario(pbfast_fixture_tenant)
    # PocketBase visits a deleted record's referencing collections in Go map order (random from run to run), so
    # only the events of each step are compared, not their order within it.
    assert sorted(ours[:3]) == sorted(stock[:3]), (ours, stock)
    assert sorted(ours[3:]) == sorted(stock[3:]), (ours, stock)


@pytest.mark.exclusive
def test_shutdown_ends_streams_cleanly_and_promptly(pbfast_process: object, tmp_path: Path) -> None:
    data_dir = tmp_path / "pbfast"
    data_dir.mkdir()
    process, cp, gw = start_all_in_one(pbfast_process, data_dir)
    create_tenant(cp, gw, "one")
    client = RawRealtimeClient(f"{gw}/t/one").connect()
    try:
        started = time.monotonic()
        assert process.proc is not None
        process.proc.send_signal(signal.SIGTERM)
        assert client.ended.wait(5)
        # Ended before the gateway's native listener drains its connections (1 s): nothing waited for it.
        assert time.monotonic() - started < 0.9, "a realtime stream held the shutdown up"
        assert process.stop() == 0
    finally:
        client.close()


def _options_scenario(backend: Backend) -> dict[str, list[str]]:
    """Topics whose options carry headers a rule reads, a client filter, and ``fields``: the titles each
    topic receives (as a guest)."""
    _collection(backend, {"name": "gated", "type": "base", "listRule": "@request.headers.x_token = 'open'",
                          "viewRule": "@request.query.key = 'k1'", "fields": [{"name": "title", "type": "text"}]})
    seed = _create(backend, "gated", {"title": "seed"})["id"]
    topics = [
        'gated/*?options={"headers":{"X-Token":"open"}}',
        'gated/*?options={"headers":{"X-Token":"shut"}}',
        'gated/*?options={"headers":{"x-token":"open"},"query":{"filter":"title ~ \'b\'"}}',
        'gated/*?options={"headers":{"X-Token":"open"},"query":{"filter":"@request.auth.id = \'\'"}}',
        f'gated/{seed}?options={{"query":{{"key":"k1","fields":"title"}}}}',
        f'gated/{seed}?options={{"query":{{"key":"k2"}}}}',
        "gated/*",
        # as the JS SDK writes options: encodeURIComponent(JSON.stringify(...))
        "gated/*?options=" + quote('{"query":{"filter":"title=\'alpha\'"},"headers":{"x_token":"open"}}', safe=""),
    ]
    client = RawRealtimeClient(backend.url).connect()
    try:
        assert client.subscribe(topics).status_code == 204
        for title in ("alpha", "beta"):
            _create(backend, "gated", {"title": title})
        assert httpx.patch(f"{backend.url}/api/collections/gated/records/{seed}", json={"title": "seed-b"},
                           headers=_superuser(backend)).status_code == 200
        time.sleep(0.8)
        received: dict[str, list[str]] = {topic: [] for topic in topics}
        for event in client.events:
            received[event.name].append(f"{event.data['action']}:{event.data['record'].get('title')}:"
                                        f"{','.join(sorted(event.data['record']))}")
        return {topic.replace(seed, "<seed>"): sorted(values) for topic, values in received.items()}
    finally:
        client.close()


def test_topic_options_reach_the_rules_as_in_pocketbase(stock_pocketbase: Backend,
                                                        pbfast_fixture_tenant: Backend) -> None:
    stock = _options_scenario(stock_pocketbase)
    assert any(stock.values()), stock
    assert _options_scenario(pbfast_fixture_tenant) == stock


def _expand_scenario(backend: Backend) -> dict[str, list[str]]:
    """Topics whose options ask for ``expand`` (with ``fields`` inside it, and over a relation whose target
    the related collection's viewRule hides): what each topic receives (as a guest)."""
    writers = _collection(backend, {"name": "writers", "type": "base", "listRule": "", "viewRule": "name != 'hidden'",
                                    "fields": [{"name": "name", "type": "text"}, {"name": "bio", "type": "text"}]})
    _collection(backend, {"name": "novels", "type": "base", "listRule": "", "viewRule": "", "fields": [
        {"name": "title", "type": "text"},
        {"name": "writer", "type": "relation", "collectionId": writers["id"], "maxSelect": 1}]})
    shown = _create(backend, "writers", {"name": "ann", "bio": "b1"})["id"]
    hidden = _create(backend, "writers", {"name": "hidden", "bio": "b2"})["id"]
    topics = [
        'novels/*?options={"query":{"expand":"writer"}}',
        'novels/*?options={"query":{"expand":"writer","fields":"title,expand.writer.name"}}',
        'novels/*?options={"query":{"expand":"writer,nope"}}',
        "novels/*",
    ]
    client = RawRealtimeClient(backend.url).connect()
    try:
        assert client.subscribe(topics).status_code == 204
        first = _create(backend, "novels", {"title": "one", "writer": shown})["id"]
        _create(backend, "novels", {"title": "two", "writer": hidden})
        assert httpx.delete(f"{backend.url}/api/collections/novels/records/{first}",
                            headers=_superuser(backend)).status_code == 204
        client.wait_events(3 * len(topics), timeout=5)
        time.sleep(0.3)
        received: dict[str, list[str]] = {topic: [] for topic in topics}
        for event in client.events:
            record = event.data["record"]
            writer = (record.get("expand") or {}).get("writer") or {}
            received[event.name].append(f"{event.data['action']}:{record.get('title')}:{','.join(sorted(record))}:"
                                        f"{writer.get('name')}:{','.join(sorted(writer))}")
        return {topic: sorted(values) for topic, values in received.items()}
    finally:
        client.close()


def test_topic_expand_option_as_in_pocketbase(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend) -> None:
    stock = _expand_scenario(stock_pocketbase)
    assert any(":ann:" in value for values in stock.values() for value in values), stock
    assert _expand_scenario(pbfast_fixture_tenant) == stock


def _answers_from_another_address(backend: Backend) -> list[tuple[int, object]]:
    """``POST /api/realtime`` for a live client from the stream's own address and from another one, named by a
    header the tenant's ``trustedProxy`` settings trust (realtime_test.go's "existing client with different
    IP")."""
    client = RawRealtimeClient(backend.url).connect()
    trusted = {"trustedProxy": {"headers": ["X-Test-Ip"], "useLeftmostIP": False}}
    changed = httpx.patch(f"{backend.url}/api/settings", json=trusted, headers=_superuser(backend), timeout=30)
    assert changed.status_code == 200, changed.text
    answers = []
    try:
        for address in ("127.0.0.2", "127.0.0.1"):
            response = httpx.post(f"{backend.url}/api/realtime", json={"clientId": client.client_id,
                                                                      "subscriptions": ["demo2/*"]},
                                  headers={"X-Test-Ip": address}, timeout=30)
            answers.append((response.status_code, response.json() if response.content else None))
    finally:
        client.close()
        put_back = {"trustedProxy": {"headers": [], "useLeftmostIP": False}}
        assert httpx.patch(f"{backend.url}/api/settings", json=put_back, headers=_superuser(backend),
                           timeout=30).status_code == 200
    return answers


def test_only_the_streams_own_address_subscribes_as_in_pocketbase(stock_pocketbase: Backend,
                                                                  pbfast_fixture_tenant: Backend) -> None:
    answers = {backend.name: _answers_from_another_address(backend)
               for backend in (stock_pocketbase, pbfast_fixture_tenant)}
    assert answers["pocketbase"] == [(400, {"data": {}, "message": "Invalid realtime client.", "status": 400}),
                                     (204, None)]
    assert answers["pbfast"] == answers["pocketbase"]
