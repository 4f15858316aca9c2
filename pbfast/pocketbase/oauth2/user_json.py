"""A provider's JSON answers read as PocketBase 0.40 reads them: Go's ``encoding/json/v2`` into the provider's
struct (checked against stock PocketBase 0.40.6):

- the whole text must be valid JSON: no duplicate object names at any depth, no invalid UTF-8 or lone
  surrogates (:func:`parse`; difference: nesting deeper than :data:`MAX_DEPTH` is refused);
- names match the struct's JSON names exactly (case-sensitive: an untagged Go field matches only its Go name,
  which is how Planning Center's ``Attributes`` is spelled here);
- every field the struct declares is decoded, used or not, so a value of another type anywhere on those paths
  fails the login: a string field takes a string, an ``int64`` an integer literal in range (no fraction, no
  exponent), a ``bool`` ``true``/``false``; ``null`` or an absent name leave the zero value; an object on the
  path must be an object (or ``null``), a list a list.

:class:`DecodeError` is what every reader raises for such an answer (the login answers "Failed to fetch OAuth2
user." whatever the detail).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final, Literal

import orjson

from pbfast.pocketbase.gocompat.json_numbers import json_depth

__all__ = ["DecodeError", "Kind", "Path", "decode", "objects", "parse", "parse_object"]

Kind = Literal["string", "int64", "bool", "any"]
Path = Sequence[str]

MAX_DEPTH: Final = 200
"""Deeper answers are refused (Go takes up to 10000 levels; the login answer that carries ``rawUser`` must stay
within what orjson writes, and no provider nests that deep)."""
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


class DecodeError(Exception):
    """The answer is not the JSON the provider's struct takes."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> None:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise DecodeError("duplicate object member name")


def parse(body: bytes) -> Any:
    """Any JSON value (numbers: ``int`` for integer literals, ``float`` otherwise)."""
    try:
        value = orjson.loads(body)  # strict: invalid UTF-8, lone surrogates, NaN refused
    except orjson.JSONDecodeError as err:
        raise DecodeError(f"invalid JSON: {err}") from err
    if json_depth(value) > MAX_DEPTH:
        raise DecodeError("the answer is nested too deeply")
    if b'"' in body and _has_objects(value):  # duplicates are lost in orjson's dicts: look at the text again
        json.loads(body, object_pairs_hook=lambda pairs: _refuse_duplicates(pairs))
    return value


def _has_objects(value: Any) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict | list) for v in value))


def parse_object(body: bytes) -> dict[str, Any]:
    """PocketBase's ``rawUser``: the answer must be one JSON object."""
    value = parse(body)
    if not isinstance(value, dict):
        raise DecodeError("the answer is not a JSON object")
    return value


def _zero(kind: Kind) -> Any:
    return {"string": "", "int64": 0, "bool": False, "any": None}[kind]


def _as_kind(value: Any, kind: Kind, where: str) -> Any:
    if value is None or kind == "any":
        return _zero(kind) if value is None else value
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int64" and isinstance(value, int) and not isinstance(value, bool) and \
            _INT64_MIN <= value <= _INT64_MAX:
        return value
    raise DecodeError(f"cannot decode {where} into a Go {kind}")


def _struct_at(value: Any, path: Path) -> dict[str, Any]:
    """The object at ``path`` (``{}`` when absent or null); raises when something on the way is not one."""
    current: Any = value
    for depth, name in enumerate(path):
        if current is None:
            return {}
        if not isinstance(current, dict):
            raise DecodeError(f"cannot decode {'.'.join(path[:depth]) or 'the answer'} into a Go struct")
        current = current.get(name)
    if current is None:
        return {}
    if not isinstance(current, dict):
        raise DecodeError(f"cannot decode {'.'.join(path)} into a Go struct")
    return current


def decode(value: Any, fields: dict[tuple[str, ...], Kind]) -> dict[tuple[str, ...], Any]:
    """Each field path's value as the Go struct holds it after decoding (its zero value when absent)."""
    decoded: dict[tuple[str, ...], Any] = {}
    for path, kind in fields.items():
        holder = _struct_at(value, path[:-1])
        decoded[path] = _as_kind(holder.get(path[-1]), kind, ".".join(path))
    return decoded


def objects(value: Any, path: Path, fields: dict[tuple[str, ...], Kind]) -> list[dict[tuple[str, ...], Any]]:
    """The Go slice of structs at ``path`` (``[]`` when absent or null), each item decoded as :func:`decode`
    does (a null item: all zero values)."""
    holder = _struct_at(value, path[:-1]) if path else {"": value}
    items = holder.get(path[-1] if path else "")
    if items is None:
        return []
    if not isinstance(items, list):
        raise DecodeError(f"cannot decode {'.'.join(path) or 'the answer'} into a Go slice")
    return [decode(item, fields) for item in items]
