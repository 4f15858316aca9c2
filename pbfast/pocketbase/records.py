"""Records of one collection: validation, normalisation, persistence and their JSON, as PocketBase does.

Every value a client sends goes through :func:`fields.prepare_value` and reaches SQLite as a bound parameter;
identifiers in SQL come only from the collection's own (validated) definition, quoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apsw

from pbfast.pocketbase import fields
from pbfast.pocketbase.auth import hash_password, new_token_key
from pbfast.pocketbase.schema import Collection
from pbfast.pocketbase.tenant import Tenant, new_record_id

__all__ = ["RecordValidationError", "Viewer", "delete_record", "quote", "record_json", "save_record"]

AUTH_SECRET_FIELDS = ("password", "tokenKey")


class RecordValidationError(Exception):
    """Per-field problems: ``data`` is ``{field: {"code", "message"}}``."""

    def __init__(self, data: dict[str, dict[str, str]]) -> None:
        self.data = data
        super().__init__(", ".join(data))


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at a record: decides hidden fields and email visibility."""

    superuser: bool = False
    auth_collection_id: str = ""
    auth_record_id: str = ""


def quote(identifier: str) -> str:
    """A SQLite identifier quoted with double quotes (embedded quotes doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


def record_json(collection: Collection, row: dict[str, Any], viewer: Viewer) -> dict[str, Any]:
    """A stored row as PocketBase's record JSON (``collectionId``, ``collectionName``, then the fields)."""
    out: dict[str, Any] = {"collectionId": collection.id, "collectionName": collection.name}
    is_owner = viewer.auth_collection_id == collection.id and viewer.auth_record_id == row.get("id")
    for field in collection.fields:
        name = field["name"]
        if field["type"] == "password" or (field.get("hidden") and not viewer.superuser):
            continue
        if collection.type == "auth" and name == "tokenKey":
            continue
        out[name] = fields.to_api_value(field, row.get(name))
    if collection.type == "auth" and "email" in out and not (viewer.superuser or is_owner or row.get("emailVisibility")):
        out.pop("email")
    return out


def _row(tenant: Tenant, collection: Collection, record_id: str) -> dict[str, Any] | None:
    cursor = tenant.conn.execute(f"SELECT * FROM {quote(collection.name)} WHERE id = ?", (record_id,))
    names = None
    for values in cursor:
        names = names or [d[0] for d in cursor.getdescription()]
        return dict(zip(names, values))
    return None


def load_row(tenant: Tenant, collection: Collection, record_id: str) -> dict[str, Any] | None:
    return _row(tenant, collection, record_id)


def save_record(tenant: Tenant, collection: Collection, body: dict[str, Any],
                existing: dict[str, Any] | None, viewer: Viewer) -> dict[str, Any]:
    """Validate ``body`` against the collection and insert (``existing`` None) or update the row.

    Every field is validated as PocketBase does on each save (absent fields keep their current value and
    are validated again); only fields that changed are written. Returns the stored row. Raises
    :class:`RecordValidationError` with PocketBase's per-field codes.
    """
    is_new = existing is None
    errors: dict[str, dict[str, Any]] = {}
    values: dict[str, Any] = {}
    password_changed = False
    for field in collection.fields:
        name = field["name"]
        if collection.type == "auth" and name == "tokenKey":
            continue  # generated below: on create, and whenever the password changes
        submitted = body.get(name, fields.MISSING)
        current = fields.MISSING if is_new else existing.get(name, fields.MISSING)  # type: ignore[union-attr]
        if name == "id" and not is_new:
            continue
        try:
            value = fields.prepare_value(field, submitted, current=current, is_new=is_new)
        except fields.FieldError as err:
            errors[name] = err.to_dict()
            continue
        if field["type"] == "password":
            if collection.type == "auth" and name == "password" and (is_new or submitted is not fields.MISSING) \
                    and body.get("passwordConfirm") != submitted:
                errors["passwordConfirm"] = {"code": "validation_values_mismatch", "message": "Values don't match."}
                continue
            if fields.needs_hashing(value):
                values[name] = hash_password(str(value), fields.password_cost(field))
                password_changed = True
            continue
        if is_new or submitted is not fields.MISSING or field["type"] == "autodate":
            if is_new or value != current:
                values[name] = value
    if collection.type == "auth" and collection.field("tokenKey") is not None and (is_new or password_changed):
        values["tokenKey"] = new_token_key()
    if not errors:
        errors.update(_missing_relations(tenant, collection, values))
    if errors:
        raise RecordValidationError(errors)
    if is_new and not values.get("id"):
        values["id"] = new_record_id()
    table = quote(collection.name)
    try:
        with tenant.conn:
            if is_new:
                columns = list(values)
                tenant.conn.execute(
                    f"INSERT INTO {table} ({', '.join(map(quote, columns))}) VALUES ({', '.join('?' * len(columns))})",
                    [values[c] for c in columns])
                record_id = values["id"]
            else:
                assert existing is not None
                record_id = existing["id"]
                if values:
                    assignments = ", ".join(f"{quote(c)} = ?" for c in values)
                    tenant.conn.execute(f"UPDATE {table} SET {assignments} WHERE id = ?",
                                        [*values.values(), record_id])
    except apsw.ConstraintError as err:
        raise RecordValidationError(_unique_violation(collection, str(err), values)) from err
    stored = _row(tenant, collection, record_id)
    assert stored is not None
    return stored


