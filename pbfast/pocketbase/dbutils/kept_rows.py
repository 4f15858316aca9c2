"""Rows that expands fetched by id, kept per tenant while its data is unchanged (issue 15).

A list of 20 posts with ``expand=author.org`` fetches the same authors and orgs on every request; the fetch (one
query per level, each row made a dict) and the record JSON of each are most of an expand's cost. So the rows a
collection's view condition let through (and the ids it did not) are kept, each with a memo for its record JSON,
and given again while the database is unchanged: only the ids not seen yet are queried (one query per level).

Changes are seen through SQLite's data version, as for the lists' totals (:mod:`.list_totals`): it moves on every
commit of this connection, and of any other once a read of this connection starts (the list's page query has just
read). When it moved while the missing rows were fetched, none of the kept ones are given (one snapshot per
answer). Inside a transaction nothing is kept or given. The caller keeps only rows whose finding depends on the
data alone (not a view's, nor under a condition that reads the clock or a view).

Memory: at most :data:`KEPT_ROWS` rows per tenant; past it, rows are fetched and not kept.

Thread-safety: one per connection, used by the thread holding the connection (as the connection itself).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Final

import apsw

__all__ = ["KEPT_ROWS", "KeptRow", "KeptRows"]

KEPT_ROWS: Final = 256
"""Rows kept per connection (a page of 20 with two levels of single relations holds 40 at most)."""

Row = dict[str, Any]


class KeptRow:
    """A row, and a memo its user fills (the record JSON by viewer kind), kept with it."""

    __slots__ = ("memo", "row")

    def __init__(self, row: Row) -> None:
        self.row = row
        self.memo: dict[Hashable, Any] = {}


class KeptRows:
    """Rows by (scope, id) (None: an id the scope's query did not find), at the data version they were read at."""

    __slots__ = ("_kept", "_rows", "_version")

    def __init__(self) -> None:
        self._version = -1
        self._rows: dict[Hashable, dict[str, KeptRow | None]] = {}
        self._kept = 0

    def find(self, conn: apsw.Connection, scope: Hashable, ids: list[str],
             fetch: Callable[[list[str]], list[Row]]) -> list[KeptRow]:
        """The rows among ``ids`` of ``scope`` (a collection and its view condition with its parameters), in the
        order of ``ids``; ``fetch``: one query for the rows of some of the ids (those not kept). A row not kept gets
        a memo of its own, for this call's answer only."""
        if conn.in_transaction:
            return _fresh(fetch(ids))
        version = conn.data_version()
        if version != self._version:
            self._forget(version)
        try:
            known = self._rows.get(scope)
        except TypeError:  # an unhashable parameter: not kept
            return _fresh(fetch(ids))
        if known is None:
            known = self._rows[scope] = {}
        wanted = list(dict.fromkeys(ids))
        missing = [i for i in wanted if i not in known]
        if not missing:
            return [kept for i in wanted if (kept := known[i]) is not None]
        rows = fetch(missing)
        if conn.data_version() != version:  # read a newer snapshot than the kept rows': none of those
            self._forget(-1)
            return _fresh(fetch(wanted) if len(missing) < len(wanted) else rows)
        fetched = {str(row.get("id")): KeptRow(row) for row in rows}
        if self._kept + len(missing) <= KEPT_ROWS:
            for i in missing:
                known[i] = fetched.get(i)
            self._kept += len(missing)
        return [kept for i in wanted if (kept := known.get(i) or fetched.get(i)) is not None]

    def _forget(self, version: int) -> None:
        self._rows.clear()
        self._kept = 0
        self._version = version


def _fresh(rows: list[Row]) -> list[KeptRow]:
    return [KeptRow(row) for row in rows]
