"""PocketBase's ``initDefaultFields``: the ``id`` primary key of every base/auth collection, and the
system fields and unique indexes of auth collections."""

from __future__ import annotations

from typing import Final

from pbfast.pocketbase.fields import DEFAULT_ID_PATTERN, Field, TextField, decode_field
from pbfast.pocketbase.collections.model import Collection
from pbfast.pocketbase.dbutils.index import single_column_unique_index

__all__ = ["SYSTEM_AUTH_FIELDS", "default_auth_field", "init_default_fields", "unset_missing_mapped_fields"]

SYSTEM_AUTH_FIELDS: Final = ("password", "tokenKey", "email", "emailVisibility", "verified")


def _default_id_field() -> Field:
    return decode_field({
        "name": "id", "type": "text", "system": True, "primaryKey": True, "required": True, "min": 15, "max": 15,
        "pattern": DEFAULT_ID_PATTERN, "autogeneratePattern": "[a-z0-9]{15}"})


def default_auth_field(name: str) -> Field:
    definitions: dict[str, dict[str, object]] = {
        "password": {"name": "password", "type": "password", "system": True, "hidden": True, "required": True,
                     "min": 8},
        "tokenKey": {"name": "tokenKey", "type": "text", "system": True, "hidden": True, "min": 30, "max": 60,
                     "required": True, "autogeneratePattern": "[a-zA-Z0-9]{50}"},
        "email": {"name": "email", "type": "email", "system": True, "required": True},
        "emailVisibility": {"name": "emailVisibility", "type": "bool", "system": True},
        "verified": {"name": "verified", "type": "bool", "system": True},
    }
    return decode_field(definitions[name])


def _field_index_name(collection: Collection, column: str) -> str:
    name = f"idx_{column}_{collection.id or collection.name}"
    return name[:64]


def init_default_fields(collection: Collection) -> None:
    """PocketBase's ``initDefaultFields``: the ``id`` primary key first; for auth collections the system
    ``password``, ``tokenKey``, ``email``, ``emailVisibility`` and ``verified`` fields (appended when
    missing, flags forced when present) and the unique ``tokenKey``/``email`` indexes."""
    if collection.type == "view":
        return
    id_field = collection.field("id")
    if not isinstance(id_field, TextField):
        collection.fields = [f for f in collection.fields if f.name != "id"]
        collection.fields.insert(0, _default_id_field())
    else:
        id_field.system = id_field.required = id_field.primary_key = True
        id_field.hidden = False
        if not id_field.pattern:
            id_field.pattern = DEFAULT_ID_PATTERN
    if collection.type != "auth":
        return
    forced: dict[str, dict[str, bool]] = {
        "password": {"system": True, "hidden": True, "required": True},
        "tokenKey": {"system": True, "hidden": True, "required": True},
        "email": {"system": True, "hidden": False},
        "emailVisibility": {"system": True},
        "verified": {"system": True},
    }
    expected_type = {"password": "password", "tokenKey": "text", "email": "email", "emailVisibility": "bool",
                     "verified": "bool"}
    for name in SYSTEM_AUTH_FIELDS:
        existing = collection.field(name)
        if existing is not None and existing.TYPE == expected_type[name]:
            for attribute, value in forced[name].items():
                setattr(existing, attribute, value)
        else:
            if existing is not None:
                collection.fields = [f for f in collection.fields if f is not existing]
            collection.fields.append(default_auth_field(name))
        if name == "tokenKey" and single_column_unique_index(collection.indexes, "tokenKey") is None:
            collection.indexes.append(
                f"CREATE UNIQUE INDEX `{_field_index_name(collection, 'tokenKey')}` ON `{collection.name}` (`tokenKey`)")
        if name == "email" and single_column_unique_index(collection.indexes, "email") is None:
            collection.indexes.append(
                f"CREATE UNIQUE INDEX `{_field_index_name(collection, 'email')}` ON `{collection.name}` "
                "(`email`) WHERE `email` != ''")


def unset_missing_mapped_fields(collection: Collection) -> None:
    mapped = collection.auth.oauth2.mapped_fields
    for key, value in list(mapped.items()):
        if value and collection.field(value) is None:
            mapped[key] = ""
