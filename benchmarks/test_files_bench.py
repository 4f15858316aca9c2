"""Serving a file (issue 15, item 4), in process: :meth:`TenantApi.handle` for ``GET /api/files/...`` on an open
tenant whose files are in a local object store read through the node's cache, no network: the record lookup,
the read from the cache (a worker thread), the headers. Cases: a 100 KB original, its 100x100 thumb once kept,
a byte range, a protected file with a file token. And an upload: a multipart record create with a 100 KB PNG
(parse, name, store with its fsyncs, the record's insert and answer), the whole of its turn in process.

``python -m pytest benchmarks/test_files_bench.py --benchmark-enable --benchmark-group-by=group -p no:cacheprovider``
(CI runs each case once, as a test, with benchmarks disabled.)
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from pytest_benchmark.fixture import BenchmarkFixture

from pbfast.pocketbase import auth, filesystem
from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.collections import create_collection, init_tenant_database
from pbfast.pocketbase.filesystem import LocalObjectStore, files_of
from pbfast.pocketbase.filesystem.cache import FileCache
from pbfast.pocketbase.tenant import Tenant

RECORD = "photo0000000001"
IMAGE = "photo_0123456789.png"
SECRET = "secret_0123456789.txt"


def _image(size: int) -> bytes:
    """A PNG of about ``size`` bytes (noise does not compress)."""
    side = int((size / 3) ** 0.5)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class _Scope:
    method: str
    path: str
    query_string: str
    headers: dict[str, str] = field(default_factory=dict)
    proto: str = "http"
    authority: str | None = None
    client: str = "127.0.0.1"


class _Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, dict(headers), body

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status, self.headers, self.body = status, dict(headers), b""

    def response_file(self, status: int, headers: list[tuple[str, str]], file: str) -> None:
        # what granian sends from the file (a repeated download of the local store's file)
        self.status, self.headers, self.body = status, dict(headers), Path(file).read_bytes()


@dataclass
class _Bench:
    tenant: Tenant
    api: TenantApi
    loop: asyncio.AbstractEventLoop
    collection_id: str
    token: str

    def get(self, name: str, query: str = "", headers: dict[str, str] | None = None) -> _Answer:
        answer = _Answer()
        path = f"/api/files/{self.collection_id}/{RECORD}/{name}"
        scope = _Scope("GET", path, query, headers or {})
        self.loop.run_until_complete(self.api.handle(self.tenant, path, scope, answer))  # type: ignore[arg-type]
        return answer


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Bench]:
    root = tmp_path_factory.mktemp("files-bench")
    filesystem.configure(LocalObjectStore(root / "store"), FileCache(root / "cache"))
    init_tenant_database(root / "tenant")
    tenant = Tenant.open("bench", root / "tenant")
    photos = create_collection(tenant.conn, {"name": "photos", "type": "base", "viewRule": "", "createRule": "",
                                             "fields": [
            {"name": "image", "type": "file", "maxSelect": 1, "maxSize": 1 << 20, "thumbs": ["100x100"]},
            {"name": "secret", "type": "file", "maxSelect": 1, "protected": True}]})
    tenant.reload_collections()
    tenant.conn.execute("INSERT INTO photos (id, image, secret) VALUES (?, ?, ?)", (RECORD, IMAGE, SECRET))
    files = files_of(tenant)
    files.write(f"{photos.id}/{RECORD}/{IMAGE}", _image(100_000))
    files.write(f"{photos.id}/{RECORD}/{SECRET}", b"secret " * 100)
    superusers = tenant.collection("_superusers")
    assert superusers is not None
    tenant.conn.execute("INSERT INTO _superusers (id, email, password, tokenKey) VALUES (?, ?, ?, ?)",
                        ("superuser000001", "root@bench.test", "x", "key"))
    token = auth.issue_file_token("superuser000001", "key", superusers.id,
                                  superusers.auth.tokens["fileToken"].secret, 3600)
    loop = asyncio.new_event_loop()
    try:
        yield _Bench(tenant, TenantApi(), loop, photos.id, token)
    finally:
        loop.close()
        tenant.conn.close()
        filesystem.configure(None)


CASES = {
    "100 KB original": (IMAGE, "", {}),
    "100x100 thumb (kept)": (IMAGE, "thumb=100x100", {}),
    "byte range (first 1 KB)": (IMAGE, "", {"range": "bytes=0-1023"}),
    "protected, with a file token": (SECRET, "token=", {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_serve_file(benchmark: BenchmarkFixture, bench: _Bench, case: str) -> None:
    benchmark.group = "GET /api/files (in process, cached)"
    name, query, headers = CASES[case]
    if query == "token=":
        query += bench.token
    first = bench.get(name, query, headers)  # fills the cache (and makes the thumb once)
    assert first.status in (200, 206), first.body[:300]
    answer = benchmark(bench.get, name, query, headers)
    assert answer.status == first.status and answer.body == first.body
    if "thumb" in query:
        assert answer.headers["content-disposition"] == f'inline; filename="100x100_{IMAGE}"'


@pytest.mark.parametrize("method", ["write", "create"])
def test_store_an_upload(benchmark: BenchmarkFixture, tmp_path: Path, method: str) -> None:
    """What storing a 100 KB upload under a new record costs in the tenant's turn, local store: ``write`` (to a
    temporary name, fsync, rename, fsync of the directories) against ``create`` (written in place under its
    new name, the file and its directories fsynced at once), as an upload does since issue 15's perf work."""
    benchmark.group = "store a 100 KB upload (local store, fsynced)"
    store = LocalObjectStore(tmp_path / "store")
    data = os.urandom(100_000)
    counter = iter(range(1 << 30))

    def store_one() -> None:
        number = next(counter)
        getattr(store, method)(f"tenants/bench/storage/photos/rec{number:012d}/photo_{number:010d}.png", data)

    benchmark(store_one)
    found = store.read("tenants/bench/storage/photos/rec000000000000/photo_0000000000.png")
    assert found is not None and found.data == data


