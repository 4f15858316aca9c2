"""Records of one collection: validation, normalisation, persistence and their JSON, as PocketBase does.

Every value a client sends goes through :mod:`fields` and reaches SQLite as a bound parameter; identifiers
in SQL come only from the collection's own (validated) definition, quoted.

A write follows PocketBase's ``RecordUpsert`` form: the request body is first resolved against the current
record (field modifiers such as ``total+`` or ``+tags``: :func:`resolve_modifiers`), then for auth
collections the account fields are checked (``password``/``passwordConfirm``/``oldPassword``, and who may
change ``email`` and ``verified``: :func:`save_record` with its ``manage`` flag), then every field is
validated, then the row is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import apsw

from pbfast.pocketbase import fields, schema
from pbfast.pocketbase.auth import hash_password, new_token_key, verify_password
from pbfast.pocketbase.schema import Collection, LastSuperuserError
from pbfast.pocketbase.tenant import Tenant, new_record_id

__all__ = [
    "LastSuperuserError",
    "RecordValidationError",
    "Viewer",
    "delete_record",
    "draft_row",
    "load_row",
    "quote",
    "record_json",
    "resolve_modifiers",
    "save_record",
    "strip_hidden",
    "write_transaction",
]

SUPERUSERS = "_superusers"
_MISMATCH = {"code": "validation_values_mismatch", "message": "Values don't match."}
_REQUIRED = {"code": "validation_required", "message": "Cannot be blank."}


class RecordValidationError(Exception):
    """Per-field problems: ``data`` is ``{field: {"code", "message"}}`` (empty for a non-field failure)."""

    def __init__(self, data: dict[str, dict[str, Any]]) -> None:
        self.data = data
        super().__init__(", ".join(data) or "record error")


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at a record: decides hidden fields and email visibility."""

    superuser: bool = False
    auth_collection_id: str = ""
    auth_record_id: str = ""


