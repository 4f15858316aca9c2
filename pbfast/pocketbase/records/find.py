"""Finding records (PocketBase's ``core/record_query.go``): by id, by id under an API rule, by an identity
field of an auth collection, and a page of a list query."""

from __future__ import annotations

from typing import Any

import apsw

from pbfast.logs import component_logger
from pbfast.pocketbase.collections import Collection, CollectionMap
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.index import single_column_unique_index
from pbfast.pocketbase.records.rules import Condition
from pbfast.pocketbase.search import ListQuery, Page, fetch_page
from pbfast.pocketbase.tenant import Tenant

__all__ = ["Row", "depends_on_data_only", "find_auth_record_by_email", "find_by_identity", "find_visible", "list_records",
           "load_row"]

log = component_logger("TenantNode")

Row = dict[str, Any]
"""A record's stored columns by name."""


def _first_row(cursor: apsw.Cursor) -> Row | None:
    for values in cursor:
        return dict(zip([d[0] for d in cursor.getdescription()], values))
    return None


def load_row(tenant: Tenant, collection: Collection, record_id: str) -> Row | None:
    return _first_row(tenant.conn.execute(f"SELECT * FROM {quote(collection.name)} WHERE id = ?", (record_id,)))


def find_visible(tenant: Tenant, collection: Collection, record_id: str, condition: Condition | None) -> Row | None:
    """The record ``record_id`` if it satisfies ``condition`` (a compiled API rule; None: no condition). A
    condition SQLite refuses finds nothing, as PocketBase's lookup with the rule fails."""
    table = quote(collection.name)
    sql, params = f"SELECT {table}.* FROM {table} WHERE {table}.id = ?", [record_id]
    if condition is not None:
        sql += f" AND ({condition[0]})"
        params += condition[1]
    try:
        return _first_row(tenant.conn.execute(sql, params))
    except apsw.SQLError as err:
        log.warning("tenant %s: rule of %s cannot be evaluated: %s", tenant.id, collection.name, err)
        return None


def find_by_identity(tenant: Tenant, collection: Collection, name: str, identity: str) -> Row | None:
    """A record by an identity field, compared as the field's single-column unique index collates it
    (no such index: not an identity field PocketBase can use)."""
    if collection.field(name) is None:
        return None
    index = single_column_unique_index(collection.indexes, name)
    if index is None:
        return None
    collate = " COLLATE NOCASE" if index.columns[0].collate.lower() == "nocase" else ""
    table = quote(collection.name)
    return _first_row(tenant.conn.execute(f"SELECT * FROM {table} WHERE {quote(name)} = ?{collate} LIMIT 1",
                                          (identity,)))


def find_auth_record_by_email(tenant: Tenant, collection: Collection, email: str) -> Row | None:
    """PocketBase's ``FindAuthRecordByEmail``: case-insensitive when the email's unique index is NOCASE,
    exact otherwise (with or without such an index)."""
    if collection.field("email") is None:
        return None
    index = single_column_unique_index(collection.indexes, "email")
    collate = " COLLATE NOCASE" if index is not None and index.columns[0].collate.lower() == "nocase" else ""
    return _first_row(tenant.conn.execute(f"SELECT * FROM {quote(collection.name)} WHERE email = ?{collate} LIMIT 1",
                                          (email,)))


def list_records(tenant: Tenant, collection: Collection, query: ListQuery, page: int, per_page: int,
                 skip_total: bool) -> Page:
    """One page of the collection's records matching a compiled list query (PocketBase's records list
    provider). Raises ``apsw.SQLError`` when SQLite refuses the query the filter, sort or rules made."""
    table = quote(collection.name)
    return fetch_page(tenant.conn, table, f"{table}.*", query.where, query.params, query.order_by, page, per_page,
                      skip_total, tenant.list_totals if depends_on_data_only(tenant, collection, query.where) else None)


def depends_on_data_only(tenant: Tenant, collection: Collection, where: str) -> bool:
    """Whether what a query of ``collection`` with the condition ``where`` (SQL) finds depends on the data alone, so
    that it may be kept while the data is unchanged: not for a view, nor a condition that joins one
    (``@collection.<view>``: its query may read the clock or call anything), nor one with ``strftime`` (its time
    value may be SQLite's ``'now'``; the filter language has no other clock, its date macros are bound values)."""
    if collection.type == "view" or "strftime(" in where:
        return False
    views = _view_tables(tenant.collections)
    return not views or not any(view in where.lower() for view in views)


def _view_tables(collections: CollectionMap) -> tuple[str, ...]:
    """The tenant's view collections as a query names them (quoted, lower case), worked out once per loaded
    map (a schema change loads a new one)."""
    known = _views.get(id(collections))
    if known is not None and known[0] is collections:
        return known[1]
    views = tuple(quote(c.name).lower() for c in collections.values() if c.type == "view")
    if len(_views) >= _VIEWS_KEPT:
        _views.clear()
    _views[id(collections)] = (collections, views)  # the map held: its id is not reused meanwhile
    return views


_VIEWS_KEPT = 1024
_views: dict[int, tuple[CollectionMap, tuple[str, ...]]] = {}