@pytest.mark.parametrize("batch", [1, 8])
def test_store_early_uploads(benchmark: BenchmarkFixture, tmp_path: Path, batch: int) -> None:
    """What a batch of early uploads costs their writer thread (pbfast.pocketbase.apis.early_uploads): ``batch``
    100 KB files under new records, written then fsynced in one round (``create_many``); per batch, so divide by
    ``batch`` for one upload's part."""
    benchmark.group = "store early uploads in a batch (local store, fsynced)"
    store = LocalObjectStore(tmp_path / "store")
    data = os.urandom(100_000)
    counter = iter(range(1 << 30))

    def store_batch() -> None:
        items = []
        for _ in range(batch):
            number = next(counter)
            items.append((f"tenants/bench/storage/photos/rec{number:012d}/photo_{number:010d}.png", data))
        store.create_many(items)

    benchmark(store_batch)
    found = store.read("tenants/bench/storage/photos/rec000000000000/photo_0000000000.png")
    assert found is not None and found.data == data


class _Upload(_Answer):
    """A request whose body is ``body`` (read whole, as granian hands a small one over)."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self._body = body

    async def __call__(self) -> bytes:
        return self._body


UPLOAD_BOUNDARY = "----pbfastbench"


def test_upload_a_file(benchmark: BenchmarkFixture, bench: _Bench) -> None:
    """``POST /api/collections/photos/records`` with a 100 KB PNG as multipart/form-data, in process."""
    benchmark.group = "upload: multipart record create, 100 KB (in process, local store, fsynced)"
    body = (f'--{UPLOAD_BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="photo.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + _image(100_000) + f"\r\n--{UPLOAD_BOUNDARY}--\r\n".encode()
    path = f"/api/collections/{bench.collection_id}/records"
    headers = {"content-type": f"multipart/form-data; boundary={UPLOAD_BOUNDARY}", "content-length": str(len(body))}

    def upload() -> _Answer:
        answer = _Upload(body)
        scope = _Scope("POST", path, "", headers)
        bench.loop.run_until_complete(bench.api.handle(bench.tenant, path, scope, answer))  # type: ignore[arg-type]
        return answer

    answer = benchmark(upload)
    assert answer.status == 200, answer.body[:300]
    assert b'"image":"photo_' in answer.body
