"""The collections API's operations (PocketBase semantics), each in one transaction: create, update (with
the table migration), delete, truncate, and the scaffolds."""

from __future__ import annotations

import copy
import secrets
import string
import zlib
from collections.abc import Mapping
from typing import Any

import apsw

from pbfast.pocketbase.collections import system as S
from pbfast.pocketbase.collections.cascade import (
    LastSuperuserError,
    RecordChanges,
    RequiredReferenceError,
    delete_auth_side_rows,
    delete_records,
    references,
)
from pbfast.pocketbase.collections.decode import apply_payload, new_collection
from pbfast.pocketbase.collections.defaults import init_default_fields, unset_missing_mapped_fields
from pbfast.pocketbase.collections.errors import REQUIRED, CollectionValidationError, decode_error, error_item
from pbfast.pocketbase.collections.model import Collection, CollectionMap, load_collection, load_collections, now_text
from pbfast.pocketbase.collections.rules import check_api_rule
from pbfast.pocketbase.collections.table_sync import sync_table
from pbfast.pocketbase.collections.validate import RuleChecker, validate_collection
from pbfast.pocketbase.collections.version import bump_schema_version
from pbfast.pocketbase.collections.views import ViewFieldsError, dry_run_view, save_view, view_fields
from pbfast.pocketbase.dbutils.identifiers import backquote
from pbfast.pocketbase.dbutils.index import parse_index
from pbfast.pocketbase.dbutils.transaction import sqlite_error_text, write_transaction
from pbfast.pocketbase.search import Page, fetch_page

__all__ = ["create_collection", "delete_collection", "drop_collection", "list_collection_ids", "persist",
           "prepare_new", "prepare_update", "resolve_view_fields", "scaffolds", "truncate_collection",
           "update_collection", "validation_errors"]

def scaffolds() -> dict[str, dict[str, Any]]:
    """PocketBase's ``GET /api/collections/meta/scaffolds``: a new collection of each type as the API
    shows it (no id, no name; default indexes named after a random 10 characters id)."""
    random_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10))
    result: dict[str, dict[str, Any]] = {}
    for collection_type in ("auth", "base", "view"):
        collection = new_collection(collection_type, "")
        collection.id = random_id
        init_default_fields(collection)
        collection.id = ""
        result[collection_type] = collection.to_api()
    return result


def _collection_id_for(conn: apsw.Connection, collection: Collection) -> str:
    base = "pbc_" + str(zlib.crc32((collection.type + collection.name).encode()))
    candidate = base
    for suffix in range(2, 1000):
        if conn.execute("SELECT 1 FROM _collections WHERE id = ? LIMIT 1", (candidate,)).fetchone() is None:
            break
        candidate = f"{base}{suffix}"
    return candidate


def _normalize_index_tables(collection: Collection) -> None:
    for position, raw in enumerate(collection.indexes):
        parsed = parse_index(raw)
        if parsed.table_name == collection.name:
            continue
        parsed.table_name = collection.name
        built = parsed.build()
        if built:
            collection.indexes[position] = built


def resolve_view_fields(conn: apsw.Connection, collection: Collection, others: CollectionMap) -> str | None:
    """A view collection's fields inferred from its query (set on ``collection``); the query's error, if any:
    PocketBase checks a view query by a dry run (its first rows read, their ids checked) before it saves."""
    if collection.type != "view":
        return None
    try:
        collection.fields = view_fields(conn, collection.view_query, others)
    except (ValueError, apsw.Error) as err:
        collection.fields = err.fields if isinstance(err, ViewFieldsError) else []
        return _view_error_text(err)
    try:
        dry_run_view(conn, collection.view_query, others)
    except (ValueError, apsw.Error) as err:
        return _view_error_text(err)
    return None


def _view_error_text(err: ValueError | apsw.Error) -> str:
    return sqlite_error_text(err) if isinstance(err, apsw.Error) else str(err)


def validation_errors(conn: apsw.Connection, collection: Collection, original: Collection | None,
                      others: CollectionMap, check_rule: RuleChecker, view_error: str | None) -> dict[str, Any]:
    """PocketBase's validation of ``collection`` (new when ``original`` is None) among ``others``."""
    errors = validate_collection(conn, collection, original, others, check_rule)
    if collection.type == "view":
        if not collection.view_query:
            errors.setdefault("viewQuery", dict(REQUIRED))
        elif view_error is not None:
            errors.setdefault("viewQuery", error_item("validation_invalid_view_query",
                                                 "Invalid query - " + view_error[:500]))
    return errors


