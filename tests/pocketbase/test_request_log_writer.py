"""The request log writer (:class:`pbfast.pocketbase.request_logs.RequestLogs`) on a real ``auxiliary.db``: a
batch of any size lands whole as PocketBase's ``_logs`` rows (its fields, ids ``[a-z0-9]{15}`` in time order),
a clean shutdown loses nothing queued, and a full queue drops (and counts) instead of growing. In a node, the
writer keeps one connection per open tenant and lets go of a tenant's ``auxiliary.db`` when the node closes the
tenant, after writing its rows."""

from __future__ import annotations

import re
import time
from urllib.parse import unquote
from pathlib import Path

import apsw
import httpx
import orjson
import pytest

from pbfast.pocketbase.collections.database import init_tenant_database
from pbfast.pocketbase.request_logs import ERROR_LEVEL, INFO_LEVEL, LogEntry, RequestLogs
from pbharness import create_tenant, start_all_in_one

CREATED = 1796601600.25  # 2026-12-07 00:00:00.250 UTC


def _rows(directory: Path) -> list[tuple[str, int, str, str, str, str]]:
    conn = apsw.Connection(str(directory / "auxiliary.db"))
    try:
        return conn.execute("SELECT id, level, message, data, typeof(data), created FROM _logs "
                            "ORDER BY rowid").fetchall()
    finally:
        conn.close()


def _entry(directory: Path, number: int) -> LogEntry:
    failed = number % 7 == 0
    return (directory, 5, ERROR_LEVEL if failed else INFO_LEVEL, "GET", f"/api/x/{number}", 400 if failed else 200,
            0.25, "", "test", "", None, None, None, "Bad." if failed else None, b'{"a":2,"b":1}' if failed else None,
            CREATED + number / 1000 + 0.0004)  # (a margin: a float of ms)


def test_batches_of_any_size_land_whole_in_order_and_as_pocketbase_rows(tmp_path: Path) -> None:
    init_tenant_database(tmp_path)
    logs = RequestLogs(batch=10**6, interval=3600)  # written by flush() and close() only
    # 341 = 256 + 64 + 16 + 4 + 1: every statement size the writer has; then a second, smaller batch
    for number in range(341):
        logs.add(_entry(tmp_path, number))
    logs.flush()
    for number in range(341, 344):
        logs.add(_entry(tmp_path, number))
    logs.close()  # a clean shutdown writes what is queued

    rows = _rows(tmp_path)
    assert [row[2] for row in rows] == [f"GET /api/x/{number}" for number in range(344)]
    assert logs.written == 344 and logs.dropped == 0 and logs.failed == 0
    ids = [row[0] for row in rows]
    assert all(re.fullmatch(r"[a-z0-9]{15}", id_) for id_ in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # time ordered: appended to the primary key index
    for number, (_, level, _, data, data_type, created) in enumerate(rows):
        assert level == (ERROR_LEVEL if number % 7 == 0 else INFO_LEVEL)
        assert data_type == "text"  # JSON text as PocketBase stores it (a blob would read as JSONB)
        assert data == orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS).decode()  # keys sorted, as Go
        assert orjson.loads(data)["url"] == f"/api/x/{number}"
        assert orjson.loads(data).get("details") == ({"a": 2, "b": 1} if level else None)
        assert created == f"2026-12-07 00:00:00.{250 + number:03d}Z"


def test_rows_with_very_long_data_land_whole_among_the_others(tmp_path: Path) -> None:
    """A row's data of 256 KiB or more (an error's details) does not fit its packed length: it ends its part of
    the batch and is read to the end of that part's blob; the rows before and after it stay whole and in order."""
    init_tenant_database(tmp_path)
    logs = RequestLogs(batch=10**6, interval=3600)
    details = orjson.dumps({"field": "x" * 300_000})
    for number in range(6):
        huge = number in (2, 4, 5)
        logs.add((tmp_path, 5, ERROR_LEVEL if huge else INFO_LEVEL, "GET", f"/api/x/{number}", 400 if huge else 200,
                  0.25, "", "test", "", None, None, None, "Bad." if huge else None, details if huge else None,
                  CREATED + number / 1000 + 0.0004))
    logs.close()
    rows = _rows(tmp_path)
    assert [row[2] for row in rows] == [f"GET /api/x/{number}" for number in range(6)]
    for number, (_, level, _, data, _, created) in enumerate(rows):
        huge = number in (2, 4, 5)
        assert level == (ERROR_LEVEL if huge else INFO_LEVEL)
        assert orjson.loads(data).get("details") == (orjson.loads(details) if huge else None)
        assert orjson.loads(data)["url"] == f"/api/x/{number}" and data.endswith('"userAgent":"test"}')
        assert created == f"2026-12-07 00:00:00.{250 + number:03d}Z"


def test_a_batch_past_16_mib_is_written_in_parts_whole_and_in_order(tmp_path: Path) -> None:
    """A row's start in its part's blob has 24 bits: a batch of more than 16 MiB of rows goes in two parts."""
    init_tenant_database(tmp_path)
    logs = RequestLogs(batch=10**6, interval=3600)
    escaped = "\x01" * 1999  # six bytes each in the data's JSON: ~24 KB of data a row with the referer
    for number in range(800):  # ~19 MB
        logs.add((tmp_path, 5, INFO_LEVEL, "GET", f"/api/x/{number}", 200, 1.0, escaped, escaped, "", None, None, None,
                  None, None, CREATED))
    logs.close()
    rows = _rows(tmp_path)
    assert [row[2] for row in rows] == [f"GET /api/x/{number}" for number in range(800)]
    assert all(orjson.loads(row[3])["userAgent"] == escaped == orjson.loads(row[3])["referer"] for row in rows)


