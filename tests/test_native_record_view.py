"""A record view read and written by the extension (``pbfast.pocketbase.records.native_view``), through the
tenant API's view handler: the same status and bytes as the Python path (which the differential suite proves
against PocketBase) for every field type and edge value, for guests, the record itself and superusers; the view
rule with ``@request.auth.id`` applied; Python answering whatever the extension cannot prove (a json field, a
``manageRule``, odd stored values, ``expand``/``fields``, a busy connection, an open transaction); schema
changes picked up; a closed tenant's statements finalized.

One tenant and its collections serve the module (in process: the API's handler on a real SQLite database)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import FakeHeaders

from pbfast import _native
from pbfast.native_reads import attach_host_sqlite, host_sqlite_ready
from pbfast.pocketbase import auth
from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.collections import create_collection
from pbfast.pocketbase.records import Viewer, native_view
from pbfast.pocketbase.tenant import Tenant


class _Scope:
    proto = "http"
    method = "GET"
    authority = None
    client = "192.0.2.7:5555"
    scheme = "http"
    http_version = "1.1"

    def __init__(self, path: str, query: str, token: str | None) -> None:
        self.path, self.query_string = path, query
        self.headers = FakeHeaders([("host", "node.test")] + ([("authorization", token)] if token else []))


class _Answer:
    def __init__(self) -> None:
        self.status, self.body = 0, b""

    async def __call__(self) -> bytes:
        return b""

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.body = status, body

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.response_bytes(status, headers, b"")


class Served:
    """The tenant, the API, and how a view is answered natively and by Python alone."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant, self.api = tenant, TenantApi()
        self.native = 0  # views the extension answered since the last :meth:`both`

    def get(self, path: str, query: str = "", token: str | None = None) -> tuple[int, bytes]:
        answer = _Answer()
        asyncio.run(self.api.handle(self.tenant, path, _Scope(path, query, token), answer))  # type: ignore[arg-type]
        return answer.status, answer.body

    def both(self, path: str, query: str = "", token: str | None = None) -> tuple[tuple[int, bytes], bool]:
        """The answer with the extension, whether it answered, and that Python alone answers the same."""
        originals = {name: getattr(native_view, name) for name in ("record_json_bytes", "page_json")}
        answered: list[object] = []

        def counted(name: str) -> Callable[..., object]:
            def call(*args: Any) -> object:
                answered.append(originals[name](*args))
                return answered[-1]
            return call

        try:
            for name in originals:
                setattr(native_view, name, counted(name))
            with_native = self.get(path, query, token)
            for name in originals:
                setattr(native_view, name, lambda *args: None)
            python_only = self.get(path, query, token)
        finally:
            for name, original in originals.items():
                setattr(native_view, name, original)
        assert with_native == python_only, (path, query, with_native, python_only)
        return with_native, any(body is not None for body in answered)


_KINDS_FIELDS = [
    {"name": "title", "type": "text"}, {"name": "body", "type": "editor"}, {"name": "mail", "type": "email"},
    {"name": "site", "type": "url"}, {"name": "num", "type": "number"}, {"name": "flag", "type": "bool"},
    {"name": "day", "type": "date"}, {"name": "one", "type": "select", "values": ["a", "b", "é"], "maxSelect": 1},
    {"name": "many", "type": "select", "values": ["a", "b", "é"], "maxSelect": 3},
    {"name": "doc", "type": "file", "maxSelect": 1}, {"name": "docs", "type": "file", "maxSelect": 5},
    {"name": "secret", "type": "text", "hidden": True}, {"name": "pass", "type": "password"},
    {"name": "created", "type": "autodate", "onCreate": True},
    {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True}]
_TOKEN_SECONDS = 3600


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tenant = Tenant.open("native", tmp_path_factory.mktemp("native-view"), create=True)
    conn = tenant.conn
    create_collection(conn, {"name": "kinds", "type": "base", "viewRule": "", "listRule": "", "fields": _KINDS_FIELDS})
    create_collection(conn, {"name": "docsjson", "type": "base", "viewRule": "",
                             "fields": [{"name": "data", "type": "json"}]})
    create_collection(conn, {"name": "members", "type": "auth", "viewRule": "", "listRule": "",
                             "fields": [{"name": "nick", "type": "text"}, {"name": "note", "type": "text",
                                                                           "hidden": True}]})
    create_collection(conn, {"name": "managed", "type": "auth", "viewRule": "", "manageRule": "id != ''"})
    create_collection(conn, {"name": "owned", "type": "base", "viewRule": "owner = @request.auth.id",
                             "listRule": "owner = @request.auth.id",
                             "fields": [{"name": "owner", "type": "text"}, {"name": "title", "type": "text"}]})
    tenant.reload_collections()
    served = Served(tenant)
    try:
        yield served
    finally:
        tenant.close()


