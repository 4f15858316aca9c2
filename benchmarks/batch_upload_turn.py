"""How much of a multipart ``POST /api/batch``'s turn on the tenant's database thread is its uploads' writes (each
file written and fsynced on its own in the turn), against one ``create_many`` round of the same files (what one
early write of the batch would cost, off the turn). In process: a tenant on the local store, the batch run inline.

    python3 benchmarks/batch_upload_turn.py /path/to/scratch [N]
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pbfast.pocketbase import app_settings, collections, filesystem
from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.filesystem import LocalObjectStore, files_of
from pbfast.pocketbase.tenant import Tenant

PNG = bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 4000
BOUNDARY = "b0undary"


def _body(count: int, with_files: bool) -> bytes:
    payload = {"requests": [{"method": "POST", "url": "/api/collections/docs/records", "body": {"title": f"t{i}"}}
                            for i in range(count)]}
    out = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="@jsonPayload"\r\n\r\n'
           f"{json.dumps(payload)}\r\n").encode()
    for i in range(count if with_files else 0):
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="requests.{i}.files"; filename="x{i}.png"\r\n'
                "Content-Type: image/png\r\n\r\n").encode() + PNG + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


class _Scope:
    proto, authority, client = "http", None, "127.0.0.1:1"

    def __init__(self, raw: bytes) -> None:
        self.method, self.path, self.query_string = "POST", "/api/batch", ""
        self.headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-length": str(len(raw))}


class _Proto:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.status, self.body = raw, 0, b""

    async def __call__(self) -> bytes:
        return self.raw

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.body = status, body

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self.response_bytes(status, headers, body.encode())

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.response_bytes(status, headers, b"")


def main() -> None:
    root, count = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    filesystem.configure(LocalObjectStore(root / "store"), retention_seconds=60.0)
    tenant = Tenant.open("bb", root / "bb", create=True)
    collections.create_collection(tenant.conn, {"name": "docs", "type": "base", "createRule": "", "fields": [
        {"name": "title", "type": "text"}, {"name": "files", "type": "file", "maxSelect": 2}]})
    tenant.reload_collections()
    document = app_settings.merge_patch(app_settings.load_document(tenant.conn),
                                        {"batch": {"enabled": True, "maxRequests": 100}})
    app_settings.save_document(tenant.conn, document)
    app_settings.notify_saved(tenant, app_settings.load_settings(tenant.conn))
    turns: list[float] = []

    async def timed(work: Callable[[], Any]) -> None:
        started = time.perf_counter()
        work()
        turns.append(time.perf_counter() - started)

    api = TenantApi()
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(12):
        for with_files in (False, True):
            raw = _body(count, with_files)
            proto = _Proto(raw)
            turns.clear()
            asyncio.run(api.handle(tenant, "/api/batch", _Scope(raw), proto, run=timed))  # type: ignore[arg-type]
            assert proto.status == 200, proto.body[:300]
            results[with_files].append(sum(turns))
    files, rounds = files_of(tenant), []
    for index in range(12):
        items = [(f"x/bench{index}/{i}.png", PNG) for i in range(count)]
        started = time.perf_counter()
        files.create_many(items)
        rounds.append(time.perf_counter() - started)

    def median_ms(values: list[float]) -> float:
        return statistics.median(values[2:]) * 1000  # the first two: warm-up

    print(f"N={count}: the batch's turn {median_ms(results[False]):.1f} ms without files, "
          f"{median_ms(results[True]):.1f} ms with one each; one create_many round of the files "
          f"{median_ms(rounds):.1f} ms")
    tenant.close()


if __name__ == "__main__":
    main()
