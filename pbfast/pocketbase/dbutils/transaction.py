"""Transactions and SQLite errors as the record and collection services meet them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import apsw

__all__ = ["sqlite_error_text", "write_transaction"]


@contextmanager
def write_transaction(conn: apsw.Connection) -> Iterator[None]:
    """A transaction that takes the write lock up front (``BEGIN IMMEDIATE``, waiting up to the busy
    timeout), so reads inside it cannot be invalidated by another writer (a deferred transaction that
    reads first would fail with SQLITE_BUSY instead of waiting); a savepoint when one is already open."""
    if conn.in_transaction:
        with conn:
            yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite itself rolled back after SQLITE_FULL, an interrupt or a disk error
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# sqlite3_errstr() of the primary result codes: PocketBase's SQLite driver reports an error as
# "<errstr>: <message> (<extended code>)".
_SQLITE_ERRSTR: Final = {
    0: "not an error", 1: "SQL logic error", 2: "internal error", 3: "access permission denied",
    4: "query aborted", 5: "database is locked", 6: "database table is locked", 7: "out of memory",
    8: "attempt to write a readonly database", 9: "interrupted", 10: "disk I/O error",
    11: "database disk image is malformed", 12: "unknown operation", 13: "database or disk is full",
    14: "unable to open database file", 15: "locking protocol", 16: "unknown error",
    17: "database schema has changed", 18: "string or blob too big", 19: "constraint failed",
    20: "datatype mismatch", 21: "bad parameter or other API misuse", 22: "large file support is disabled",
    23: "authorization denied", 24: "auxiliary database format error", 25: "column index out of range",
    26: "file is not a database", 27: "notification message", 28: "warning message",
}


def sqlite_error_text(err: BaseException) -> str:
    """An SQLite error worded as PocketBase's driver words it (``SQL logic error: no such column: x (1)``)."""
    result = getattr(err, "result", None)
    if not isinstance(result, int) or result < 0:
        return str(err)
    extended = getattr(err, "extendedresult", None)
    code = extended if isinstance(extended, int) and extended >= 0 else result
    return f"{_SQLITE_ERRSTR.get(result & 0xFF, 'unknown error')}: {err} ({code})"
