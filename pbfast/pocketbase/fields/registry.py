"""Every field type by name (PocketBase's ``core.Fields``), and a definition read from the API or from
``_collections`` as its typed :class:`~.base.Field`."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from pbfast.pocketbase.fields.autodate import AutodateField
from pbfast.pocketbase.fields.base import Field, Stored
from pbfast.pocketbase.fields.boolean import BoolField
from pbfast.pocketbase.fields.date import DateField
from pbfast.pocketbase.fields.editor import EditorField
from pbfast.pocketbase.fields.email import EmailField
from pbfast.pocketbase.fields.errors import FieldSettingsError
from pbfast.pocketbase.fields.file import FileField
from pbfast.pocketbase.fields.geo_point import GeoPointField
from pbfast.pocketbase.fields.json import JsonField
from pbfast.pocketbase.fields.number import NumberField
from pbfast.pocketbase.fields.password import PasswordField
from pbfast.pocketbase.fields.relation import RelationField
from pbfast.pocketbase.fields.select import SelectField
from pbfast.pocketbase.fields.text import TextField
from pbfast.pocketbase.fields.url import UrlField
from pbfast.pocketbase.gocompat import cast_to_string

__all__ = ["FIELD_TYPES", "UnknownField", "decode_field", "field_id_for", "load_field"]

FIELD_TYPES: Final[dict[str, type[Field]]] = {cls.TYPE: cls for cls in (
    TextField, NumberField, BoolField, EmailField, UrlField, EditorField, DateField, AutodateField, SelectField,
    JsonField, RelationField, PasswordField, FileField, GeoPointField,
)}


@dataclass(eq=True, kw_only=True)
class UnknownField(Field):
    """A stored field of a type this version does not know: kept as it is, refused for values."""

    raw: Mapping[str, object]

    @property
    def unknown_type(self) -> str:
        return str(self.raw.get("type", ""))

    def to_json(self) -> dict[str, object]:
        return dict(sorted(self.raw.items()))

    def column_type(self) -> str:
        raise ValueError(f"unknown field type {self.unknown_type!r} of field {self.name!r}")

    def typed(self, stored: Stored) -> object:
        return stored

    def cast_raw(self, raw: object) -> Stored:
        return cast_to_string(raw)

    def prepare(self, raw: object, **_: object) -> Stored:
        raise ValueError(f"unknown field type {self.unknown_type!r} of field {self.name!r}")


def field_id_for(field_type: str, name: str) -> str:
    """PocketBase's generated field id: the type followed by the decimal CRC-32 (IEEE) of the name."""
    return f"{field_type}{zlib.crc32(name.encode())}"


def decode_field(raw: object, existing_ids: Iterable[str] = ()) -> Field:
    """A field submitted in a collection create/update (PocketBase's ``FieldsList.UnmarshalJSON`` for one
    item): options type-checked (a wrong type or an unknown/missing ``type`` raises
    :class:`FieldSettingsError`), and a missing ``id`` becomes ``<type><crc32(name)>`` (``2``, ``3``...
    appended while it collides with ``existing_ids``). The option *values* are validated later
    (:meth:`Field.validate_settings`)."""
    if not isinstance(raw, Mapping):
        raise FieldSettingsError("a field must be an object")
    field_type = raw.get("type")
    cls = FIELD_TYPES.get(field_type) if isinstance(field_type, str) else None
    if cls is None:
        raise FieldSettingsError(f"missing or unknown field type {field_type!r}")
    field = cls.decode(raw)
    if not field.id:
        taken = set(existing_ids)
        base = field_id_for(cls.TYPE, field.name)
        candidate = base
        for suffix in range(2, 1000):
            if candidate not in taken:
                break
            candidate = f"{base}{suffix}"
        field.id = candidate
    return field


def load_field(raw: Mapping[str, object]) -> Field:
    """A field as ``_collections`` stores it (unknown types kept as :class:`UnknownField`)."""
    cls = FIELD_TYPES.get(str(raw.get("type", "")))
    if cls is None:
        return UnknownField(id=str(raw.get("id") or ""), name=str(raw.get("name") or ""), raw=dict(raw))
    return cls.load(raw)
