"""Go's behaviour, emulated in one place: what PocketBase (Go) does that Python does differently.

* numbers: ``strconv.FormatFloat`` (:func:`go_format_float`), how ``encoding/json`` writes a float64
  (:func:`json_number`, :class:`GoWholeFloat`) and values nested deeper than orjson writes (:class:`DeepJson`);
* casting (``spf13/cast`` as PocketBase uses it on decoded JSON): :func:`cast_to_string`, :func:`cast_to_float`,
  :func:`cast_to_bool`, :func:`cast_to_int`, ``list.ToUniqueStringSlice`` (:func:`to_unique_strings`), and how
  ``database/sql`` scans a column into a string (:func:`stored_to_string`);
* ``strconv``: :func:`atoi`, :func:`parse_bool`, :func:`parse_float`, ``%q`` (:func:`go_quote`),
  ``strings.TrimSpace`` (:func:`trim_space`);
* time: ``types.ParseDateTime``/``cast.ToTime`` (:func:`parse_datetime`), PocketBase's datetime layout
  (:func:`format_datetime_value`), ``time.Time.String()`` and its JSON form;
* regular expressions: RE2-like matching of field patterns (:func:`regex_search`, :func:`regex_error`) and
  ``security.RandomStringByRegex`` (:func:`generate_by_pattern`, through Python's private ``re._parser``).

Pure functions (caches are thread-safe): safe from any thread.
"""

from __future__ import annotations

import functools
import math
import re
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
import secrets
import string
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final

import orjson

__all__ = [
    "ORJSON_MAX_DEPTH",
    "DeepJson",
    "GoWholeFloat",
    "as_float64",
    "atoi",
    "cast_to_bool",
    "cast_to_float",
    "cast_to_int",
    "cast_to_string",
    "format_datetime_value",
    "format_float_f",
    "generate_by_pattern",
    "go_format_float",
    "go_json_default",
    "go_quote",
    "go_string",
    "json_depth",
    "json_number",
    "parse_bool",
    "parse_datetime",
    "parse_float",
    "regex_error",
    "regex_search",
    "stored_datetime_text",
    "stored_to_string",
    "time_json",
    "time_string",
    "to_unique_strings",
    "trim_space",
]

# ------------------------------------------------------------------------------------------- numbers


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


# ------------------------------------------------------------------------------------------- casting


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


_TRUE_STRINGS: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})


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
        return value in _TRUE_STRINGS
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


# ------------------------------------------------------------------------------------------- strconv

_FALSE_STRINGS: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_ATOI_RE: Final = re.compile(r"[+-]?[0-9]+")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def parse_bool(raw: str) -> bool | None:
    """``strconv.ParseBool``: None for anything it refuses."""
    if raw in _TRUE_STRINGS:
        return True
    if raw in _FALSE_STRINGS:
        return False
    return None


def atoi(raw: str) -> int:
    """``strconv.Atoi`` (base 10, an optional sign, no spaces, int64 range); raises ``ValueError``."""
    if not _ATOI_RE.fullmatch(raw):
        raise ValueError(f"invalid syntax {raw!r}")
    value = int(raw)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"value out of range {raw!r}")
    return value


def cast_to_int(raw: str) -> int:
    """``cast.ToInt`` for a string: base-0 integer syntax after dropping a ``.digits`` tail; 0 if invalid."""
    match = re.fullmatch(r"(.*)\.[0-9]*", raw)
    text = match.group(1) if match else raw
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    base = 10
    lower = text[:2].lower()
    if lower in ("0x", "0b", "0o"):
        base = {"0x": 16, "0b": 2, "0o": 8}[lower]
        text = text[2:]
        if text.startswith("_"):
            text = text[1:]
    elif len(text) > 1 and text[0] == "0":
        base = 8
        text = text[1:].removeprefix("_")
    if not text or not re.fullmatch(r"[0-9A-Za-z]+(_[0-9A-Za-z]+)*", text):
        return 0
    try:
        value = sign * int(text.replace("_", ""), base)
    except ValueError:
        return 0
    return value if _INT64_MIN <= value <= _INT64_MAX else 0


def parse_float(text: str) -> float | None:
    """``strconv.ParseFloat`` (as far as the filter's ``@request.*`` numbers need it): None if refused."""
    if not text or text != text.strip() or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


_GO_ESCAPES: Final = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                      "\v": "\\v"}


def go_quote(value: Any) -> str:
    """``value`` formatted as Go's ``%q`` does (``strconv.Quote``): double quotes, Go escapes."""
    out = ['"']
    for ch in str(value):
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_SPACE: Final = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009" \
                   "\u200a\u2028\u2029\u202f\u205f\u3000"


def trim_space(text: str) -> str:
    """``strings.TrimSpace`` (Unicode white space)."""
    return text.strip(_GO_SPACE)


# ------------------------------------------------------------------------------------------- dates


