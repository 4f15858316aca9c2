"""A records list's compiled filter, sort and list rule are kept between requests only where they do not depend on
the request (pbfast.pocketbase.apis.records._compiled_list_query): a changed list rule applies at once, and a
list rule naming ``@request`` is compiled for each request. A node in process (its routes, the tenant's API on a real
SQLite database), called as granian calls it; no network."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pbfast.pocketbase.collections.service import create_collection, update_collection
from pbfast.tenant_node.app import TenantNodeApp
from node_in_process import get

TOKEN = "cluster-token-list-query-cache"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.AbstractEventLoop, TenantNodeApp]]:
    loop = asyncio.new_event_loop()
    app = TenantNodeApp("cache-node", 4, TOKEN, Path(tmp_path_factory.mktemp("list-cache")))
    app.apply_assignments({"t": {"epoch": 1, "incarnation": "inc-1"}}, [])
    tenant = loop.run_until_complete(app.open_tenant("t"))
    create_collection(tenant.conn, {"name": "items", "type": "base", "listRule": "",
                                    "fields": [{"name": "num", "type": "number"}]})
    tenant.conn.executemany("INSERT INTO items (id, num) VALUES (?, ?)", [(f"item{n:011d}", n) for n in range(1, 6)])
    tenant.reload_collections()
    yield loop, app
    loop.run_until_complete(app.close_all())
    app.db.stop()
    loop.close()


def _nums(node: tuple[asyncio.AbstractEventLoop, TenantNodeApp], query: str) -> list[int]:
    loop, app = node
    proto = get(loop, app, TOKEN, "/t/t/api/collections/items/records", query)
    assert proto.status == 200, proto.body
    answer: dict[str, Any] = orjson.loads(proto.body)
    return sorted(item["num"] for item in answer["items"])


def test_a_changed_list_rule_applies_to_the_next_list(node: tuple[asyncio.AbstractEventLoop, TenantNodeApp]) -> None:
    query = "filter=(num%3E%3D2)&sort=-num"
    assert _nums(node, query) == [2, 3, 4, 5]
    assert _nums(node, query) == [2, 3, 4, 5]  # kept
    tenant = node[1].tenants["t"]
    update_collection(tenant.conn, tenant.collections["items"], {"listRule": "num <= 3"})
    tenant.reload_collections()
    assert _nums(node, query) == [2, 3]


def test_a_rule_naming_the_request_is_compiled_for_each(node: tuple[asyncio.AbstractEventLoop, TenantNodeApp]) -> None:
    tenant = node[1].tenants["t"]
    update_collection(tenant.conn, tenant.collections["items"], {"listRule": "num <= @request.query.limit"})
    tenant.reload_collections()
    for limit in (1, 2, 3, 2):
        assert _nums(node, f"filter=(num%3E%3D1)&limit={limit}") == list(range(1, limit + 1))
