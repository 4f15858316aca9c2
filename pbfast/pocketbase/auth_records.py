"""The auth records that tokens name, kept between requests of a tenant (every request with a token loads its
record: PocketBase's ``FindAuthRecordByToken``).

Exact, never stale: the kept rows are used only while the tenant's database is as it was when they were
read, judged on each lookup by

- the header of the database's WAL index (the first 48 bytes of ``data.db-shm``, mapped into memory), which
  every commit of every connection rewrites (another worker process of the node, a database thread's own
  connection, a restore by another process): its frame count, checksums and salts move with each commit and
  each restart of the WAL, and SQLite's own readers compare it the same way to learn whether their cache is
  stale. Read from memory, it costs no SQLite call (which would let go of the GIL) and no system call; a
  database not in WAL mode, or whose index is not a file, is judged by ``PRAGMA data_version`` instead (a read
  transaction: ~2 µs and four ``fcntl`` locks);
- the connection's ``total_changes()``, which moves with every row this connection inserts, updates or
  deletes (triggers' too, and those of transactions later rolled back);
- the tenant's collections (a schema change or a restore through this connection reloads them).

Anything else drops every kept row, so a password or ``tokenKey`` change, wherever it was made, ends the
tokens it invalidates at once. What a lookup costs while nothing changed: a 48-byte comparison instead of the
record's ``SELECT`` (~10-15 µs).

Kept with the rows, and dropped with them:

- the tokens already verified against a kept row (:func:`verified_token`): a client sends the same token with
  each of its requests, and its claims' parse and its signature's check (~2 µs) are then a dict lookup; its
  ``exp`` is still compared with the clock on each use;
- each record's JSON as its own auth answers show it (:func:`auth_answer_json`), as bytes: an auth-refresh's
  answer is then spliced together without the per-field export and the record's ``orjson`` pass.

Thread-safety: a tenant's connection is used by one thread at a time (its turn on the database scheduler);
so is its cache.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable
from typing import Final, NamedTuple
from weakref import WeakKeyDictionary

import apsw

from pbfast.pocketbase.collections import Collection, CollectionMap
from pbfast.pocketbase.records import Row, load_row
from pbfast.pocketbase.tenant import Tenant

__all__ = ["MAX_KEPT_RECORDS", "VerifiedToken", "auth_answer_json", "keep_verified_token", "load_auth_record",
           "verified_token"]

MAX_KEPT_RECORDS: Final = 1024  # per tenant (records, and tokens); past it the cache starts over


class VerifiedToken(NamedTuple):
    """A token whose signature was checked against a kept row: what its claims said."""

    collection: Collection
    record_id: str
    refreshable: bool
    exp: float


WAL_INDEX_HEADER: Final = 48  # bytes: the first of the two copies of the WAL index's header


class _AuthRecords:
    __slots__ = ("answers", "changes", "collections", "conn", "cursor", "rows", "tokens", "version", "wal_index")

    def __init__(self) -> None:
        self.conn: apsw.Connection | None = None  # the tenant's connection the two below belong to
        self.wal_index: mmap.mmap | None = None  # its data.db-shm, mapped (None: the pragma instead)
        self.cursor: apsw.Cursor | None = None  # for the pragma: ~1.3 µs less than a new cursor each time
        self.rows: dict[tuple[str, str], Row] = {}
        self.tokens: dict[str, VerifiedToken] = {}
        # (collection id, record id) -> (the collection, the row, its auth answers' record JSON)
        self.answers: dict[tuple[str, str], tuple[Collection, Row, bytes]] = {}
        self.version: object = None
        self.changes = -1
        self.collections: CollectionMap | None = None

    def release(self) -> None:
        """Unmap the WAL index (its descriptor closes with it): the tenant's connection was closed."""
        index, self.wal_index = self.wal_index, None
        if index is not None:
            index.close()


_BY_TENANT: WeakKeyDictionary[Tenant, _AuthRecords] = WeakKeyDictionary()


