"""Bad input must never give a 5xx or break a collection (issue 11 §3).

Real processes on loopback: an all-in-one (Python gateway) serving a copy of PocketBase's test data, and a
cluster (control plane, tenant node, native gateway) whose tenant is reached both through the gateway and
at the node directly. Expected answers are stock PocketBase 0.40.6's (the differential scenarios in
``tests/pocketbase/test_differential.py`` compare the same requests with the real binary).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from inputrig import AllInOne, ClusterRig, Target, start_all_in_one_rig, start_cluster_rig

BAD_REQUEST = {"data": {}, "message": "Something went wrong while processing your request.", "status": 400}


@pytest.fixture(scope="module")
def aio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AllInOne]:
    with start_all_in_one_rig(tmp_path_factory.mktemp("bad-input-aio")) as rig:
        yield rig


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRig]:
    with start_cluster_rig(tmp_path_factory.mktemp("bad-input-cluster")) as rig:
        yield rig


@pytest.fixture(params=["all-in-one", "native gateway", "python gateway", "tenant node"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "all-in-one":
        return request.getfixturevalue("aio").gateway  # type: ignore[no-any-return]
    rig: ClusterRig = request.getfixturevalue("cluster")
    return {"native gateway": rig.gateway, "python gateway": rig.python_gateway, "tenant node": rig.node}[request.param]


def nested(depth: int, inner: str) -> str:
    return "(" * depth + inner + ")" * depth


def assert_pocketbase_error(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    body = answer.json()
    assert set(body) == {"status", "message", "data"} and body["status"] == status, body


# ---- filters ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [800, 1000, 1700])
def test_deeply_nested_filter_is_answered(target: Target, depth: int) -> None:
    """PocketBase answers 200 up to its 3,500-byte filter limit; pbfast raised RecursionError (500)."""
    for inner in ("id != ''", "id != '' || id = ''"):
        answer = target.request("GET", "/api/collections/_superusers/records", superuser=True,
                                params={"filter": nested(depth, inner), "fields": "id"})
        assert answer.status_code == 200, (depth, answer.text[:300])
        assert answer.json()["totalItems"] >= 1


@pytest.mark.parametrize("depth", [5000, 10000])
def test_filter_over_the_length_limit_is_a_clear_400(target: Target, depth: int) -> None:
    answer = target.request("GET", "/api/collections/_superusers/records", superuser=True,
                            params={"filter": nested(depth, "id != ''")})
    assert answer.status_code == 400 and answer.json() == BAD_REQUEST


def test_deeply_nested_list_rules_are_evaluated(aio: AllInOne) -> None:
    """API rules have no length limit in PocketBase: 1,000 and 5,000 levels answer 200 (pbfast refused rules
    over 3,500 bytes and failed with RecursionError on deep ones)."""
    gw = aio.gateway
    original = gw.request("GET", "/api/collections/demo1", superuser=True).json()["listRule"]
    try:
        for depth in (1000, 5000, 50000):
            rule = nested(depth, "id = '84nmscqy84lsi1t'")
            saved = gw.request("PATCH", "/api/collections/demo1", superuser=True, json={"listRule": rule})
            assert saved.status_code == 200, saved.text[:300]
            listed = gw.request("GET", "/api/collections/demo1/records", params={"fields": "id"})
            assert listed.status_code == 200, listed.text[:300]
            assert [item["id"] for item in listed.json()["items"]] == ["84nmscqy84lsi1t"]
    finally:
        gw.request("PATCH", "/api/collections/demo1", superuser=True, json={"listRule": original})


def test_query_sqlite_refuses_is_a_400(target: Target) -> None:
    """More joins than SQLite allows (64): its error is the filter's fault, answered 400 like PocketBase."""
    too_many_joins = " && ".join(f"@collection._superusers:a{i}.id != ''" for i in range(70))
    answer = target.request("GET", "/api/collections/_superusers/records", superuser=True,
                            params={"filter": too_many_joins})
    assert answer.status_code == 400 and answer.json() == BAD_REQUEST
    assert target.request("GET", "/api/health").status_code == 200


# ---- numbers and JSON bodies -----------------------------------------------------------------------------


