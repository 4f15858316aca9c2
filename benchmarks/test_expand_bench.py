"""CPU per request of a records list with ``expand`` (issue 15), in process: :meth:`TenantApi.handle` on an
open tenant, no network, so the numbers are the handler's own cost (what a node's database thread spends).

Data: 10 orgs, 100 authors (``org`` relation), 2,000 posts (``author`` relation), 10,000 comments (``post``
and ``author`` relations); public rules. Each case lists 20 posts (``sort=-created``):

- ``no expand``: the plain list, the baseline expand must not slow down;
- ``expand=author``: one level (one query for the 20 posts' authors);
- ``expand=author.org``: two levels;
- ``expand=author.org,comments_via_post.author``: two levels plus a back-relation (100 comments).

``python -m pytest benchmarks/test_expand_bench.py --benchmark-enable --benchmark-group-by=group -p no:cacheprovider``
(CI runs each case once, as a test, with benchmarks disabled.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import orjson
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.collections import create_collection, init_tenant_database
from pbfast.pocketbase.tenant import Tenant

ORGS, AUTHORS, POSTS, COMMENTS = 10, 100, 2_000, 10_000
OPEN = {"listRule": "", "viewRule": ""}
LIST = "/api/collections/posts/records"
CASES = {
    "no expand": "perPage=20&sort=-created",
    "expand=author": "perPage=20&sort=-created&expand=author",
    "expand=author.org": "perPage=20&sort=-created&expand=author.org",
    "expand=author.org,comments_via_post.author": "perPage=20&sort=-created&expand=author.org,comments_via_post.author",
}


def _seed(directory: Path) -> None:
    init_tenant_database(directory)
    conn = apsw.Connection(str(directory / "data.db"))
    try:
        orgs = create_collection(conn, {"name": "orgs", "type": "base", **OPEN, "fields": [{"name": "name", "type": "text"}]})
        authors = create_collection(conn, {"name": "authors", "type": "base", **OPEN, "fields": [
            {"name": "name", "type": "text"}, {"name": "org", "type": "relation", "collectionId": orgs.id, "maxSelect": 1}]})
        posts = create_collection(conn, {"name": "posts", "type": "base", **OPEN, "fields": [
            {"name": "title", "type": "text"}, {"name": "body", "type": "text"},
            {"name": "author", "type": "relation", "collectionId": authors.id, "maxSelect": 1},
            {"name": "created", "type": "autodate", "onCreate": True}],
            "indexes": ["CREATE INDEX idx_posts_created ON posts (created)"]})
        create_collection(conn, {"name": "comments", "type": "base", **OPEN, "fields": [
            {"name": "text", "type": "text"},
            {"name": "post", "type": "relation", "collectionId": posts.id, "maxSelect": 1},
            {"name": "author", "type": "relation", "collectionId": authors.id, "maxSelect": 1}],
            "indexes": ["CREATE INDEX idx_comments_post ON comments (post)"]})
        with conn:
            conn.executemany("INSERT INTO orgs (id, name) VALUES (?, ?)",
                             ((f"org{i:012d}", f"org {i}") for i in range(ORGS)))
            conn.executemany("INSERT INTO authors (id, name, org) VALUES (?, ?, ?)",
                             ((f"author{i:09d}", f"author {i}", f"org{i % ORGS:012d}") for i in range(AUTHORS)))
            conn.executemany("INSERT INTO posts (id, title, body, author, created) VALUES (?, ?, ?, ?, ?)",
                             ((f"post{i:011d}", f"post {i}", "lorem ipsum " * 20, f"author{i % AUTHORS:09d}",
                               f"2025-01-01 00:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z") for i in range(POSTS)))
            conn.executemany("INSERT INTO comments (id, text, post, author) VALUES (?, ?, ?, ?)",
                             ((f"comment{i:08d}", f"comment {i}", f"post{i % POSTS:011d}", f"author{i % AUTHORS:09d}")
                              for i in range(COMMENTS)))
    finally:
        conn.close()


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
    """Stands in for the HTTP protocol: keeps the answer."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.body = status, body

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status, self.body = status, b""


@dataclass
class _Bench:
    tenant: Tenant
    api: TenantApi
    loop: asyncio.AbstractEventLoop

    def get(self, query: str) -> _Answer:
        answer = _Answer()
        scope = _Scope("GET", LIST, query)
        self.loop.run_until_complete(self.api.handle(self.tenant, LIST, scope, answer))  # type: ignore[arg-type]
        return answer


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Bench]:
    directory = tmp_path_factory.mktemp("expand-bench") / "tenant"
    _seed(directory)
    tenant = Tenant.open("bench", directory)
    loop = asyncio.new_event_loop()
    try:
        yield _Bench(tenant, TenantApi(), loop)
    finally:
        loop.close()
        tenant.close()  # (its native statements finalized first: a bare conn.close() is refused past them)


def _expanded(body: dict[str, Any]) -> int:
    return sum(len(item.get("expand", {}).get("comments_via_post", [])) + len(item.get("expand", {}))
               for item in body["items"])


@pytest.mark.parametrize("case", list(CASES))
def test_list_with_expand(benchmark: BenchmarkFixture, bench: _Bench, case: str) -> None:
    benchmark.group = "records list perPage=20 (in process)"
    answer = benchmark(bench.get, CASES[case])
    assert answer.status == 200, answer.body[:300]
    body = orjson.loads(answer.body)
    assert len(body["items"]) == 20
    if case != "no expand":
        assert all(item["expand"]["author"]["collectionName"] == "authors" for item in body["items"])
    if "comments_via_post" in case:
        assert _expanded(body) == 20 * 5 + 20 * 2  # 5 comments per post, plus author and comments keys
        first = body["items"][0]["expand"]["comments_via_post"][0]
        assert first["expand"]["author"]["collectionName"] == "authors"