def _current(tenant: Tenant) -> _AuthRecords:
    """The tenant's kept records, emptied first when its database or collections changed since they were read."""
    kept = _BY_TENANT.get(tenant)
    if kept is None:
        kept = _BY_TENANT[tenant] = _AuthRecords()
    conn = tenant.conn
    if kept.conn is not conn:
        kept.release()
        kept.conn, kept.cursor, kept.wal_index = conn, conn.cursor(), _map_wal_index(conn)
        if kept.wal_index is not None:
            tenant.on_close.append(kept.release)  # the mapping holds a descriptor: not beyond the connection
    version: object
    if kept.wal_index is not None:
        try:
            version = kept.wal_index[:WAL_INDEX_HEADER]
        except ValueError:  # released: the tenant was closed meanwhile (its connection answers from here on)
            version = object()
    else:
        assert kept.cursor is not None
        version = kept.cursor.execute("PRAGMA data_version").get
    changes = conn.total_changes()
    if version != kept.version or changes != kept.changes or tenant.collections is not kept.collections \
            or len(kept.rows) >= MAX_KEPT_RECORDS or len(kept.tokens) >= MAX_KEPT_RECORDS:
        # read before the rows below: a commit in between makes the next lookup start over, never miss it
        kept.rows.clear()
        kept.tokens.clear()
        kept.answers.clear()
        kept.version, kept.changes, kept.collections = version, changes, tenant.collections
    return kept


def _map_wal_index(conn: apsw.Connection) -> mmap.mmap | None:
    """The connection's WAL index (``<database>-shm``) mapped read-only, None when the database is not in WAL mode
    (its header's read and write versions, bytes 18 and 19, are 2 in WAL mode; ``PRAGMA journal_mode`` is not
    for the tenant's connection to run) or the index is not a file (exclusive locking keeps it in the process's
    heap). While the connection is open the database stays in WAL mode (leaving it needs the only connection)
    and its index file is never deleted or replaced (SQLite removes it only when its last connection closes)."""
    try:
        path = conn.db_filename("main")
        with open(path, "rb") as database:
            if database.read(20)[18:20] != b"\x02\x02":
                return None
        fd = os.open(path + "-shm", os.O_RDONLY)
    except (apsw.Error, OSError):
        return None
    try:
        if os.fstat(fd).st_size < 2 * WAL_INDEX_HEADER:
            return None
        return mmap.mmap(fd, 2 * WAL_INDEX_HEADER, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def verified_token(tenant: Tenant, token: str) -> tuple[VerifiedToken, Row] | None:
    """``token`` as it was verified against its record (:func:`keep_verified_token`) and that record as stored
    now (a copy the caller may change), when neither the database nor the collections changed since and the
    token has not expired; None otherwise (the caller checks the token from the start)."""
    kept = _current(tenant)
    known = kept.tokens.get(token)
    if known is None:
        return None
    row = kept.rows.get((known.collection.id, known.record_id))
    if row is None or known.exp <= time.time():
        return None
    return known, dict(row)


def keep_verified_token(tenant: Tenant, token: str, verified: VerifiedToken) -> None:
    """Remember that ``token``'s signature verified against the record :func:`load_auth_record` just gave for
    ``verified.collection`` and ``verified.record_id`` (in the same turn: nothing changed in between)."""
    kept = _BY_TENANT.get(tenant)
    if kept is not None and (verified.collection.id, verified.record_id) in kept.rows:
        kept.tokens[token] = verified


def auth_answer_json(tenant: Tenant, collection: Collection, row: Row, export: Callable[[], bytes]) -> bytes:
    """The record JSON an auth answer shows for ``row`` (``export()``: made when not kept), kept while the
    tenant's records are and reused only for the same collection and an equal row."""
    kept = _BY_TENANT.get(tenant)
    key = (collection.id, str(row.get("id", "")))
    if kept is not None:
        known = kept.answers.get(key)
        if known is not None and known[0] is collection and known[1] == row:
            return known[2]
    made = export()
    if kept is not None and key in kept.rows and len(kept.answers) < MAX_KEPT_RECORDS:
        kept.answers[key] = (collection, dict(row), made)
    return made


def load_auth_record(tenant: Tenant, collection: Collection, record_id: str) -> Row | None:
    """The record ``record_id`` of the auth collection as stored now (a copy the caller may change), None
    when there is none."""
    kept = _current(tenant)
    key = (collection.id, record_id)
    row = kept.rows.get(key)
    if row is None:
        row = load_row(tenant, collection, record_id)
        if row is None:
            return None
        kept.rows[key] = row
    return dict(row)
