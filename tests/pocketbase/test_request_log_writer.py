"""The request log writer (:class:`pbfast.pocketbase.request_logs.RequestLogs`) on a real ``auxiliary.db``: a
batch of any size lands whole as PocketBase's ``_logs`` rows (its fields, ids ``[a-z0-9]{15}`` in time order),
a clean shutdown loses nothing queued, and a full queue drops (and counts) instead of growing."""

from __future__ import annotations

import re
from pathlib import Path

import apsw
import orjson

from pbfast.pocketbase.collections.database import init_tenant_database
from pbfast.pocketbase.request_logs import ERROR_LEVEL, INFO_LEVEL, LogEntry, RequestLogs

CREATED = 1796601600.25  # 2026-12-07 00:00:00.250 UTC


def _rows(directory: Path) -> list[tuple[str, int, str, str, str, str]]:
    conn = apsw.Connection(str(directory / "auxiliary.db"))
    try:
        return conn.execute("SELECT id, level, message, data, typeof(data), created FROM _logs "
                            "ORDER BY rowid").fetchall()
    finally:
        conn.close()


def _entry(directory: Path, number: int) -> LogEntry:
    level = ERROR_LEVEL if number % 7 == 0 else INFO_LEVEL
    data = {"url": f"/api/x/{number}", "status": 400 if level else 200, "type": "request", "details": {"b": 1, "a": 2}}
    return LogEntry.of(directory, level, f"GET /api/x/{number}", data, CREATED + number / 1000 + 0.0004, 5)  # (a margin: a float of ms)


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
        assert created == f"2026-12-07 00:00:00.{250 + number:03d}Z"


def test_a_full_queue_drops_and_counts_instead_of_growing(tmp_path: Path) -> None:
    init_tenant_database(tmp_path)
    logs = RequestLogs(capacity=100, batch=10**6, interval=3600)
    for number in range(150):
        logs.add(_entry(tmp_path, number))
    assert logs.pending() == 100 and logs.dropped == 50
    logs.close()
    assert len(_rows(tmp_path)) == 100
