"""The auth records that tokens name, kept between requests of a tenant (every request with a token loads its
record: PocketBase's ``FindAuthRecordByToken``).

Exact, never stale: the kept rows are used only while the tenant's database is as it was when they were
read, judged on each lookup by

- ``PRAGMA data_version``, which moves when any other connection commits (another worker process of the
  node, a database thread's own connection, a restore by another process);
- the connection's ``total_changes()``, which moves with every row this connection inserts, updates or
  deletes (triggers' too, and those of transactions later rolled back);
- the tenant's collections (a schema change or a restore through this connection reloads them).

Anything else drops every kept row, so a password or ``tokenKey`` change, wherever it was made, ends the
tokens it invalidates at once. What a lookup costs while nothing changed: the pragma (~1-2 µs) instead of
the record's ``SELECT`` (~10-15 µs).

Thread-safety: a tenant's connection is used by one thread at a time (its turn on the database scheduler);
so is its cache.
"""

from __future__ import annotations

from typing import Final
from weakref import WeakKeyDictionary

from pbfast.pocketbase.collections import Collection, CollectionMap
from pbfast.pocketbase.records import Row, load_row
from pbfast.pocketbase.tenant import Tenant

__all__ = ["MAX_KEPT_RECORDS", "load_auth_record"]

MAX_KEPT_RECORDS: Final = 1024  # per tenant; past it the cache starts over


class _AuthRecords:
    __slots__ = ("changes", "collections", "rows", "version")

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.version: object = None
        self.changes = -1
        self.collections: CollectionMap | None = None


_BY_TENANT: WeakKeyDictionary[Tenant, _AuthRecords] = WeakKeyDictionary()


def load_auth_record(tenant: Tenant, collection: Collection, record_id: str) -> Row | None:
    """The record ``record_id`` of the auth collection as stored now (a copy the caller may change), None
    when there is none."""
    kept = _BY_TENANT.get(tenant)
    if kept is None:
        kept = _BY_TENANT[tenant] = _AuthRecords()
    conn = tenant.conn
    version = conn.execute("PRAGMA data_version").get
    changes = conn.total_changes()
    if version != kept.version or changes != kept.changes or tenant.collections is not kept.collections \
            or len(kept.rows) >= MAX_KEPT_RECORDS:
        # read before the rows below: a commit in between makes the next lookup start over, never miss it
        kept.rows.clear()
        kept.version, kept.changes, kept.collections = version, changes, tenant.collections
    key = (collection.id, record_id)
    row = kept.rows.get(key)
    if row is None:
        row = load_row(tenant, collection, record_id)
        if row is None:
            return None
        kept.rows[key] = row
    return dict(row)
