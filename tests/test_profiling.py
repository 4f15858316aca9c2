"""The profiling listener (``--pprof-addr``): profiles read by a real pprof reader (Go's ``go tool pprof``).

CI installs Go from Debian (``golang-go`` in ``.ci/run``); a missing ``go`` fails these tests loudly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import PbfastProcess, free_port
from pbfast.profiling.pprof import FrameInfo, ProfileBuilder, ValueType

Start = Callable[..., PbfastProcess]
ADMIN_TOKEN = "admin-token-for-profiling-0123"
CLUSTER_TOKEN = "cluster-token-for-profiling-0123"


def go_pprof(*args: str, tmp_path: Path) -> str:
    """``go tool pprof ARGS``' standard output; fails the test when pprof cannot read the profile."""
    go = shutil.which("go")
    assert go is not None, "Go's toolchain is needed to read profiles (Debian: apt-get install golang-go)"
    # pprof keeps a copy of each profile it fetches in PPROF_TMPDIR
    env = {**os.environ, "PPROF_TMPDIR": str(tmp_path / "pprof"), "HOME": str(tmp_path), "GOTOOLCHAIN": "local"}
    result = subprocess.run([go, "tool", "pprof", *args], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_encoded_profile_reads_back_exactly(tmp_path: Path) -> None:
    """The hand-written protobuf encoding: pprof reads back the samples, values, labels and comments."""
    builder = ProfileBuilder([ValueType("samples", "count"), ValueType("cpu", "nanoseconds")],
                             period_type=ValueType("cpu", "nanoseconds"), period=10_000_000,
                             duration_nanos=2_000_000_000, default_sample_type="cpu", comments=["a comment"])
    leaf = FrameInfo("pkg.mod.Leaf.run", "Leaf.run", "/src/pkg/mod.py", 10, 12)
    root = FrameInfo("pkg.main", "main", "/src/pkg/__main__.py", 1, 3)
    builder.add([leaf, root], [3, 30_000_000], {"thread": "worker-1"})
    builder.add([root], [1, 7_000_000_000], {"thread": "MainThread"})  # multi-byte varints
    path = tmp_path / "synthetic.pb.gz"
    path.write_bytes(builder.gzipped())
    raw = go_pprof("-raw", str(path), tmp_path=tmp_path)
    assert "a comment" in raw and "samples/count cpu/nanoseconds[dflt]" in raw, raw
    assert re.search(r"^ +3 +30000000: 1 2 *\n +thread:\[worker-1\]$", raw, re.MULTILINE), raw
    assert re.search(r"^ +1 +7000000000: 2 *\n +thread:\[MainThread\]$", raw, re.MULTILINE), raw
    assert re.search(r"^ +1: .* pkg\.mod\.Leaf\.run /src/pkg/mod\.py:12\b.* s=10\b", raw, re.MULTILINE), raw
    assert re.search(r"^ +2: .* pkg\.main /src/pkg/__main__\.py:3\b.* s=1\b", raw, re.MULTILINE), raw


def _start_all_in_one(start: Start, tmp_path: Path, pprof: int) -> tuple[str, str]:
    cp_port, gw_port = free_port(), free_port()
    process = start([
        "serve", f"--data-dir={tmp_path / 'data'}", f"--http-addr=127.0.0.1:{cp_port}",
        f"--gateway-addr=127.0.0.1:{gw_port}", f"--raft-bind-addr=127.0.0.1:{free_port()}",
        f"--admin-token={ADMIN_TOKEN}", f"--pprof-addr=127.0.0.1:{pprof}",
    ])
    cp, gw = f"http://127.0.0.1:{cp_port}", f"http://127.0.0.1:{gw_port}"
    process.wait_healthy([cp, gw], timeout=30)
    return cp, gw


def _public_collection(cp: str, gw: str, tenant_id: str) -> str:
    """A tenant with a public ``posts`` collection of 50 records; returns its list URL."""
    response = httpx.post(f"{cp}/api/cp/tenants", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                          json={"id": tenant_id, "superuser": {"email": "root@acme.test", "password": "pass-word-123"}})
    assert response.status_code == 200, response.text
    base = f"{gw}/t/{tenant_id}"
    deadline = time.monotonic() + 30
    while True:
        login = httpx.post(f"{base}/api/collections/_superusers/auth-with-password", timeout=30,
                           json={"identity": "root@acme.test", "password": "pass-word-123"})
        if login.status_code == 200:
            break
        assert time.monotonic() < deadline, login.text
        time.sleep(0.1)
    superuser = {"Authorization": login.json()["token"]}
    created = httpx.post(f"{base}/api/collections", headers=superuser, json={
        "name": "posts", "type": "base", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "views", "type": "number"}]})
    assert created.status_code == 200, created.text
    with httpx.Client(headers=superuser) as client:
        for i in range(50):
            assert client.post(f"{base}/api/collections/posts/records", json={"title": f"post {i}", "views": i}
                               ).status_code == 200
    return f"{base}/api/collections/posts/records?perPage=20&sort=-views"


