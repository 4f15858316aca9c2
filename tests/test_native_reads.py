"""The extension's statements on apsw's own SQLite (issue 14, ``pbfast.native_reads``): the API handed over
through a loadable-extension entry point, rows read on an apsw connection, a record's JSON as Python writes it
(``RecordReader``), and a connection another thread is using left alone (never waited for)."""

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


def test_a_record_reader_writes_the_bytes_python_writes(connection: apsw.Connection) -> None:
    plan = _native.RecordPlan([("collectionId", "const", "pbc_1"), ("collectionName", "const", "posts"),
                               ("flag", "bool", ""), ("id", "text", ""), ("num", "number", ""),
                               ("tags", "multi", ""), ("title", "text", "")])
    sql = "SELECT flag, id, num, tags, title FROM posts WHERE id = ?"
    reader = _native.RecordReader(connection.sqlite3pointer())
    try:
        assert reader.row_json(sql, ["a1"], plan) == orjson.dumps(
            {"collectionId": "pbc_1", "collectionName": "posts", "flag": True, "id": "a1", "num": 12,
             "tags": ["x", "y"], "title": 'say "hi"\n\\ é <b>'})
        assert reader.row_json(sql, ["b2"], plan) == orjson.dumps(
            {"collectionId": "pbc_1", "collectionName": "posts", "flag": False, "id": "b2", "num": 0.25, "tags": [],
             "title": ""})
        assert reader.row_json(sql, ["none"], plan) == b""  # no row
        assert reader.row_json(sql, [b"a1"], plan) is None  # a parameter it does not bind: Python's
        assert reader.row_json("SELECT nope FROM posts WHERE id = ?", ["a1"], plan) is None  # SQL SQLite refuses
        assert reader.kept_statements == 1
        connection.execute("BEGIN; UPDATE posts SET title = 'uncommitted' WHERE id = 'a1'").fetchall()
        try:  # a transaction Python left open on the connection: not read inside it
            assert reader.row_json(sql, ["a1"], plan) is None
        finally:
            connection.execute("ROLLBACK")
    finally:
        reader.close()
    assert reader.kept_statements == 0 and reader.row_json(sql, ["a1"], plan) is None  # closed: serves nothing


def test_a_connection_in_use_on_another_thread_is_not_waited_for(connection: apsw.Connection) -> None:
    reader = _native.RecordReader(connection.sqlite3pointer())
    plan = _native.RecordPlan([("id", "text", "")])
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
        assert reader.row_json("SELECT id FROM posts WHERE id = ?", ["a1"], plan) is None  # not waited for
        with pytest.raises(RuntimeError, match="in use on another thread"):
            _native.query_json(connection.sqlite3pointer(), "SELECT 1")
    finally:
        release.set()
        worker.join()
    assert reader.row_json("SELECT id FROM posts WHERE id = ?", ["a1"], plan) == b'{"id":"a1"}'
    reader.close()


def test_the_handed_api_is_apsw_s_own_copy(tmp_path: Path) -> None:
    assert _native.host_sqlite_version() == attach_host_sqlite()
    version = apsw.sqlite_lib_version().split(".")
    assert _native.host_sqlite_version() == int(version[0]) * 1_000_000 + int(version[1]) * 1000 + int(version[2])


_TRY_WRITE = ("import apsw, sys\nc = apsw.Connection(sys.argv[1]); c.setbusytimeout(0)\n"
              "try:\n    c.execute('BEGIN IMMEDIATE'); print('written')\nexcept apsw.BusyError:\n    print('busy')")


def test_an_own_connection_closed_keeps_apsw_s_locks(tmp_path: Path) -> None:
    """A second SQLite copy's close() drops apsw's POSIX locks on the file (another process could then write
    beside apsw's open transaction); a connection opened through apsw's own SQLite leaves them."""
    assert attach_host_sqlite() is not None  # (not left to an earlier test: each may run alone)
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


def test_a_process_that_cannot_attach_says_so_once_and_python_serves(monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    from pbfast import native_reads
    monkeypatch.setattr(native_reads, "attach_host_sqlite", lambda: None)  # an apsw without load_extension
    with caplog.at_level("WARNING"):
        assert native_reads.attach_at_start() is False
    assert [r.getMessage() for r in caplog.records if "native reads off" in r.getMessage()] != []
