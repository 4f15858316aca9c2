"""A records list's total (``totalItems``) is kept while the tenant's database is unchanged, and counted again after
any commit, of this connection or another one (a node's other worker processes); a page's statement is compiled
once, not on every list (pbfast.pocketbase.dbutils.list_totals, pbfast.pocketbase.search.provider.fetch_page). A
node in process (its routes, the tenant's API on a real SQLite database), called as granian calls it; no network."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import apsw
import orjson
import pytest

from pbfast.pocketbase.collections.service import create_collection
from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.app import TenantNodeApp
from node_in_process import get

TOKEN = "cluster-token-list-totals"
LIST = "/t/t/api/collections/items/records"
FILTERED = "perPage=2&sort=-num&filter=(num%3E%3D3)"


Node = tuple[asyncio.AbstractEventLoop, TenantNodeApp, Tenant]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    loop = asyncio.new_event_loop()
    app = TenantNodeApp("totals-node", 4, TOKEN, Path(tmp_path_factory.mktemp("list-totals")))
    app.apply_assignments({"t": {"epoch": 1, "incarnation": "inc-1"}}, [])
    tenant = loop.run_until_complete(app.open_tenant("t"))
    create_collection(tenant.conn, {"name": "items", "type": "base", "listRule": "",
                                    "fields": [{"name": "num", "type": "number"}]})
    tenant.conn.executemany("INSERT INTO items (id, num) VALUES (?, ?)", [(f"item{n:011d}", n) for n in range(1, 6)])
    tenant.reload_collections()
    yield loop, app, tenant
    loop.run_until_complete(app.close_all())
    app.db.stop()
    loop.close()


def _list(node: Node, query: str) -> dict[str, Any]:
    loop, app, _ = node
    proto = get(loop, app, TOKEN, LIST, query)
    assert proto.status == 200, proto.body
    answer: dict[str, Any] = orjson.loads(proto.body)
    return answer


class _Counts:
    """The COUNT statements the tenant's connection runs while in use."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn, self.seen = conn, 0

    def __enter__(self) -> _Counts:
        def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
            self.seen += sql.startswith("SELECT COUNT(*)")
            return True

        self.conn.exec_trace = trace
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.exec_trace = None


def test_a_total_is_counted_once_until_the_data_changes(node: Node) -> None:
    tenant = node[2]
    with _Counts(tenant.conn) as counts:
        assert _list(node, FILTERED)["totalItems"] == 3
        assert _list(node, FILTERED)["totalItems"] == 3
        assert counts.seen == 1  # the second list's total was kept
        tenant.conn.execute("INSERT INTO items (id, num) VALUES ('item00000000006', 6)")  # this connection
        assert _list(node, FILTERED)["totalItems"] == 4
        other = apsw.Connection(str(tenant.directory / "data.db"))  # another worker process's connection
        try:
            other.setbusytimeout(5_000)
            other.execute("DELETE FROM items WHERE num >= 5")
        finally:
            other.close()
        answer = _list(node, FILTERED)
        assert (answer["totalItems"], answer["totalPages"], [i["num"] for i in answer["items"]]) == (2, 1, [4, 3])
        assert counts.seen == 3
        assert _list(node, "perPage=2&sort=-num&filter=(num%3E%3D4)")["totalItems"] == 1  # another filter
        assert counts.seen == 4


def test_a_total_inside_a_transaction_is_counted(node: Node) -> None:
    """Uncommitted changes of the connection's own transaction do not move the data version: such totals are
    neither kept nor taken from what was kept."""
    tenant = node[2]
    before = _list(node, FILTERED)["totalItems"]
    tenant.conn.execute("BEGIN")
    try:
        tenant.conn.execute("INSERT INTO items (id, num) VALUES ('item00000000010', 10)")
        inside = tenant.list_totals.count(tenant.conn, "SELECT COUNT(*) FROM items WHERE num >= ?", (3,))
    finally:
        tenant.conn.execute("ROLLBACK")
    assert inside == before + 1
    assert _list(node, FILTERED)["totalItems"] == before


def test_a_repeated_list_compiles_no_statement(node: Node) -> None:
    """SQLite compiles a statement with ``LIMIT ?`` again on every run (its planner reads the bound limit): the page's
    limit is written into the SQL, so a list seen before runs cached statements only (the tenant's authorizer,
    called for each compiled statement, is not called)."""
    tenant = node[2]
    guard = tenant.conn.authorizer
    compiled: list[tuple[Any, ...]] = []

    def counting(*args: Any) -> int:
        compiled.append(args)
        return guard(*args)  # type: ignore[misc]

    tenant.conn.authorizer = counting  # (SQLite expires the compiled statements: the next list compiles again)
    try:
        _list(node, FILTERED + "&skipTotal=1")
        compiled.clear()
        for page in (1, 2, 1):
            assert _list(node, FILTERED + f"&skipTotal=1&page={page}")["page"] == page
    finally:
        tenant.conn.authorizer = guard
    assert compiled == []


@pytest.mark.parametrize("path, query", [
    (LIST, "perPage=2&filter=" + quote("strftime('%Y') != '' && num >= 1")),  # SQLite's clock: 'now'
    ("/t/t/api/collections/items_view/records", "perPage=2"),  # a view's query may read anything
    ("/t/t/api/collections/others/records", "perPage=2"),  # a list rule that joins a view
])
def test_a_total_that_may_not_depend_on_the_data_alone_is_counted_each_time(node: Node, path: str, query: str) -> None:
    loop, app, tenant = node
    if tenant.collection("items_view") is None:
        create_collection(tenant.conn, {"name": "items_view", "type": "view", "listRule": "",
                                        "viewQuery": "SELECT id, num FROM items"})
        create_collection(tenant.conn, {"name": "others", "type": "base", "listRule": "@collection.items_view.num >= 1",
                                        "fields": [{"name": "num", "type": "number"}]})
        tenant.conn.execute("INSERT INTO others (id, num) VALUES ('other0000000001', 1)")
        tenant.reload_collections()
    with _Counts(tenant.conn) as counts:
        for _ in range(2):
            proto = get(loop, app, TOKEN, path, query)
            assert proto.status == 200, proto.body
        assert counts.seen == 2
