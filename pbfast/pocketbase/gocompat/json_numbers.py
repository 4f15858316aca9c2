"""Go's numbers as PocketBase writes them: ``strconv.FormatFloat``, how ``encoding/json`` writes a float64, and
values nested deeper than orjson writes.

Pure functions (caches are thread-safe): safe from any thread.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Final

import orjson


_EXACT_INT_LIMIT: Final = 2**53  # every integer up to here is a float64 whose shortest digits are all of it


class GoWholeFloat(float):
    """A whole float64 from 2**53 up to 1e21, which Go's JSON encoder writes without an exponent as its
    shortest digits padded with zeros (``18446744073709552000``). As an ``int`` it would show other digits
    (``18446744073709551616``) and orjson cannot write ints past 64 bits at all, so it stays a float and is
    written by :func:`go_json_default` (pass ``default=go_json_default`` to ``orjson.dumps``)."""

    __slots__ = ()


class DeepJson:
    """A JSON field's valid JSON text nested deeper than orjson writes (:data:`ORJSON_MAX_DEPTH`): handed
    out as it is and written as it is (by :func:`go_json_default`)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


_MIN_INT64, _MAX_UINT64 = -(2**63), 2**64 - 1


def decoded_float(text: str) -> float:
    """A JSON number read as a float64 (``json.JSONDecoder``'s ``parse_float``): ValueError beyond float64's
    range, which Go's decoder refuses too."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a float64")
    return value


def decoded_int(text: str) -> int | float:
    """A JSON integer as orjson reads it (``parse_int`` of the slow paths, so both paths agree): an int
    within int64/uint64, a float64 beyond."""
    value = int(text)
    return value if _MIN_INT64 <= value <= _MAX_UINT64 else decoded_float(text)


def go_json_default(value: Any) -> Any:
    """``orjson.dumps`` ``default`` hook for the values this module hands out (:class:`GoWholeFloat`,
    :class:`DeepJson`)."""
    if isinstance(value, GoWholeFloat):
        return orjson.Fragment(format_float_f(value).encode())
    if isinstance(value, DeepJson):
        return orjson.Fragment(value.text.encode())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_number(value: Any) -> Any:
    """A float64 as Go's JSON encoder would show it: integral values without a fraction."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
        return int(value) if abs(value) <= _EXACT_INT_LIMIT else GoWholeFloat(value)
    return value


ORJSON_MAX_DEPTH: Final = 254
"""The deepest nesting ``orjson.dumps`` writes (it refuses deeper values)."""


def json_depth(value: Any) -> int:
    """How deeply a decoded JSON value nests arrays and objects (a scalar is 0), without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        depth += 1
        deepest = max(deepest, depth)
        pending.extend((child, depth) for child in item if isinstance(child, dict | list))
    return deepest


def go_format_float(value: float, fmt: str) -> str:
    """``strconv.FormatFloat(value, fmt, -1, 64)`` for ``fmt`` ``'f'`` or ``'g'`` (shortest digits; ``'g'``
    switches to the exponent form for decimal exponents < -4 or >= 6, like Go)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if fmt == "f":
        return format_float_f(value)
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    exp10 = len(digit_tuple) + int(exponent) - 1
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= _G_EXPONENT_THRESHOLD:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    return format_float_f(value)


_G_EXPONENT_THRESHOLD: Final = 6


def format_float_f(value: float) -> str:
    """``strconv.FormatFloat(value, 'f', -1, 64)`` (what ``cast.ToString`` gives for a float64)."""
    if not math.isfinite(value):
        return go_format_float(value, "g")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