def _insert(tenant: Tenant, table: str, values: dict[str, Any]) -> None:
    names = ", ".join(f'"{name}"' for name in values)
    tenant.conn.execute(f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(values))})',
                        list(values.values()))


_ids = (f"r{n:014d}" for n in itertools.count())


def _kinds_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"id": next(_ids), "title": "t", "body": "<p>b</p>", "mail": "a@b.co", "site": "https://x.y",
                           "num": 12, "flag": 1, "day": "2024-02-03 04:05:06.789Z", "one": "a", "many": '["a","b"]',
                           "doc": "f.txt", "docs": '["f.txt","g.png"]', "secret": "s", "pass": "hash",
                           "created": "2024-01-02 03:04:05.678Z", "updated": "2024-01-02 03:04:05.678Z"}
    row.update(values)
    return row


def _token(tenant: Tenant, collection: str, record_id: str) -> str:
    found = tenant.collection(collection)
    assert found is not None
    token_key = tenant.conn.execute(f'SELECT "tokenKey" FROM "{found.name}" WHERE id = ?', (record_id,)).get
    return auth.issue_auth_token(record_id, str(token_key), found.id, found.auth.auth_token.secret, _TOKEN_SECONDS)


@pytest.fixture(scope="module")
def superuser_token(served: Served) -> str:
    _insert(served.tenant, "_superusers", {"id": "su000000000001", "email": "root@x.y", "password": "x",
                                           "tokenKey": "key-su", "verified": 1})
    return _token(served.tenant, "_superusers", "su000000000001")


def test_every_written_field_type_is_byte_identical_and_served_natively(served: Served, superuser_token: str) -> None:
    ordinary = [_kinds_row(), _kinds_row(title='say "hi"\n\\ é <b>\u2028\x01\x7f', num=0.25, flag=0, one="",
                                         many="", docs="[]", doc="", day=""),
                _kinds_row(title="", num=-3.5e-5, many='["é"]', day="1999-12-28 23:59:59.000Z"),
                _kinds_row(num=2 ** 53, flag=2), _kinds_row(num=123456789.125, title="")]
    odd = [_kinds_row(num=1.5e-7), _kinds_row(num=2 ** 53 + 1), _kinds_row(num=1e300), _kinds_row(num="12"),
           _kinds_row(flag="true"), _kinds_row(title=7), _kinds_row(day="2024-01-31 00:00:00.000Z"),
           _kinds_row(day="2024-01-01T00:00:00Z"), _kinds_row(many='["a", "b"]'), _kinds_row(many='["a","a"]'),
           _kinds_row(many="a"), _kinds_row(one='["a"]'), _kinds_row(title=b"\xff"),
           _kinds_row(title=b"bytes"), _kinds_row(created="")]
    for row in ordinary + odd:
        _insert(served.tenant, "kinds", row)
    for row in ordinary:
        for token in (None, superuser_token):
            (status, body), native = served.both(f"/api/collections/kinds/records/{row['id']}", token=token)
            assert status == 200 and native, body
            assert ("secret" in orjson.loads(body)) == (token is not None)  # hidden: superusers only
    for row in odd:  # the same bytes, whoever answers
        (status, _), _ = served.both(f"/api/collections/kinds/records/{row['id']}")
        assert status == 200


def test_numbers_are_written_as_python_writes_them(served: Served) -> None:
    numbers: list[Any] = [0, 1, -1, 0.1, 0.5, 1e-5, 9.999e14, 123.456, -0.0, 2.0 ** 52 + 0.5]
    rng = random.Random(14)
    numbers += [rng.uniform(-1, 1) * 10 ** rng.randint(-6, 16) for _ in range(300)]
    numbers += [rng.randint(-2 ** 60, 2 ** 60) for _ in range(30)]
    short = [round(rng.uniform(-1, 1) * 10 ** rng.randint(0, 9), rng.randint(0, 5)) for _ in range(300)]  # typed in
    rows = [_kinds_row(num=number) for number in numbers + short]
    for row in rows:
        _insert(served.tenant, "kinds", row)
    natively = 0
    for row in rows:
        (status, _), native = served.both(f"/api/collections/kinds/records/{row['id']}")
        assert status == 200
        natively += native
    assert natively > len(short)  # the values people type, and many others, natively