@contextmanager
def write_transaction(conn: apsw.Connection) -> Iterator[None]:
    """A transaction that takes the write lock up front (``BEGIN IMMEDIATE``, waiting up to the busy
    timeout), so reads inside it cannot be invalidated by another writer (a deferred transaction that
    reads first would fail with SQLITE_BUSY instead of waiting); a savepoint when one is already open."""
    if conn.in_transaction:
        with conn:
            yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite itself rolled back after SQLITE_FULL, an interrupt or a disk error
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def quote(identifier: str) -> str:
    """A SQLite identifier quoted with double quotes (embedded quotes doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


def record_json(collection: Collection, row: dict[str, Any], viewer: Viewer, *,
                show_email: bool = False) -> dict[str, Any]:
    """A stored row as PocketBase's record JSON (``collectionId``, ``collectionName``, then the fields).

    Hidden fields only for superusers; an auth record's ``email`` only when ``emailVisibility`` is on, for
    superusers, for the record itself (PocketBase matches the requester by id), or when ``show_email``
    (the requester manages the record through the collection's ``manageRule``)."""
    out: dict[str, Any] = {"collectionId": collection.id, "collectionName": collection.name}
    for field in collection.fields:
        name = field["name"]
        if field["type"] == "password" or (field.get("hidden") and not viewer.superuser):
            continue
        if collection.type == "auth" and name == "tokenKey":
            continue
        out[name] = fields.to_api_value(field, row.get(name))
    if collection.type == "auth" and "email" in out and not (
            show_email or viewer.superuser or (viewer.auth_record_id and viewer.auth_record_id == row.get("id"))
            or row.get("emailVisibility")):
        out.pop("email")
    return out


def load_row(tenant: Tenant, collection: Collection, record_id: str) -> dict[str, Any] | None:
    cursor = tenant.conn.execute(f"SELECT * FROM {quote(collection.name)} WHERE id = ?", (record_id,))
    for values in cursor:
        return dict(zip([d[0] for d in cursor.getdescription()], values))
    return None


# ---- request data ------------------------------------------------------------------------------------


def _modifier_target(collection: Collection, key: str) -> tuple[dict[str, Any], str] | None:
    """The field a body key sets and how: ``""`` (plain set), ``"+"`` (append), ``"^"`` (prepend), ``"-"``
    (subtract) or ``":autogenerate"``; None for keys that are not fields."""
    field = collection.field(key)
    if field is not None:
        return field, ""
    if key.startswith("+"):
        field = collection.field(key[1:])
        if field is not None and field["type"] in ("select", "relation", "file"):
            return field, "^"
        return None
    if key.endswith(":autogenerate"):
        field = collection.field(key[:-len(":autogenerate")])
        if field is not None and field["type"] == "text":
            return field, ":autogenerate"
        return None
    if key[-1:] in ("+", "-"):
        field = collection.field(key[:-1])
        if field is not None and field["type"] in ("number", "select", "relation", "file"):
            return field, key[-1]
    return None


def resolve_modifiers(collection: Collection, body: dict[str, Any], current: dict[str, Any] | None
                      ) -> dict[str, Any]:
    """PocketBase's ``Record.ReplaceModifiers``: every key naming a field (plain or with a modifier:
    ``name+``/``name-`` for numbers, ``+name``/``name+``/``name-`` for select/relation/file,
    ``name:autogenerate`` for text) is applied, in order of key length, to a copy of the record and
    replaced by the field's resulting value under the plain field name (as the API would show it; a
    password stays the submitted plain text). Other keys are kept as they are."""
    out = dict(body)
    working: dict[str, Any] = dict(current or {})
    is_new = current is None
    for key in sorted(body, key=len):
        target = _modifier_target(collection, key)
        if target is None:
            continue
        field, op = target
        name = field["name"]
        del out[key]
        raw = body[key]
        previous = working.get(name, fields.MISSING)
        if op == "":
            value = fields.cast_value(field, raw, current=previous, is_new=is_new)
        else:
            base = fields.cast_value(field, fields.MISSING, current=previous, is_new=is_new and previous
                                     is fields.MISSING)
            if field["type"] == "number":
                delta = fields.cast_to_float(raw)
                value = float(base) + delta if op == "+" else float(base) - delta
            elif field["type"] == "text":
                value = fields.cast_to_string(raw)
                pattern = field.get("autogeneratePattern") or ""
                if pattern:
                    value += fields.generate_by_pattern(str(pattern))
            else:
                existing = fields.relation_ids(field, base)
                extra = fields.to_unique_strings(raw)
                if op == "+":
                    items = existing + extra
                elif op == "^":
                    items = extra + existing
                else:
                    items = [i for i in existing if i not in extra]
                value = fields.cast_value(field, items, is_new=True)
        working[name] = value
        out[name] = str(value) if field["type"] == "password" else fields.to_api_value(field, value)
    return out


def strip_hidden(collection: Collection, data: dict[str, Any]) -> dict[str, Any]:
    """Non-superusers cannot set hidden fields (an auth collection's ``password`` excepted)."""
    hidden = {f["name"] for f in collection.fields if f.get("hidden")
              and not (collection.type == "auth" and f["name"] == "password")}
    return {k: v for k, v in data.items() if k not in hidden}


def draft_row(collection: Collection, data: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """The record as it would be with ``data`` loaded, not validated (what PocketBase checks a create
    rule against): every field's column value."""
    row: dict[str, Any] = {}
    for field in collection.fields:
        name = field["name"]
        previous = fields.MISSING if current is None else current.get(name, fields.MISSING)
        value = fields.cast_value(field, data.get(name, fields.MISSING), current=previous, is_new=current is None)
        row[name] = str(value) if fields.needs_hashing(value) else value
    return row


# ---- save --------------------------------------------------------------------------------------------


def _auth_form_errors(collection: Collection, data: dict[str, Any], existing: dict[str, Any] | None,
                      manage: bool) -> dict[str, dict[str, Any]]:
    """PocketBase's ``RecordUpsert.validateFormFields`` for auth records: who may change ``email`` and
    ``verified``, and the password/passwordConfirm/oldPassword rules."""
    is_new = existing is None
    original = existing or {}
    password = fields.cast_to_string(data["password"]) if "password" in data else ""
    confirm = fields.cast_to_string(data["passwordConfirm"]) if "passwordConfirm" in data else ""
    old_password = fields.cast_to_string(data["oldPassword"]) if "oldPassword" in data else ""
    errors: dict[str, dict[str, Any]] = {}
    if not is_new and not manage and "email" in data and collection.field("email") is not None:
        if fields.cast_to_string(data["email"]) != fields.cast_to_string(original.get("email") or ""):
            errors["email"] = dict(_MISMATCH)
    if not manage and "verified" in data and collection.field("verified") is not None:
        if fields.cast_to_bool(data["verified"]) != bool(original.get("verified")):
            errors["verified"] = dict(_MISMATCH)
    if (is_new or confirm or old_password) and not password:
        errors["password"] = dict(_REQUIRED)
    if (is_new or password or old_password) and not confirm:
        errors["passwordConfirm"] = dict(_REQUIRED)
    elif confirm != password:
        errors["passwordConfirm"] = dict(_MISMATCH)
    if not is_new and not manage and (password or confirm):
        if not old_password:
            errors["oldPassword"] = dict(_REQUIRED)
        elif not verify_password(old_password, str(original.get("password") or "")):
            errors["oldPassword"] = {"code": "validation_invalid_old_password",
                                     "message": "Missing or invalid old password."}
    return errors


def save_record(tenant: Tenant, collection: Collection, data: dict[str, Any], existing: dict[str, Any] | None,
                *, manage: bool = False, superuser: bool = False) -> dict[str, Any]:
    """Validate ``data`` (a request body already passed through :func:`resolve_modifiers`, and through
    :func:`strip_hidden` for non-superusers) and insert (``existing`` None) or update the row.

    ``manage``: the requester may change an auth record's ``email``/``verified`` and its password without
    ``oldPassword`` (superusers, and auth records satisfying the collection's ``manageRule``).

    Every field is validated as PocketBase does on each save (absent fields keep their current value and
    are validated again); only fields that changed are written. Returns the stored row. Raises
    :class:`RecordValidationError` with PocketBase's per-field codes.
    """
    is_new = existing is None
    is_auth = collection.type == "auth"
    if is_auth:
        form_errors = _auth_form_errors(collection, data, existing, manage or superuser)
        if form_errors:
            raise RecordValidationError(form_errors)
    if collection.name == SUPERUSERS and collection.field("verified") is not None:
        data = {**data, "verified": True}  # superusers are always verified
    errors: dict[str, dict[str, Any]] = {}
    values: dict[str, Any] = {}
    password_changed = False
    for field in collection.fields:
        name = field["name"]
        if is_auth and name == "tokenKey":
            continue  # generated below: on create, and whenever the password or email changes
        submitted = data.get(name, fields.MISSING)
        current = fields.MISSING if is_new else existing.get(name, fields.MISSING)  # type: ignore[union-attr]
        try:
            value = fields.prepare_value(field, submitted, current=current, is_new=is_new)
            if field["type"] == "relation":
                _check_relation_records(tenant, field, value)
        except fields.FieldError as err:
            errors[name] = err.to_dict()
            continue
        if field["type"] == "password":
            if fields.needs_hashing(value):
                values[name] = hash_password(str(value), fields.password_cost(field))
                password_changed = True
            continue
        if is_new or submitted is not fields.MISSING or field["type"] == "autodate":
            if is_new or value != current:
                values[name] = value
    if errors:
        raise RecordValidationError(errors)
    if is_new and not values.get("id"):
        values["id"] = new_record_id()
    if is_auth:
        _check_auth_id(tenant, collection, str(values.get("id") or existing["id"]))  # type: ignore[index]
        email_changed = not is_new and "email" in values
        if collection.field("tokenKey") is not None and (is_new or password_changed or email_changed):
            values["tokenKey"] = new_token_key()
    table = quote(collection.name)
    try:
        with write_transaction(tenant.conn):
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
                if password_changed and tenant.collection("_mfas") is not None:
                    # a new password ends the record's MFA sessions (PocketBase's registerMFAHooks)
                    tenant.conn.execute('DELETE FROM "_mfas" WHERE collectionRef = ? AND recordRef = ?',
                                        (collection.id, record_id))
    except apsw.ConstraintError as err:
        raise RecordValidationError(_unique_violation(collection, str(err), values)) from err
    stored = load_row(tenant, collection, record_id)
    assert stored is not None
    return stored


def _check_relation_records(tenant: Tenant, field: dict[str, Any], prepared: Any) -> None:
    ids = fields.relation_ids(field, prepared)
    if not ids:
        return
    target = tenant.collection_by_id(field.get("collectionId", ""))
    if target is None:
        raise fields.FieldError("validation_missing_rel_collection",
                                "Relation connection is missing or cannot be accessed")
    placeholders = ", ".join("?" * len(ids))
    found = tenant.conn.execute(f"SELECT COUNT(*) FROM {quote(target.name)} WHERE id IN ({placeholders})",
                                ids).fetchone()[0]
    if found != len(ids):
        raise fields.FieldError("validation_missing_rel_records",
                                "Failed to find all relation records with the provided ids")


def _check_auth_id(tenant: Tenant, collection: Collection, record_id: str) -> None:
    """Auth record ids are (loosely) unique across all auth collections."""
    for other in tenant.collections.values():
        if other.type != "auth" or other.id == collection.id:
            continue
        if tenant.conn.execute(f"SELECT 1 FROM {quote(other.name)} WHERE id = ? LIMIT 1", (record_id,)).fetchone():
            raise RecordValidationError({"id": {"code": "validation_invalid_auth_id",
                                                "message": "Invalid or duplicated auth record id."}})


def _unique_violation(collection: Collection, message: str, values: dict[str, Any]) -> dict[str, dict[str, str]]:
    # "UNIQUE constraint failed: table.col1, table.col2"
    problem = {"code": "validation_not_unique", "message": "Value must be unique."}
    columns = [part.strip().split(".")[-1] for part in message.split(":", 1)[-1].split(",")]
    named = [c for c in columns if c in values or collection.field(c) is not None]
    return {name: dict(problem) for name in named} or {"id": dict(problem)}


# ---- delete ------------------------------------------------------------------------------------------


def delete_record(tenant: Tenant, collection: Collection, record_id: str) -> None:
    """Delete a record the way PocketBase does: records referencing it through a ``cascadeDelete``
    relation left without any other reference are deleted too (recursively), other references are
    removed from their relation fields (their ``updated`` is bumped), unless the field is required and
    would become empty: then nothing is deleted and :class:`RecordValidationError` (no field data) is
    raised. The only superuser cannot be deleted (:class:`LastSuperuserError`)."""
    with write_transaction(tenant.conn):
        try:
            schema.delete_records(tenant.conn, collection, [record_id])
        except schema.RequiredReferenceError as err:
            raise RecordValidationError({}) from err