# A request stock PocketBase 0.40.6 logged (``GET /api/health?a=1&b=%3Cx%3E&c=%E2%80%A8é`` with a user agent and a
# referer, its logs settings' defaults), and its row in auxiliary.db ``_logs``, read with sqlite3.
POCKETBASE_MESSAGE = "GET /api/health?a=1&b=<x>&c=\u2028é"
POCKETBASE_DATA = ('{"auth":"","execTime":0.29023,"method":"GET","referer":"r","remoteIP":"127.0.0.1","status":200,'
                   '"type":"request","url":"/api/health?a=1&b=%3Cx%3E&c=%E2%80%A8é","userAgent":"ua<&>\\"é",'
                   '"userIP":"127.0.0.1"}')


def test_a_row_is_written_as_pocketbase_writes_it(tmp_path: Path) -> None:
    init_tenant_database(tmp_path)
    logs = RequestLogs(batch=10**6, interval=3600)
    logs.add((tmp_path, 5, INFO_LEVEL, "get", "/api/health?a=1&b=%3Cx%3E&c=%E2%80%A8é", 200, 0.2902304, "r",
              'ua<&>"é', "", None, "127.0.0.1", "127.0.0.1", None, None, CREATED))
    long = "é" * 2001  # cut by characters to 2,000 and "...", as PocketBase cuts referers and user agents
    logs.add((tmp_path, 5, ERROR_LEVEL, "POST", "/" + "a" * 3000, 400, 12.0, long, "u\u2029\x01", "users", "u1", None,
              None, "", None, CREATED))
    logs.close()
    (_, level, message, data, _, created), (_, _, cut_message, cut_data, _, _) = _rows(tmp_path)
    assert (level, message, data) == (INFO_LEVEL, POCKETBASE_MESSAGE, POCKETBASE_DATA)
    assert created == "2026-12-07 00:00:00.250Z"
    assert cut_message == "POST /" + "a" * 2999 + "..."
    assert cut_data == ('{"auth":"users","authId":"u1","details":null,"error":"","execTime":12,"method":"POST",'
                        f'"referer":"{"é" * 2000}...","status":400,"type":"request","url":"/{"a" * 2999}...",'
                        '"userAgent":"u\\u2029\\u0001"}')


@pytest.mark.parametrize("url", ["/a%2", "/a%zz%41", "/a%FF%E2%80", "/%e2%82%ac%20x", "/é%C3%A9", "/%C3é"])
def test_the_message_decodes_the_url_as_unquote_does(tmp_path: Path, url: str) -> None:
    init_tenant_database(tmp_path)
    logs = RequestLogs(batch=10**6, interval=3600)
    logs.add((tmp_path, 5, INFO_LEVEL, "GET", url, 200, 1.0, "", "", "", None, None, None, None, None, CREATED))
    logs.close()
    assert _rows(tmp_path)[0][2] == f"GET {unquote(url)}"


def test_a_full_queue_drops_and_counts_instead_of_growing(tmp_path: Path) -> None:
    init_tenant_database(tmp_path)
    logs = RequestLogs(capacity=100, batch=10**6, interval=3600)
    for number in range(150):
        logs.add(_entry(tmp_path, number))
    assert logs.pending() == 100 and logs.dropped == 50
    logs.close()
    assert len(_rows(tmp_path)) == 100


def _open_under(pids: list[int], directory: Path) -> set[str]:
    """The files under ``directory`` that any of ``pids`` holds open."""
    found = set()
    for pid in pids:
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue  # gone meanwhile
        for fd in descriptors:
            try:
                target = Path(fd.readlink())
            except OSError:
                continue  # closed meanwhile
            if target.parent == directory:
                found.add(target.name)
    return found


def _node_pids(pid: int) -> list[int]:
    """The process and its descendants (its worker processes, Litestream)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def _wait_for(condition: object, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_closed_tenants_log_connection_is_closed_after_its_rows_are_written(pbfast_process: object, tmp_path: Path,
                                                                              workers: int) -> None:
    data_dir = tmp_path / "node"
    process, cp, gw = start_all_in_one(pbfast_process, data_dir, "--max-tenants=1", f"--workers={workers}")
    assert process.proc is not None
    first, second = data_dir / "tenants" / "logsa", data_dir / "tenants" / "logsb"
    create_tenant(cp, gw, "logsa")
    create_tenant(cp, gw, "logsb")
    with httpx.Client(timeout=30) as client:
        for page in range(1, 6):
            answer = client.get(f"{gw}/t/logsa/api/collections/users/records?page={page}")
            assert answer.status_code == 200, answer.text
        # open, the tenant keeps its log connection between batches (reopening it for each cost 16 % of a node)
        _wait_for(lambda: "auxiliary.db" in _open_under(_node_pids(process.proc.pid), first),
                  "the open tenant's auxiliary.db is not kept open")
        assert client.get(f"{gw}/t/logsb/api/collections/users/records").status_code == 200  # evicts logsa
    _wait_for(lambda: not _open_under(_node_pids(process.proc.pid), first),
              "the closed tenant's auxiliary.db is still open")
    _wait_for(lambda: "auxiliary.db" in _open_under(_node_pids(process.proc.pid), second),
              "the open tenant's auxiliary.db is not kept open")
    conn = apsw.Connection(str(first / "auxiliary.db"))
    try:
        messages = [row[0] for row in conn.execute(
            "SELECT message FROM _logs WHERE message LIKE 'GET /api/collections/users/records?page=%' ORDER BY rowid")]
    finally:
        conn.close()
    assert messages == [f"GET /api/collections/users/records?page={page}" for page in range(1, 6)]