def test_auth_records_show_the_email_as_python_does(served: Served, superuser_token: str) -> None:
    tenant = served.tenant
    for record_id, visible in (("m0000000000001", 1), ("m0000000000002", 0), ("m0000000000003", "0")):
        _insert(tenant, "members", {"id": record_id, "email": f"{record_id}@x.y", "emailVisibility": visible,
                                    "password": "hash", "tokenKey": f"key-{record_id}", "verified": 0,
                                    "nick": "n", "note": "hidden"})
    own = _token(tenant, "members", "m0000000000002")
    for record_id in ("m0000000000001", "m0000000000002", "m0000000000003"):
        for token in (None, own, superuser_token):
            (status, body), native = served.both(f"/api/collections/members/records/{record_id}", token=token)
            shown = orjson.loads(body)
            assert status == 200 and native
            assert "password" not in shown and "tokenKey" not in shown
            assert ("note" in shown) == (token == superuser_token)
    guest = orjson.loads(served.get("/api/collections/members/records/m0000000000002")[1])
    assert "email" not in guest
    assert orjson.loads(served.get("/api/collections/members/records/m0000000000002", token=own)[1])["email"]


def test_a_rule_with_the_requesters_id_is_applied_natively(served: Served) -> None:
    tenant = served.tenant
    _insert(tenant, "members", {"id": "m0000000000009", "email": "o@x.y", "emailVisibility": 0, "password": "h",
                                "tokenKey": "key-9", "verified": 0, "nick": "", "note": ""})
    _insert(tenant, "owned", {"id": "o0000000000001", "owner": "m0000000000009", "title": "mine"})
    owner = _token(tenant, "members", "m0000000000009")
    (status, body), native = served.both("/api/collections/owned/records/o0000000000001", token=owner)
    assert status == 200 and native and orjson.loads(body)["title"] == "mine"
    for token in (None, _token(tenant, "members", "m0000000000001")):
        (status, _), native = served.both("/api/collections/owned/records/o0000000000001", token=token)
        assert status == 404 and native  # the rule holds for nobody else: 404 from the native read too
    (status, _), native = served.both("/api/collections/owned/records/nope", token=owner)
    assert status == 404 and native


def test_what_the_extension_cannot_prove_is_answered_by_python(served: Served, superuser_token: str) -> None:
    tenant = served.tenant
    _insert(tenant, "docsjson", {"id": "d0000000000001", "data": '{"b": 1, "a": [1, 2.50]}'})
    (status, body), native = served.both("/api/collections/docsjson/records/d0000000000001")
    assert status == 200 and not native and orjson.loads(body)["data"] == {"a": [1, 2.5], "b": 1}
    row = _kinds_row()
    _insert(tenant, "kinds", row)
    for query in ("fields=id,title", "expand=nothing"):
        (status, _), native = served.both(f"/api/collections/kinds/records/{row['id']}", query)
        assert status == 200 and not native
    _insert(tenant, "managed", {"id": "g0000000000001", "email": "g@x.y", "emailVisibility": 0, "password": "h",
                                "tokenKey": "key-g", "verified": 0})
    for token in (None, superuser_token):  # whether the requester manages the record: Python's, not for superusers
        (status, body), native = served.both("/api/collections/managed/records/g0000000000001", token=token)
        assert status == 200 and native == (token is not None)
    conn = tenant.conn
    conn.execute("BEGIN")  # a transaction Python left open: not read inside it (its writes are uncommitted)
    try:
        conn.execute("UPDATE kinds SET title = 'uncommitted' WHERE id = ?", (row["id"],))
        (status, body), native = served.both(f"/api/collections/kinds/records/{row['id']}")
        assert status == 200 and not native and orjson.loads(body)["title"] == "uncommitted"
    finally:
        conn.execute("ROLLBACK")


