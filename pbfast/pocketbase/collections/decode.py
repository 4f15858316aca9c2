"""A collections API body bound onto a collection, as PocketBase decodes it into its model (fields
without an id, options merged key by key, wrong JSON types refused)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from pbfast.pocketbase.fields import Field, FieldSettingsError, decode_field
from pbfast.pocketbase.collections import system as S
from pbfast.pocketbase.collections.auth_options import AUTH_OPTION_KEYS, AuthOptions
from pbfast.pocketbase.collections.errors import decode_error
from pbfast.pocketbase.collections.model import RULE_KEYS, Collection

__all__ = ["apply_payload", "new_collection"]

def _merge(base: Any, patch: Any) -> Any:
    """JSON-decode-into-existing-struct semantics: objects merge key by key, everything else replaces."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(patch)


def _decode_fields(raw_fields: Any, previous: Sequence[Field]) -> list[Field]:
    """Decode a submitted ``fields`` list (PocketBase's ``FieldsList.UnmarshalJSON``): fields without an
    id get ``<type><crc32(name)>``, or - pbfast's data-preserving extension - the id of the existing field
    with the same name and type; a later field with the same name (and no id) replaces an earlier one."""
    if raw_fields is None:
        return []
    if not isinstance(raw_fields, list):
        raise decode_error("fields: expected an array")
    previous_by_name = {f.name: f for f in previous}
    decoded: list[Field] = []
    for raw in raw_fields:
        if isinstance(raw, Mapping) and not raw.get("id"):
            old = previous_by_name.get(raw.get("name"))  # type: ignore[arg-type]
            if old is not None and old.TYPE == raw.get("type") and not any(f.id == old.id for f in decoded):
                raw = {**raw, "id": old.id}
        try:
            definition = decode_field(raw, existing_ids=[f.id for f in decoded])
        except FieldSettingsError as err:
            raise decode_error(f"fields: {err}") from err
        explicit_id = isinstance(raw, Mapping) and bool(raw.get("id"))
        replaced = False
        for index, existing in enumerate(decoded):
            same = existing.id == definition.id if explicit_id else (
                definition.name != "" and existing.name == definition.name)
            if same:
                if not explicit_id:
                    definition.id = existing.id
                decoded[index] = definition
                replaced = True
                break
        if not replaced:
            decoded.append(definition)
    return decoded


def apply_payload(collection: Collection, payload: Mapping[str, Any], *, is_new: bool) -> None:
    """Bind a submitted JSON body onto ``collection`` the way PocketBase binds it onto its model."""
    if not isinstance(payload, Mapping):
        raise decode_error("the body must be an object")
    for key in ("id", "name", "type"):
        if key in payload:
            value = payload[key]
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise decode_error(f"{key}: expected a string")
            if key != "id" or is_new:
                setattr(collection, key, value)
            elif value != collection.id:
                collection.id = value  # rejected by validation (ids cannot change)
    if "system" in payload:
        if not isinstance(payload["system"], bool | None):
            raise decode_error("system: expected a boolean")
        collection.system = bool(payload["system"])
    for key in RULE_KEYS:
        if key in payload:
            value = payload[key]
            if value is not None and not isinstance(value, str):
                raise decode_error(f"{key}: expected a string or null")
            setattr(collection, key, value)
    if "indexes" in payload:
        indexes = payload["indexes"]
        if indexes is None:
            indexes = []
        if not isinstance(indexes, list) or not all(isinstance(i, str) for i in indexes):
            raise decode_error("indexes: expected an array of strings")
        collection.indexes = list(indexes)
    if "fields" in payload:
        collection.fields = _decode_fields(payload["fields"], collection.fields)
    if collection.type == "auth":
        patch = {k: payload[k] for k in AUTH_OPTION_KEYS if k in payload}
        for key in ("authRule", "manageRule"):
            if key in patch and patch[key] is not None and not isinstance(patch[key], str):
                raise decode_error(f"{key}: expected a string or null")
        for key, value in patch.items():
            if key not in ("authRule", "manageRule") and value is not None and not isinstance(value, dict):
                raise decode_error(f"{key}: expected an object")
        merged = _merge(collection.auth.to_json(), patch)
        if "oauth2" in patch and isinstance(patch["oauth2"], Mapping) and "providers" in patch["oauth2"]:
            providers = patch["oauth2"]["providers"]
            if providers is not None and not isinstance(providers, list):
                raise decode_error("oauth2.providers: expected an array")
        collection.auth = AuthOptions.from_json(merged)
    elif collection.type == "view":
        if "viewQuery" in payload:
            query = payload["viewQuery"]
            if query is not None and not isinstance(query, str):
                raise decode_error("viewQuery: expected a string")
            collection.view_query = query or ""


def new_collection(collection_type: str, name: str) -> Collection:
    """PocketBase's ``NewCollection``: defaults of the type (an unknown type gets base defaults)."""
    collection = Collection(id="", name=name, type=collection_type)
    if collection_type == "auth":
        collection.auth = AuthOptions.from_json(S.default_auth_options())
    return collection
