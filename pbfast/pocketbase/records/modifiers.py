"""A request body resolved against the current record (PocketBase's ``Record.ReplaceModifiers``): field
modifiers such as ``total+``, ``+tags`` or ``slug:autogenerate`` applied, and the record as it would be with
the body loaded (:func:`draft_row`, what a create rule is checked against)."""

from __future__ import annotations

from typing import Any

from pbfast.pocketbase.fields import MISSING, Field, PasswordField, PlainPassword, Setter
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.records.find import Row

__all__ = ["draft_row", "resolve_modifiers"]


def _fields_by_name(collection: Collection) -> dict[str, Field]:
    """The collection's fields by name (the first of a name, as :meth:`Collection.field` finds it), made once per
    loaded collection (a collection is never changed once loaded: an update loads a new one) instead of a scan
    of the fields per body key."""
    known = _by_name.get(id(collection))
    if known is not None and known[0] is collection:
        return known[1]
    by_name: dict[str, Field] = {}
    for field in collection.fields:
        by_name.setdefault(field.name, field)
    if len(_by_name) >= _BY_NAME_KEPT:
        _by_name.clear()
    _by_name[id(collection)] = (collection, by_name)  # the collection held: its id is not reused meanwhile
    return by_name


_BY_NAME_KEPT = 1024
_by_name: dict[int, tuple[Collection, dict[str, Field]]] = {}


def _modifier_target(by_name: dict[str, Field], key: str) -> tuple[Field, Setter | None] | None:
    """The field a body key sets (``by_name``: the collection's fields by name), and the modifier it applies
    (None: a plain set); None for keys that are not fields. Each field type knows its own modifier keys
    (:meth:`Field.find_setter`)."""
    field = by_name.get(key)
    if field is not None:
        return field, None
    if key.startswith("+"):
        name = key[1:]
    elif key.endswith(":autogenerate"):
        name = key[:-len(":autogenerate")]
    elif key[-1:] in ("+", "-"):
        name = key[:-1]
    else:
        return None
    field = by_name.get(name)
    setter = field.find_setter(key) if field is not None else None
    return None if field is None or setter is None else (field, setter)


def resolve_modifiers(collection: Collection, body: dict[str, Any], current: Row | None) -> dict[str, Any]:
    """PocketBase's ``Record.ReplaceModifiers``: every key naming a field (plain or with a modifier:
    ``name+``/``name-`` for numbers, ``+name``/``name+``/``name-`` for select/relation/file,
    ``name:autogenerate`` for text) is applied, in order of key length, to a copy of the record and
    replaced by the field's resulting value under the plain field name (as the API would show it; a
    password stays the submitted plain text). Other keys are kept as they are."""
    out = dict(body)
    working: dict[str, Any] = dict(current or {})
    is_new = current is None
    by_name = _fields_by_name(collection)  # once per body, not per key
    for key in sorted(body, key=len):
        target = _modifier_target(by_name, key)
        if target is None:
            continue
        field, setter = target
        name = field.name
        del out[key]
        raw = body[key]
        previous = working.get(name, MISSING)
        if setter is None:
            value = field.cast(raw, current=previous, is_new=is_new)
        else:
            base = field.cast(MISSING, current=previous, is_new=is_new and previous is MISSING)
            value = setter(base, raw)
        working[name] = value
        out[name] = str(value) if isinstance(field, PasswordField) else field.to_api(value)
    return out


def draft_row(collection: Collection, data: dict[str, Any], current: Row | None) -> Row:
    """The record as it would be with ``data`` loaded, not validated (what PocketBase checks a create
    rule against): every field's column value."""
    row: Row = {}
    for field in collection.fields:
        name = field.name
        previous = MISSING if current is None else current.get(name, MISSING)
        value = field.cast(data.get(name, MISSING), current=previous, is_new=current is None)
        row[name] = str(value) if isinstance(value, PlainPassword) else value
    return row
