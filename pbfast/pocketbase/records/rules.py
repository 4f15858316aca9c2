"""API rules evaluated for records: a rule compiled for the requester (a :class:`~pbfast.pocketbase.search.
TableResolver` built for them) and checked against stored records, or against a record not saved yet.

A rule that cannot be compiled, or that SQLite refuses, is a :class:`RuleError`; callers decide what that
means (PocketBase: the record is not found, not managed, not allowed to log in ...)."""

from __future__ import annotations

from typing import Any

import apsw

from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.search import FilterError, TableResolver, compile_filter
from pbfast.pocketbase.tenant import Tenant

__all__ = ["Condition", "RuleError", "compile_rule", "draft_matches", "managed_ids", "rule_holds"]

Condition = tuple[str, list[Any]]
"""A compiled rule: an SQL condition on the collection's table and its bound values."""

_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit


class RuleError(ValueError):
    """A rule that cannot be compiled or that SQLite refuses."""


def compile_rule(rule: str, resolver: TableResolver) -> Condition:
    """``rule`` as an SQL condition (API rules have no length limit, unlike client filters)."""
    try:
        return compile_filter(rule, resolver, max_length=None)
    except FilterError as err:
        raise RuleError(str(err)) from err


def rule_holds(tenant: Tenant, collection: Collection, record_id: str, rule: str, resolver: TableResolver) -> bool:
    """Whether a non-empty ``rule`` holds for the stored record ``record_id``."""
    sql, params = compile_rule(rule, resolver)
    table = quote(collection.name)
    try:
        return tenant.conn.execute(f"SELECT 1 FROM {table} WHERE {table}.id = ? AND ({sql}) LIMIT 1",
                                   [record_id, *params]).fetchone() is not None
    except apsw.SQLError as err:
        raise RuleError(str(err)) from err


def managed_ids(tenant: Tenant, collection: Collection, ids: list[str], rule: str, resolver: TableResolver) -> set[str]:
    """The ids among ``ids`` whose records satisfy a non-empty ``rule`` (an auth collection's
    ``manageRule``)."""
    sql, params = compile_rule(rule, resolver)
    table = quote(collection.name)
    found: set[str] = set()
    try:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            found.update(str(row[0]) for row in tenant.conn.execute(
                f"SELECT {table}.id FROM {table} WHERE {table}.id IN ({', '.join('?' * len(chunk))}) AND ({sql})",
                [*chunk, *params]))
    except apsw.SQLError as err:
        raise RuleError(str(err)) from err
    return found


def draft_matches(tenant: Tenant, draft: dict[str, Any], rule: str, resolver: TableResolver) -> bool:
    """Whether a non-empty ``rule`` holds for a record not saved yet (``draft``, a full row), evaluated over
    a one-row CTE named after ``resolver.table_alias`` standing in for the collection's table."""
    sql, params = compile_rule(rule, resolver)
    alias = quote(resolver.table_alias)
    columns = list(draft)
    selects = ", ".join(f"? AS {quote(c)}" for c in columns)
    try:
        return tenant.conn.execute(f"WITH {alias} AS (SELECT {selects}) SELECT 1 FROM {alias} WHERE ({sql}) LIMIT 1",
                                   [*(draft[c] for c in columns), *params]).fetchone() is not None
    except apsw.SQLError as err:
        raise RuleError(str(err)) from err