def test_a_connection_busy_on_another_thread_falls_back(served: Served) -> None:
    tenant, row = served.tenant, _kinds_row()
    _insert(tenant, "kinds", row)
    collection = tenant.collection("kinds")
    assert collection is not None

    def read() -> bytes | None:
        return native_view.record_json_bytes(tenant, collection, row["id"], None, Viewer())

    assert read()
    inside, release = threading.Event(), threading.Event()

    def progress() -> bool:  # inside apsw's step on the worker: the connection's mutex held, the GIL let go
        if not inside.is_set():
            inside.set()
            release.wait(10)
        return False

    def long_query() -> None:
        tenant.conn.set_progress_handler(progress, 1000)
        try:
            tenant.conn.execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000) "
                                "SELECT count(*) FROM c").fetchall()
        finally:
            tenant.conn.set_progress_handler(None)

    worker = threading.Thread(target=long_query)
    worker.start()
    try:
        assert inside.wait(10)
        assert read() is None  # not served, and not waited for
    finally:
        release.set()
        worker.join()
    assert read()


def test_a_schema_change_is_picked_up(served: Served) -> None:
    tenant = served.tenant
    create_collection(tenant.conn, {"name": "changing", "type": "base", "viewRule": "",
                                    "fields": [{"name": "a", "type": "text"}]})
    tenant.reload_collections()
    _insert(tenant, "changing", {"id": "c0000000000001", "a": "x"})
    (status, body), native = served.both("/api/collections/changing/records/c0000000000001")
    assert status == 200 and native and "b" not in orjson.loads(body)
    tenant.conn.execute('ALTER TABLE "changing" ADD COLUMN "b" NUMERIC DEFAULT 0 NOT NULL')
    tenant.conn.execute("""UPDATE _collections SET fields = json_insert(fields, '$[#]',
                           json('{"name":"b","type":"number","id":"number1","system":false,"hidden":false,
                           "presentable":false,"required":false,"onlyInt":false,"min":null,"max":null}'))
                           WHERE name = 'changing'""")
    tenant.reload_collections()
    (status, body), native = served.both("/api/collections/changing/records/c0000000000001")
    assert status == 200 and native and orjson.loads(body)["b"] == 0


def test_a_closed_tenant_is_never_read_natively_and_its_statements_are_finalized(tmp_path: Path) -> None:
    tenant = Tenant.open("closing", tmp_path, create=True)
    create_collection(tenant.conn, {"name": "posts", "type": "base", "viewRule": "",
                                    "fields": [{"name": "title", "type": "text"}]})
    tenant.reload_collections()
    _insert(tenant, "posts", {"id": "p0000000000001", "title": "x"})
    status, body = Served(tenant).get("/api/collections/posts/records/p0000000000001")
    assert status == 200 and orjson.loads(body)["title"] == "x"
    reader = tenant.native_reader
    assert reader is not None and reader.kept_statements == 1
    tenant.close()  # apsw's close fails while a statement it does not know is open: it did not
    assert reader.kept_statements == 0
    collection = tenant.collection("posts")
    assert collection is not None
    assert native_view.record_json_bytes(tenant, collection, "p0000000000001", None, Viewer()) is None


def test_list_pages_are_byte_identical_and_served_natively(served: Served, superuser_token: str) -> None:
    tenant = served.tenant
    rows = [_kinds_row(title=f"list {n}", num=n * 1.5, flag=n % 2) for n in range(30)]
    for row in rows:
        _insert(tenant, "kinds", row)
    path = "/api/collections/kinds/records"
    for query in ("filter=(title~'list')&sort=-num&perPage=7&page=2", "filter=(title~'list 1')&skipTotal=1",
                  "filter=(title~'list'%20%26%26%20num>=30)&sort=title", "filter=(title='none')"):
        for token in (None, superuser_token):
            (status, body), native = served.both(path, query, token)
            assert status == 200 and native, body
    (status, body), native = served.both(path, "filter=(title~'list')&perPage=7")
    assert orjson.loads(body)["totalItems"] == 30
    _insert(tenant, "kinds", _kinds_row(title="an odd one", day="2024-01-01T00:00:00Z"))  # a date not as Python keeps it
    (status, _), native = served.both(path, "filter=(title~'odd one')")  # an odd row on the page: Python writes it
    assert status == 200 and not native
    (status, _), native = served.both(path, "filter=(nope>1)")
    assert status == 400 and not native
    for query in ("fields=id", "expand=x"):
        (status, _), native = served.both(path, f"filter=(title~'list')&{query}")
        assert status == 200 and not native