class _Load:
    """Clients on background threads until stopped, each listing and creating records in turn; every
    status is kept."""

    def __init__(self, list_url: str, clients: int = 4) -> None:
        self.list_url = list_url
        self.create_url = list_url.split("?", 1)[0]
        self.stopping = threading.Event()
        self.statuses: list[int] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stopping.is_set():
                self.statuses.append(client.get(self.list_url).status_code)
                self.statuses.append(client.post(self.create_url, json={"title": "load", "views": 1}).status_code)

    def __enter__(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)


def test_cpu_profile_under_load_names_the_hot_request_functions(pbfast_process: Start, tmp_path: Path) -> None:
    """The guide's ``go tool pprof http://localhost:6060/debug/pprof/profile?seconds=30``, shortened: the
    profile of an all-in-one serving record lists names the request functions on the database threads and
    on the event loop; the heap profile and the flame graph read too."""
    pprof_port = free_port()
    cp, gw = _start_all_in_one(pbfast_process, tmp_path, pprof_port)
    profiles = f"http://127.0.0.1:{pprof_port}/debug/pprof"
    list_url = _public_collection(cp, gw, "acme")

    with _Load(list_url) as load:
        top = go_pprof("-top", f"{profiles}/profile?seconds=3", tmp_path=tmp_path)
        every_node = go_pprof("-top", "-nodefraction=0", "-edgefraction=0",
                              *map(str, (tmp_path / "pprof").glob("*.pb.gz")), tmp_path=tmp_path)
        flamegraph = httpx.get(f"{profiles}/flamegraph?seconds=1", timeout=30)
    assert len(load.statuses) > 20
    # The sampler leaves the server alone: every request answered as without it (an earlier sampler kept
    # other threads' frames, and so an SQLite cursor, alive: every write then failed "database is locked").
    assert set(load.statuses) == {200}, sorted(set(load.statuses))
    assert "Type: cpu" in top
    # The database work of a list request (a worker thread, SQLite called without the GIL) ...
    assert "pbfast.pocketbase.apis.records.list_records" in top, top
    # ... and the request's way through the event loop (the main thread, which samples itself on SIGPROF).
    assert "pbfast.gateway.app.GatewayApp.__rsgi__" in every_node, every_node
    assert "pbfast.tenant_node.serving.Serving.serve_local" in every_node, every_node  # the all-in-one's way in

    assert flamegraph.status_code == 200 and flamegraph.headers["content-type"] == "image/svg+xml"
    svg = ElementTree.fromstring(flamegraph.content)
    titles = [element.text or "" for element in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert any(title.startswith("pbfast.pocketbase.apis.records.list_records (") for title in titles), titles

    heap_file = tmp_path / "heap.prof"  # the guide's `curl .../debug/pprof/heap > heap.prof`
    with _Load(list_url) as load:
        heap_file.write_bytes(httpx.get(f"{profiles}/heap", timeout=30).content)
        window = go_pprof("-top", "-sample_index=inuse_objects", "-nodefraction=0", f"{profiles}/heap?seconds=1",
                          tmp_path=tmp_path)
    assert set(load.statuses) == {200}, sorted(set(load.statuses))
    by_type = go_pprof("-top", str(heap_file), tmp_path=tmp_path)
    assert "Type: inuse_space" in by_type and "builtins.dict" in by_type, by_type
    assert "Type: inuse_objects" in window and "blocks allocated in the last 1 s" in window, window
    assert "pbfast." in window, window

    index = httpx.get(f"{profiles}/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    for link in ('href="profile?seconds=30"', 'href="heap"', 'href="flamegraph?seconds=10"'):
        assert link in index.text


def test_listener_off_loopback_needs_the_cluster_token_and_checks_its_input(pbfast_process: Start,
                                                                              tmp_path: Path) -> None:
    """On a non-loopback address every request needs the cluster (or admin) token, and the start-up log
    warns; bad parameters get PocketBase-shaped 400s, a second CPU profile at once 409."""
    port = free_port()
    process = pbfast_process([
        "serve", "--mode=control-plane", f"--data-dir={tmp_path / 'cp'}", f"--http-addr=127.0.0.1:{free_port()}",
        f"--raft-bind-addr=127.0.0.1:{free_port()}", f"--cluster-token={CLUSTER_TOKEN}",
        f"--admin-token={ADMIN_TOKEN}", f"--pprof-addr=0.0.0.0:{port}",
    ])
    base = f"http://127.0.0.1:{port}/debug/pprof"
    deadline = time.monotonic() + 30
    while True:
        try:
            anonymous = httpx.get(f"{base}/")
            break
        except httpx.TransportError:
            assert process.proc is not None and process.proc.poll() is None, process.output()
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.1)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"status": 401, "message": "The profiling listener requires the cluster token.",
                                "data": {}}
    assert httpx.get(f"{base}/heap", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert "[Profiling] the profiling listener 0.0.0.0:" in process.output()

    for token in (CLUSTER_TOKEN, ADMIN_TOKEN):
        assert httpx.get(f"{base}/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    cluster = httpx.Client(headers={"Authorization": f"Bearer {CLUSTER_TOKEN}"}, timeout=30)
    for seconds in ("0", "601", "abc", "-1", "1.5"):
        response = cluster.get(f"{base}/profile", params={"seconds": seconds})
        assert response.status_code == 400, response.text
        assert response.json()["message"].startswith("Invalid 'seconds' query parameter")
    assert cluster.get(f"{base}/nope").json() == {
        "status": 404, "message": "The requested resource wasn't found.", "data": {}}
    assert cluster.post(f"{base}/profile").status_code == 405

    results: list[httpx.Response] = []
    first = threading.Thread(target=lambda: results.append(cluster.get(f"{base}/profile?seconds=2")))
    first.start()
    time.sleep(0.5)
    second = cluster.get(f"{base}/profile?seconds=1")
    first.join()
    assert second.status_code == 409, second.text
    assert results[0].status_code == 200 and results[0].content[:2] == b"\x1f\x8b"  # gzip
    profile = tmp_path / "cp.prof"
    profile.write_bytes(results[0].content)
    assert "Type: cpu" in go_pprof("-top", str(profile), tmp_path=tmp_path)
    assert process.stop() == 0


@pytest.mark.parametrize(("flags", "expected"), [
    (["--pprof-addr=localhost"], "--pprof-addr: expected host:port"),
    (["--pprof-addr=example.com:6060"], "--pprof-addr: the host must be an IP address or localhost"),
    (["--pprof-addr=localhost:8090"], "--pprof-addr 127.0.0.1:8090 must differ"),
    (["--http-addr=127.0.0.1:9100", "--pprof-addr=127.0.0.1:9100"], "--pprof-addr 127.0.0.1:9100 must differ"),
    (["--pprof-addr=0.0.0.0:8080"], "must differ from this process's other listeners (127.0.0.1:8080)"),
])
def test_wrong_pprof_addr_exits_2(flags: list[str], expected: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pbfast", "serve", *flags], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
