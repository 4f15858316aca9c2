"""The Field protocol every field type implements (PocketBase's ``core.Field``), its common settings
(``id``, ``name``, ``system``, ``hidden``, ``presentable``) and how a type declares its options.

A field type is a dataclass: its options are dataclass fields declared with :func:`option`, which names the
option's JSON key and its kind (:class:`Kind`), so one generic codec reads a definition from the API
(strictly, as PocketBase's JSON decoding does) or from ``_collections`` (leniently) and writes it back in
PocketBase's shape (:meth:`Field.to_json`: every option, keys sorted).

Values: a *stored* value is what the column holds (``str``, ``float``, ``int``, JSON text or None); the
*raw* value is what a client sent (decoded JSON), or :data:`MISSING` when the key was absent.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from pbfast.pocketbase.fields.errors import ErrorItem, FieldError, FieldSettingsError, length_error, name_error, required
from pbfast.pocketbase.gocompat import format_datetime_value, json_number, parse_datetime

__all__ = ["MISSING", "Field", "Kind", "Missing", "SettingsContext", "Setter", "Stored", "option"]


class Missing:
    """Sentinel type for "no value was submitted" (distinct from an explicit ``null``)."""

    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = Missing()

Stored = Any
"""A column value as SQLite holds it (``str``, ``float``, ``int``, ``bytes`` or None)."""

Setter = Callable[[Stored, object], Stored]
"""A field modifier (``total+``, ``+tags`` ...): the new stored value from the current one and the raw value."""


class Kind(enum.Enum):
    """How an option is decoded from JSON and written back."""

    STR = "str"
    BOOL = "bool"
    INT = "int"
    STRLIST = "strlist"
    NUMBER = "number"  # float or null (a number field's min/max)
    DATE = "date"  # a datetime in PocketBase's layout, or "" (a date field's min/max)


_ZERO: Final[dict[Kind, Callable[[], object]]] = {
    Kind.STR: str, Kind.BOOL: bool, Kind.INT: int, Kind.STRLIST: list, Kind.NUMBER: lambda: None, Kind.DATE: str,
}


def option(json_name: str, kind: Kind) -> Any:
    """A dataclass field for the option ``json_name`` with the zero value of its ``kind``."""
    return dataclasses.field(default_factory=_ZERO[kind], metadata={"json": json_name, "kind": kind})


def _decode_fail(detail: str) -> FieldSettingsError:
    return FieldSettingsError(detail)


def _decode_strict(key: str, kind: Kind, value: object) -> object:
    """A submitted option converted to the Go type PocketBase decodes it into (or a decode failure)."""
    if kind is Kind.NUMBER:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _decode_fail(f"{key}: expected a number or null")
        return float(value)
    if kind is Kind.DATE:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _decode_fail(f"{key}: expected a date string")
        return format_datetime_value(parse_datetime(value))
    if value is None:
        return _ZERO[kind]()
    if kind is Kind.STR:
        if not isinstance(value, str):
            raise _decode_fail(f"{key}: expected a string")
        return value
    if kind is Kind.BOOL:
        if not isinstance(value, bool):
            raise _decode_fail(f"{key}: expected a boolean")
        return value
    if kind is Kind.INT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _decode_fail(f"{key}: expected an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise _decode_fail(f"{key}: expected an integer")
            return int(value)
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _decode_fail(f"{key}: expected a list of strings")
    return list(value)


def _decode_lenient(kind: Kind, value: object) -> object:
    """A stored option in its Go type (``_collections`` was written by PocketBase or pbfast: a value of
    another type falls back to the zero value)."""
    if value is None:
        return _ZERO[kind]()
    if kind is Kind.NUMBER:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind is Kind.DATE:
        return format_datetime_value(parse_datetime(value)) if isinstance(value, str) else ""
    if kind is Kind.STR:
        return value if isinstance(value, str) else _ZERO[kind]()
    if kind is Kind.BOOL:
        return bool(value)
    if kind is Kind.INT:
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
    return [str(v) for v in value] if isinstance(value, list) else []


@dataclass(frozen=True)
class SettingsContext:
    """What a field's settings validation needs to know about the collection being saved."""

    collection_fields: Sequence[Field] = ()
    collection_type: str = "base"
    old_field: Field | None = None  # the stored field with the same id (on updates)
    collection_exists: Callable[[str], bool] | None = None
    is_view_collection: Callable[[str], bool] | None = None


