"""Importing a whole collections configuration in one transaction (PocketBase's ``ImportCollections``,
``core/collection_import.go``), what ``PUT /api/collections/import`` runs.

Each imported collection is matched to a stored one by id, else by name; a match takes the imported data on
top of it (PATCH semantics for the keys sent), and keeps the stored fields the import does not name (unless
``deleteMissing``); the rest are new collections. Views are saved last (their queries may read the others).
With ``deleteMissing`` every stored non-system collection the import does not name is deleted first. All
collections are saved before any is validated, so they may refer to each other in any order; the first
validation failure rolls everything back.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import apsw

from pbfast.pocketbase.collections.decode import apply_payload, new_collection
from pbfast.pocketbase.collections.errors import CollectionValidationError, error_item
from pbfast.pocketbase.collections.model import Collection, load_collection, load_collections
from pbfast.pocketbase.collections.rules import check_api_rule
from pbfast.pocketbase.collections.service import (
    drop_collection,
    persist,
    prepare_new,
    prepare_update,
    resolve_view_fields,
    validation_errors,
)
from pbfast.pocketbase.collections.validate import RuleChecker
from pbfast.pocketbase.gocompat import go_quote
from pbfast.pocketbase.dbutils.transaction import sqlite_error_text, write_transaction

__all__ = ["IMPORT_FAILED", "import_collections"]

IMPORT_FAILED: Final = "Failed to import collections."
_FAILURE_CODE: Final = "validation_collections_import_failure"


def _failure(message: str) -> CollectionValidationError:
    return CollectionValidationError(IMPORT_FAILED, {"collections": error_item(_FAILURE_CODE, message)})  # sentenized


def _raw_failure(detail: str) -> CollectionValidationError:
    return _failure("Failed to import the collections configuration. Raw error:\n" + detail)


# ozzo-validation's own rules: their raw messages are lower case without a period ("cannot be blank"); the
# API shows them sentenized, the import message raw. PocketBase's own errors are written as sentences.
_OZZO_CODES: Final = frozenset({
    "validation_required", "validation_nil_or_not_empty_required", "validation_nil", "validation_empty",
    "validation_in_invalid", "validation_not_in_invalid", "validation_match_invalid",
    "validation_length_out_of_range", "validation_length_too_long", "validation_length_too_short",
    "validation_length_empty_required", "validation_length_invalid", "validation_min_greater_equal_than_required",
    "validation_max_less_equal_than_required", "validation_min_greater_than_required",
    "validation_max_less_than_required", "validation_date_invalid", "validation_date_out_of_range",
    "validation_multiple_of_invalid", "validation_each_invalid", "validation_key_invalid"})


def _raw_message(code: str, message: str) -> str:
    if code in _OZZO_CODES or code.startswith("validation_is_"):
        message = message[:1].lower() + message[1:]
        return message[:-1] if message.endswith(".") else message
    return message


def _go_error_json(errors: Mapping[str, Any]) -> str:
    """Validation errors as PocketBase serialises them in the import message (``json.MarshalIndent`` of
    ozzo-validation's ``Errors``: nested maps, each leaf its raw message, keys sorted, HTML characters
    escaped)."""
    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            if isinstance(value.get("code"), str) and isinstance(value.get("message"), str):
                return _raw_message(value["code"], value["message"])
            return {str(key): plain(item) for key, item in value.items()}
        return value

    text = json.dumps(plain(errors), indent=2, sort_keys=True, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                          ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def _imported(conn: apsw.Connection, data: dict[str, Any], delete_missing: bool) -> tuple[Collection, Collection | None]:
    """The collection ``data`` describes, and the stored one it updates (None: new)."""
    identifier = data.get("id") if isinstance(data.get("id"), str) and data.get("id") else data.get("name")
    existing = load_collection(conn, identifier) if isinstance(identifier, str) and identifier else None
    if existing is None:
        kind = str(data["type"]) if isinstance(data.get("type"), str) and data["type"] else "base"
        name = str(data["name"]) if isinstance(data.get("name"), str) else ""
        collection = new_collection(kind, name)
        apply_payload(collection, data, is_new=True)
        collection.type = collection.type or "base"
        prepare_new(conn, collection)
        return collection, None
    if data.get("fields") is None and delete_missing:
        data = {**data, "fields": []}
    collection = copy.deepcopy(existing)
    apply_payload(collection, data, is_new=False)
    for stored in existing.fields:  # the stored fields the import does not name are kept (not with deleteMissing)
        if delete_missing and not stored.system:
            continue
        if collection.field_by_id(stored.id) is None:
            same_name = collection.field(stored.name)
            if same_name is not None and same_name.TYPE == stored.TYPE:
                collection.fields[collection.fields.index(same_name)] = copy.deepcopy(stored)
            else:
                collection.fields.append(copy.deepcopy(stored))
    prepare_update(existing, collection)
    return collection, existing


def import_collections(conn: apsw.Connection, collections_data: Sequence[Mapping[str, Any]], delete_missing: bool,
                       *, check_rule: RuleChecker = check_api_rule) -> None:
    """Import ``collections_data`` (the ``collections`` of the request body). Raises
    :class:`CollectionValidationError` with PocketBase's ``collections`` error."""
    if not collections_data:
        raise _raw_failure("no collections to import")  # never all collections deleted by accident
    with write_transaction(conn):
        try:
            imports = [_imported(conn, dict(data), delete_missing) for data in collections_data]
        except CollectionValidationError as err:
            raise _raw_failure(err.message) from err
        imported_ids = {collection.id for collection, _ in imports}
        # Views last (their queries may read the others), then in the order they were made.
        imports.sort(key=lambda pair: (pair[0].type == "view", pair[0].created, pair[0].updated))
        stored = load_collections(conn)
        if delete_missing:
            for existing in sorted({c.id: c for c in stored.values()}.values(), key=lambda c: c.updated):
                if existing.id not in imported_ids and not existing.system:
                    drop_collection(conn, existing, stored)
        for collection, original in imports:
            try:
                resolve_view_fields(conn, collection, load_collections(conn))
                persist(conn, collection, original)
            except CollectionValidationError as err:  # its errors themselves (PocketBase unwraps them)
                raise CollectionValidationError(IMPORT_FAILED, err.data) from err
            except (apsw.Error, RuntimeError) as err:
                raise _raw_failure(f"failed to save collection {go_quote(collection.name)}: "
                                   f"{sqlite_error_text(err)}") from err
        others = load_collections(conn)
        for collection, original in imports:
            view_error = resolve_view_fields(conn, collection, others) if collection.type == "view" else None
            errors = validation_errors(conn, collection, original or collection, others, check_rule, view_error)
            if errors:
                raise _failure(f"Data validations failed for collection {go_quote(collection.name)} "
                               f"({collection.id}):\n{_go_error_json(errors)}")
