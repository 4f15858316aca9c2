"""Deleting records as PocketBase's ``Delete`` does: relations to them removed (and ``updated`` bumped),
``cascadeDelete`` references deleted recursively, a required reference refusing the delete, and the auth
records' MFA/OTP/external-auth/auth-origin rows removed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apsw

from pbfast.pocketbase.fields import AutodateField, RelationField
from pbfast.pocketbase.collections.model import Collection, CollectionMap, load_collections, now_text
from pbfast.pocketbase.dbutils.identifiers import backquote
from pbfast.pocketbase.gocompat import to_unique_strings

__all__ = ["LastSuperuserError", "RecordChanges", "RequiredReferenceError", "delete_auth_side_rows", "delete_records",
           "references"]

RecordChanges = list[tuple[str, Collection, dict[str, Any]]]
"""Records a delete changed, in order: ``("update", collection, row after)`` for a reference removed,
``("delete", collection, row before)`` for a record deleted (for realtime events, sent after the commit)."""

def references(collections: CollectionMap, target: Collection) -> list[tuple[Collection, RelationField]]:
    return [(other, definition) for other in collections.values() for definition in other.fields
            if isinstance(definition, RelationField) and definition.collection_id == target.id]


def delete_auth_side_rows(conn: apsw.Connection, collections: CollectionMap, collection_id: str,
                           record_ids: Sequence[str] | None) -> None:
    for name in ("_externalAuths", "_mfas", "_otps", "_authOrigins"):
        if name not in collections:
            continue
        if record_ids is None:
            conn.execute(f"DELETE FROM {backquote(name)} WHERE collectionRef = ?", (collection_id,))
        else:
            for chunk_start in range(0, len(record_ids), 500):
                chunk = list(record_ids[chunk_start:chunk_start + 500])
                conn.execute(f"DELETE FROM {backquote(name)} WHERE collectionRef = ? AND recordRef IN "
                             f"({', '.join('?' * len(chunk))})", [collection_id, *chunk])


class RequiredReferenceError(Exception):
    """A record cannot be deleted: a required, non-cascading relation field references it."""


class LastSuperuserError(Exception):
    """The only remaining superuser cannot be deleted."""




def delete_records(conn: apsw.Connection, target: Collection, ids: Sequence[str],
                   changes: RecordChanges | None = None) -> None:
    """Delete records of ``target`` as PocketBase's ``Delete`` does for each of them (call it inside a
    transaction): a reference in another record is removed from its relation field (bumping its
    ``updated``); when none is left and the field has ``cascadeDelete`` that record is deleted too
    (recursively); when none is left and the field is required nothing is deleted
    (:class:`RequiredReferenceError`). The auth records' MFA/OTP/external-auth/auth-origin rows go too.
    ``changes``: where to note every record changed, cascaded ones first, as PocketBase's events come."""
    if target.name == "_superusers" and ids:
        (total,) = conn.execute(f"SELECT COUNT(*) FROM {backquote(target.name)}").fetchone() or (0,)
        if total - len(set(ids)) < 1:
            raise LastSuperuserError("You can't delete the only existing superuser.")
    collections = load_collections(conn)
    _delete_records(conn, collections, target, ids, set(), changes)
    for start in range(0, len(ids), 500):
        chunk = list(ids[start:start + 500])
        _note_deleted(conn, target, chunk, changes)
        conn.execute(f"DELETE FROM {backquote(target.name)} WHERE id IN ({', '.join('?' * len(chunk))})", chunk)


def _rows(conn: apsw.Connection, collection: Collection, ids: Sequence[str]) -> list[dict[str, Any]]:
    cursor = conn.execute(f"SELECT * FROM {backquote(collection.name)} WHERE id IN ({', '.join('?' * len(ids))})",
                          list(ids))
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    for values in cursor:
        names = names or [d[0] for d in cursor.getdescription()]  # known only while the statement runs
        rows.append(dict(zip(names, values)))
    return rows


def _note_deleted(conn: apsw.Connection, collection: Collection, ids: Sequence[str],
                  changes: RecordChanges | None) -> None:
    if changes is not None and ids:
        changes.extend(("delete", collection, row) for row in _rows(conn, collection, ids))


def _touch_updated(other: Collection) -> tuple[str, int]:
    """SQL assignments bumping ``other``'s onUpdate autodate fields (with their parameter), if any."""
    names = [d.name for d in other.fields if isinstance(d, AutodateField) and d.on_update]
    return "".join(f", {backquote(n)} = ?" for n in names), len(names)


def _delete_records(conn: apsw.Connection, collections: CollectionMap, target: Collection, ids: Sequence[str],
                    seen: set[tuple[str, str]], changes: RecordChanges | None) -> None:
    fresh = [i for i in ids if (target.id, i) not in seen]
    if not fresh:
        return
    seen.update((target.id, i) for i in fresh)
    doomed = set(fresh)
    referencing = sorted(references(collections, target), key=lambda pair: pair[0].name)
    for other, definition in referencing:
        if other.type == "view":
            continue
        column, table = backquote(definition.name), backquote(other.name)
        rows = conn.execute(f"SELECT id, {column} FROM {table} WHERE {column} != '' AND {column} != '[]'").fetchall()
        cascade: list[str] = []
        touch_sql, touch_count = _touch_updated(other)
        for raw_id, stored in rows:
            record_id = str(raw_id)
            if (other.id, record_id) in seen:
                continue  # being deleted itself
            current_ids = to_unique_strings(stored)
            remaining = [i for i in current_ids if i not in doomed]
            if len(remaining) == len(current_ids):
                continue
            if definition.cascade_delete and not remaining:
                cascade.append(record_id)
                continue
            if not remaining and definition.required:
                raise RequiredReferenceError(f"{other.name}.{definition.name} of {record_id}")
            conn.execute(f"UPDATE {table} SET {column} = ?{touch_sql} WHERE id = ?",
                         (definition.stored_from_list(remaining), *([now_text()] * touch_count), record_id))
            if changes is not None:
                changes.extend(("update", other, row) for row in _rows(conn, other, [record_id]))
        if cascade:
            _delete_records(conn, collections, other, cascade, seen, changes)
            for start in range(0, len(cascade), 500):
                chunk = cascade[start:start + 500]
                _note_deleted(conn, other, chunk, changes)
                conn.execute(f"DELETE FROM {table} WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
    if target.type == "auth":
        delete_auth_side_rows(conn, collections, target.id, fresh)
