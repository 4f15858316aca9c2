"""A record view's read and JSON done by the extension on the tenant's own apsw connection (issue 14,
``docs/native-reads.md``): the same SQL :func:`~.find.find_visible` runs (the view rule compiled by Python,
with its parameters), on a statement the connection keeps, the row written as :func:`~.export.record_json`
and ``orjson`` write it, byte for byte.

Everything around it stays Python's (routing, admission and fencing, rate limits, quotas, the auth token, the
rule's compilation, the request log, metrics, headers). Anything the extension does not prove identical is
answered by Python: a collection with a field it does not write (json, geoPoint, a field type unknown here), a
stored value outside what its kind writes (see ``rust/src/host_sqlite/record_plan.rs``), an auth collection with
a ``manageRule`` (for non-superusers), the connection busy on another thread or inside a transaction, an SQL
error. Then :func:`record_json_bytes` answers None and the caller reads the row in Python as before.

Thread-safety: called in the tenant's turn, with the GIL (the reader takes the connection's mutex with ``try``).
On a database thread a page is read with the GIL let go and the connection's mutex held, as apsw's own steps
are: nothing else uses a tenant's connection outside its turn (another use meanwhile waits for the mutex or is
refused by apsw, never interleaved; see ``docs/native-reads.md``).
The plan and SQL caches are dicts changed by single operations (any thread).
"""

from __future__ import annotations

import asyncio
import weakref

from pbfast import _native
from pbfast.native_reads import attach_host_sqlite, host_sqlite_ready
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.fields import (
    AutodateField,
    BoolField,
    DateField,
    EditorField,
    EmailField,
    Field,
    FileField,
    NumberField,
    PasswordField,
    RelationField,
    SelectField,
    TextField,
    UrlField,
)
from pbfast.pocketbase.records.export import Viewer
from pbfast.pocketbase.records.find import depends_on_data_only
from pbfast.pocketbase.records.rules import Condition
from pbfast.pocketbase.search import ListQuery
from pbfast.pocketbase.tenant import Tenant

__all__ = ["page_json", "record_json_bytes", "record_plan"]

# The field classes written natively, by exact class (a subclass may show its values otherwise), and how.
_KINDS: dict[type[Field], str] = {TextField: "text", EditorField: "text", EmailField: "text", UrlField: "text",
                                  NumberField: "number", BoolField: "bool", DateField: "date",
                                  AutodateField: "date", PasswordField: "blank"}
_MULTI_VALUED: tuple[type[Field], ...] = (SelectField, RelationField, FileField)
_CONSTANTS = ("collectionId", "collectionName")


class _Plan:
    """A collection's plan for one kind of viewer: the extension's :class:`~pbfast._native.RecordPlan` and the
    SELECT by id it reads with (the email's two gates last, when it has them; the rule's condition appended)."""

    __slots__ = ("columns", "gated", "native", "select")

    def __init__(self, native: _native.RecordPlan, columns: str, select: str, gated: bool) -> None:
        self.native = native
        self.columns = columns
        self.select = select
        self.gated = gated


def _kind(field: Field) -> str | None:
    if type(field) in _MULTI_VALUED:
        return "multi" if field.is_multiple() else "single"
    return _KINDS.get(type(field))


def _make_plan(collection: Collection, superuser: bool) -> _Plan | None:
    """As :func:`~.export.record_json` shows ``collection`` to a superuser or not, or None when a field or the
    email rules need Python."""
    auth = collection.type == "auth"
    if auth and not superuser and (collection.rule("manageRule") or ""):
        return None  # whether the requester manages the record: Python's _managed_ids
    never = ("password", "tokenKey") if auth else ()
    members: dict[str, tuple[str, str]] = {name: ("const", value)
                                           for name, value in zip(_CONSTANTS, (collection.id, collection.name))}
    for field in collection.fields:
        if (field.hidden and not superuser) or field.name in never:
            continue
        kind = _kind(field)
        if kind is None or field.name in members:
            return None
        if auth and field.name == "email" and not superuser:
            kind = "email"
        members[field.name] = (kind, "")
    entries = [(name, kind, value) for name, (kind, value) in sorted(members.items())]  # orjson: OPT_SORT_KEYS
    table = quote(collection.name)
    selected = [f"{table}.{quote(name)}" for name, kind, _ in entries if kind != "const"]
    gated = any(kind == "email" for _, kind, _ in entries)
    if gated:  # emailVisibility, and whether the requester is the record (bound first)
        selected += [f"{table}.{quote('emailVisibility')}", f"{table}.{quote('id')} = ?"]
    columns = ", ".join(selected)
    return _Plan(_native.RecordPlan(entries), columns, f"SELECT {columns} FROM {table} WHERE {table}.id = ?", gated)


# By (collection, superuser); the collection held in the value, so an id reused after a reload never matches
# (a collection is never changed once loaded). Cleared when full.
_plans: dict[tuple[int, bool], tuple[Collection, _Plan | None]] = {}
_PLANS_KEPT = 1024


