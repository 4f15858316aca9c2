"""Saving a record as PocketBase's ``RecordUpsert`` form does: for auth collections the account fields are
checked first (``password``/``passwordConfirm``/``oldPassword``, and who may change ``email`` and
``verified``), then every field is validated, then the row is written in one transaction.

Every value a client sends goes through :mod:`~pbfast.pocketbase.fields` and reaches SQLite as a bound
parameter; identifiers come only from the collection's own (validated) definition, quoted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import apsw

from pbfast.pocketbase import gocompat
from pbfast.pocketbase.auth import hash_password, new_token_key, verify_password
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.fields import (
    MISSING,
    AutodateField,
    ErrorItem,
    Field,
    FieldError,
    FileField,
    PasswordField,
    PlainPassword,
    RelationField,
    UploadInfo,
)
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.records.errors import RecordValidationError
from pbfast.pocketbase.records.find import load_row
from pbfast.pocketbase.tenant import Tenant, new_record_id

__all__ = ["RecordUploads", "save_record"]


class RecordUploads(Protocol):
    """Files uploaded with a save: the new names of each file field, and their storing once the record is
    valid (before its row is written, as PocketBase does)."""

    def infos(self, field_name: str) -> Mapping[str, UploadInfo]: ...

    def preferred_id(self) -> str | None:
        """The id a new record takes when it is sent empty or not at all (its files were stored under it
        already), or None: its id field draws one."""

    def store(self, record_id: str, values: Mapping[str, Any]) -> None:
        """Store the uploads the saved values keep; raises on failure (nothing is written then)."""

SUPERUSERS = "_superusers"


def _mismatch() -> ErrorItem:
    return ErrorItem(code="validation_values_mismatch", message="Values don't match.")


def _required() -> ErrorItem:
    return ErrorItem(code="validation_required", message="Cannot be blank.")


def _auth_form_errors(collection: Collection, data: dict[str, Any], existing: dict[str, Any] | None,
                      manage: bool) -> dict[str, ErrorItem]:
    """PocketBase's ``RecordUpsert.validateFormFields`` for auth records: who may change ``email`` and
    ``verified``, and the password/passwordConfirm/oldPassword rules."""
    is_new = existing is None
    original = existing or {}
    password = gocompat.cast_to_string(data["password"]) if "password" in data else ""
    confirm = gocompat.cast_to_string(data["passwordConfirm"]) if "passwordConfirm" in data else ""
    old_password = gocompat.cast_to_string(data["oldPassword"]) if "oldPassword" in data else ""
    errors: dict[str, ErrorItem] = {}
    if not is_new and not manage and "email" in data and collection.field("email") is not None:
        if gocompat.cast_to_string(data["email"]) != gocompat.cast_to_string(original.get("email") or ""):
            errors["email"] = _mismatch()
    if not manage and "verified" in data and collection.field("verified") is not None:
        if gocompat.cast_to_bool(data["verified"]) != bool(original.get("verified")):
            errors["verified"] = _mismatch()
    if (is_new or confirm or old_password) and not password:
        errors["password"] = _required()
    if (is_new or password or old_password) and not confirm:
        errors["passwordConfirm"] = _required()
    elif confirm != password:
        errors["passwordConfirm"] = _mismatch()
    if not is_new and not manage and (password or confirm):
        if not old_password:
            errors["oldPassword"] = _required()
        elif not verify_password(old_password, str(original.get("password") or "")):
            errors["oldPassword"] = {"code": "validation_invalid_old_password",
                                     "message": "Missing or invalid old password."}
    return errors


def save_record(tenant: Tenant, collection: Collection, data: dict[str, Any], existing: dict[str, Any] | None,
                *, manage: bool = False, superuser: bool = False,
                uploads: RecordUploads | None = None) -> dict[str, Any]:
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
    errors: dict[str, ErrorItem] = {}
    values: dict[str, Any] = {}
    password_changed = False
    plan = _save_plan(collection)
    for name, field, kind in plan.fields:
        if kind == _TOKEN_KEY and not (superuser and name in data):
            continue  # generated below (on create, and whenever the password or email changes) unless a superuser sets it
        submitted = data.get(name, MISSING)
        if is_new and uploads is not None and getattr(field, "primary_key", False) and submitted in (MISSING, ""):
            # the id the uploads were stored under, drawn from this field's pattern before the turn (as the field
            # would draw it now), validated here as a drawn id is
            submitted = uploads.preferred_id() or submitted
        current = MISSING if is_new else existing.get(name, MISSING)  # type: ignore[union-attr]
        try:
            # a file field takes its uploads' names with their infos (a mapping of the names)
            uploaded = uploads.infos(name) if uploads and kind == _FILE else ()
            value = field.prepare(submitted, current=current, is_new=is_new, uploaded=uploaded)  # type: ignore[arg-type]
            if kind == _RELATION:
                _check_relation_records(tenant, field, value)  # type: ignore[arg-type]
        except FieldError as err:
            errors[name] = err.to_dict()
            continue
        if kind == _PASSWORD:
            if isinstance(value, PlainPassword):
                values[name] = hash_password(str(value), field.bcrypt_cost())  # type: ignore[attr-defined]
                password_changed = True
            continue
        if is_new or ((submitted is not MISSING or kind == _AUTODATE) and value != current):
            values[name] = value
    if errors:
        raise RecordValidationError(errors)
    if is_new and not values.get("id"):
        values["id"] = new_record_id()
    if is_auth:
        _check_auth_id(tenant, collection, str(values.get("id") or existing["id"]))  # type: ignore[index]
        email_changed = not is_new and "email" in values
        # PocketBase keeps a key a superuser set in the same save, else makes a new one
        if collection.field("tokenKey") is not None and "tokenKey" not in values \
                and (is_new or password_changed or email_changed):
            values["tokenKey"] = new_token_key()
        verified_upgrade = not is_new and bool(values.get("verified")) and not existing.get("verified")  # type: ignore[union-attr]
        if verified_upgrade and collection.field("tokenKey") is not None and _has_external_auths(tenant, collection,
                                                                                                  existing):
            values["tokenKey"] = new_token_key()  # PocketBase ends the sessions of the links it drops below
    if uploads is not None:
        uploads.store(str(values.get("id") or existing["id"]), values)  # type: ignore[index]
    table = quote(collection.name)
    try:
        if is_new:
            # One statement is its own transaction (it takes the write lock as it starts, as BEGIN IMMEDIATE
            # does) and RETURNING gives the stored row: one statement instead of BEGIN, INSERT, COMMIT, SELECT.
            # In a transaction already open (a batch, a group commit) it is atomic alone as well: a failed
            # INSERT undoes only itself, so it needs no savepoint around it.
            return _insert_returning(tenant.conn, table, values, plan)
        assert existing is not None
        record_id = existing["id"]
        with write_transaction(tenant.conn):
            if values:
                assignments = ", ".join(f"{quote(c)} = ?" for c in values)
                tenant.conn.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", [*values.values(), record_id])
            if is_auth:
                _after_auth_update(tenant, collection, record_id, password_changed=password_changed,
                                   token_key_changed="tokenKey" in values, verified_upgrade=verified_upgrade)
    except apsw.ConstraintError as err:
        raise RecordValidationError(_unique_violation(collection, str(err), values)) from err
    stored = load_row(tenant, collection, record_id)
    assert stored is not None
    return stored


# What save_record does with a field besides preparing it (module constants: compared per field and save).
_PLAIN = 0
_FILE = 1  # takes the save's uploads
_RELATION = 2  # its records must exist
_PASSWORD = 3  # stored hashed, only when a new one was submitted
_AUTODATE = 4  # written on update even when not submitted
_TOKEN_KEY = 5  # an auth record's: generated, unless a superuser sets it


def _kind(collection: Collection, field: Field) -> int:
    if collection.type == "auth" and field.name == "tokenKey":
        return _TOKEN_KEY
    for cls, kind in ((FileField, _FILE), (RelationField, _RELATION), (PasswordField, _PASSWORD),
                      (AutodateField, _AUTODATE)):
        if isinstance(field, cls):
            return kind
    return _PLAIN


@dataclass(frozen=True, slots=True)
class _SavePlan:
    """What a save needs of a collection beyond its fields' values, worked out once per loaded collection (a
    collection is never changed once loaded: an update loads a new one)."""

    fields: tuple[tuple[str, Field, int], ...]  # each field's name, the field, its kind
    returning: str  # " RETURNING <every field's column>": the stored row a new record's INSERT answers
    returned: tuple[str, ...]  # the names of those columns, in order


def _save_plan(collection: Collection) -> _SavePlan:
    known = _plans.get(id(collection))
    if known is not None and known[0] is collection:
        return known[1]
    names = tuple(field.name for field in collection.fields)
    # The fields' columns by name, not *: the row's names are then known without asking SQLite for them (a
    # column the collection does not define is never shown, so nothing reads it from the saved row).
    plan = _SavePlan(tuple((field.name, field, _kind(collection, field)) for field in collection.fields),
                     " RETURNING " + ", ".join(map(quote, names)), names)
    if len(_plans) >= _PLANS_KEPT:
        _plans.clear()
    _plans[id(collection)] = (collection, plan)  # the collection held: its id is not reused meanwhile
    return plan


_PLANS_KEPT = 1024
_plans: dict[int, tuple[Collection, _SavePlan]] = {}


def _insert_sql(table: str, values: dict[str, Any]) -> str:
    key = (table, *values)
    sql = _insert_statements.get(key)
    if sql is None:  # the same few per collection: made once (quoting every column cost more than the INSERT)
        if len(_insert_statements) >= _INSERT_STATEMENTS_KEPT:
            _insert_statements.clear()
        sql = _insert_statements[key] = (f"INSERT INTO {table} ({', '.join(map(quote, values))}) "
                                         f"VALUES ({', '.join('?' * len(values))})")
    return sql


_INSERT_STATEMENTS_KEPT = 1024
_insert_statements: dict[tuple[str, ...], str] = {}


def _insert_returning(conn: apsw.Connection, table: str, values: dict[str, Any], plan: _SavePlan) -> dict[str, Any]:
    """INSERT the row (in a transaction of its own unless one is open); the row as stored (SQLite's defaults
    included)."""
    stored = conn.execute(_insert_sql(table, values) + plan.returning, list(values.values())).fetchall()
    return dict(zip(plan.returned, stored[0]))  # stepping past the last row (fetchall) ended the statement


def _has_external_auths(tenant: Tenant, collection: Collection, existing: dict[str, Any] | None) -> bool:
    if existing is None or tenant.collection("_externalAuths") is None:
        return False
    return any(tenant.conn.execute('SELECT 1 FROM "_externalAuths" WHERE collectionRef = ? AND recordRef = ? LIMIT 1',
                                   (collection.id, existing["id"])))


def _after_auth_update(tenant: Tenant, collection: Collection, record_id: str, *, password_changed: bool,
                       token_key_changed: bool, verified_upgrade: bool) -> None:
    """PocketBase's hooks on an auth record's update, in the same transaction: a new password ends its MFA
    sessions and forgets its login origins, a new ``tokenKey`` voids its unused OTPs, and becoming verified
    drops the OAuth2 links made while it was not (they may be an attacker's)."""
    cleanups = (("_mfas", password_changed), ("_authOrigins", password_changed), ("_otps", token_key_changed),
                ("_externalAuths", verified_upgrade))
    for table, applies in cleanups:
        if applies and tenant.collection(table) is not None:
            tenant.conn.execute(f"DELETE FROM {quote(table)} WHERE collectionRef = ? AND recordRef = ?",
                                (collection.id, record_id))


def _check_relation_records(tenant: Tenant, field: RelationField, prepared: Any) -> None:
    ids = gocompat.to_unique_strings(prepared)
    if not ids:
        return
    target = tenant.collection_by_id(field.collection_id)
    if target is None:
        raise FieldError("validation_missing_rel_collection",
                                "Relation connection is missing or cannot be accessed")
    placeholders = ", ".join("?" * len(ids))
    (found,) = tenant.conn.execute(f"SELECT COUNT(*) FROM {quote(target.name)} WHERE id IN ({placeholders})",
                                   ids).fetchone() or (0,)
    if found != len(ids):
        raise FieldError("validation_missing_rel_records",
                                "Failed to find all relation records with the provided ids")


def _check_auth_id(tenant: Tenant, collection: Collection, record_id: str) -> None:
    """Auth record ids are (loosely) unique across all auth collections."""
    for other in tenant.collections.values():
        if other.type != "auth" or other.id == collection.id:
            continue
        if tenant.conn.execute(f"SELECT 1 FROM {quote(other.name)} WHERE id = ? LIMIT 1", (record_id,)).fetchone():
            raise RecordValidationError({"id": {"code": "validation_invalid_auth_id",
                                                "message": "Invalid or duplicated auth record id."}})


def _unique_violation(collection: Collection, message: str, values: dict[str, Any]) -> dict[str, ErrorItem]:
    # "UNIQUE constraint failed: table.col1, table.col2"
    problem = ErrorItem(code="validation_not_unique", message="Value must be unique.")
    columns = [part.strip().split(".")[-1] for part in message.split(":", 1)[-1].split(",")]
    named = [c for c in columns if c in values or collection.field(c) is not None]
    return {name: ErrorItem(**problem) for name in named} or {"id": ErrorItem(**problem)}