_ISO_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"(?:(Z)|\s?([+-])(\d{2}):?(\d{2})(?:\s+[A-Za-z]{3,5})?|\s+(?:UTC|GMT|[A-Z]{3,5}))?)?"
)
_MONTHS: Final = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_DAY_MONTH_YEAR = re.compile(
    r"(?:[A-Z][a-z]{2},\s+)?(\d{1,2})\s+([A-Z][a-z]{2})\s+(\d{4})"
    r"(?:\s+(\d{2}):(\d{2})(?::(\d{2}))?\s*(?:([+-])(\d{2})(\d{2})|(?:UTC|GMT|[A-Z]{3,5}))?)?"
)


def _build_datetime(year: str, month: int, day: str, hour: str | None, minute: str | None, second: str | None,
                    fraction: str | None, sign: str | None, tz_hours: str | None, tz_minutes: str | None,
                    ) -> datetime | None:
    try:
        zone = UTC
        if sign and tz_hours is not None:
            offset = timedelta(hours=int(tz_hours), minutes=int(tz_minutes or 0))
            zone = timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        moment = datetime(int(year), month, int(day), int(hour or 0), int(minute or 0), int(second or 0),
                          micro, tzinfo=zone)
    except ValueError:
        return None
    return moment.astimezone(UTC)


def parse_datetime(value: Any) -> datetime | None:
    """PocketBase's ``types.ParseDateTime``: a UTC datetime, or None for the zero (empty/unparsable) date.

    Accepts ``2006-01-02 15:04:05.000Z`` and the other layouts ``cast.ToTime`` knows that matter in
    practice: RFC 3339 with ``T`` or a space, optional fraction and zone (``Z``, ``+07:00``, ``+0700``),
    bare dates, ``02 Jan 2006`` and RFC 1123 dates. Numbers are not dates (PocketBase sees them as
    float64 and cannot parse ``"1.7e+09"``).
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    match = _ISO_DATETIME.fullmatch(value)
    if match:
        year, month, day, hour, minute, second, fraction, _zulu, sign, tz_h, tz_m = match.groups()
        return _build_datetime(year, int(month), day, hour, minute, second, fraction, sign, tz_h, tz_m)
    match = _DAY_MONTH_YEAR.fullmatch(value)
    if match:
        day, month_name, year, hour, minute, second, sign, tz_h, tz_m = match.groups()
        month = _MONTHS.get(month_name)
        if month is None:
            return None
        return _build_datetime(year, month, day, hour, minute, second, None, sign, tz_h, tz_m)
    return None


# A text already in PocketBase's layout whose parse and format give it back unchanged: a four-digit year from
# 1000 (Python writes smaller years unpadded), and a day every month has (29-31 take the long way).
_CANONICAL_DATETIME = re.compile(
    r"[1-9]\d{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8]) (?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z")


def stored_datetime_text(stored: Any) -> str:
    """A stored date column as PocketBase shows it (``2006-01-02 15:04:05.000Z``, "" for the zero date):
    ``format_datetime_value(parse_datetime(stored_to_string(stored)))``, without the round trip for a text
    already in that form (what pbfast and PocketBase store)."""
    if type(stored) is str and _CANONICAL_DATETIME.fullmatch(stored):
        return stored
    return format_datetime_value(parse_datetime(stored_to_string(stored)))


def format_datetime_value(moment: datetime | None) -> str:
    """A datetime in PocketBase's ``2006-01-02 15:04:05.000Z`` layout ("" for the zero date)."""
    if moment is None:
        return ""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def time_string(moment: datetime) -> str:
    """Go's ``time.Time.String()`` for a UTC time (used in ozzo's date threshold messages)."""
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += ("." + f"{moment.microsecond:06d}").rstrip("0")
    return text + " +0000 UTC"