def _unique_violation(collection: Collection, message: str, values: dict[str, Any]) -> dict[str, dict[str, str]]:
    # "UNIQUE constraint failed: table.col1, table.col2"
    problem = {"code": "validation_not_unique", "message": "Value must be unique."}
    columns = [part.strip().split(".")[-1] for part in message.split(":", 1)[-1].split(",")]
    named = [c for c in columns if c in values or collection.field(c) is not None]
    return {name: dict(problem) for name in named} or {"id": dict(problem)}


def _missing_relations(tenant: Tenant, collection: Collection, values: dict[str, Any]) -> dict[str, dict[str, str]]:
    errors = {}
    for field in collection.fields:
        if field["type"] != "relation" or field["name"] not in values:
            continue
        ids = fields.relation_ids(field, values[field["name"]])
        if not ids:
            continue
        target = tenant.collection_by_id(field.get("collectionId", ""))
        if target is None:
            errors[field["name"]] = {"code": "validation_missing_rel_records",
                                     "message": "Failed to find all relation records with the provided ids."}
            continue
        placeholders = ", ".join("?" * len(ids))
        found = tenant.conn.execute(
            f"SELECT COUNT(DISTINCT id) FROM {quote(target.name)} WHERE id IN ({placeholders})", ids).fetchone()[0]
        if found != len(set(ids)):
            errors[field["name"]] = {"code": "validation_missing_rel_records",
                                     "message": "Failed to find all relation records with the provided ids."}
    return errors


def delete_record(tenant: Tenant, collection: Collection, record_id: str) -> None:
    """Delete a record, cascading to relations the way PocketBase does.

    Records that reference it through a ``cascadeDelete`` relation are deleted too; other references are
    removed from their relation fields, unless the field is required and would become empty, in which case
    nothing is deleted and :class:`RecordValidationError` explains why.
    """
    with tenant.conn:
        _delete(tenant, collection, record_id, set())


def _delete(tenant: Tenant, collection: Collection, record_id: str, seen: set[tuple[str, str]]) -> None:
    if (collection.id, record_id) in seen:
        return
    seen.add((collection.id, record_id))
    for other in list(tenant.collections.values()):
        if other.type == "view":
            continue
        for field in other.fields:
            if field["type"] != "relation" or field.get("collectionId") != collection.id:
                continue
            multiple = int(field.get("maxSelect") or 1) > 1
            column, table = quote(field["name"]), quote(other.name)
            if multiple:
                rows = tenant.conn.execute(
                    f"SELECT id, {column} FROM {table} WHERE EXISTS "
                    f"(SELECT 1 FROM json_each(CASE WHEN json_valid({column}) THEN {column} ELSE '[]' END) "
                    f"WHERE value = ?)", (record_id,)).fetchall()
            else:
                rows = tenant.conn.execute(f"SELECT id, {column} FROM {table} WHERE {column} = ?",
                                           (record_id,)).fetchall()
            for ref_id, stored in rows:
                if field.get("cascadeDelete"):
                    _delete(tenant, other, ref_id, seen)
                    continue
                remaining = [i for i in fields.relation_ids(field, stored) if i != record_id]
                if not remaining and field.get("required"):
                    raise RecordValidationError({"id": {
                        "code": "validation_required_relation_reference",
                        "message": f"The record is referenced by a required relation field of {other.name}."}})
                new_value = _storefields.relation_ids(field, remaining)
                tenant.conn.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", (new_value, ref_id))
    tenant.conn.execute(f"DELETE FROM {quote(collection.name)} WHERE id = ?", (record_id,))
