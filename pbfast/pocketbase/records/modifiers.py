"""A request body resolved against the current record (PocketBase's ``Record.ReplaceModifiers``): field
modifiers such as ``total+``, ``+tags`` or ``slug:autogenerate`` applied, and the record as it would be with
the body loaded (:func:`draft_row`, what a create rule is checked against)."""

from __future__ import annotations

from typing import Any

from pbfast.pocketbase import fields, gocompat
from pbfast.pocketbase.collections import Collection

__all__ = ["draft_row", "resolve_modifiers"]


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
                delta = gocompat.cast_to_float(raw)
                value = float(base) + delta if op == "+" else float(base) - delta
            elif field["type"] == "text":
                value = gocompat.cast_to_string(raw)
                pattern = field.get("autogeneratePattern") or ""
                if pattern:
                    value += gocompat.generate_by_pattern(str(pattern))
            else:
                existing = fields.relation_ids(field, base)
                extra = gocompat.to_unique_strings(raw)
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
