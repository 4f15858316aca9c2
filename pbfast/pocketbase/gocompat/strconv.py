"""Go's ``strconv`` parsing (``Atoi``, ``ParseBool``, ``ParseFloat``), ``%q`` and ``strings.TrimSpace``.

Pure functions (caches are thread-safe): safe from any thread.
"""

from __future__ import annotations

import re
from typing import Any, Final


TRUE_STRINGS: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # strconv.ParseBool
_FALSE_STRINGS: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_ATOI_RE: Final = re.compile(r"[+-]?[0-9]+")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def parse_bool(raw: str) -> bool | None:
    """``strconv.ParseBool``: None for anything it refuses."""
    if raw in TRUE_STRINGS:
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
