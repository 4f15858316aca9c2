"""A tenant node with worker processes (``--workers=2``) keeps the single-process node's guarantees: real
processes on loopback (a control plane, nodes), each tenant request on a fresh connection so the kernel
spreads them over the workers (``pbfast_node_worker_requests_total`` shows each worker served some).

- a schema change made through one worker is seen by the other, which had the tenant open already;
- a tenant's daily request quota is exact across the workers, and so are its ``rateLimits`` (one window per
  client for the whole node);
- realtime streams receive every write's event in commit order, whichever worker took the write;
- a worker killed with -9 is started again, and no write it acknowledged is lost; the fork server killed with -9
  takes its workers along, and they are started again as programs of their own;
- stopping the node ends the event streams its workers relay at once;
- a move releases the tenant from every worker while they serve it: afterwards the old node answers
  "moved" from every worker (a request it refused meanwhile was refused as "moved", which a gateway retries),
  and the new node has every write the old one acknowledged, a write that was still waiting for SQLite's lock
  when the release began included.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import httpx
import orjson
import pytest

from cpcluster import ADMIN, CLUSTER_TOKEN, Member, Start, start_cluster, wait_until
from helpers import moto_s3_server
from nodetools import S3_ENV, forwarded, forwarded_ok, scrape, start_node, tenant

OWNER = {"email": "owner@example.com", "password": "owner-password-1"}
WORKERS = ("--workers=2",)
BUCKET = "workers-test"


@pytest.fixture
def s3() -> Iterator[str]:
    with moto_s3_server(BUCKET) as endpoint:
        yield endpoint


def _worker_requests(node_url: str) -> list[float]:
    samples = scrape(node_url)
    return [samples[f'pbfast_node_worker_requests_total{{worker="{index}"}}'] for index in (1, 2)]


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, name)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            name, rest = stat.split("(", 1)[1].rsplit(")", 1)
            found[int(entry)] = (int(rest.split()[1]), name)
    return found


def _worker_pids(node_pid: int) -> list[int]:
    """The node's worker processes (named ``pbfast-worker<N>``; children of its fork server, a child of the
    node's main process, or of the main process itself)."""
    processes = _processes()
    return sorted(pid for pid, (parent, name) in processes.items() if name.startswith("pbfast-worker")
                  and node_pid in (parent, processes.get(parent, (0, ""))[0]))


def _children(pid: int) -> list[int]:
    return [child for child, (parent, _) in _processes().items() if parent == pid]


def _name(pid: int) -> str:
    return _processes().get(pid, (0, ""))[1]


def _create_tenant(cp_url: str, tenant_id: str, **settings: object) -> int:
    created = httpx.post(f"{cp_url}/api/cp/tenants", headers=ADMIN,
                         json={"id": tenant_id, "superuser": OWNER, **settings}, timeout=30)  # slow when loaded
    assert created.status_code == 200, created.text
    return int(created.json()["epoch"])


def _owner_token(node_url: str, tenant_id: str, epoch: int) -> str:
    return str(forwarded_ok(node_url, tenant_id, epoch, "POST", "/api/collections/_superusers/auth-with-password",
                            json={"identity": OWNER["email"], "password": OWNER["password"]}).json()["token"])


def _notes(node_url: str, tenant_id: str, epoch: int, token: str) -> list[dict[str, object]]:
    listed = forwarded_ok(node_url, tenant_id, epoch, "GET", "/api/collections/notes/records?perPage=500", token)
    return list(listed.json()["items"])


def _events_after_subscribing(lines: Iterator[str], node_url: str, tenant_id: str, epoch: int, topic: str,
                              write: Callable[[], object]) -> list[str]:
    """Read a stream's lines up to its ``PB_CONNECT``, subscribe its client to ``topic`` (as a gateway forwards
    it), run ``write`` and return ``action:n`` of the events it wrote."""
    client_id = ""
    for line in lines:
        if line.startswith("id:"):
            client_id = line[3:].strip()
        if line.startswith("data:") and client_id:
            break
    subscribed = forwarded(node_url, tenant_id, epoch, "POST", "/api/realtime",
                           json={"clientId": client_id, "subscriptions": [topic]})
    assert subscribed.status_code == 204, subscribed.text
    count = len(list(write()))  # type: ignore[call-overload]
    seen: list[str] = []
    for line in lines:
        if line.startswith("data:") and '"action"' in line:
            event = orjson.loads(line[5:])
            seen.append(f"{event['action']}:{event['record']['n']}")
            if len(seen) == count:
                break
    return seen


