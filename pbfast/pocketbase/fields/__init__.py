"""PocketBase 0.40.6 collection field types (PocketBase's ``core/field_*.go``), one module per type behind
one :class:`Field` protocol (:mod:`.base`) and one registry (:mod:`.registry`).

Each type owns its definition (typed options, decoded from the API strictly and from ``_collections``
leniently, written back in PocketBase's shape), its settings validation, its column type, how a submitted
value is cast (``cast``: PocketBase's setters) and validated (``prepare``, raising :class:`FieldError` with
PocketBase's code, message and params), what the record API shows (``to_api``) and its modifiers
(``find_setter``: ``total+``, ``+tags``, ``slug:autogenerate`` ...). The casting rules were checked against
the stock 0.40.6 binary (``tests/pocketbase/test_fields.py``). Fields are plain data: safe from any thread.
"""

from pbfast.pocketbase.fields.autodate import AutodateField
from pbfast.pocketbase.fields.base import MISSING, Field, Missing, SettingsContext, Setter, Stored
from pbfast.pocketbase.fields.boolean import BoolField
from pbfast.pocketbase.fields.date import DateField
from pbfast.pocketbase.fields.editor import EditorField
from pbfast.pocketbase.fields.email import EmailField
from pbfast.pocketbase.fields.errors import ErrorData, ErrorItem, FieldError, FieldSettingsError
from pbfast.pocketbase.fields.file import FileField, UploadInfo
from pbfast.pocketbase.fields.geo_point import GeoPointField
from pbfast.pocketbase.fields.json import JsonField
from pbfast.pocketbase.fields.multi import MultiValueField
from pbfast.pocketbase.fields.number import NumberField
from pbfast.pocketbase.fields.password import PasswordField, PlainPassword
from pbfast.pocketbase.fields.registry import FIELD_TYPES, UnknownField, decode_field, field_id_for, load_field
from pbfast.pocketbase.fields.relation import RelationField
from pbfast.pocketbase.fields.select import SelectField
from pbfast.pocketbase.fields.text import DEFAULT_ID_PATTERN, TextField
from pbfast.pocketbase.fields.url import UrlField
from pbfast.pocketbase.fields.validators import is_email, is_url

__all__ = [
    "DEFAULT_ID_PATTERN",
    "FIELD_TYPES",
    "MISSING",
    "AutodateField",
    "BoolField",
    "DateField",
    "EditorField",
    "EmailField",
    "ErrorData",
    "ErrorItem",
    "Field",
    "FieldError",
    "FieldSettingsError",
    "FileField",
    "UploadInfo",
    "GeoPointField",
    "JsonField",
    "Missing",
    "MultiValueField",
    "NumberField",
    "PasswordField",
    "PlainPassword",
    "RelationField",
    "SelectField",
    "SettingsContext",
    "Setter",
    "Stored",
    "TextField",
    "UnknownField",
    "UrlField",
    "decode_field",
    "field_id_for",
    "is_email",
    "is_url",
    "load_field",
]