@dataclass(eq=True, kw_only=True)
class Field:
    """A collection field. Subclasses set :attr:`TYPE`, declare their options with :func:`option` and
    implement the value methods; the common settings are here."""

    TYPE: ClassVar[str] = ""
    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("hidden", "id", "name", "presentable", "system")

    id: str = ""
    name: str = ""
    system: bool = False
    hidden: bool = False
    presentable: bool = False

    # ---- definition ------------------------------------------------------------------------------------

    @classmethod
    def _options(cls) -> list[dataclasses.Field[Any]]:
        return [f for f in dataclasses.fields(cls) if "json" in f.metadata]

    @classmethod
    def decode(cls, raw: Mapping[str, object]) -> Field:
        """A definition submitted to the collections API: present options type-checked as PocketBase's JSON
        decoding checks them (:class:`FieldSettingsError`), absent ones zero, unknown keys dropped."""
        values: dict[str, object] = {}
        for key, attr in (("id", "id"), ("name", "name")):
            if key in raw:
                values[attr] = _decode_strict(key, Kind.STR, raw[key])
        for key in ("system", "hidden", "presentable"):
            if key in raw:
                values[key] = _decode_strict(key, Kind.BOOL, raw[key])
        for spec in cls._options():
            key = spec.metadata["json"]
            if key in raw:
                values[spec.name] = _decode_strict(key, spec.metadata["kind"], raw[key])
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def load(cls, raw: Mapping[str, object]) -> Field:
        """A definition read from ``_collections`` (lenient: wrong types become zero values)."""
        values: dict[str, object] = {"id": str(raw.get("id") or ""), "name": str(raw.get("name") or "")}
        for key in ("system", "hidden", "presentable"):
            values[key] = bool(raw.get(key) or False)
        for spec in cls._options():
            values[spec.name] = _decode_lenient(spec.metadata["kind"], raw.get(spec.metadata["json"]))
        return cls(**values)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        """The definition in PocketBase's shape (as ``_collections`` stores it and the API shows it): every
        option, keys sorted."""
        result: dict[str, object] = {"hidden": self.hidden, "id": self.id, "name": self.name,
                                     "presentable": self.presentable, "system": self.system, "type": self.TYPE}
        for spec in self._options():
            value = getattr(self, spec.name)
            if spec.metadata["kind"] is Kind.NUMBER:
                value = None if value is None else json_number(value)
            elif isinstance(value, list):
                value = list(value)
            result[spec.metadata["json"]] = value
        return dict(sorted(result.items()))

    # ---- settings --------------------------------------------------------------------------------------

    def validate_settings(self, context: SettingsContext) -> dict[str, ErrorItem | dict[str, ErrorItem]]:
        """PocketBase's ``ValidateSettings``: ``{option: error item}`` (empty when valid)."""
        errors: dict[str, ErrorItem | dict[str, ErrorItem]] = {}

        def put(key: str, error: ErrorItem | dict[str, ErrorItem] | None) -> None:
            if error and key not in errors:
                errors[key] = error

        put("id", required().to_dict() if self.id == "" else length_error(self.id, 1, 100))
        put("name", name_error(self.name))
        help_text = getattr(self, "help", None)
        if isinstance(help_text, str):
            put("help", length_error(help_text, 1, 300))
        self.validate_options(context, put)
        return errors

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        """The type's own settings checks (``put(option, error)`` keeps the first error of each option)."""

    # ---- storage ---------------------------------------------------------------------------------------

    def column_type(self) -> str:
        """The column definition PocketBase 0.40.6 gives the field (``Field.ColumnType``)."""
        return "TEXT DEFAULT '' NOT NULL"

    def is_multiple(self) -> bool:
        """True for fields storing several values (a JSON array); see :class:`~.multi.MultiValueField`."""
        return False

    def max_body_size(self) -> int:
        """How much a request body may carry for this field beyond the default limit (files)."""
        return 0

    # ---- values ----------------------------------------------------------------------------------------

    def typed(self, stored: Stored) -> Any:
        """A stored column value as the typed value PocketBase holds after loading the record."""
        raise NotImplementedError

    def storage(self, typed: Any) -> Stored:
        """A typed value (see :meth:`typed`) back in storage form."""
        return typed

    def cast_raw(self, raw: object) -> Stored:
        """A submitted value (None for a new record's default) in storage form, not validated."""
        raise NotImplementedError

    def cast(self, raw: object, *, current: Stored | Missing = MISSING, is_new: bool) -> Stored:
        """A submitted value cast to its storage form WITHOUT validating it (PocketBase's field setters, as
        ``Record.Set`` applies them when a request body is loaded, before any validation). ``raw``
        :data:`MISSING` keeps ``current`` (or gives a new record the field's zero value)."""
        if raw is MISSING:
            if not is_new and current is not MISSING:
                return self.storage(self.typed(current))
            raw = None
        return self.cast_raw(raw)

    def prepare(self, raw: object, *, current: Stored | Missing = MISSING, is_new: bool,
                uploaded: Sequence[str] = ()) -> Stored:
        """Cast, default and validate a submitted value; return what to store in the field's column.

        ``raw`` :data:`MISSING` (the key was absent): a new record gets the field's zero value, an existing
        one keeps ``current``, which is validated again as PocketBase does on every save. Raises
        :class:`FieldError` with PocketBase's code, message and params."""
        if raw is MISSING:
            if is_new or current is MISSING:
                raw = None
            else:
                return self.revalidate(current)
        return self.prepare_submitted(raw, current, is_new, uploaded)

    def revalidate(self, current: Stored) -> Stored:
        """Validate an unchanged stored value and return it in storage form."""
        return self.finish(self.typed(current))

    def prepare_submitted(self, raw: object, current: Stored | Missing, is_new: bool,
                          uploaded: Sequence[str]) -> Stored:
        """Validate a submitted value (None: a new record's default) and return its storage form."""
        return self.finish(self.typed_input(raw))

    def typed_input(self, raw: object) -> Any:
        """A submitted value cast to the field's typed value."""
        raise NotImplementedError

    def finish(self, value: Any) -> Stored:
        """Validate a typed value and convert it to its storage form."""
        raise NotImplementedError

    def to_api(self, stored: Stored) -> object:
        """The JSON value PocketBase's record API shows for a stored column value."""
        return self.typed(stored)

    def find_setter(self, key: str) -> Setter | None:
        """The modifier a body key other than the field's name applies (``total+``, ``+tags`` ...), if any."""
        return None

    # ---- shared checks ---------------------------------------------------------------------------------

    def check_required(self, empty: bool) -> None:
        if empty and getattr(self, "required", False):
            raise required()


def field_error(code: str, message: str, params: Mapping[str, object] | None = None) -> FieldError:
    return FieldError(code, message, params)