def _realtime_events(node_url: str, tenant_id: str, epoch: int, topic: str, write: Callable[[], object]) -> list[str]:
    """``action:n`` of each event a stream subscribed to ``topic`` receives while ``write`` runs (the stream
    and the subscription sent as a gateway forwards them)."""
    headers = {"X-Pbfast-Cluster-Token": CLUSTER_TOKEN, "X-Pbfast-Epoch": str(epoch)}
    with httpx.stream("GET", f"{node_url}/t/{tenant_id}/api/realtime", headers=headers,
                      timeout=httpx.Timeout(10.0, read=5.0)) as stream:
        return _events_after_subscribing(stream.iter_lines(), node_url, tenant_id, epoch, topic, write)


def _held_realtime_events(node_url: str, tenant_id: str, epoch: int, topic: str,
                          write: Callable[[], object]) -> list[str]:
    """:func:`_realtime_events` for a stream the node holds natively, as a gateway asks for it: the answer is the
    stream's head with where the holder has it; a connection there with a wrong token gets nothing."""
    headers = {"X-Pbfast-Cluster-Token": CLUSTER_TOKEN, "X-Pbfast-Epoch": str(epoch),
               "X-Pbfast-Stream-Holder": CLUSTER_TOKEN}
    answer = httpx.get(f"{node_url}/t/{tenant_id}/api/realtime", headers=headers, timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"] == "text/event-stream", answer.text
    port, ticket = answer.headers["x-pbfast-stream-held"].split()
    host = httpx.URL(node_url).host
    with socket.create_connection((host, int(port)), timeout=5) as intruder:
        intruder.sendall(f"not-the-token {ticket}\n".encode())
        assert intruder.recv(100) == b""  # closed, nothing sent
    with socket.create_connection((host, int(port)), timeout=5) as stream:
        stream.sendall(f"{CLUSTER_TOKEN} {ticket}\n".encode())
        lines = (line.decode() for line in stream.makefile("rb"))
        return _events_after_subscribing(lines, node_url, tenant_id, epoch, topic, write)


def test_workers_share_schema_quota_and_survive_kill_9(pbfast_process: Start, tmp_path: Path) -> None:
    cp = start_cluster(pbfast_process, tmp_path, 1)[0]
    node, url = start_node(pbfast_process, "node-w", f"127.0.0.1:{cp.http_port}", tmp_path, WORKERS)
    wait_until(lambda: httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"])
    epoch = _create_tenant(cp.url, "w")
    token = _owner_token(url, "w", epoch)
    # Both workers open the tenant before its schema changes.
    before = _worker_requests(url)
    for _ in range(30):
        forwarded_ok(url, "w", epoch, "GET", "/api/health")
    opened = _worker_requests(url)
    assert all(now > then for now, then in zip(opened, before)), opened

    # A schema change made through one worker is seen by the other at once: lists, then writes of a new field.
    forwarded_ok(url, "w", epoch, "POST", "/api/collections", token,
                 {"name": "notes", "type": "base", "listRule": "", "createRule": "",
                  "fields": [{"name": "n", "type": "text"}]})
    for _ in range(20):
        assert forwarded(url, "w", epoch, "GET", "/api/collections/notes/records").status_code == 200
    forwarded_ok(url, "w", epoch, "PATCH", "/api/collections/notes", token,
                 {"fields": [{"name": "n", "type": "text"}, {"name": "m", "type": "number"}]})
    for index in range(20):
        created = forwarded(url, "w", epoch, "POST", "/api/collections/notes/records", json={"n": f"s{index}", "m": index})
        assert created.status_code == 200 and created.json()["m"] == index, created.text
    listed = _worker_requests(url)
    assert all(now > then for now, then in zip(listed, opened)), listed

    # Every worker routes on the path as the client spelt it, decoded once: an encoded "/" separates nothing
    # and "%25" stays a "%" (the id below is no record's), with or without the gateway's spelling.
    record_id = _notes(url, "w", epoch, token)[0]["id"]
    double_encoded = f"/api/collections/notes/records/%25{ord(record_id[0]):02X}{record_id[1:]}"
    assert forwarded(url, "w", epoch, "GET", f"/api/collections/notes/records/{record_id}", token).status_code == 200
    for _ in range(10):  # over both workers
        for path, raw_path in ((double_encoded, False), (double_encoded, True),
                               (f"/api/collections/notes%2Frecords/{record_id}", True)):
            answer = forwarded(url, "w", epoch, "GET", path, token, raw_path=raw_path)
            assert answer.status_code == 404, (path, raw_path, answer.text)

    # Realtime across the workers: the stream and its subscription are the main process's, and so are the
    # writes of a tenant with streams open, so every write's event arrives, in commit order, whichever worker
    # took the request.
    handed_before = scrape(url)["pbfast_node_worker_handed_over_total"]
    events = _realtime_events(url, "w", epoch, "notes/*",
                              lambda: [forwarded_ok(url, "w", epoch, "POST", "/api/collections/notes/records",
                                                    json={"n": f"rt{index}"}) for index in range(12)])
    assert events == [f"create:rt{index}" for index in range(12)], events
    assert scrape(url)["pbfast_node_worker_handed_over_total"] >= handed_before + 14  # stream, subscribe, writes
    held = _held_realtime_events(url, "w", epoch, "notes/*",
                                 lambda: [forwarded_ok(url, "w", epoch, "POST", "/api/collections/notes/records",
                                                       json={"n": f"held{index}"}) for index in range(6)])
    assert held == [f"create:held{index}" for index in range(6)], held

    # One daily request quota for all the workers.
    quota_epoch = _create_tenant(cp.url, "q", apiRequestsQuota=25)
    cors = {"X-Pbfast-Cluster-Token": CLUSTER_TOKEN, "X-Pbfast-Epoch": str(quota_epoch), "Origin": "https://app.example"}
    answers = [httpx.get(f"{url}/t/q/api/health", headers=cors, timeout=10) for _ in range(40)]
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 25 and statuses.count(429) == 15, statuses
    # whichever process refused it, the refusal carries the CORS and security headers every answer has
    assert {(a.headers.get("access-control-allow-origin"), a.headers.get("x-content-type-options"))
            for a in answers} == {("*", "nosniff")}

    # The tenant's rateLimits count once for the node: one client's requests spread over both workers get
    # exactly maxRequests answers, then 429.
    limited_epoch = _create_tenant(cp.url, "r")
    limited_token = _owner_token(url, "r", limited_epoch)
    rules = [{"label": "GET /api/health", "audience": "", "duration": 300, "maxRequests": 12}]
    forwarded_ok(url, "r", limited_epoch, "PATCH", "/api/settings", limited_token,
                 {"rateLimits": {"enabled": True, "rules": rules}})
    time.sleep(1.1)  # each process reads a tenant's settings again within a second
    before = _worker_requests(url)
    statuses = [forwarded(url, "r", limited_epoch, "GET", "/api/health").status_code for _ in range(30)]
    assert statuses == [200] * 12 + [429] * 18, statuses
    served = [now - then for now, then in zip(_worker_requests(url), before)]
    assert all(count > 0 for count in served), served  # both workers took some of them
    refused = forwarded(url, "r", limited_epoch, "GET", "/api/health")
    assert refused.json() == {"data": {}, "message": "Too Many Requests.", "status": 429}
    assert forwarded(url, "r", limited_epoch, "GET", "/api/health", limited_token).status_code == 200  # superuser

    # kill -9 of a worker while writes go on: it is started again, and no acknowledged write is lost.
    acknowledged: list[str] = []
    stop = threading.Event()

    def write() -> None:
        index = 0
        while not stop.is_set():
            index += 1
            try:
                response = forwarded(url, "w", epoch, "POST", "/api/collections/notes/records",
                                     json={"n": f"k{index}"}, timeout=5)
            except httpx.HTTPError:
                continue  # its connection was to the worker that died
            if response.status_code == 200:
                acknowledged.append(response.json()["id"])

    writers = [threading.Thread(target=write) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        wait_until(lambda: len(acknowledged) >= 10)
        workers = _worker_pids(node.proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        wait_until(lambda: len(_worker_pids(node.proc.pid)) == 2 and workers[0] not in _worker_pids(node.proc.pid))
        written = len(acknowledged)
        wait_until(lambda: len(acknowledged) >= written + 20)
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    samples = scrape(url)
    assert samples["pbfast_node_workers"] == 2 and samples["pbfast_node_worker_restarts_total"] == 1
    stored = {str(item["id"]) for item in _notes(url, "w", epoch, token)}
    assert set(acknowledged) <= stored
    # The restarted worker serves too.
    before = _worker_requests(url)
    for _ in range(30):
        forwarded_ok(url, "w", epoch, "GET", "/api/health")
    assert all(now > then for now, then in zip(_worker_requests(url), before))

    # kill -9 of the fork server: the workers die with it and are started again as programs of their own.
    assert node.proc is not None
    main_pid = node.proc.pid
    forks = [pid for pid in _children(main_pid) if _name(pid) == "pbfast-forks"]
    assert len(forks) == 1, forks
    os.kill(forks[0], signal.SIGKILL)
    wait_until(lambda: len(_worker_pids(main_pid)) == 2 and set(_worker_pids(main_pid)) <= set(_children(main_pid)),
               timeout=20)
    wait_until(lambda: _both_workers_serve(url, "w", epoch), timeout=20, interval=0.2)

    # Stopping the node ends the event streams its workers relay at once, as a single process does.
    process = node.proc
    assert _stream_ends_after(url, "w", epoch, lambda: process.send_signal(signal.SIGTERM)) < 0.9


def _notes_tenant_before_a_move(start: Start, tmp_path: Path, s3: str,
                                tenant_id: str) -> tuple[Member, str, str, int, str]:
    """A control plane, node-a (with workers) serving ``tenant_id`` with a public ``notes`` collection, and an
    empty node-b to move it to; both store in S3. Returns the control plane, both nodes' URLs, the tenant's
    epoch and its superuser token."""
    cp = start_cluster(start, tmp_path, 1)[0]
    cp_addr = f"127.0.0.1:{cp.http_port}"
    storage = (f"--s3-endpoint={s3}", f"--s3-bucket={BUCKET}")
    _, url_a = start_node(start, "node-a", cp_addr, tmp_path, (*WORKERS, *storage), S3_ENV)
    wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 1)
    epoch = _create_tenant(cp.url, tenant_id)
    _, url_b = start_node(start, "node-b", cp_addr, tmp_path, storage, S3_ENV)
    wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 2)
    token = _owner_token(url_a, tenant_id, epoch)
    forwarded_ok(url_a, tenant_id, epoch, "POST", "/api/collections", token,
                 {"name": "notes", "type": "base", "listRule": "", "createRule": "",
                  "fields": [{"name": "n", "type": "text"}]})
    return cp, url_a, url_b, epoch, token


def _both_workers_serve(node_url: str, tenant_id: str, epoch: int) -> bool:
    """Whether each worker answers some of 30 requests (False while either does not listen yet)."""
    try:
        before = _worker_requests(node_url)
        for _ in range(30):
            forwarded(node_url, tenant_id, epoch, "GET", "/api/health")
        return all(now > then for now, then in zip(_worker_requests(node_url), before))
    except httpx.TransportError:
        return False


def _stream_ends_after(node_url: str, tenant_id: str, epoch: int, action: Callable[[], object]) -> float:
    """Seconds from ``action`` until an event stream of the tenant, opened before, ends."""
    headers = {"X-Pbfast-Cluster-Token": CLUSTER_TOKEN, "X-Pbfast-Epoch": str(epoch)}
    with httpx.stream("GET", f"{node_url}/t/{tenant_id}/api/realtime", headers=headers,
                      timeout=httpx.Timeout(10.0, read=10.0)) as stream:
        lines = stream.iter_lines()
        assert any(line.startswith("data:") for line in lines)  # PB_CONNECT
        started = time.monotonic()
        action()
        try:
            for _ in lines:
                pass
        except httpx.RemoteProtocolError:
            pass  # cut rather than ended: ended all the same
        return time.monotonic() - started


def test_a_move_releases_the_tenant_from_every_worker_while_they_serve(pbfast_process: Start, tmp_path: Path,
                                                                       s3: str) -> None:
    cp, url_a, url_b, epoch, token = _notes_tenant_before_a_move(pbfast_process, tmp_path, s3, "mv")

    acknowledged: list[str] = []
    refused: list[tuple[int, str]] = []
    stop = threading.Event()

    def write() -> None:
        index = 0
        while not stop.is_set():
            index += 1
            response = forwarded(url_a, "mv", epoch, "POST", "/api/collections/notes/records",
                                 json={"n": f"w{index}"}, timeout=30)
            if response.status_code == 200:
                acknowledged.append(response.json()["id"])
            else:
                refused.append((response.status_code, response.headers.get("x-pbfast-moved", "") or response.text))
                time.sleep(0.01)

    writers = [threading.Thread(target=write) for _ in range(3)]
    for writer in writers:
        writer.start()
    try:
        wait_until(lambda: len(acknowledged) >= 20)
        moved = httpx.post(f"{cp.url}/api/cp/tenants/mv/move", headers=ADMIN, json={"nodeId": "node-b"},
                           timeout=90)
        assert moved.status_code == 200, moved.text
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    # Every refusal is "moved", which the gateway retries on the new route (never a plain 503 the client sees).
    assert refused and set(refused) == {(503, "1")}, refused
    # No worker of the old node serves the tenant any more, whichever gets the request.
    for _ in range(20):
        answer = forwarded(url_a, "mv", epoch, "GET", "/api/health")
        assert answer.status_code == 503 and answer.headers.get("x-pbfast-moved"), answer.headers
    epoch_b = tenant(cp.url, "mv")["epoch"]
    assert epoch_b > epoch
    stored = {str(item["id"]) for item in _notes(url_b, "mv", epoch_b, token)}
    assert set(acknowledged) <= stored, set(acknowledged) - stored


def test_a_release_waits_for_a_write_a_worker_has_in_flight(pbfast_process: Start, tmp_path: Path, s3: str) -> None:
    """A worker's write that waits for SQLite's write lock (held here, by another connection) when the tenant
    is moved away: the release waits for it, so the new node has it once it was acknowledged."""
    cp, url_a, url_b, epoch, token = _notes_tenant_before_a_move(pbfast_process, tmp_path, s3, "held")
    forwarded_ok(url_a, "held", epoch, "POST", "/api/collections/notes/records", json={"n": "before"})

    lock = apsw.Connection(str(tmp_path / "node-a" / "tenants" / "held" / "data.db"))
    lock.setbusytimeout(5000)
    lock.execute("BEGIN IMMEDIATE")  # the write lock: the worker's create waits for it
    answers: dict[str, httpx.Response] = {}
    create = threading.Thread(target=lambda: answers.update(create=forwarded(
        url_a, "held", epoch, "POST", "/api/collections/notes/records", json={"n": "in-flight"}, timeout=60)))
    move = threading.Thread(target=lambda: answers.update(move=httpx.post(
        f"{cp.url}/api/cp/tenants/held/move", headers=ADMIN, json={"nodeId": "node-b"}, timeout=90)))
    try:
        create.start()
        time.sleep(0.5)  # the create is waiting for the lock
        move.start()
        time.sleep(1.5)  # the release has begun
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    create.join()
    move.join()
    assert answers["move"].status_code == 200, answers["move"].text
    assert answers["create"].status_code == 200, answers["create"].text
    epoch_b = tenant(cp.url, "held")["epoch"]
    stored = {str(item["n"]) for item in _notes(url_b, "held", epoch_b, token)}
    assert stored == {"before", "in-flight"}


def _send_slowly(node_url: str, tenant_id: str, epoch: int, path: str, body: bytes,
                 between: Callable[[], object]) -> tuple[int, dict[str, str], bytes]:
    """A JSON POST sent as a gateway forwards it, its body's first half, then ``between()``, then the rest:
    the request is admitted (and its tenant's connection taken) before ``between`` runs. Its status, headers
    (lower-cased names) and body."""
    host, port = node_url.removeprefix("http://").split(":")
    half = len(body) // 2
    head = (f"POST /t/{tenant_id}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"X-Pbfast-Cluster-Token: {CLUSTER_TOKEN}\r\nX-Pbfast-Epoch: {epoch}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head.encode() + body[:half])
        between()
        connection.sendall(body[half:])
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    header_text, _, payload = rest.partition(b"\r\n\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in
               (line.partition(":") for line in header_text.decode().split("\r\n"))}
    return int(status_line.split()[1]), headers, payload


def test_a_write_that_waited_for_its_turn_while_the_tenant_moved_is_answered_moved(
        pbfast_process: Start, tmp_path: Path, s3: str) -> None:
    """A worker's record write admitted while the tenant was served, whose database turn comes only after the
    move closed the worker's connection (here its body arrives after the move; under load it waits behind the
    close in the tenant's line), is answered "moved" (the gateway retries it on the new node), never 500."""
    cp, url_a, url_b, epoch, token = _notes_tenant_before_a_move(pbfast_process, tmp_path, s3, "late")
    # Both workers have the tenant open (each request on a fresh connection: the kernel spreads them).
    wait_until(lambda: forwarded_ok(url_a, "late", epoch, "POST", "/api/collections/notes/records",
                                    json={"n": "before"}) is not None and min(_worker_requests(url_a)) > 1)
    moves: list[httpx.Response] = []

    def move() -> None:
        time.sleep(1.0)  # the worker has admitted the request and waits for the rest of its body
        moves.append(httpx.post(f"{cp.url}/api/cp/tenants/late/move", headers=ADMIN, json={"nodeId": "node-b"},
                                timeout=90))

    status, headers, body = _send_slowly(url_a, "late", epoch, "/api/collections/notes/records",
                                         orjson.dumps({"n": "late"}), move)
    assert moves[0].status_code == 200, moves[0].text
    assert (status, headers.get("x-pbfast-moved")) == (503, "1"), (status, headers, body)
