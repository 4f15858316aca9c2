"""``POST /api/sql`` (PocketBase's ``apis/sql.go``, its dashboard's SQL console), for superusers: the query run
on the tenant's database and answered as PocketBase answers it (``execTime`` in ms, ``affectedRows``, the last
statement's ``columns`` and at most 1,000 ``rows``, every value as text).

As PocketBase: a query that begins with a write keyword (``INSERT``, ``CREATE``, ``UPDATE``, ``DELETE``,
``DROP``, ``DETACH``, ``ALTER``, ``REPLACE``) runs whole in one transaction and answers the changes of its
last write; any other answers the rows of its last statement. Here both run in one transaction.

The tenant's superuser is not trusted (docs/security.md), so on top of the guards every tenant connection has
(no ATTACH, PRAGMAs and functions limited, time and size limits: :mod:`pbfast.pocketbase.sqlite_guard`) the
console refuses, when SQLite compiles each statement:

- transaction statements (``BEGIN``/``COMMIT``/``SAVEPOINT``...): the node owns the connection's transactions;
- TEMP tables, views, indexes and triggers, which would outlive the request on the node's connection;
- every PRAGMA but the read-only table introspection (``table_info`` and the like), so neither the storage
  quota (``max_page_count``) nor the schema version (``user_version``) can be changed;
- writes, drops, alterations and triggers on ``_collections`` and ``_params``, which the node reads on every
  open (change them through the collections and settings APIs).

Statements are never taken from or put in the connection's statement cache (a cached statement is not
authorized again).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import apsw
import apsw.ext

from pbfast.http import ApiError
from pbfast.pocketbase.apis.collections_meta import query_form
from pbfast.pocketbase.apis.request import TenantRequest, send_with_fields
from pbfast.pocketbase.dbutils.transaction import sqlite_error_text, write_transaction
from pbfast.pocketbase.gocompat.json_numbers import go_format_float
from pbfast.pocketbase.sqlite_guard import NODE_TABLES, READABLE_PRAGMAS

__all__ = ["run_sql"]

MAX_ROWS: Final = 1000
FAILED: Final = "Failed to execute query. Raw error:\n"
_NOTHING_MORE: Final = re.compile(r"(?:\s|;|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_WRITE_PREFIXES: Final = ("INSERT", "CREATE", "UPDATE", "DELETE", "DROP", "DETACH", "ALTER", "REPLACE")
_TABLE_WRITES: Final = frozenset({apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE, apsw.SQLITE_DROP_TABLE})
_DENIED: Final = frozenset({apsw.SQLITE_TRANSACTION, apsw.SQLITE_SAVEPOINT, apsw.SQLITE_CREATE_TEMP_INDEX,
                            apsw.SQLITE_CREATE_TEMP_TABLE, apsw.SQLITE_CREATE_TEMP_TRIGGER,
                            apsw.SQLITE_CREATE_TEMP_VIEW})


def run_sql(request: TenantRequest) -> None:
    query = query_form(request).strip()
    if not query:
        raise _failed("empty query")
    started = time.monotonic()
    conn = request.tenant.conn
    upper = query.upper()
    writes = not upper.startswith("SELECT") and upper.startswith(_WRITE_PREFIXES)
    try:
        with write_transaction(conn), _console_guard(conn):
            if writes:
                for _ in conn.cursor().execute(query, can_cache=False):
                    pass  # the rows of a SELECT among the writes are not answered
                columns: list[dict[str, Any]] = []
                rows: list[list[str | None]] = []
                affected = conn.changes()
            else:
                columns, rows = _last_statement_rows(conn, query)
                affected = 0
    except apsw.Error as err:
        raise _failed(sqlite_error_text(err)) from err
    send_with_fields(request, {"execTime": int((time.monotonic() - started) * 1000), "affectedRows": affected,
                               "columns": columns, "rows": rows}, sort_keys=False)


def _last_statement_rows(conn: apsw.Connection, query: str) -> tuple[list[dict[str, Any]], list[list[str | None]]]:
    """Run the statements of ``query`` one by one (each compiled once the one before it ran, so that it may
    use what that one created); the columns and first :data:`MAX_ROWS` rows of the last."""
    remaining = query
    while True:
        details = apsw.ext.query_info(conn, remaining)
        statement, remaining = details.first_query, (details.query_remaining or "").strip()
        if _NOTHING_MORE.fullmatch(remaining):  # only comments or semicolons left: this is the last statement
            remaining = ""
        cursor = conn.cursor()
        if remaining:
            for _ in cursor.execute(statement, can_cache=False):
                pass
            continue
        columns = [{"name": name, "type": (kind or "").upper(), "nullable": True}
                   for name, kind in details.description or ()]
        rows: list[list[str | None]] = []
        for row in cursor.execute(statement, can_cache=False):
            if len(rows) >= MAX_ROWS:
                break
            rows.append([_as_text(value) for value in row])
        cursor.close(force=True)
        return columns, rows


def _as_text(value: object) -> str | None:
    """A value as PocketBase scans it into a string (its driver's int64, float64, []byte or string)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int):
        return str(int(value))
    if isinstance(value, float):
        return go_format_float(value, "g")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@contextmanager
def _console_guard(conn: apsw.Connection) -> Iterator[None]:
    """The console's authorizer on top of the connection's own while the query runs."""
    tenant_authorizer = conn.authorizer

    def authorize(action: int, first: str | None, second: str | None, database: str | None,
                  origin: str | None) -> int:
        if action in _DENIED:
            return apsw.SQLITE_DENY
        if action == apsw.SQLITE_PRAGMA and (first or "").lower() not in READABLE_PRAGMAS:
            return apsw.SQLITE_DENY
        table = second if action in (apsw.SQLITE_ALTER_TABLE, apsw.SQLITE_CREATE_TRIGGER) else first
        if (action in _TABLE_WRITES or action in (apsw.SQLITE_ALTER_TABLE, apsw.SQLITE_CREATE_TRIGGER)) \
                and (table or "").lower() in NODE_TABLES:
            return apsw.SQLITE_DENY
        return tenant_authorizer(action, first, second, database, origin) if tenant_authorizer else apsw.SQLITE_OK

    conn.authorizer = authorize
    try:
        yield
    finally:
        conn.authorizer = tenant_authorizer


def _failed(raw_error: str) -> ApiError:
    message = FAILED + raw_error
    return ApiError(400, message if message.endswith((".", "!", "?")) else message + ".")
