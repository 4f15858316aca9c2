"""A records list query (PocketBase's ``tools/search/provider.go``): the filters and the sort compiled
together, and the ``page``/``perPage``/``skipTotal`` parameters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import apsw

from pbfast.pocketbase.dbutils.list_totals import ListTotals
from pbfast.pocketbase.gocompat import atoi, parse_bool
from pbfast.pocketbase.search.builder import MAX_FILTER_LENGTH, compile_filters
from pbfast.pocketbase.search.errors import QueryParamError
from pbfast.pocketbase.search.sort import MAX_SORT_FIELDS, compile_sort_operands
from pbfast.pocketbase.search.sql import ResolvedField, Resolver

__all__ = ["DEFAULT_PER_PAGE", "MAX_PER_PAGE", "ListQuery", "Page", "compile_list_query", "fetch_page", "parse_paging",
           "parse_skip_total"]

DEFAULT_PER_PAGE: Final = 30
MAX_PER_PAGE: Final = 1000


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The ``WHERE`` and ``ORDER BY`` parts of a records list query."""

    where: str
    params: list[Any]
    order_by: str


def compile_list_query(
    filters: Sequence[str | tuple[str, Resolver]],
    sort: str,
    resolver: Resolver,
    *,
    max_length: int | None = MAX_FILTER_LENGTH,
) -> ListQuery:
    """Compile the filters (e.g. the list rule and the ``filter`` parameter) and the ``sort`` of one list
    request together, like PocketBase's search provider does.

    Compared to :func:`compile_filters` + :func:`compile_sort` separately, this also applies the list
    rules of collections joined only for sorting (non-superusers sorting by ``rel.field`` only see records
    whose related record they may list).

    Raises:
        FilterError: an invalid filter; QueryParamError: an invalid sort.
    """
    sort_operands: list[ResolvedField] = []
    order_by = compile_sort_operands(sort, resolver, MAX_SORT_FIELDS, None, sort_operands)
    where, params = compile_filters(filters, resolver, max_length=max_length, joined_operands=sort_operands)
    return ListQuery(where, params, order_by)


def _atoi(raw: str, name: str) -> int:
    try:
        return atoi(raw)
    except ValueError as err:
        raise QueryParamError(f"invalid {name} value {raw!r}") from err


def parse_paging(page: str | None, per_page: str | None) -> tuple[int, int]:
    """``(page, perPage)`` from the raw query values, normalised like PocketBase.

    Missing or empty values take the defaults (page 1, perPage 30); ``page <= 0`` becomes 1, ``perPage <=
    0`` becomes 30 and ``perPage > 1000`` becomes 1000. Values must be base-10 integers (an optional sign,
    no spaces).

    Raises:
        QueryParamError: a non-integer value (PocketBase: 400).
    """
    page_value = _atoi(page, "page") if page else 1
    per_page_value = _atoi(per_page, "perPage") if per_page else DEFAULT_PER_PAGE
    if page_value <= 0:
        page_value = 1
    if per_page_value <= 0:
        per_page_value = DEFAULT_PER_PAGE
    elif per_page_value > MAX_PER_PAGE:
        per_page_value = MAX_PER_PAGE
    return page_value, per_page_value


def parse_skip_total(raw: str | None) -> bool:
    """The ``skipTotal`` query value (Go's ``strconv.ParseBool``; missing/empty = false).

    Raises:
        QueryParamError: any other value (PocketBase: 400).
    """
    if not raw:
        return False
    value = parse_bool(raw)
    if value is None:
        raise QueryParamError(f"invalid skipTotal value {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its rows (columns by name) and the paging numbers PocketBase answers with
    (``total`` and ``pages`` are -1 with ``skipTotal``)."""

    rows: list[dict[str, Any]]
    page: int
    per_page: int
    total: int
    pages: int


def fetch_page(conn: apsw.Connection, table: str, columns: str, where: str, params: Sequence[Any], order_by: str,
               page: int, per_page: int, skip_total: bool, totals: ListTotals | None = None) -> Page:
    """Run a list query: ``SELECT columns FROM table [WHERE where] [ORDER BY order_by]`` for one page, and
    count the matching rows unless ``skip_total``. ``table`` and ``columns`` are SQL text made from validated
    names (quoted); ``where`` and ``order_by`` come from the compilers above, with ``params`` bound.
    ``totals``: where the count may be kept while the data is unchanged (only for a query whose result
    depends on the data alone, see :mod:`~pbfast.pocketbase.dbutils.list_totals`)."""
    condition = f" WHERE {where}" if where and where != "1=1" else ""
    order = f" ORDER BY {order_by}" if order_by else ""
    # The limit is written into the SQL (an int of 1..MAX_PER_PAGE): SQLite's planner reads a bound LIMIT's
    # value, so a statement with ``LIMIT ?`` is compiled again on every run (~10 us, the authorizer called
    # for each column); the offset does not count in the plan and stays bound (any int64).
    cursor = conn.execute(f"SELECT {columns} FROM {table}{condition}{order} LIMIT {int(per_page)} OFFSET ?",
                          [*params, (page - 1) * per_page])
    names: list[str] | None = None
    rows = []
    for values in cursor:
        names = names or [d[0] for d in cursor.getdescription()]
        rows.append(dict(zip(names, values)))
    if skip_total:
        return Page(rows, page, per_page, -1, -1)
    count = f"SELECT COUNT(*) FROM {table}{condition}"
    if totals is not None:
        total = totals.count(conn, count, params)
    else:
        (total,) = conn.execute(count, list(params)).fetchone() or (0,)
    return Page(rows, page, per_page, total, (total + per_page - 1) // per_page)