def time_json(moment: datetime) -> str:
    """Go's RFC 3339 JSON form of a UTC time (``2020-01-01T00:00:00Z``)."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += ("." + f"{moment.microsecond:06d}").rstrip("0")
    return text + "Z"

# ------------------------------------------------------------------------------------ regexes


@functools.lru_cache(maxsize=512)
def _compiled_regex(pattern: str) -> re.Pattern[str]:
    """A field pattern compiled with Go RE2-like semantics for ASCII classes (``\\w``, ``\\d``, ``\\s``)."""
    return re.compile(pattern, re.ASCII)


def regex_error(pattern: str) -> str | None:
    """None if ``pattern`` compiles, else the compile error text."""
    try:
        _compiled_regex(pattern)
    except (re.error, RecursionError, OverflowError) as err:
        return f"error parsing regexp: {err}"
    return None


def regex_search(pattern: str, value: str) -> bool:
    """``regexp.MatchString(pattern, value)`` - an unanchored search; an invalid pattern never matches."""
    try:
        return _compiled_regex(pattern).search(value) is not None
    except (re.error, RecursionError, OverflowError):
        return False


_CATEGORY_CHARS: Final = {
    sre_constants.CATEGORY_DIGIT: string.digits,
    sre_constants.CATEGORY_NOT_DIGIT: string.ascii_letters + "_-",
    sre_constants.CATEGORY_WORD: string.ascii_letters + string.digits + "_",
    sre_constants.CATEGORY_NOT_WORD: " -.,;:!?",
    sre_constants.CATEGORY_SPACE: " ",
    sre_constants.CATEGORY_NOT_SPACE: string.ascii_letters + string.digits,
}
_PRINTABLE: Final = string.ascii_letters + string.digits + string.punctuation + " "
_UNBOUNDED_EXTRA: Final = 10


def _charset(items: list[tuple[Any, Any]]) -> str:
    negate = False
    chars: list[str] = []
    for op, arg in items:
        if op is sre_constants.NEGATE:
            negate = True
        elif op is sre_constants.LITERAL:
            chars.append(chr(arg))
        elif op is sre_constants.RANGE:
            low, high = arg
            chars.extend(chr(c) for c in range(low, min(high, low + 4096) + 1))
        elif op is sre_constants.CATEGORY:
            chars.extend(_CATEGORY_CHARS.get(arg, ""))
    if negate:
        excluded = set(chars)
        chars = [c for c in _PRINTABLE if c not in excluded]
    return "".join(dict.fromkeys(chars))


def _generate(parsed: Any, out: list[str]) -> None:
    for op, arg in parsed:
        if op is sre_constants.LITERAL:
            out.append(chr(arg))
        elif op is sre_constants.NOT_LITERAL:
            out.append(secrets.choice([c for c in _PRINTABLE if c != chr(arg)]))
        elif op is sre_constants.ANY:
            out.append(secrets.choice(string.ascii_letters + string.digits))
        elif op is sre_constants.IN:
            pool = _charset(arg)
            if not pool:
                raise ValueError("empty character class")
            out.append(secrets.choice(pool))
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, getattr(sre_constants, "POSSESSIVE_REPEAT", None)):
            low, high, sub = arg
            if high is sre_constants.MAXREPEAT or high > low + _UNBOUNDED_EXTRA:
                high = low + _UNBOUNDED_EXTRA if high is sre_constants.MAXREPEAT else high
            count = low + secrets.randbelow(high - low + 1)
            for _ in range(count):
                _generate(sub, out)
        elif op is sre_constants.SUBPATTERN:
            _generate(arg[-1], out)
        elif op is getattr(sre_constants, "ATOMIC_GROUP", None):
            _generate(arg, out)
        elif op is sre_constants.BRANCH:
            _generate(secrets.choice(arg[1]), out)
        elif op is sre_constants.AT:
            continue
        else:
            raise ValueError(f"unsupported regex construct {op}")


def _random_from_pool(pool: str, count: int) -> str:
    """``count`` characters drawn uniformly from ``pool`` with one ``urandom`` call (rejection sampling)."""
    size = len(pool)
    if size == 1:
        return pool * count
    limit = 256 - 256 % size  # bytes at or above this would bias the draw
    out: list[str] = []
    while len(out) < count:
        for byte in secrets.token_bytes(count * 2):
            if byte < limit:
                out.append(pool[byte % size])
                if len(out) == count:
                    break
    return "".join(out)


@functools.lru_cache(maxsize=512)
def _parsed_pattern(pattern: str) -> Any:
    try:
        return sre_parse.parse(pattern)
    except re.error as err:
        raise ValueError(f"invalid autogenerate pattern {pattern!r}: {err}") from err


@functools.lru_cache(maxsize=512)
def _fixed_pool_plan(pattern: str) -> tuple[tuple[str, int], ...] | None:
    """For patterns made only of literals and fixed-count character classes (``[a-z0-9]{15}``,
    ``users[0-9]{6}``): ``((pool, count), ...)``; None for anything else."""
    plan: list[tuple[str, int]] = []
    for op, arg in _parsed_pattern(pattern):
        if op is sre_constants.LITERAL:
            plan.append((chr(arg), 1))
        elif op is sre_constants.IN:
            plan.append((_charset(arg), 1))
        elif op is sre_constants.MAX_REPEAT and arg[0] == arg[1] and len(arg[2]) == 1 \
                and arg[2][0][0] is sre_constants.IN:
            plan.append((_charset(arg[2][0][1]), int(arg[0])))
        else:
            return None
    if any(not pool for pool, _ in plan):
        return None
    return tuple(plan)


def generate_by_pattern(pattern: str) -> str:
    """A random string matching ``pattern`` (PocketBase's ``security.RandomStringByRegex``), e.g. for
    ``[a-z0-9]{15}`` or ``users[0-9]{5}``. Unbounded repeats produce at most 10 extra items."""
    plan = _fixed_pool_plan(pattern)
    if plan is not None:  # the common case (record ids, usernames): one urandom call per class
        return "".join(_random_from_pool(pool, count) for pool, count in plan)
    out: list[str] = []
    _generate(_parsed_pattern(pattern), out)
    return "".join(out)
