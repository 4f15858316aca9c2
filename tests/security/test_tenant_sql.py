"""A tenant's superuser is not trusted: the SQL they write (view queries, index definitions) and the database
files they bring (imports) must never reach another tenant's database, the node's files, or SQLite's
dangerous corners. Everything here goes through a real all-in-one (control plane, gateway, node) on
loopback, as an attacker would."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import apsw

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pocketbase"))
from pbharness import ADMIN_TOKEN, create_tenant, start_all_in_one  # noqa: E402

from helpers import PbfastProcess  # noqa: E402

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORD = "a-long-password-123"


class Site:
    """An all-in-one with tenants ``alpha`` (the attacker) and ``beta`` (the victim, holding a secret)."""

    def __init__(self, process: PbfastProcess, cp: str, gw: str, data_dir: Path) -> None:
        self.process, self.cp, self.gw, self.data_dir = process, cp, gw, data_dir
        self.tokens: dict[str, str] = {}

    def login(self, tenant: str) -> str:
        response = httpx.post(f"{self.gw}/t/{tenant}/api/collections/_superusers/auth-with-password",
                              json={"identity": f"root@{tenant}.test", "password": PASSWORD}, timeout=30)
        assert response.status_code == 200, response.text
        self.tokens[tenant] = response.json()["token"]
        return self.tokens[tenant]

    def call(self, tenant: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, f"{self.gw}/t/{tenant}{path}", json=body, timeout=30,
                             headers={"Authorization": self.tokens[tenant]})


@pytest.fixture
def site(pbfast_process: object, tmp_path: Path) -> Site:
    data_dir = tmp_path / "pbfast"
    process, cp, gw = start_all_in_one(pbfast_process, data_dir)
    result = Site(process, cp, gw, data_dir)
    for tenant in ("alpha", "beta"):
        create_tenant(cp, gw, tenant, {"superuser": {"email": f"root@{tenant}.test", "password": PASSWORD}})
        result.login(tenant)
    created = result.call("beta", "POST", "/api/collections", {
        "name": "secrets", "type": "base", "fields": [{"name": "v", "type": "text"}]})
    assert created.status_code == 200, created.text
    record = result.call("beta", "POST", "/api/collections/secrets/records", {"v": "beta-secret"})
    assert record.status_code == 200, record.text
    return result


def beta_secrets(site: Site) -> list[str]:
    response = site.call("beta", "GET", "/api/collections/secrets/records")
    assert response.status_code == 200, response.text
    return [item["v"] for item in response.json()["items"]]


def create_view(site: Site, name: str, query: str) -> httpx.Response:
    return site.call("alpha", "POST", "/api/collections", {"name": name, "type": "view", "listRule": "",
                                                          "viewQuery": query})


def test_view_query_cannot_name_the_database_file(site: Site) -> None:
    response = create_view(site, "where_am_i",
                           "select (select file from pragma_database_list where name='main') as id")
    assert response.status_code == 400, response.text
    assert "viewQuery" in response.json()["data"]
    assert str(site.data_dir) not in response.text


@pytest.mark.parametrize("statements", [
    "attach database '{beta}' as b",
    "attach database '{beta}' as b ; insert into _superusers select * from b._superusers",
    "attach database '{beta}' as b ; update b.secrets set v='PWNED-by-alpha'",
    "attach database '{created}' as c",
])
def test_view_query_cannot_run_more_statements(site: Site, tmp_path: Path, statements: str) -> None:
    beta_db = site.data_dir / "tenants" / "beta" / "data.db"
    assert beta_db.exists()
    created = tmp_path / "created-by-attach.db"
    extra = statements.format(beta=beta_db, created=created)
    query = f"select id from _superusers -- '\n) ; {extra} ; --'"
    response = create_view(site, "smuggle", query)
    assert response.status_code == 400, response.text
    assert response.json()["data"]["viewQuery"]["code"] == "validation_invalid_view_query"
    assert not created.exists()
    assert beta_secrets(site) == ["beta-secret"]
    # nothing of the attempt is left on alpha's connection either
    assert create_view(site, "after", "select id from b.secrets").status_code == 400


def test_view_query_must_be_a_read_only_select(site: Site) -> None:
    for query in ("select 1 as id; select 2 as id", "delete from _superusers returning id",
                  "select 1 as id) ; drop table _superusers ; select (1"):
        response = create_view(site, "writer", query)
        assert response.status_code == 400, (query, response.text)
    assert site.login("alpha")  # alpha's own superusers are intact


def test_a_plain_view_still_works(site: Site) -> None:
    response = create_view(site, "ok_view", "select id, email -- a comment\nfrom _superusers /* c */;")
    assert response.status_code == 200, response.text
    listed = site.call("alpha", "GET", "/api/collections/ok_view/records")
    assert listed.status_code == 200 and listed.json()["totalItems"] == 1, listed.text


def test_index_definition_cannot_run_more_statements(site: Site, tmp_path: Path) -> None:
    created = tmp_path / "index-attach.db"
    response = site.call("alpha", "POST", "/api/collections", {
        "name": "posts", "type": "base", "fields": [{"name": "title", "type": "text"}],
        "indexes": [f"CREATE INDEX idx_t ON posts (abs(1)) WHERE 1; ATTACH DATABASE '{created}' AS c; --"]})
    assert response.status_code == 400, response.text
    assert not created.exists()
    # A name with backquotes is quoted, never closes the quoting early.
    response = site.call("alpha", "POST", "/api/collections", {
        "name": "posts", "type": "base", "fields": [{"name": "title", "type": "text"}],
        "indexes": ["CREATE INDEX `idx``x` ON posts (title)"]})
    assert response.status_code == 200, response.text


def _hostile_database(path: Path) -> None:
    """A PocketBase data.db (made by pbfast's own initialiser) carrying a view collection whose query names
    the file, and a trigger that would load code: what an imported file may hold."""
    from pbfast.pocketbase import collections

    collections.init_tenant_database(path.parent, with_auxiliary=False)
    connection = apsw.Connection(str(path))
    try:
        with connection:
            collections.create_collection(connection, {"name": "leak", "type": "view", "listRule": "",
                                                  "viewQuery": "select 'x' as id"})
            connection.execute("DROP VIEW leak")
            connection.execute("CREATE VIEW leak AS SELECT * FROM (SELECT file AS id FROM pragma_database_list)")
            collections.create_collection(connection, {"name": "notes", "type": "base", "createRule": "",
                                                  "fields": [{"name": "v", "type": "text"}]})
            connection.execute("CREATE TRIGGER boom AFTER INSERT ON notes BEGIN "
                               "SELECT load_extension('/tmp/evil.so'); END")
        connection.execute("PRAGMA journal_mode = DELETE")
    finally:
        connection.close()


def test_imported_views_and_triggers_run_under_the_guards(site: Site, tmp_path: Path) -> None:
    hostile = tmp_path / "hostile" / "data.db"
    _hostile_database(hostile)
    made = httpx.post(f"{site.cp}/api/cp/tenants", json={"id": "gamma"}, headers=ADMIN)
    assert made.status_code == 200, made.text
    imported = httpx.put(f"{site.cp}/api/cp/tenants/gamma/data", content=hostile.read_bytes(), headers=ADMIN,
                         timeout=60)
    assert imported.status_code == 200, imported.text
    leaked = httpx.get(f"{site.gw}/t/gamma/api/collections/leak/records", timeout=30)
    assert leaked.status_code == 400, leaked.text
    assert str(site.data_dir) not in leaked.text
    inserted = httpx.post(f"{site.gw}/t/gamma/api/collections/notes/records", json={"v": "x"}, timeout=30)
    assert inserted.status_code == 400, inserted.text
    assert httpx.get(f"{site.gw}/t/gamma/api/health").status_code == 200


def test_sql_console_stays_within_the_tenant(site: Site, tmp_path: Path) -> None:
    """``POST /api/sql`` (PocketBase's SQL console) runs a superuser's raw SQL on the tenant's own database
    only: nothing that reaches another file, the node's transactions, the quota, the schema version or the
    tables the node reads (docs/security.md); refused with a 400, the tenant working on afterwards."""
    beta_db = site.data_dir / "tenants" / "beta" / "data.db"
    created = tmp_path / "created-by-the-console.db"

    def run(query: str, tenant: str = "alpha") -> httpx.Response:
        return site.call(tenant, "POST", "/api/sql", {"query": query})

    refused = [
        f"attach database '{beta_db}' as b", f"vacuum into '{created}'", "select load_extension('x')",
        "select * from pragma_database_list", "pragma max_page_count = 2147483646", "pragma user_version = 7",
        "pragma journal_mode = delete", "pragma writable_schema = on", "begin", "commit", "savepoint s",
        "delete from _collections", "update _params set value = 'x'", "drop table _collections",
        "insert into _collections (id, name) values ('x', 'x')", "alter table _params rename to p",
        "create trigger t after insert on _collections begin select 1; end",
        "create temp table t (x)", "create temp trigger t after insert on _superusers begin select 1; end",
        "create table ok (x); begin",
    ]
    for query in refused:
        response = run(query)
        assert response.status_code == 400, (query, response.text)
        assert response.json()["message"].startswith("Failed to execute query."), (query, response.text)
    assert not created.exists()
    assert beta_secrets(site) == ["beta-secret"]
    # the tenant's own tables: written and read, the refused script above rolled back whole
    assert run("create table mine (x int); insert into mine values (1), (2)").json()["affectedRows"] == 2
    assert run("select x from mine order by x").json()["rows"] == [["1"], ["2"]]
    assert run("select * from ok").status_code == 400
    # the tenant works on: its collections, a record write (no transaction left open)
    assert site.call("alpha", "GET", "/api/collections?perPage=1").status_code == 200
    made = site.call("alpha", "POST", "/api/collections", {"name": "after_console", "type": "base",
                                                           "fields": [{"name": "v", "type": "text"}]})
    assert made.status_code == 200, made.text
    assert site.call("alpha", "POST", "/api/collections/after_console/records", {"v": "x"}).status_code == 200
    # a trigger (allowed: it is on the tenant's own table) cannot write the node's tables when it fires, even
    # from the node's own statements: the write that fires it fails, the settings stay as they were
    settings_before = site.call("alpha", "GET", "/api/settings").json()
    trap = run("create trigger trap after insert on after_console begin update _params set value = 'x'; "
               "insert into _collections (id, name) values ('x', 'x'); end")
    assert trap.status_code == 200, trap.text
    assert site.call("alpha", "POST", "/api/collections/after_console/records", {"v": "y"}).status_code == 400
    assert site.call("alpha", "GET", "/api/settings").json() == settings_before
    assert run("select count(*) from _collections where id = 'x'").json()["rows"] == [["0"]]
    assert run("drop trigger trap").status_code == 200
    assert site.call("alpha", "POST", "/api/collections/after_console/records", {"v": "z"}).status_code == 200
    # only the tenant's own superusers
    other = httpx.post(f"{site.gw}/t/alpha/api/sql", json={"query": "select 1"}, timeout=30,
                       headers={"Authorization": site.tokens["beta"]})
    assert other.status_code == 401, other.text


def test_a_trigger_on_superusers_cannot_hold_the_nodes_own_writes(site: Site) -> None:
    """The node's own write to a tenant (the control plane's superuser upsert) fires the tenant's triggers
    too: one that never ends is stopped by the node's time limit for such writes, answered, and the node serves
    on; without the limit it held a database thread for good."""
    trap = site.call("alpha", "POST", "/api/sql", {"query": (
        "create trigger hold before update on _superusers begin select count(*) from (with recursive c(n) as "
        "(select 1 union all select n + 1 from c) select n from c); end")})
    assert trap.status_code == 200, trap.text
    started = time.monotonic()
    upserted = httpx.put(f"{site.cp}/api/cp/tenants/alpha/superusers", headers=ADMIN, timeout=60,
                         json={"email": "root@alpha.test", "password": "another-password-1"})
    assert upserted.status_code >= 400, upserted.text
    assert time.monotonic() - started < 30
    assert beta_secrets(site) == ["beta-secret"]
    # the tenant's turn is free again: its own writes go on
    made = site.call("alpha", "POST", "/api/collections", {"name": "after_trap", "type": "base",
                                                           "fields": [{"name": "v", "type": "text"}]})
    assert made.status_code == 200, made.text
