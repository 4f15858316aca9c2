"""``PUT /api/collections/import`` (PocketBase's ``apis/collection_import_test.go`` scenarios) on stock
PocketBase 0.40.6 and a pbfast tenant, both on copies of PocketBase's test fixture: the same answers, and the
same collections afterwards."""

from __future__ import annotations

from typing import Any

import httpx

from pbharness import Backend

USER_TOKEN = ("eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoiX3BiX3VzZ"
              "XJzX2F1dGhfIiwiZXhwIjoyNTI0NjA0NDYxLCJyZWZyZXNoYWJsZSI6dHJ1ZX0.ZT3F0Z3iM-xbGgSG3LEKiEzHrPHr8t8IuHLZGGNuxLo")
TEXT_FIELD = {"id": "koih1lqx", "name": "test", "type": "text"}
STEPS: list[tuple[str, str | None, Any]] = [
    ("unauthorized", None, {"collections": [{"name": "x"}]}),
    ("regular user", USER_TOKEN, {"collections": [{"name": "x"}]}),
    ("empty collections", "superuser", {"collections": []}),
    ("collections not a list", "superuser", {"collections": "nope"}),
    ("deleteMissing not a bool", "superuser", {"collections": [{"name": "x"}], "deleteMissing": "yes"}),
    ("validator failure", "superuser", {"collections": [
        {"name": "import1"},
        {"name": "import2", "fields": [{"id": "koih1lqx", "name": "expand", "type": "text"}]}]}),
    ("duplicate index name", "superuser", {"collections": [
        {"name": "import1", "fields": [TEXT_FIELD], "indexes": ["create index idx_dup on import1 (test)"]},
        {"name": "import2", "fields": [TEXT_FIELD], "indexes": ["create index idx_dup on import2 (test)"]}]}),
    ("create three", "superuser", {"collections": [
        {"name": "import1", "fields": [TEXT_FIELD]},
        {"name": "import2", "fields": [TEXT_FIELD], "indexes": ["create index idx_test on import2 (test)"]},
        {"name": "auth_without_fields", "type": "auth"}]}),
    ("update keeps unnamed fields", "superuser", {"collections": [
        {"name": "import1", "listRule": "", "fields": [{"name": "extra", "type": "number"}]}]}),
    ("a relation to a collection later in the list, and a view", "superuser", {"collections": [
        {"name": "later_view", "type": "view", "viewQuery": "SELECT id, name FROM later_target"},
        {"name": "later_source", "fields": [{"name": "target", "type": "relation", "collectionId": "pbc_later0000001",
                                             "maxSelect": 1}]},
        {"id": "pbc_later0000001", "name": "later_target", "fields": [{"name": "name", "type": "text"}]}]}),
    ("create/update/delete", "superuser", {"deleteMissing": True, "collections": [
        {"name": "test123"},
        {"id": "wsmn24bux7wo113", "name": "demo1",
         "fields": [{"id": "_2hlxbmp", "name": "title", "type": "text", "required": True}], "indexes": []}]}),
]


def _state(backend: Backend) -> list[tuple[str, str, list[str], list[str]]]:
    """Every collection: name, type, field names and indexes."""
    answer = httpx.get(f"{backend.url}/api/collections?perPage=500", headers={"Authorization": backend.superuser_token},
                       timeout=30)
    assert answer.status_code == 200, answer.text
    return sorted((c["name"], c["type"], [f["name"] for f in c["fields"]], c["indexes"])
                  for c in answer.json()["items"])


def _run(backend: Backend) -> list[tuple[str, int, Any, Any]]:
    seen = []
    for name, auth, body in STEPS:
        headers = {} if auth is None else {"Authorization": backend.superuser_token if auth == "superuser" else auth}
        answer = httpx.put(f"{backend.url}/api/collections/import", json=body, headers=headers, timeout=60)
        seen.append((name, answer.status_code, answer.json() if answer.content else None, _state(backend)))
    return seen


def test_collections_import_as_pocketbase(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend) -> None:
    stock = _run(stock_pocketbase)
    assert [status for _, status, _, _ in stock] == [401, 403, 400, 400, 400, 400, 400, 204, 204, 204, 204], stock
    fast = _run(pbfast_fixture_tenant)
    for expected, got in zip(stock, fast, strict=True):
        assert got == expected, expected[0]