def record_plan(collection: Collection, superuser: bool) -> _Plan | None:
    """The collection's plan for a superuser or not (made once per loaded collection), None: Python writes."""
    key = (id(collection), superuser)
    known = _plans.get(key)
    if known is not None and known[0] is collection:
        return known[1]
    plan = _make_plan(collection, superuser)
    if len(_plans) >= _PLANS_KEPT:
        _plans.clear()
    _plans[key] = (collection, plan)
    return plan


_attach_tried = False


def _attach_once() -> bool:
    """Attach in a process that did not at its start (a TenantApi used directly): tried once."""
    global _attach_tried
    if _attach_tried:
        return False
    _attach_tried = True
    return attach_host_sqlite() is not None


def _reader(tenant: Tenant) -> _native.RecordReader | None:
    reader = tenant.native_reader
    if reader is None and not tenant.closed:
        reader = tenant.native_reader = _native.RecordReader(tenant.conn.sqlite3pointer())
        # A tenant dropped without Tenant.close: its statements finalized while its connection is still held
        # (weakref callbacks run before the tenant's attributes are cleared), so apsw can still close it.
        weakref.finalize(tenant, reader.close)
    return reader


def _plan_and_reader(tenant: Tenant, collection: Collection,
                     viewer: Viewer) -> tuple[_Plan, _native.RecordReader] | None:
    """The collection's plan for ``viewer`` and the tenant's reader; None when Python must answer (the tenant
    closed, no native reads in this process, a collection the extension does not write)."""
    if tenant.closed or not (host_sqlite_ready() or _attach_once()):
        return None
    plan = record_plan(collection, viewer.superuser)
    if plan is None:
        return None
    reader = _reader(tenant)
    return None if reader is None else (plan, reader)


def record_json_bytes(tenant: Tenant, collection: Collection, record_id: str, condition: Condition | None,
                      viewer: Viewer) -> bytes | None:
    """The record's JSON as ``viewer`` sees it when it satisfies ``condition`` (the compiled view rule; None:
    none), ``b""`` when no such record does; None when Python must answer (see the module)."""
    ready = _plan_and_reader(tenant, collection, viewer)
    if ready is None:
        return None
    plan, reader = ready
    params: list[object]
    if condition is None:
        sql, params = plan.select, [record_id]
    else:
        sql, params = f"{plan.select} AND ({condition[0]})", [record_id, *condition[1]]
    if plan.gated:
        params.insert(0, viewer.auth_record_id or None)
    return reader.row_json(sql, params, plan.native)


def page_json(tenant: Tenant, collection: Collection, query: ListQuery, page: int, per_page: int, skip_total: bool,
              viewer: Viewer) -> tuple[bytes, int, int] | None:
    """One page of a list as :func:`~.find.list_records` reads it (the same SQL, with the list rule, filter and
    sort Python compiled): the items' JSON array as ``viewer`` sees them, the total and the page count (-1 when
    ``skip_total``); None when Python must answer (as :func:`record_json_bytes`, or any row the extension does
    not write). Raises ``apsw.SQLError`` when SQLite refuses the count (the page's SQL, refused, answers None:
    Python's rerun meets the error)."""
    ready = _plan_and_reader(tenant, collection, viewer)
    if ready is None:
        return None
    plan, reader = ready
    table = quote(collection.name)
    where = f" WHERE {query.where}" if query.where and query.where != "1=1" else ""  # as search.fetch_page
    order = f" ORDER BY {query.order_by}" if query.order_by else ""
    params: list[object] = [*query.params, (page - 1) * per_page]
    if plan.gated:
        params.insert(0, viewer.auth_record_id or None)
    # The limit written into the SQL, as search.fetch_page: a bound LIMIT makes SQLite compile the statement again
    # on every run (its planner reads the value). Off the event loop (a database thread's turn) the page is stepped
    # and written with the GIL let go, as apsw steps: the loop serves other tenants meanwhile instead of waiting
    # behind this thread (which may be a heavy tenant's, at a lower priority, kept off a core while it holds the
    # GIL). On the loop, letting go gains nothing.
    items = reader.rows_json(f"SELECT {plan.columns} FROM {table}{where}{order} LIMIT {int(per_page)} OFFSET ?",
                             params, plan.native, asyncio._get_running_loop() is None)
    if items is None:
        return None
    if skip_total:
        return items, -1, -1
    count = f"SELECT COUNT(*) FROM {table}{where}"
    if depends_on_data_only(tenant, collection, query.where):  # kept while the data is unchanged, as find.list_records
        total = tenant.list_totals.count(tenant.conn, count, query.params)
    else:
        (total,) = tenant.conn.execute(count, list(query.params)).fetchone() or (0,)
    return items, total, (total + per_page - 1) // per_page