def persist(conn: apsw.Connection, collection: Collection, original: Collection | None) -> None:
    """Write ``collection``'s row and bring its table (or view) in step, data kept; no validation. Raises
    :class:`CollectionValidationError` (data only) or ``apsw.Error``/``RuntimeError`` from the migration."""
    row = collection.to_row()
    bump_schema_version(conn)  # other connections (worker processes) reload their collections
    if original is None:
        conn.execute(f"INSERT INTO _collections ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     list(row.values()))
    else:
        assignments = ", ".join(f"{backquote(key)} = ?" for key in row if key != "id")
        conn.execute(f"UPDATE _collections SET {assignments} WHERE id = ?",
                     [value for key, value in row.items() if key != "id"] + [original.id])
    if collection.type == "view":
        if original is not None:
            conn.execute(f"DROP VIEW IF EXISTS {backquote(original.name)}")
        save_view(conn, collection.name, collection.view_query)
    else:
        sync_table(conn, collection, original)
        conn.execute("PRAGMA optimize")  # as PocketBase does after every table sync


def _save(conn: apsw.Connection, collection: Collection, original: Collection | None, failure: str,
          check_rule: RuleChecker) -> Collection:
    """Validate and persist ``collection`` (new when ``original`` is None) with its table/view."""
    others = load_collections(conn)
    view_error = resolve_view_fields(conn, collection, others)
    errors = validation_errors(conn, collection, original, others, check_rule, view_error)
    if errors:
        raise CollectionValidationError(failure, errors)
    try:
        persist(conn, collection, original)
    except CollectionValidationError as err:
        raise CollectionValidationError(failure, err.data) from err
    except (apsw.Error, RuntimeError) as err:
        raw = sqlite_error_text(err)  # PocketBase's error messages end as sentences
        raise CollectionValidationError(f"{failure[:-1]}. Raw error: \n{raw}{'' if raw.endswith('.') else '.'}",
                                        {}) from err
    return collection


def prepare_new(conn: apsw.Connection, collection: Collection) -> None:
    """What a new collection gets before it is saved: its id (if none), timestamps, default fields."""
    if not collection.id:
        collection.id = _collection_id_for(conn, collection)
    collection.created = collection.updated = now_text()
    init_default_fields(collection)
    if collection.type == "auth":
        unset_missing_mapped_fields(collection)
    _normalize_index_tables(collection)


def prepare_update(original: Collection, updated: Collection) -> None:
    """What an updated collection gets before it is saved: its timestamp, default fields, and a new auth
    token secret when its ``authRule`` changed."""
    updated.updated = now_text()
    init_default_fields(updated)
    if updated.type == "auth":
        unset_missing_mapped_fields(updated)
        if original.type == "auth" and (original.auth.auth_rule or "") != (updated.auth.auth_rule or ""):
            updated.auth.auth_token.secret = S.random_secret()
    _normalize_index_tables(updated)


def create_collection(conn: apsw.Connection, payload: Mapping[str, Any], *,
                      check_rule: RuleChecker = check_api_rule) -> Collection:
    """Create a collection from a ``POST /api/collections`` body (PocketBase semantics).

    The id defaults to ``pbc_<crc32(type+name)>``; the ``id`` primary key field is added (base/auth), and
    for auth collections the system fields, their unique indexes and default options with fresh secrets.
    ``created``/``updated`` autodate fields are *not* added (PocketBase does not either; its UI does).
    The table (or SQL view) is created, all in one transaction. API rules are checked with ``check_rule``
    (the filter engine). Raises :class:`CollectionValidationError`.
    """
    if not isinstance(payload, Mapping):
        raise decode_error("the body must be an object")
    collection_type = payload.get("type") if isinstance(payload.get("type"), str) else ""
    name = payload.get("name") if isinstance(payload.get("name"), str) else ""
    collection = new_collection(collection_type or "base", name or "")
    if not collection_type:
        collection.type = "base"
    apply_payload(collection, payload, is_new=True)
    if not collection.type:
        collection.type = "base"
    with write_transaction(conn):
        prepare_new(conn, collection)
        saved = _save(conn, collection, None, "Failed to create collection.", check_rule)
    return saved


def update_collection(conn: apsw.Connection, collection: Collection, payload: Mapping[str, Any], *,
                      check_rule: RuleChecker = check_api_rule) -> Collection:
    """Apply a ``PATCH /api/collections/{name}`` body (PocketBase semantics) and migrate the table.

    Absent keys keep their values; ``fields`` replaces the whole list (a field is matched to its stored
    column by ``id``: a new id adds a column, a changed name renames it, a missing id drops it; fields sent
    without an id reuse the id of the stored field with the same name and type, so the data is kept);
    auth options merge key by key. Changing ``authRule`` regenerates the auth token secret. Rows keep
    their data across renames; single/multiple value switches convert the stored values; indexes are
    rebuilt. One transaction. Raises :class:`CollectionValidationError`.
    """
    with write_transaction(conn):
        original = load_collection(conn, collection.id)
        if original is None:
            raise CollectionValidationError("The requested resource wasn't found.", {})
        updated = copy.deepcopy(original)
        apply_payload(updated, payload, is_new=False)
        prepare_update(original, updated)
        saved = _save(conn, updated, original, "Failed to update collection.", check_rule)
    return saved


def delete_collection(conn: apsw.Connection, collection: Collection) -> None:
    """Delete a collection and its table/view (PocketBase semantics): system collections and collections
    referenced by another collection's relation field cannot be deleted. The auth records' MFA/OTP/
    external-auth/auth-origin rows are removed too."""
    with write_transaction(conn):
        current = load_collection(conn, collection.id)
        if current is None:
            raise CollectionValidationError("The requested resource wasn't found.", {})
        if current.system:
            raise CollectionValidationError("Failed to delete collection.", {})
        collections = load_collections(conn)
        referencing = sorted({other.name for other, _ in references(collections, current) if other.id != current.id})
        if referencing:
            raise CollectionValidationError(
                "Failed to delete collection probably due to existing reference in " + ", ".join(referencing) + ".", {})
        try:
            drop_collection(conn, current, collections)
        except apsw.Error as err:
            raise CollectionValidationError("Failed to delete collection.", {}) from err


def drop_collection(conn: apsw.Connection, collection: Collection, collections: CollectionMap) -> None:
    """Drop a collection's table (or view) and row, and its auth records' MFA/OTP/external-auth/auth-origin
    rows; no checks (the caller's)."""
    if collection.type == "view":
        conn.execute(f"DROP VIEW IF EXISTS {backquote(collection.name)}")
    else:
        conn.execute(f"DROP TABLE IF EXISTS {backquote(collection.name)}")
    conn.execute("DELETE FROM _collections WHERE id = ?", (collection.id,))
    bump_schema_version(conn)
    if collection.type == "auth":
        delete_auth_side_rows(conn, collections, collection.id, None)


def truncate_collection(conn: apsw.Connection, collection: Collection, changes: RecordChanges | None = None) -> None:
    """Delete every record of a collection, as PocketBase's truncate does (each record deleted as by
    :func:`delete_records`): records of other collections that reference them through ``cascadeDelete``
    relations are deleted too (recursively), other references are cleared, and a required non-cascading
    reference (or deleting every superuser) makes the whole truncate fail. ``changes``: see
    :func:`delete_records`."""
    with write_transaction(conn):
        current = load_collection(conn, collection.id)
        if current is None:
            raise CollectionValidationError("The requested resource wasn't found.", {})
        if current.type == "view":
            raise CollectionValidationError(
                "View collections cannot be truncated since they don't store their own records.", {})
        ids = [row[0] for row in conn.execute(f"SELECT id FROM {backquote(current.name)}")]
        try:
            delete_records(conn, current, ids, changes)
        except (RequiredReferenceError, LastSuperuserError) as err:
            raise CollectionValidationError(
                "Failed to truncate collection (most likely due to required cascade delete record references).",
                {}) from err


def list_collection_ids(conn: apsw.Connection, where: str, params: list[Any], order_by: str, page: int,
                        per_page: int, skip_total: bool) -> Page:
    """One page of the collections list (rows with the ``id`` column) for a compiled filter and sort; unsorted,
    in the table's own order, as PocketBase's ``SELECT *`` scans it (selecting the id alone would scan its index)."""
    return fetch_page(conn, "_collections", "id", f"({where})" if where else "", params, order_by or "rowid", page,
                      per_page, skip_total)
