"""Totals of list queries (``SELECT COUNT(*) FROM ... WHERE ...``), kept while the database is unchanged.

A records list answers ``totalItems``, and counting means visiting every matching row: 10,000 rows without an
index on the filtered column cost ~200 us, several times the page itself (issue 15). The total of the same
query over the same data is the same, so it is kept per connection and given again until the database changes.

Changes are seen through SQLite's data version (``SQLITE_FCNTL_DATA_VERSION``): it moves on every commit of
this connection and, once this connection starts a read, on every commit of another connection (a node's
other worker processes, Litestream's restore). It is read right after the page query, so a kept total is
the one of the page's snapshot. A count that saw a newer snapshot than the one it was asked for is not
kept. Inside a transaction (uncommitted changes of this connection) nothing is kept or given.

The caller decides which queries may be kept: only those whose result depends on the data alone (not on
the clock: SQLite's ``'now'``, nor on a view's query, which may call anything).

Thread-safety: one per connection, used by the thread holding the connection (as the connection itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import apsw

__all__ = ["ListTotals"]

KEPT_TOTALS: Final = 64
"""Totals kept per connection (distinct filters of one data version); past it the oldest goes."""


class ListTotals:
    """The totals of one connection's list queries at its current data version."""

    __slots__ = ("_totals", "_version")

    def __init__(self) -> None:
        self._version = -1
        self._totals: dict[tuple[str, tuple[Any, ...]], int] = {}

    def count(self, conn: apsw.Connection, sql: str, params: Sequence[Any]) -> int:
        """The single integer ``sql`` (a ``SELECT COUNT(*)``) answers with ``params``: kept from an earlier
        call when the database has not changed since, else counted (and kept)."""
        if conn.in_transaction:
            return _count(conn, sql, params)
        version = conn.data_version()
        if version != self._version:
            self._totals.clear()
            self._version = version
        key = (sql, tuple(params))
        try:
            known = self._totals.get(key)
        except TypeError:  # an unhashable parameter: counted every time
            return _count(conn, sql, params)
        if known is not None:
            return known
        total = _count(conn, sql, params)
        if conn.data_version() == version:  # the count read the same snapshot
            if len(self._totals) >= KEPT_TOTALS:
                del self._totals[next(iter(self._totals))]
            self._totals[key] = total
        return total


def _count(conn: apsw.Connection, sql: str, params: Sequence[Any]) -> int:
    (total,) = conn.execute(sql, list(params)).fetchone() or (0,)
    return int(total)
