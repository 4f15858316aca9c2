"""``spf13/cast`` as PocketBase uses it on decoded JSON, ``list.ToUniqueStringSlice``, and how ``database/sql``
scans a column into a string.

Pure functions (caches are thread-safe): safe from any thread.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from pbfast.pocketbase.gocompat.json_numbers import format_float_f, go_format_float
from pbfast.pocketbase.gocompat.strconv import TRUE_STRINGS


def as_float64(value: int) -> float:
    """A JSON integer as PocketBase sees it: decoded into a Go float64."""
    try:
        return float(value)
    except OverflowError:
        return math.copysign(math.inf, value)


def cast_to_string(value: Any) -> str:
    """``cast.ToString`` for values decoded from JSON (numbers arrive as float64 in PocketBase)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return format_float_f(as_float64(value))
    if isinstance(value, float):
        return format_float_f(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return ""


_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:\d(?:_?\d)*)?\.?\d(?:_?\d)*(?:[eE][+-]?\d(?:_?\d)*)?|\d(?:_?\d)*\.(?:[eE][+-]?\d+)?"
    r"|inf(?:inity)?|nan)",
    re.IGNORECASE,
)


def cast_to_float(value: Any) -> float:
    """``cast.ToFloat64``: numbers, booleans (1/0) and Go-parsable numeric strings; anything else is 0."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        return as_float64(value)
    if isinstance(value, float):
        return value
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        if not _GO_FLOAT.fullmatch(value):
            return 0.0
        try:
            return float(value.replace("_", ""))
        except (ValueError, OverflowError):
            return 0.0
    return 0.0


def cast_to_bool(value: Any) -> bool:
    """``cast.ToBool``: numbers by non-zero, strings by ``strconv.ParseBool`` (else false)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value in TRUE_STRINGS
    return False


def to_unique_strings(value: Any) -> list[str]:
    """PocketBase's ``list.ToUniqueStringSlice``: a string holding a JSON array is parsed, a plain
    string is one item, lists are cast item by item; empty strings and duplicates are dropped."""
    items: list[str] = []
    if value is None:
        items = []
    elif isinstance(value, str):
        if value:
            if "[" in value:
                try:
                    parsed = orjson.loads(value)
                except orjson.JSONDecodeError:
                    parsed = None
                if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
                    items = parsed
                elif parsed is None and value.strip() == "null":
                    items = []
                else:
                    items = [value]
            else:
                items = [value]
    elif isinstance(value, list | tuple):
        items = [cast_to_string(v) for v in value]
    elif isinstance(value, dict):
        items = []
    else:
        items = [cast_to_string(value)]
    seen: set[str] = set()
    unique: list[str] = []
    for item in items:
        if item and item not in seen:
            seen.add(item)
            unique.append(item)
    return unique


def stored_to_string(stored: Any) -> str | None:
    """A column value as PocketBase reads it back (``database/sql`` scans every column into a string)."""
    if stored is None:
        return None
    if isinstance(stored, str):
        return stored
    if isinstance(stored, bool):
        return "true" if stored else "false"
    if isinstance(stored, int):
        return str(stored)
    if isinstance(stored, float):
        return go_format_float(stored, "g")
    if isinstance(stored, bytes | bytearray | memoryview):
        return bytes(stored).decode("utf-8", errors="replace")
    return cast_to_string(stored)


def go_string(value: Any) -> str:
    """``cast.ToString`` of a Go value of the same type (an int stays exact; see :func:`cast_to_string`
    for values decoded from JSON, whose numbers were float64 in PocketBase)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str | bool | float | bytes) or value is None:
        return cast_to_string(value)
    return ""