def public_collection(target: Target, name: str = "openbox") -> str:
    """A collection anyone may list and create in (a number, a JSON and a text field)."""
    if target.request("GET", f"/api/collections/{name}", superuser=True).status_code == 404:
        created = target.request("POST", "/api/collections", superuser=True, json={
            "name": name, "type": "base", "listRule": "", "viewRule": "", "createRule": "", "updateRule": "",
            "fields": [{"type": "number", "name": "n"}, {"type": "json", "name": "j"}, {"type": "text", "name": "t"}]})
        assert created.status_code == 200, created.text
    return f"/api/collections/{name}/records"


def test_numbers_past_64_bits_are_floats_and_the_listing_survives(target: Target) -> None:
    """PocketBase decodes JSON numbers into float64: 2**64 is stored and shown as 18446744073709552000.
    pbfast stored the row, answered 500, and every later listing of the collection failed."""
    records = public_collection(target)
    for value, shown in ((18446744073709551616, 18446744073709552000), (9223372036854775807, 9223372036854776000),
                         (100000000000000000000.0, 100000000000000000000), ("18446744073709551616", 18446744073709552000)):
        created = target.request("POST", records, content=b'{"n": %s}' % str(value).encode() if not isinstance(
            value, str) else b'{"n": "%s"}' % value.encode(), headers={"content-type": "application/json"})
        assert created.status_code == 200, created.text
        assert created.json()["n"] == shown and created.content.count(str(shown).encode()) == 1
    created = target.request("POST", records, json={"j": {"a": 18446744073709551616}})
    assert created.status_code == 200, created.text
    for query in ({}, {"sort": "-n"}, {"sort": "j"}, {"filter": "n > 1"}):
        listed = target.request("GET", records, params=query)
        assert listed.status_code == 200, (query, listed.text[:300])
        assert 18446744073709552000 in [item["n"] for item in listed.json()["items"]]


