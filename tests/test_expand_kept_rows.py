"""Expanded records are kept per tenant while its data is unchanged (pbfast.pocketbase.dbutils.kept_rows): a repeated
expand queries nothing for them, a commit of this connection or of another one shows at once, each requester's view
rule keeps its own, and past the cap rows are fetched and not kept. A node in process (its routes, the tenant's API on
a real SQLite database), called as granian calls it; no network."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import orjson
import pytest

from pbfast.pocketbase.collections.service import create_collection, update_collection
from pbfast.pocketbase.dbutils.kept_rows import KEPT_ROWS
from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.app import TenantNodeApp
from node_in_process import get

TOKEN = "cluster-token-expand-kept-rows"
POSTS = "/t/t/api/collections/posts/records"
AUTHORS = KEPT_ROWS + 20  # one page of them all is more than a tenant keeps


Node = tuple[asyncio.AbstractEventLoop, TenantNodeApp, Tenant]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    loop = asyncio.new_event_loop()
    app = TenantNodeApp("kept-rows-node", 4, TOKEN, Path(tmp_path_factory.mktemp("kept-rows")))
    app.apply_assignments({"t": {"epoch": 1, "incarnation": "inc-1"}}, [])
    tenant = loop.run_until_complete(app.open_tenant("t"))
    public = {"type": "base", "listRule": "", "viewRule": ""}
    orgs = create_collection(tenant.conn, {"name": "orgs", **public, "fields": [{"name": "name", "type": "text"}]})
    authors = create_collection(tenant.conn, {"name": "authors", **public, "fields": [
        {"name": "name", "type": "text"}, {"name": "org", "type": "relation", "collectionId": orgs.id, "maxSelect": 1}]})
    create_collection(tenant.conn, {"name": "posts", **public, "fields": [
        {"name": "n", "type": "number"},
        {"name": "author", "type": "relation", "collectionId": authors.id, "maxSelect": 1}]})
    with tenant.conn:
        tenant.conn.executemany("INSERT INTO orgs (id, name) VALUES (?, ?)", [(f"org{i:012d}", f"org {i}") for i in range(3)])
        tenant.conn.executemany("INSERT INTO authors (id, name, org) VALUES (?, ?, ?)",
                                [(f"author{i:09d}", f"author {i}", f"org{i % 3:012d}") for i in range(AUTHORS)])
        tenant.conn.executemany("INSERT INTO posts (id, n, author) VALUES (?, ?, ?)",
                                [(f"post{i:011d}", i, f"author{i:09d}") for i in range(AUTHORS)])
    tenant.reload_collections()
    yield loop, app, tenant
    loop.run_until_complete(app.close_all())
    app.db.stop()
    loop.close()


def _items(node: Node, query: str) -> list[dict[str, Any]]:
    loop, app, _ = node
    proto = get(loop, app, TOKEN, POSTS, query)
    assert proto.status == 200, proto.body
    items: list[dict[str, Any]] = orjson.loads(proto.body)["items"]
    return items


class _Fetches:
    """The ids each query by id (an expand's one query per level) of the tenant's connection asks for."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn, self.ids = conn, list[list[str]]()

    def __enter__(self) -> _Fetches:
        def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
            if "IN (SELECT value FROM json_each(?))" in sql:
                self.ids.append(orjson.loads(bindings[0]))
            return True

        self.conn.exec_trace = trace
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.exec_trace = None


def _shown(items: list[dict[str, Any]]) -> list[tuple[float, str, str]]:
    return [(item["n"], item["expand"]["author"]["name"], item["expand"]["author"]["expand"]["org"]["name"])
            for item in items]


FIRST = "perPage=4&sort=n&expand=author.org"


def test_a_repeated_expand_queries_only_ids_not_seen(node: Node) -> None:
    with _Fetches(node[2].conn) as fetches:
        first = _items(node, FIRST)
        assert _items(node, FIRST) == first
        assert _shown(first) == [(0, "author 0", "org 0"), (1, "author 1", "org 1"), (2, "author 2", "org 2"),
                                 (3, "author 3", "org 0")]
        assert len(fetches.ids) == 2  # the first answer's two levels; the second queried none
        fetches.ids.clear()
        _items(node, "perPage=2&page=3&sort=n&expand=author.org")  # posts 4 and 5: new authors, orgs seen
        assert fetches.ids == [["author000000004", "author000000005"]]


def test_changed_records_show_at_once(node: Node) -> None:
    tenant = node[2]
    _items(node, FIRST)
    tenant.conn.execute("UPDATE authors SET name = 'renamed' WHERE id = 'author000000001'")  # this connection
    assert _shown(_items(node, FIRST))[1] == (1, "renamed", "org 1")
    other = apsw.Connection(str(tenant.directory / "data.db"))  # another worker process's connection
    try:
        other.setbusytimeout(5_000)
        other.execute("UPDATE orgs SET name = 'moved' WHERE id = 'org000000000001'")
        other.execute("UPDATE authors SET name = 'author 1' WHERE id = 'author000000001'")
    finally:
        other.close()
    assert _shown(_items(node, FIRST))[1] == (1, "author 1", "moved")
    tenant.conn.execute("UPDATE orgs SET name = 'org 1' WHERE id = 'org000000000001'")


def test_each_requester_sees_what_the_view_rule_lets_it(node: Node) -> None:
    tenant = node[2]
    update_collection(tenant.conn, tenant.collections["authors"], {"viewRule": "name != @request.query.hide"})
    tenant.reload_collections()
    try:
        for hidden in ("author 1", "author 2", "author 1"):
            items = _items(node, FIRST + "&hide=" + hidden.replace(" ", "%20"))
            assert [item["expand"].get("author", {}).get("name") for item in items] == \
                [name if name != hidden else None for name in ("author 0", "author 1", "author 2", "author 3")]
    finally:
        update_collection(tenant.conn, tenant.collections["authors"], {"viewRule": ""})
        tenant.reload_collections()


def test_past_the_cap_rows_are_fetched_and_not_kept(node: Node) -> None:
    query = f"perPage={AUTHORS}&sort=n&expand=author"
    with _Fetches(node[2].conn) as fetches:
        for _ in range(2):
            items = _items(node, query)
            assert [item["expand"]["author"]["name"] for item in items] == [f"author {i}" for i in range(AUTHORS)]
        assert len(fetches.ids) == 2  # queried each time: more authors than a tenant keeps


def test_rows_under_a_rule_that_reads_the_clock_are_fetched_each_time(node: Node) -> None:
    tenant = node[2]
    update_collection(tenant.conn, tenant.collections["authors"], {"viewRule": "strftime('%Y') != ''"})
    tenant.reload_collections()
    try:
        with _Fetches(tenant.conn) as fetches:
            for _ in range(2):
                assert _shown(_items(node, FIRST))[0] == (0, "author 0", "org 0")
        assert [ids[0][:6] for ids in fetches.ids].count("author") == 2
    finally:
        update_collection(tenant.conn, tenant.collections["authors"], {"viewRule": ""})
        tenant.reload_collections()
