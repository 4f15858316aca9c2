"""Hostile input to ``expand`` and ``POST /api/batch`` (issue 15): a PocketBase-shaped 4xx, never a 5xx, the
server stays up and nothing is half-written.

Real processes on loopback: an all-in-one serving two tenants made from PocketBase's test data dir (its
settings have batch on): ``fixture``, and ``limited`` with a 0.5 s request time limit. Where PocketBase
answers the same request, the differential scenarios (``tests/pocketbase/scenarios_*.py``) compare with
the real binary; these are the cases where pbfast must differ (PocketBase answers 500, or would run out of
memory) or that only pbfast has (time limits, the reach of upload names and file routes).
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import PbfastProcess
from inputrig import _login, _superuser_args
from pbharness import copy_fixture, create_tenant, start_all_in_one

BATCH_FAILED = "Batch transaction failed."
# Cheap to sample (PocketBase's dry run of a view reads its first rows when it is saved), slow to search: the
# rule below looks for its last row.
SLOW_VIEW_ROWS = 6_000_000
SLOW_VIEW = {
    "name": "slowview", "type": "view", "listRule": "", "viewRule": "",
    "viewQuery": f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {SLOW_VIEW_ROWS}) "
                 "SELECT x AS id, x AS n FROM c",
}


@dataclass
class Tenants:
    fixture: str
    limited: str
    superuser: dict[str, str]
    limited_superuser: dict[str, str]
    fresh: str  # a new tenant: PocketBase's default settings, batches off
    store: Path  # the fixture tenant's files (the node's local object store)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    tmp = tmp_path_factory.mktemp("expand-batch-input")
    data_dir = tmp / "aio"
    for tenant_id in ("fixture", "limited"):
        copy_fixture(data_dir / "tenants" / tenant_id)
    processes: list[PbfastProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> PbfastProcess:
        process = PbfastProcess(args, tmp / f"aio-{len(processes)}.log", env or {}).start()
        processes.append(process)
        return process

    try:
        _, cp, gw = start_all_in_one(start, data_dir)
        create_tenant(cp, gw, "fixture")
        create_tenant(cp, gw, "limited", {"requestTimeLimitMs": 500})
        create_tenant(cp, gw, "fresh")
        fixture, limited = f"{gw}/t/fixture", f"{gw}/t/limited"
        yield Tenants(fixture, limited, _login(fixture, **_superuser_args()), _login(limited, **_superuser_args()),
                      f"{gw}/t/fresh", data_dir / "replica" / "tenants" / "fixture" / "storage")
    finally:
        for process in reversed(processes):
            process.stop(signal.SIGTERM, timeout=5)


def _error(answer: httpx.Response, status: int, message: str | None = None) -> dict[str, object]:
    assert answer.status_code == status, (answer.status_code, answer.text[:500])
    body = answer.json()
    assert set(body) == {"status", "message", "data"} and body["status"] == status, body
    if message is not None:
        assert body["message"] == message, body
    return body  # type: ignore[no-any-return]


def _titles(base: str, headers: dict[str, str], prefix: str) -> list[str]:
    answer = httpx.get(f"{base}/api/collections/demo2/records", params={"filter": f"title~'{prefix}'"}, headers=headers)
    assert answer.status_code == 200, answer.text
    return [item["title"] for item in answer.json()["items"]]


def test_a_tenant_without_batches_does_not_buffer_batch_bodies(tenants: Tenants) -> None:
    """Batches are off on a new tenant (403, as on a fresh PocketBase): once the node knows, it answers
    without reading a batch body into memory (up to PocketBase's 128 MiB default before), here a body
    announced as 20 MB (under the gateway's own limit) of which the client sends only the start."""
    answer = httpx.post(f"{tenants.fresh}/api/batch", json={"requests": [{"method": "GET", "url": "/x"}]})
    _error(answer, 403, "Batch requests are not allowed.")
    url = httpx.URL(tenants.fresh)
    with socket.create_connection((url.host, url.port), timeout=5) as conn:
        conn.sendall(f"POST {url.path}/api/batch HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {20_000_000}\r\n\r\n".encode() + b'{"requests":[' + b" " * 65536)
        head = conn.recv(4096)  # times out (an error) while the node waits for the rest of the body
    assert head.startswith(b"HTTP/1.1 403"), head[:200]
    assert httpx.get(f"{tenants.fresh}/api/health").status_code == 200


def test_batches_switched_on_in_the_settings_read_their_bodies_again(tenants: Tenants) -> None:
    """Batches off, then on again through ``PATCH /api/settings``: the node sizes the next batch's body read
    from the saved settings, not from what it last saw."""
    base, headers = tenants.fixture, tenants.superuser
    batch = {"requests": [{"method": "POST", "url": "/api/collections/demo2/records?fields=title",
                           "body": {"title": "batch_switched_on"}}]}
    try:
        assert httpx.patch(f"{base}/api/settings", headers=headers,
                           json={"batch": {"enabled": False}}).status_code == 200
        _error(httpx.post(f"{base}/api/batch", headers=headers, json=batch), 403, "Batch requests are not allowed.")
    finally:
        assert httpx.patch(f"{base}/api/settings", headers=headers,
                           json={"batch": {"enabled": True}}).status_code == 200
    answer = httpx.post(f"{base}/api/batch", headers=headers, json=batch)
    assert answer.status_code == 200, answer.text
    assert answer.json() == [{"body": {"title": "batch_switched_on"}, "status": 200}]


def test_a_null_request_is_a_validation_error(tenants: Tenants) -> None:
    """PocketBase answers ``{"requests":[null]}`` with a 500 (a nil pointer); pbfast treats it as a request
    with nothing set."""
    answer = httpx.post(f"{tenants.fixture}/api/batch", json={"requests": [None, {"method": "GET", "url": "/x"}]})
    body = _error(answer, 400, "Invalid batch request data.")
    assert body["data"] == {"requests": {"0": {"method": {"code": "validation_required", "message": "Cannot be blank."},
                                               "url": {"code": "validation_required", "message": "Cannot be blank."}}}}


def test_files_in_a_batch_are_stored_with_their_record(tenants: Tenants) -> None:
    """What the JS SDK sends for ``pb.createBatch()`` with a File: the file is stored and served."""
    payload = {"requests": [{"method": "POST", "url": "/api/collections/demo1/records",
                             "body": {"text": "batch_upload"}}]}
    answer = httpx.post(f"{tenants.fixture}/api/batch", headers=tenants.superuser, files={
        "@jsonPayload": (None, json.dumps(payload)), "requests.0.file_many": ("a.txt", b"hello", "text/plain")})
    assert answer.status_code == 200, answer.text
    record = answer.json()[0]["body"]
    served = httpx.get(f"{tenants.fixture}/api/files/demo1/{record['id']}/{record['file_many'][0]}")
    assert served.status_code == 200 and served.content == b"hello"


def test_uploads_refused_by_rules_leave_nothing_stored(tenants: Tenants) -> None:
    """demo3 takes creates from non-"users" auth records only: a guest's upload and a user's leave no file
    (nothing is stored before the rules are checked); the superuser's is kept."""
    user = ("eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoiX3BiX3Vz"
            "ZXJzX2F1dGhfIiwiZXhwIjoyNTI0NjA0NDYxLCJyZWZyZXNoYWJsZSI6dHJ1ZX0.ZT3F0Z3iM-xbGgSG3LEKiEzHrPHr8t8IuHLZGGNuxLo")
    url = f"{tenants.fixture}/api/collections/demo3/records"
    for headers in ({}, {"Authorization": user}):
        answer = httpx.post(url, headers=headers, data={"title": "refused"},
                            files={"files": ("refused.txt", b"no", "text/plain")})
        assert answer.status_code in (400, 403), answer.text
    kept = httpx.post(url, headers=tenants.superuser, data={"title": "kept"},
                      files={"files": ("kept.txt", b"yes", "text/plain")})
    assert kept.status_code == 200, kept.text
    deadline = time.monotonic() + 10
    while any(p.name.startswith("refused_") for p in tenants.store.rglob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    names = [p.name for p in tenants.store.rglob("*.txt")]
    assert not [n for n in names if n.startswith("refused_")] and kept.json()["files"][0] in names, names


@pytest.mark.parametrize("body", [
    b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(1001)) + b"--b--\r\n",
    b'--b\r\nContent-Disposition: form-data; name="@jsonPayload"\r\n\r\n{"requests":[]}',
    b'--b\r\nContent-Disposition: form-data; name="@jsonPayload"',
    b"--b\r\n" + b"X-A: b\r\n" * 10_001 + b"\r\nx\r\n--b--\r\n",
    b"--b\r\n: no name\r\n\r\nx\r\n--b--\r\n",
], ids=["1001 parts", "a part never ends", "headers never end", "10001 header lines", "a header without a name"])
def test_malformed_multipart_is_a_400(tenants: Tenants, body: bytes) -> None:
    answer = httpx.post(f"{tenants.fixture}/api/batch", content=body,
                        headers={"content-type": "multipart/form-data; boundary=b"})
    _error(answer, 400, "Failed to read the submitted batch data.")


def test_file_names_and_routes_cannot_reach_outside_the_record(tenants: Tenants) -> None:
    """Upload names with path parts are reduced to a plain stored name; a file route naming anything but one of
    the record's files (an encoded "/", "..") is a 404; a file under no file field is ignored."""
    url = f"{tenants.fixture}/api/collections/demo1/records"
    answer = httpx.post(url, headers=tenants.superuser, data={"text": "traversal"}, files=[
        ("file_many", ("../../../data.db", b"hello", "text/plain")),
        ("file_many", ("..\\..\\x.txt", b"x", "text/plain")), ("other", ("a.txt", b"ignored", "text/plain"))])
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert len(record["file_many"]) == 2 and not any("/" in n or "\\" in n or ".." in n for n in record["file_many"])
    base = f"{tenants.fixture}/api/files/demo1/{record['id']}"
    for name in ("..%2F..%2Fdata.db", "..%2F..%2F..%2F..%2Fdata.db", "%2e%2e", "a.txt", record["file_many"][0] + "%00"):
        answer = httpx.get(f"{base}/{name}")
        assert answer.status_code == 404 and answer.json()["status"] == 404, (name, answer.text)
    assert httpx.get(f"{base}/{record['file_many'][0]}").content == b"hello"


@pytest.mark.parametrize("body", [
    b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(1001)) + b"--b--\r\n",
    b'--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nx',
    b"--b\r\n" + b"X-A: b\r\n" * 10_001 + b"\r\nx\r\n--b--\r\n",
    b'--b\r\nContent-Disposition: form-data; name="@jsonPayload"\r\n\r\n' + b"[" * 100_000 + b"\r\n--b--\r\n",
    b'--b\r\nContent-Disposition: form-data; name="@jsonPayload"\r\n\r\n{"title":"\xff"}\r\n--b--\r\n',
], ids=["1001 parts", "a part never ends", "10001 header lines", "deep payload", "invalid UTF-8 payload"])
def test_malformed_record_forms_are_a_400(tenants: Tenants, body: bytes) -> None:
    answer = httpx.post(f"{tenants.fixture}/api/collections/demo2/records", content=body,
                        headers={"content-type": "multipart/form-data; boundary=b"})
    _error(answer, 400, "Something went wrong while processing your request.")
    assert httpx.get(f"{tenants.fixture}/api/health").status_code == 200


@pytest.mark.exclusive
def test_many_expand_paths_cost_linear_time(tenants: Tenants) -> None:
    """Thousands of paths in one ``expand`` (as many as a URL carries): normalising them (paths contained
    in another dropped, duplicates dropped) takes linear time, not the quadratic time of a pairwise check
    (seconds of a node's CPU per request at this size)."""
    paths = [f"x{i}.rel_one" for i in range(2500)] + [f"y{i}" for i in range(2500)] + ["rel_one"]
    started = time.monotonic()
    answer = httpx.get(f"{tenants.fixture}/api/collections/demo1/records/al1h9ijdeojtsjy",
                       params={"expand": ",".join(paths), "fields": "id,expand.rel_one.id"}, headers=tenants.superuser,
                       timeout=60)
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json() == {"id": "al1h9ijdeojtsjy", "expand": {"rel_one": {"id": "84nmscqy84lsi1t"}}}
    assert elapsed < 1.5, elapsed


@pytest.mark.exclusive
def test_paths_sharing_a_prefix_expand_it_once(tenants: Tenants) -> None:
    """1,500 paths through the same back-relation (each failing one level further down, as PocketBase drops
    them): the back-relation from the same records is looked up and fetched once for all of them, not once
    per path (1,000 related records each time: seconds of a node's CPU per request)."""
    base, headers = tenants.fixture, tenants.superuser
    hub = httpx.post(f"{base}/api/collections", headers=headers, json={
        "name": "hub", "type": "base", "listRule": "", "viewRule": "", "fields": [{"name": "n", "type": "number"}]})
    assert hub.status_code == 200, hub.text
    spokes = httpx.post(f"{base}/api/collections", headers=headers, json={
        "name": "spokes", "type": "base", "listRule": "", "viewRule": "", "fields": [
            {"name": "hub", "type": "relation", "collectionId": hub.json()["id"], "maxSelect": 1}]})
    assert spokes.status_code == 200, spokes.text
    assert httpx.post(f"{base}/api/collections/hub/records", headers=headers,
                      json={"id": "hub000000000001"}).status_code == 200
    for start in range(0, 1000, 50):
        created = httpx.post(f"{base}/api/batch", headers=headers, json={"requests": [
            {"method": "POST", "url": "/api/collections/spokes/records?fields=id", "body": {"hub": "hub000000000001"}}
            for _ in range(start, start + 50)]})
        assert created.status_code == 200, created.text
    paths = ["spokes_via_hub"] + [f"spokes_via_hub.x{i}" for i in range(1500)]
    started = time.monotonic()
    answer = httpx.get(f"{base}/api/collections/hub/records/hub000000000001", timeout=120,
                       params={"expand": ",".join(paths), "fields": "id,expand.spokes_via_hub.hub"})
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json() == {"id": "hub000000000001"}  # every path through the back-relation fails, as a whole
    assert elapsed < 1.5, elapsed
    single = httpx.get(f"{base}/api/collections/hub/records/hub000000000001",
                       params={"expand": "spokes_via_hub", "fields": "expand.spokes_via_hub.hub"})
    assert single.json()["expand"]["spokes_via_hub"][:2] == [{"hub": "hub000000000001"}] * 2


def test_an_expand_with_too_many_steps_is_refused(tenants: Tenants) -> None:
    """A back-relation has many spellings (``tt_via_r``, ``TT_via_r``, ``tt(r)``...): 1,600 paths of 4 of
    them take ~2,300 distinct steps, each a query. Past 1,000 steps the answer is a 400 (PocketBase would run
    them all); a realistic expand takes a few dozen."""
    base, headers = tenants.fixture, tenants.superuser
    created = httpx.post(f"{base}/api/collections", headers=headers, json={
        "name": "tt", "type": "base", "listRule": "", "viewRule": "", "fields": [{"name": "n", "type": "number"}]})
    assert created.status_code == 200, created.text
    changed = httpx.patch(f"{base}/api/collections/tt", headers=headers, json={"fields": [
        *created.json()["fields"], {"name": "r", "type": "relation", "collectionId": created.json()["id"],
                                    "maxSelect": 1}]})
    assert changed.status_code == 200, changed.text
    assert httpx.post(f"{base}/api/collections/tt/records", headers=headers,
                      json={"id": "tt0000000000001"}).status_code == 200
    assert httpx.patch(f"{base}/api/collections/tt/records/tt0000000000001", headers=headers,
                       json={"r": "tt0000000000001"}).status_code == 200
    spellings = ["r"] + [f"{name}{via}" for name in ("tt", "Tt", "tT", "TT") for via in ("_via_r", "(r)")]
    paths = [".".join(p) for p in itertools.islice(itertools.product(spellings, repeat=4), 1600)]
    started = time.monotonic()
    answer = httpx.get(f"{base}/api/collections/tt/records/tt0000000000001", timeout=60,
                       params={"expand": ",".join(paths), "fields": "id"})
    assert "1000 distinct relation steps" in str(_error(answer, 400)["message"])
    assert time.monotonic() - started < 5
    few = httpx.get(f"{base}/api/collections/tt/records/tt0000000000001",
                    params={"expand": "r.TT_via_r.tt(r)", "fields": "expand.r.expand.TT_via_r.id"})
    assert few.json() == {"expand": {"r": {"expand": {"TT_via_r": [{"id": "tt0000000000001"}]}}}}, few.text


def test_an_expand_that_multiplies_is_refused(tenants: Tenants) -> None:
    """40 records each related to all 40: ``rel.rel.rel`` would show 40^4 = 2.56 million records (PocketBase
    builds that answer in memory); pbfast refuses past 100,000 expanded records, fast, and stays up."""
    base, headers = tenants.fixture, tenants.superuser
    created = httpx.post(f"{base}/api/collections", headers=headers, json={
        "name": "fan", "type": "base", "listRule": "", "viewRule": "",
        "fields": [{"name": "n", "type": "number"}]})
    assert created.status_code == 200, created.text
    fan_id = created.json()["id"]
    changed = httpx.patch(f"{base}/api/collections/fan", headers=headers, json={"fields": [
        *created.json()["fields"], {"name": "rel", "type": "relation", "collectionId": fan_id, "maxSelect": 999}]})
    assert changed.status_code == 200, changed.text
    ids = [f"fan{i:012d}" for i in range(40)]
    requests = [{"method": "POST", "url": "/api/collections/fan/records", "body": {"id": i, "n": n}}
                for n, i in enumerate(ids)]
    assert httpx.post(f"{base}/api/batch", headers=headers, json={"requests": requests}).status_code == 200
    updates = [{"method": "PATCH", "url": f"/api/collections/fan/records/{i}?fields=id", "body": {"rel": ids}}
               for i in ids]
    assert httpx.post(f"{base}/api/batch", headers=headers, json={"requests": updates}).status_code == 200

    two_levels = httpx.get(f"{base}/api/collections/fan/records?perPage=40&expand=rel.rel&fields=id")
    assert two_levels.status_code == 200, two_levels.text  # 40 * 40 * 40 = 64,000 records
    started = time.monotonic()
    answer = httpx.get(f"{base}/api/collections/fan/records?perPage=40&expand=rel.rel.rel", timeout=30)
    _error(answer, 400)
    assert "100000" in str(answer.json()["message"])
    assert time.monotonic() - started < 10
    assert httpx.get(f"{base}/api/health").status_code == 200


def test_a_batch_runs_within_the_request_time_limit(tenants: Tenants) -> None:
    """The tenant's request time limit (0.5 s) bounds the whole batch, below its own timeout (5 s): the
    batch is stopped with the time limit's answer and nothing of it is written."""
    base, headers = tenants.limited, tenants.limited_superuser
    assert httpx.post(f"{base}/api/collections", headers=headers, json=SLOW_VIEW, timeout=30).status_code == 200
    rule = httpx.patch(f"{base}/api/collections/demo2", headers=headers,
                       json={"createRule": f"@collection.slowview.n >= {SLOW_VIEW_ROWS}"})
    assert rule.status_code == 200, rule.text
    requests = [{"method": "POST", "url": "/api/collections/demo2/records", "body": {"title": f"batch_limited{i}"}}
                for i in range(3)]
    answer = httpx.post(f"{base}/api/batch", json={"requests": requests}, timeout=30)
    body = _error(answer, 400)
    assert "time limit" in str(body["message"]), body
    assert _titles(base, headers, "batch_limited") == []
    fast = httpx.patch(f"{base}/api/collections/demo2", headers=headers, json={"createRule": ""})
    assert fast.status_code == 200
    answer = httpx.post(f"{base}/api/batch", json={"requests": requests}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert sorted(_titles(base, headers, "batch_limited")) == [f"batch_limited{i}" for i in range(3)]


def test_batch_item_ids_and_queries_are_not_sql(tenants: Tenants) -> None:
    """Collection names, ids and queries of items reach SQL only as quoted names and bound values."""
    base, headers = tenants.fixture, tenants.superuser
    requests = [
        {"method": "DELETE", "url": "/api/collections/demo2/records/x'%20OR%20'1'='1"},
        {"method": "PATCH", "url": "/api/collections/demo2%22;DROP%20TABLE%20demo2;--/records/x", "body": {}},
        {"method": "PUT", "url": "/api/collections/demo2/records", "body": {"id": "' OR 1=1 --", "title": "batch_sql"}},
    ]
    for request in requests:
        answer = httpx.post(f"{base}/api/batch", headers=headers, json={"requests": [request]})
        body = _error(answer, 400, BATCH_FAILED)
        assert body["data"]["requests"]["0"]["code"] == "batch_request_failed", body  # type: ignore[index]
    assert len(_titles(base, headers, "test")) == 3  # demo2 untouched