def test_list_pages_of_auth_records_and_rules_with_the_requesters_id(served: Served, superuser_token: str) -> None:
    tenant = served.tenant
    for n in range(4):
        _insert(tenant, "members", {"id": f"l{n:013d}", "email": f"l{n}@x.y", "emailVisibility": n % 2,
                                    "password": "h", "tokenKey": f"key-l{n}", "verified": 0, "nick": "list",
                                    "note": "hidden"})
        _insert(tenant, "owned", {"id": f"w{n:013d}", "owner": f"l{n % 2:013d}", "title": f"w{n}"})
    own = _token(tenant, "members", "l0000000000000")
    for token in (None, own, superuser_token):
        (status, body), native = served.both("/api/collections/members/records", "filter=(nick='list')", token)
        assert status == 200 and native and orjson.loads(body)["totalItems"] == 4
    (status, body), native = served.both("/api/collections/owned/records", "sort=title", own)
    assert status == 200 and native and [i["title"] for i in orjson.loads(body)["items"]] == ["w0", "w2"]


def test_a_tenant_dropped_without_close_leaves_no_statement_behind(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """apsw closes a connection it is dropping only when no statement of ours is left on it."""
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    tenant = Tenant.open("dropped", tmp_path, create=True)
    create_collection(tenant.conn, {"name": "posts", "type": "base", "viewRule": "",
                                    "fields": [{"name": "title", "type": "text"}]})
    tenant.reload_collections()
    _insert(tenant, "posts", {"id": "p0000000000001", "title": "x"})
    assert Served(tenant).get("/api/collections/posts/records/p0000000000001")[0] == 200
    assert tenant.native_reader is not None and tenant.native_reader.kept_statements == 1
    del tenant
    gc.collect()
    assert unraisable == []


def _slow_page_sql(plan_columns: str) -> str:
    """A page of ``kinds`` whose WHERE first counts to ``?`` (SQLite work of a chosen length, no Python's)."""
    return (f'SELECT {plan_columns} FROM "kinds" WHERE (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 '
            f'FROM c WHERE i < ?) SELECT max(i) FROM c) > 0 ORDER BY "kinds"."id" LIMIT ? OFFSET ?')


def test_a_page_read_on_a_database_thread_lets_the_gil_go(served: Served) -> None:
    """Off the event loop a page is stepped and written with the GIL let go (as apsw steps), so the loop runs
    meanwhile; the same bytes as with the GIL held; the connection's mutex held throughout (another use of the
    connection meanwhile refused, not interleaved); the time limit still cuts it."""
    tenant = served.tenant
    _insert(tenant, "kinds", _kinds_row(title="gil"))
    collection = tenant.collection("kinds")
    plan = native_view.record_plan(collection, True) if collection is not None else None
    assert plan is not None and (host_sqlite_ready() or attach_host_sqlite() is not None)
    reader = _native.RecordReader(tenant.conn.sqlite3pointer())
    sql = _slow_page_sql(plan.columns)
    try:
        held = reader.rows_json(sql, [1, 5, 0], plan.native)
        assert held and held == reader.rows_json(sql, [1, 5, 0], plan.native, True)
        # The switch interval so long that only a thread letting the GIL go lets this one run before it is done.
        switch_interval, entered = sys.getswitchinterval(), threading.Event()
        stamps: dict[str, Any] = {}

        def read() -> None:
            entered.set()
            stamps["body"] = reader.rows_json(sql, [3_000_000, 5, 0], plan.native, True)
            stamps["read"] = time.monotonic()

        thread = threading.Thread(target=read)
        sys.setswitchinterval(100)
        try:
            thread.start()
            entered.wait(10)
            stamps["loop"] = time.monotonic()
        finally:
            sys.setswitchinterval(switch_interval)
            thread.join(60)
        assert stamps["body"] == held and stamps["loop"] < stamps["read"]
        tenant.time_limit.within_budget(5, lambda: None)  # its progress handler back (another test cleared it)
        started = time.monotonic()
        with tenant.time_limit.running(0.05):
            assert reader.rows_json(sql, [10**10, 5, 0], plan.native, True) is None  # interrupted: not served
        assert time.monotonic() - started < 5  # the count would take minutes
    finally:
        reader.close()
