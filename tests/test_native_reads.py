"""The extension's statements on apsw's own SQLite (issue 14 spike, ``pbfast.native_reads``): the API handed over
through a loadable-extension entry point, rows read on an apsw connection, a record's JSON as Python writes it,
and a connection another thread is using left alone (never waited for)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import apsw
import orjson
import pytest

from pbfast import _native
from pbfast.native_reads import attach_host_sqlite


@pytest.fixture(scope="module")
def connection(tmp_path_factory: pytest.TempPathFactory) -> apsw.Connection:
    assert attach_host_sqlite() is not None
    conn = apsw.Connection(str(tmp_path_factory.mktemp("native-reads") / "data.db"))
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE posts (id TEXT PRIMARY KEY, title TEXT, num NUMERIC, flag BOOLEAN, tags JSON)")
    conn.executemany("INSERT INTO posts VALUES (?, ?, ?, ?, ?)",
                     [("a1", 'say "hi"\n\\ é <b>', 12.0, 1, '["x","y"]'), ("b2", None, 0.25, 0, None)])
    return conn


def test_query_json_reads_an_apsw_connection(connection: apsw.Connection) -> None:
    rows = orjson.loads(_native.query_json(connection.sqlite3pointer(),
                                           "SELECT id, num, title FROM posts ORDER BY id"))
    assert rows == [{"id": "a1", "num": 12, "title": 'say "hi"\n\\ é <b>'}, {"id": "b2", "num": 0.25, "title": None}]


def test_native_view_writes_the_bytes_python_writes(connection: apsw.Connection) -> None:
    columns = [("flag", "bool"), ("id", "text"), ("num", "number"), ("tags", "json"), ("title", "text")]
    view = _native.NativeView(connection.sqlite3pointer(), "/api/collections/posts/records/",
                              "SELECT flag, id, num, tags, title FROM posts WHERE id = ?", columns,
                              [("collectionId", "pbc_1"), ("collectionName", "posts")])
    try:
        for record_id, expected in (
                ("a1", {"collectionId": "pbc_1", "collectionName": "posts", "flag": True, "id": "a1", "num": 12,
                        "tags": ["x", "y"], "title": 'say "hi"\n\\ é <b>'}),
                ("b2", {"collectionId": "pbc_1", "collectionName": "posts", "flag": False, "id": "b2", "num": 0.25,
                        "tags": None, "title": ""})):
            assert view.serve(f"/api/collections/posts/records/{record_id}") == orjson.dumps(expected)
        assert view.serve("/api/collections/posts/records/none") is None
        assert view.serve("/api/collections/other/records/a1") is None
        assert view.serve("/api/collections/posts/records/a1", "not.a.token") is None  # no key: never served
        connection.execute("BEGIN; UPDATE posts SET title = 'uncommitted' WHERE id = 'a1'").fetchall()
        try:  # a transaction Python left open on the connection: not read inside it
            assert view.serve("/api/collections/posts/records/a1") is None
        finally:
            connection.execute("ROLLBACK")
    finally:
        view.close()


def test_a_connection_in_use_on_another_thread_is_not_waited_for(connection: apsw.Connection) -> None:
    view = _native.NativeView(connection.sqlite3pointer(), "/p/", "SELECT id FROM posts WHERE id = ?",
                              [("id", "text")], [])
    inside, release = threading.Event(), threading.Event()

    def progress() -> bool:  # inside apsw's step on the worker: the connection's mutex held, the GIL let go
        if not inside.is_set():
            inside.set()
            release.wait(10)
        return False

    def long_query() -> None:
        connection.set_progress_handler(progress, 1000)
        try:
            assert connection.execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000) "
                                      "SELECT count(*) FROM c").get == 100000
        finally:
            connection.set_progress_handler(None)

    worker = threading.Thread(target=long_query)
    worker.start()
    try:
        assert inside.wait(10)
        assert view.serve("/p/a1") is None  # not served (Python would serve it), and not waited for
        with pytest.raises(RuntimeError, match="in use on another thread"):
            _native.query_json(connection.sqlite3pointer(), "SELECT 1")
    finally:
        release.set()
        worker.join()
    assert view.serve("/p/a1") == b'{"id":"a1"}'
    view.close()


def test_the_handed_api_is_apsw_s_own_copy(tmp_path: Path) -> None:
    assert _native.host_sqlite_version() == attach_host_sqlite()
    version = apsw.sqlite_lib_version().split(".")
    assert _native.host_sqlite_version() == int(version[0]) * 1_000_000 + int(version[1]) * 1000 + int(version[2])


_TRY_WRITE = ("import apsw, sys\nc = apsw.Connection(sys.argv[1]); c.setbusytimeout(0)\n"
              "try:\n    c.execute('BEGIN IMMEDIATE'); print('written')\nexcept apsw.BusyError:\n    print('busy')")


def test_an_own_connection_closed_keeps_apsw_s_locks(tmp_path: Path) -> None:
    """A second SQLite copy's close() drops apsw's POSIX locks on the file (another process could then write
    beside apsw's open transaction); a connection opened through apsw's own SQLite leaves them."""
    path = str(tmp_path / "data.db")
    writer = apsw.Connection(path)
    writer.execute("PRAGMA journal_mode = DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (1)").fetchall()
    writer.execute("BEGIN IMMEDIATE; INSERT INTO t VALUES (2)").fetchall()
    try:
        assert _native.own_connection_probe(path, "SELECT count(*) FROM t") == ["1"]  # opened, read, closed
        other = subprocess.run([sys.executable, "-c", _TRY_WRITE, path], capture_output=True, text=True, timeout=60)
        assert other.stdout.strip() == "busy", other.stderr
    finally:
        writer.execute("ROLLBACK")
        writer.close()