def test_number_field_limits_past_64_bits(target: Target) -> None:
    name = "bigmax"
    answer = target.request("POST", "/api/collections", superuser=True, json={
        "name": name, "type": "base", "createRule": "", "fields": [{"type": "number", "name": "n", "max": 1e20}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["fields"][1]["max"] == 100000000000000000000
    over = target.request("POST", f"/api/collections/{name}/records", json={"n": 1e21})
    assert_pocketbase_error(over, 400)
    assert over.json()["data"]["n"]["params"] == {"max": 100000000000000000000}
    assert target.request("DELETE", f"/api/collections/{name}", superuser=True).status_code == 204


def test_json_nested_deeper_than_answers_can_carry(target: Target) -> None:
    """A JSON field value nested 300 levels: as a JSON value it is a clear 400 (it cannot be written back);
    as JSON text it is stored and must not break the listing."""
    records = public_collection(target, "deepjson")
    deep = "[" * 300 + "]" * 300
    assert_pocketbase_error(target.request("POST", records, content=b'{"j": ' + deep.encode() + b"}",
                                           headers={"content-type": "application/json"}), 400)
    created = target.request("POST", records, json={"j": deep})
    assert created.status_code == 200, created.text
    listed = target.request("GET", records)
    assert listed.status_code == 200, listed.text[:300]
    assert {type(item["j"]).__name__ for item in listed.json()["items"]} == {"list"}, listed.text[:200]
    assert target.request("GET", f"{records}/{created.json()['id']}").status_code == 200


@pytest.mark.parametrize(("body", "status"), [
    (b"null", 200), (b"  null \n", 200), (b"null trailing", 200), (b'{"t": "a"} {"t": "b"}', 200), (b"{}", 200),
    (b"[]", 400), (b'"x"', 400), (b"1", 400), (b"true", 400), (b"nul", 400), (b'{"n": 1e400}', 400),
    (b'{"t": NaN}', 400), (b'{"t": "\\ud800"}', 400),
])
def test_request_bodies_bind_like_pocketbase(target: Target, body: bytes, status: int) -> None:
    """Go's decoder reads the first JSON value and ignores what follows; ``null`` is an empty object."""
    records = public_collection(target)
    created = target.request("POST", records, content=body, headers={"content-type": "application/json"})
    if status == 200:
        assert created.status_code == 200, created.text
        updated = target.request("PATCH", f"{records}/{created.json()['id']}", content=body,
                                 headers={"content-type": "application/json"})
        assert updated.status_code == 200, updated.text
    else:
        assert created.status_code == 400 and created.json() == BAD_REQUEST, created.text


# ---- broken request bodies -------------------------------------------------------------------------------


def broken_bodies(target: Target, path: str) -> dict[str, bytes]:
    head = (f"POST {target.path_prefix}{path} HTTP/1.1\r\nHost: pb.test\r\ncontent-type: application/json\r\n"
            f"{target.extra_head()}")
    chunked = head + "transfer-encoding: chunked\r\n\r\n"
    return {
        "huge chunk size": (chunked + "ffffffffffffffffff\r\n{}\r\n0\r\n\r\n").encode(),
        "chunk size not hex": (chunked + "zz\r\n{}\r\n0\r\n\r\n").encode(),
        "bad size after a good chunk": (chunked + "2\r\n{}\r\n-1\r\n\r\n").encode(),
    }


def test_malformed_chunked_body_is_the_clients_400(target: Target) -> None:
    """The native gateway answered 502 (the node's exchange failed); the all-in-one and the node created
    a record from the part read before the error (granian ends such a body silently)."""
    records = public_collection(target, "chunks")
    before = target.request("GET", records).json()["totalItems"]
    for name, request in broken_bodies(target, records).items():
        status, body = target.raw(request)
        assert status == 400, (name, status, body[:200])
        assert set(httpx.Response(400, content=body).json()) == {"status", "message", "data"}
    assert target.request("GET", records).json()["totalItems"] == before  # nothing was created
    good = (f"POST {target.path_prefix}{records} HTTP/1.1\r\nHost: pb.test\r\ncontent-type: application/json\r\n"
            f"{target.extra_head()}transfer-encoding: chunked\r\n\r\n8\r\n{{\"t\":\"a\"\r\n1\r\n}}\r\n0\r\n\r\n")
    status, body = target.raw(good.encode())
    assert status == 200, body[:200]


def test_body_cut_short_is_the_clients_400(target: Target) -> None:
    records = public_collection(target, "chunks")
    before = target.request("GET", records).json()["totalItems"]
    head = (f"POST {target.path_prefix}{records} HTTP/1.1\r\nHost: pb.test\r\ncontent-type: application/json\r\n"
            f"{target.extra_head()}content-length: 10\r\n\r\n{{}}").encode()
    host, port = target.host_port
    import socket  # noqa: PLC0415 - only this test half-closes a connection

    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(head)
        conn.shutdown(socket.SHUT_WR)  # 2 of 10 bytes, then the client is done sending
        answer = conn.recv(65536)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert target.request("GET", records).json()["totalItems"] == before


def test_an_early_answer_to_a_large_body_reaches_the_client(target: Target) -> None:
    """Found by the fuzz run: the node answered 404/403 without reading a 3 MB body and hung up, and the
    native gateway, still streaming that body, answered 502 "The tenant's node closed the connection."."""
    body = b'{"t": "' + b"x" * 3_000_000 + b'"}'
    for path, status in (("/api/collections/nope/records", 404), ("/api/collections/_superusers/records", 403),
                         ("/api/collections/demo9/records/a%2fb", 404)):
        answer = target.request("POST", path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == status, (path, answer.status_code, answer.text[:200])
    assert target.request("GET", "/api/health").status_code == 200


def test_unread_bodies_on_keep_alive_connections_never_give_a_5xx(target: Target) -> None:
    """Found by the fuzz run: POSTs with bodies from 10 bytes to 300 kB, on a few keep-alive connections at
    once, some to routes that answer without reading the body (no such route). granian closed each
    connection with an unread body left on it, and the all-in-one's native listener, which hands every
    tenant request to its Python side over pooled connections, lost the answer (of the request still sending
    its body) or the next request on that connection: 503 "The gateway is not ready" for a few percent of
    them; the Python data path, which stopped sending such a body on to the node once the node had answered,
    left it unread too, and granian closed the client's connection under its next request. Every answer must
    be the API's own."""
    paths = {"/api/health": 404, "/api/nope": 404, "/api/collections/nope/records": 404,
             "/api/collections/_superusers/records": 403}
    sizes = [10, 200, 5_000, 70_000, 300_000]
    answers: list[tuple[str, int, int, str]] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=target.base, headers={**target.headers, "content-type": "application/json"},
                          timeout=30) as session:
            for _ in range(40):
                path, size = rng.choice(list(paths)), rng.choice(sizes)
                try:
                    answer = session.post(path, content=b'{"t":"' + b"x" * size + b'"}')
                except httpx.TransportError as err:  # a keep-alive connection closed under the request
                    answers.append((path, size, 0, repr(err)))
                    continue
                answers.append((path, size, answer.status_code, answer.text[:120]))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wrong = [answer for answer in answers if answer[2] != paths[answer[0]]]
    assert len(answers) == 160 and not wrong, wrong[:5]


def test_rules_sqlite_refuses_never_fail_the_server(aio: AllInOne) -> None:
    """An API rule SQLite refuses (more than 64 joins) makes the rule not hold, as a failing rule query
    does in PocketBase: 400 for a create, 403 for a login, never a 500."""
    gw = aio.gateway
    rule = " && ".join(f"@collection.demo1:a{i}.id != ''" for i in range(70))
    records = public_collection(gw, "joiny")
    assert gw.request("PATCH", "/api/collections/joiny", superuser=True, json={"createRule": rule}).status_code == 200
    assert_pocketbase_error(gw.request("POST", records, json={"t": "x"}), 400)
    original = gw.request("GET", "/api/collections/clients", superuser=True).json()["authRule"]
    assert gw.request("PATCH", "/api/collections/clients", superuser=True, json={"authRule": rule}).status_code == 200
    try:
        login = gw.request("POST", "/api/collections/clients/auth-with-password",
                           json={"identity": "test@example.com", "password": "1234567890"})
        assert_pocketbase_error(login, 403)
    finally:
        gw.request("PATCH", "/api/collections/clients", superuser=True, json={"authRule": original})


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_literal(name: str, value: str) -> bytes:
    """A header as an HPACK "literal without indexing, new name" (short names and values only)."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def test_http2_body_ending_with_an_empty_frame_is_whole(target: Target) -> None:
    """Over HTTP/2 a client may end a body with an empty DATA frame (curl -T - does): granian reports it
    like a broken HTTP/1 body, so only HTTP/1 bodies are checked for that. Every public listener speaks h2c
    with prior knowledge: granian's (Python gateway) and the native one (all-in-one, gateway), which takes the
    body over HTTP/2 and sends it on over HTTP/1.1. A tenant node, which only gateways talk to, speaks HTTP/1.1
    only (it holds less per connection): it refuses the connection and nothing is written."""
    records = public_collection(target, "chunks")
    headers = [(":method", "POST"), (":scheme", "http"), (":authority", "pb.test"),
               (":path", target.path_prefix + records), ("content-type", "application/json"),
               *[(k.lower(), v) for k, v in target.headers.items()]]
    block = b"".join(_hpack_literal(k, v) for k, v in headers)
    stream = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, b"") + _h2_frame(1, 4, 1, block)
              + _h2_frame(0, 0, 1, b'{"t":') + _h2_frame(0, 0, 1, f'"h2 {target.name}"}}'.encode())
              + _h2_frame(0, 1, 1, b""))
    import socket  # noqa: PLC0415 - only these tests speak raw HTTP/2

    with socket.create_connection(target.host_port, timeout=10) as conn:
        conn.sendall(stream)
        if target.name == "tenant node":
            while conn.recv(65536):  # closed by the node
                pass
            listed = target.request("GET", records, params={"filter": f"t = 'h2 {target.name}'"})
            assert listed.json()["totalItems"] == 0, listed.text
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listed = target.request("GET", records, params={"filter": f"t = 'h2 {target.name}'"})
            if listed.json()["totalItems"]:
                break
            time.sleep(0.05)
    assert listed.json()["totalItems"] == 1, listed.text
    target.request("DELETE", f"{records}/{listed.json()['items'][0]['id']}", superuser=True)
