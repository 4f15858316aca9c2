"""PocketBase 0.40.6 collection field types: stored definitions, SQLite columns, value casting, validation.

A field is the plain ``dict`` PocketBase keeps in ``_collections.fields`` (``{"id", "name", "type", ...}``).
This module knows, per field type (``text``, ``number``, ``bool``, ``email``, ``url``, ``editor``, ``date``,
``autodate``, ``select``, ``json``, ``relation``, ``password``, ``file``, ``geoPoint``):

* :func:`new_field_definition` / :func:`normalize_field` - the complete stored shape of a field (every
  option with PocketBase's zero value, PocketBase's generated ids ``<type><crc32(name)>``), and
  :func:`validate_field_settings` - PocketBase's settings validation (codes and messages);
* :func:`column_definition` - the column type PocketBase gives the field in the collection's table;
* :func:`prepare_value` - a submitted value cast the way PocketBase casts it (``cast.ToFloat64`` & co),
  defaulted, validated (raising :class:`FieldError` with PocketBase's code, message and params) and
  returned in the form to bind into SQLite;
* :func:`to_api_value` - what PocketBase's record API shows for a stored column value.

The casting rules were checked against the stock 0.40.6 binary (see ``tests/pocketbase/test_fields.py``).
Pure functions, no shared state: safe from any thread.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from pbfast.pocketbase.gocompat import (
    ORJSON_MAX_DEPTH,
    DeepJson,
    as_float64,
    cast_to_bool,
    cast_to_float,
    cast_to_string,
    format_datetime_value,
    generate_by_pattern,
    go_format_float,
    go_json_default,
    json_depth,
    json_number,
    parse_datetime,
    regex_error,
    regex_search,
    stored_to_string,
    time_json,
    time_string,
    to_unique_strings,
)
from pbfast.timefmt import format_datetime

__all__ = [
    "FIELD_TYPES",
    "MISSING",
    "FieldError",
    "FieldSettingsError",
    "PlainPassword",
    "autodate_value",
    "cast_value",
    "column_definition",
    "field_id_for",
    "is_multiple",
    "needs_hashing",
    "new_field_definition",
    "normalize_field",
    "prepare_value",
    "relation_ids",
    "stored_from_list",
    "to_api_value",
    "validate_field_settings",
]


class _Missing:
    """Sentinel type for "no value was submitted" (distinct from an explicit ``null``)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

FIELD_TYPES: Final = (
    "text", "number", "bool", "email", "url", "editor", "date", "autodate",
    "select", "json", "relation", "password", "file", "geoPoint",
)

MAX_SAFE_JSON_INT: Final = (1 << 53) - 1
DEFAULT_TEXT_MAX: Final = 5000
DEFAULT_EDITOR_MAX_SIZE: Final = 5 << 20
DEFAULT_JSON_MAX_SIZE: Final = 1 << 20
DEFAULT_FILE_MAX_SIZE: Final = 5 << 20
PASSWORD_MAX_LENGTH: Final = 71  # bcrypt's 72 bytes limit
BCRYPT_DEFAULT_COST: Final = 10
DEFAULT_ID_PATTERN: Final = "^[a-z0-9]+$"
DATE_LAYOUT_HINT: Final = "2006-01-02 15:04:05.000Z"


# ---------------------------------------------------------------------------------------------- errors


def sentenize(text: str) -> str:
    """PocketBase's ``inflector.Sentenize``: capitalise the first letter, end with a period."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    if text[-1] not in ".!?":
        text += "."
    return text


class FieldError(Exception):
    """A value PocketBase would reject for this field.

    ``code`` and ``message`` are PocketBase's (the message already "sentenized" as the API shows it),
    ``params`` the template parameters PocketBase adds to the API error item (may be empty).
    """

    def __init__(self, code: str, message: str, params: Mapping[str, Any] | None = None) -> None:
        self.code = code
        self.params: dict[str, Any] = dict(params or {})
        self.message = sentenize(message)
        super().__init__(f"{code}: {self.message}")

    def to_dict(self) -> dict[str, Any]:
        """The API error item: ``{"code", "message"}`` plus ``"params"`` when there are any."""
        item: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.params:
            item["params"] = self.params
        return item


class FieldSettingsError(Exception):
    """A field definition PocketBase would reject.

    ``data`` maps option names to API error items (``{"min": {"code", "message"}}``); ``decode_error`` is
    True when PocketBase would not even parse the definition (unknown type, wrong JSON types), which it
    reports as ``"Failed to load the submitted data due to invalid formatting."`` with empty data.
    """

    def __init__(self, data: dict[str, Any], *, decode_error: bool = False, detail: str = "") -> None:
        self.data = data
        self.decode_error = decode_error
        super().__init__(detail or str(data))


def _err(code: str, message: str, params: Mapping[str, Any] | None = None) -> FieldError:
    return FieldError(code, message, params)


def _required() -> FieldError:
    return _err("validation_required", "cannot be blank")


def _render(template: str, params: Mapping[str, Any]) -> str:
    """Substitute ``{{.name}}`` placeholders the way Go's text/template prints the values."""
    def value(match: re.Match[str]) -> str:
        raw = params.get(match.group(1), "")
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, float):
            return go_format_float(raw, "g")
        return str(raw)
    return re.sub(r"\{\{\.(\w+)\}\}", value, template)


def _templated(code: str, template: str, params: Mapping[str, Any]) -> FieldError:
    return _err(code, _render(template, params), {k: json_number(v) for k, v in params.items()})


# ------------------------------------------------------------------------------- URL/email/domain


_UNI = "\u00a1-\uffff"
_URL_IP = r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3]|24\d|25[0-5])(?:\.(?:\d{1,2}|1\d\d|2[0-4]\d|25[0-5])){2}" \
          r"(?:\.(?:[0-9]\d?|1\d\d|2[0-4]\d|25[0-5]))"
_ALNUM = "a-zA-Z0-9"
_URL_HOST = (
    r"(?:" + _URL_IP + r"|\[[0-9a-fA-F:.%]+\]|"
    r"(?:(?:[" + _ALNUM + r"](?:[" + _ALNUM + r"\-_]+)?[" + _ALNUM + r"](?:[-.][" + _ALNUM + r"]+)*)"
    r"|(?:www\.|[" + _ALNUM + r"](?:[-_.]?[" + _ALNUM + r"])*[" + _ALNUM + r"]\.[" + _ALNUM + r"]+))?"
    r"[a-zA-Z" + _UNI + r"0-9]+(?:--?[a-zA-Z" + _UNI + r"0-9]+)*(?:\.[a-zA-Z" + _UNI + r"]+)?)"
)
_URL_TAIL = re.compile(r"\.?(?::\d{1,5})?(?:[/?#]\S*)?")
_URL_HOST_RE = re.compile(_URL_HOST)
_URL_SCHEME = re.compile(r"(?:ftp|tcp|udp|wss?|https?)://")


def _ipv6_ok(bracketed: str) -> bool:
    import ipaddress  # noqa: PLC0415 - rare path
    inner = bracketed[1:-1].split("%", 1)[0]
    try:
        ipaddress.IPv6Address(inner)
    except ValueError:
        return False
    return True


def is_url(value: str) -> bool:
    """govalidator's ``IsURL`` (used by PocketBase's url field), without its regex's backtracking blowups.

    Shape: ``[scheme://][user[:pass]@]host[.][:port][/path|?query|#fragment]`` where scheme is one of
    http(s), ftp, tcp, udp, ws(s); host an IPv4 address, a bracketed IPv6 address or a hostname whose
    labels are letters/digits (hyphens, and underscores in the leading labels, inside), a TLD of letters.
    """
    if not value or len(value) >= 2083 or len(value.encode()) <= 3 or value.startswith("."):
        return False
    probe = value
    if ":" in value and "://" not in value:
        probe = "http://" + value
    try:
        parts = urlsplit(probe)
        host = parts.netloc.rsplit("@", 1)[-1]
        if ":" in host and not host.endswith("]"):
            port = host.rsplit(":", 1)[1]
            if port and not port.isdigit():
                return False
    except ValueError:
        host = None
        if "[" not in probe:
            return False
    if host is not None:
        if host.startswith("."):
            return False
        if not parts.netloc and parts.path and "." not in parts.path:
            return False
    rest = value
    scheme = _URL_SCHEME.match(rest)
    if scheme:
        rest = rest[scheme.end():]
    candidates = [rest]
    # optional "user[:password]@" prefix: every "@" could end it (the regex backtracks over them)
    for index, char in enumerate(rest):
        if char == "@" and index > 0 and not any(c.isspace() for c in rest[:index]):
            candidates.append(rest[index + 1:])
    for candidate in candidates:
        for match_end in _host_match_ends(candidate):
            if _URL_TAIL.fullmatch(candidate, match_end):
                return True
    return False


def _host_match_ends(text: str) -> Iterable[int]:
    """Every end position at which a valid URL host could stop in ``text`` (host is a prefix)."""
    # the host cannot contain these characters; limit the regex to the plausible host region
    stop = len(text)
    for index, char in enumerate(text):
        if char in ":/?#" or char.isspace():
            stop = index
            break
    region = text[:stop]
    if region.startswith("["):
        close = region.find("]")
        if close == -1:
            close = text.find("]")
            if close == -1:
                return
        if _ipv6_ok(text[:close + 1]):
            yield close + 1
        return
    # the host may be followed by an optional "." before the port/path: try the full region and the
    # region without one trailing dot
    for end in (len(region), len(region) - 1):
        if end > 0 and _URL_HOST_RE.fullmatch(region, 0, end):
            yield end


_EMAIL_LOCAL_CHAR = r"[a-zA-Z0-9!#$%&'*+\-/=?^_`{|}~\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef]"
_EMAIL_LOCAL = re.compile(_EMAIL_LOCAL_CHAR + r"+(?:\." + _EMAIL_LOCAL_CHAR + r"+)*")
_EMAIL_QUOTED = re.compile(
    r'"(?:(?:[ \t]*\r\n)?[ \t]+)?(?:(?:[\x01-\x08\x0b\x0c\x0e-\x1f\x7f\x21\x23-\x5b\x5d-\x7e'
    r"\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef]|\\[\x01-\x09\x0b\x0c\x0d-\x7f\u00a0-\ud7ff\uf900-\ufdcf"
    r'\ufdf0-\uffef])(?:(?:[ \t]*\r\n)?[ \t]+)?)*"'
)
_DOMAIN_CHAR = "a-zA-Z0-9\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef"
_TLD_CHAR = "a-zA-Z\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef"
_EMAIL_DOMAIN_PREFIX = re.compile(r"[" + _DOMAIN_CHAR + r"](?:[" + _DOMAIN_CHAR + r"\-._~]*[" + _DOMAIN_CHAR + r"])?\.")
_EMAIL_TLD = re.compile(r"[" + _TLD_CHAR + r"](?:[" + _TLD_CHAR + r"0-9\-_~]*[" + _TLD_CHAR + r"])?\.?")


def is_email(value: str) -> bool:
    """govalidator's ``IsEmail`` (ozzo ``is.EmailFormat``): RFC 5322-ish local part, dotted domain whose
    last label is letters only. Implemented without the original regex's backtracking blowups."""
    if value.startswith('"'):
        quoted = _EMAIL_QUOTED.match(value)
        if not quoted or value[quoted.end():quoted.end() + 1] != "@":
            return False
        domain = value[quoted.end() + 1:]
    else:
        local, at, domain = value.partition("@")
        if not at or not _EMAIL_LOCAL.fullmatch(local):
            return False
    if not domain:
        return False
    for index, char in enumerate(domain):
        if char == "." and index + 1 < len(domain):
            if _EMAIL_DOMAIN_PREFIX.fullmatch(domain, 0, index + 1) and _EMAIL_TLD.fullmatch(domain, index + 1):
                return True
    return False


_DOMAIN = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+(?:[a-zA-Z]{1,63}| xn--[a-z0-9]{1,59})")


def is_domain(value: str) -> bool:
    """ozzo's ``is.Domain``."""
    return len(value) <= 255 and _DOMAIN.fullmatch(value) is not None


def _email_domain(value: str) -> str:
    return value[value.rfind("@") + 1:]


def _url_host(value: str) -> str:
    """The ``Host`` (host[:port]) Go's ``url.Parse`` gives for ``value``."""
    try:
        return urlsplit(value).netloc.rsplit("@", 1)[-1]
    except ValueError:
        return ""


# ------------------------------------------------------------------------------ field definitions


_COMMON_HEAD: Final = ("hidden", "id", "name", "presentable", "system", "type")

# Every option of each type with PocketBase's zero value (the stored JSON has exactly these keys).
_TYPE_OPTIONS: Final[dict[str, dict[str, Any]]] = {
    "text": {"autogeneratePattern": "", "help": "", "max": 0, "min": 0, "pattern": "", "primaryKey": False,
             "required": False},
    "number": {"help": "", "max": None, "min": None, "onlyInt": False, "required": False},
    "bool": {"help": "", "required": False},
    "email": {"exceptDomains": [], "help": "", "onlyDomains": [], "required": False},
    "url": {"exceptDomains": [], "help": "", "onlyDomains": [], "required": False},
    "editor": {"convertURLs": False, "help": "", "maxSize": 0, "required": False},
    "date": {"help": "", "max": "", "min": "", "required": False},
    "autodate": {"onCreate": False, "onUpdate": False},
    "select": {"help": "", "maxSelect": 0, "required": False, "values": []},
    "json": {"help": "", "maxSize": 0, "required": False},
    "relation": {"cascadeDelete": False, "collectionId": "", "help": "", "maxSelect": 0, "minSelect": 0,
                 "required": False},
    "password": {"cost": 0, "help": "", "max": 0, "min": 0, "pattern": "", "required": False},
    "file": {"help": "", "maxSelect": 0, "maxSize": 0, "mimeTypes": [], "protected": False, "required": False,
             "thumbs": []},
    "geoPoint": {"help": "", "required": False},
}

_OPTION_KIND: Final[dict[str, str]] = {
    "autogeneratePattern": "str", "help": "str", "pattern": "str", "collectionId": "str",
    "max": "int", "min": "int", "maxSize": "int", "maxSelect": "int", "minSelect": "int", "cost": "int",
    "primaryKey": "bool", "required": "bool", "onlyInt": "bool", "convertURLs": "bool", "onCreate": "bool",
    "onUpdate": "bool", "cascadeDelete": "bool", "protected": "bool",
    "exceptDomains": "strlist", "onlyDomains": "strlist", "values": "strlist", "mimeTypes": "strlist",
    "thumbs": "strlist",
    "hidden": "bool", "presentable": "bool", "system": "bool", "id": "str", "name": "str", "type": "str",
}


def field_id_for(field_type: str, name: str) -> str:
    """PocketBase's generated field id: the type followed by the decimal CRC-32 (IEEE) of the name."""
    return f"{field_type}{zlib.crc32(name.encode())}"


def _decode_fail(detail: str) -> FieldSettingsError:
    return FieldSettingsError({}, decode_error=True, detail=detail)


def _coerce_option(field_type: str, key: str, value: Any) -> Any:
    """A submitted option converted to the Go type PocketBase decodes it into (or a decode failure)."""
    kind = _OPTION_KIND.get(key, "any")
    if field_type == "number" and key in ("min", "max"):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _decode_fail(f"{key}: expected a number or null")
        return float(value)
    if field_type == "date" and key in ("min", "max"):
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _decode_fail(f"{key}: expected a date string")
        return format_datetime_value(parse_datetime(value))
    if value is None:
        return _TYPE_OPTIONS.get(field_type, {}).get(key, "" if kind == "str" else False if kind == "bool" else
                                                       0 if kind == "int" else [])
    if kind == "str":
        if not isinstance(value, str):
            raise _decode_fail(f"{key}: expected a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _decode_fail(f"{key}: expected a boolean")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _decode_fail(f"{key}: expected an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise _decode_fail(f"{key}: expected an integer")
            value = int(value)
        return value
    if kind == "strlist":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _decode_fail(f"{key}: expected a list of strings")
        return list(value)
    return value


def normalize_field(field: Mapping[str, Any]) -> dict[str, Any]:
    """A stored field in PocketBase's canonical shape: exactly its type's keys, sorted, zero values for
    missing or null options (``null`` lists become ``[]``), dates re-formatted. This is how PocketBase
    shows a field in the collections API. Unknown types are returned as a sorted copy."""
    field_type = str(field.get("type", ""))
    options = _TYPE_OPTIONS.get(field_type)
    if options is None:
        return dict(sorted(field.items()))
    result: dict[str, Any] = {
        "hidden": bool(field.get("hidden") or False),
        "id": str(field.get("id") or ""),
        "name": str(field.get("name") or ""),
        "presentable": bool(field.get("presentable") or False),
        "system": bool(field.get("system") or False),
        "type": field_type,
    }
    for key, zero in options.items():
        value = field.get(key, zero)
        if value is None:
            value = None if (field_type == "number" and key in ("min", "max")) else (
                list(zero) if isinstance(zero, list) else zero)
        elif field_type == "number" and key in ("min", "max"):
            value = json_number(float(value)) if isinstance(value, int | float) and not isinstance(value, bool) \
                else value
        elif field_type == "date" and key in ("min", "max"):
            value = format_datetime_value(parse_datetime(value)) if isinstance(value, str) else ""
        elif isinstance(zero, list):
            value = list(value) if isinstance(value, list) else []
        result[key] = value
    return dict(sorted(result.items()))


def new_field_definition(raw: Mapping[str, Any], existing_ids: Iterable[str] = ()) -> dict[str, Any]:
    """Complete a field dict submitted in a collection create/update to PocketBase's stored shape.

    Options get their zero values, values are type-checked the way PocketBase's JSON decoding checks them
    (a wrong type or an unknown/missing ``type`` raises :class:`FieldSettingsError` with
    ``decode_error=True``), and a missing ``id`` becomes ``<type><crc32(name)>`` (``2``, ``3``... appended
    while it collides with ``existing_ids``). Unknown keys are dropped. The option *values* are not
    validated here: see :func:`validate_field_settings`.
    """
    if not isinstance(raw, Mapping):
        raise _decode_fail("a field must be an object")
    field_type = raw.get("type")
    if not isinstance(field_type, str) or field_type not in _TYPE_OPTIONS:
        raise _decode_fail(f"missing or unknown field type {field_type!r}")
    field: dict[str, Any] = {}
    for key in (*_COMMON_HEAD, *_TYPE_OPTIONS[field_type]):
        if key == "type":
            continue
        if key in raw:
            field[key] = _coerce_option(field_type, key, raw[key])
    field["type"] = field_type
    field = normalize_field(field)
    # normalize_field turned numbers into ints for display; keep them numeric
    if not field["id"]:
        taken = set(existing_ids)
        base = field_id_for(field_type, field["name"])
        candidate = base
        for suffix in range(2, 1000):
            if candidate not in taken:
                break
            candidate = f"{base}{suffix}"
        field["id"] = candidate
    return field


# ------------------------------------------------------------------------------- settings validation


def _length_error(value: str, low: int, high: int) -> dict[str, Any] | None:
    """ozzo ``validation.Length(low, high)`` (byte length; empty strings pass)."""
    if value == "":
        return None
    size = len(value.encode())
    if (low > 0 and size < low) or (high > 0 and size > high):
        params = {"min": low, "max": high}
        if low == high:
            return _templated("validation_length_invalid", "the length must be exactly {{.min}}", params).to_dict()
        if low == 0:
            return _templated("validation_length_too_long", "the length must be no more than {{.max}}",
                              params).to_dict()
        if high == 0:
            return _templated("validation_length_too_short", "the length must be no less than {{.min}}",
                              params).to_dict()
        return _templated("validation_length_out_of_range", "the length must be between {{.min}} and {{.max}}",
                          params).to_dict()
    return None


def _min_error(value: float, threshold: float) -> dict[str, Any] | None:
    """ozzo ``validation.Min(threshold)`` (zero values are skipped)."""
    if value == 0 or value >= threshold:
        return None
    return _templated("validation_min_greater_equal_than_required", "must be no less than {{.threshold}}",
                      {"threshold": threshold}).to_dict()


def _max_error(value: float, threshold: float) -> dict[str, Any] | None:
    """ozzo ``validation.Max(threshold)`` (zero values are skipped)."""
    if value == 0 or value <= threshold:
        return None
    return _templated("validation_max_less_equal_than_required", "must be no greater than {{.threshold}}",
                      {"threshold": threshold}).to_dict()


_RESERVED_FIELD_NAMES: Final = ("null", "true", "false", "_rowid_", "collectionId", "collectionName", "expand")
_FIELD_NAME = re.compile(r"\w+", re.ASCII)
_THUMB_SIZE = re.compile(r"(\d+)x(\d+)(t|b|f)?")


def _name_error(name: str) -> dict[str, Any] | None:
    if name == "":
        return _required().to_dict()
    length = _length_error(name, 1, 100)
    if length:
        return length
    if not _FIELD_NAME.fullmatch(name):
        return _err("validation_match_invalid", "must be in a valid format").to_dict()
    if name in _RESERVED_FIELD_NAMES:
        return _err("validation_not_in_invalid", "must not be in list").to_dict()
    if "_via_" in name.lower():
        return _err("validation_found_via", 'The value cannot contain "_via_".').to_dict()
    return None


def _first(*errors: dict[str, Any] | None) -> dict[str, Any] | None:
    return next((e for e in errors if e), None)


def validate_field_settings(field: Mapping[str, Any], *, collection_fields: Sequence[Mapping[str, Any]] = (),
                            collection_type: str = "base", old_field: Mapping[str, Any] | None = None,
                            collection_exists: Any = None, is_view_collection: Any = None,
                            ) -> dict[str, Any]:
    """PocketBase's ``ValidateSettings`` for one (normalized) field: ``{option: error item}`` (empty when
    valid).

    ``collection_fields`` are all fields of the collection being saved (for the single-PK check),
    ``old_field`` the stored field with the same id on updates (system autodate flags and relation targets
    cannot change), ``collection_exists(id) -> bool`` and ``is_view_collection(id) -> bool`` answer the
    relation checks (skipped when not given).
    """
    errors: dict[str, Any] = {}
    field_type = field["type"]

    def put(key: str, error: dict[str, Any] | None) -> None:
        if error and key not in errors:
            errors[key] = error

    field_id = str(field.get("id", ""))
    put("id", _required().to_dict() if field_id == "" else _length_error(field_id, 1, 100))
    put("name", _name_error(str(field.get("name", ""))))
    if field_type != "autodate":
        put("help", _length_error(str(field.get("help", "")), 1, 300))

    if field_type == "text":
        _text_settings(field, collection_fields, put)
    elif field_type == "number":
        _number_settings(field, put)
    elif field_type in ("email", "url"):
        for key, other in (("exceptDomains", "onlyDomains"), ("onlyDomains", "exceptDomains")):
            values = field.get(key) or []
            if field.get(other):
                if values:
                    put(key, _err("validation_empty", "must be blank").to_dict())
                continue
            for index, domain in enumerate(values):
                if not is_domain(domain):
                    put(key, {str(index): _err("validation_is_domain", "must be a valid domain").to_dict()})
                    break
    elif field_type in ("editor", "json"):
        put("maxSize", _first(_min_error(field.get("maxSize", 0), 0), _max_error(field.get("maxSize", 0),
                                                                                  MAX_SAFE_JSON_INT)))
    elif field_type == "date":
        low, high = parse_datetime(field.get("min")), parse_datetime(field.get("max"))
        if high is not None and low is not None and high < low:
            put("max", _err("validation_date_out_of_range", "the date is out of range").to_dict())
    elif field_type == "autodate":
        _autodate_settings(field, old_field, put)
    elif field_type == "select":
        values = field.get("values") or []
        if not values:
            put("values", _required().to_dict())
        limit = len(values) or 1
        max_select = field.get("maxSelect", 0)
        put("maxSelect", _first(_min_error(max_select, 0), _max_error(max_select, limit)))
    elif field_type == "relation":
        _relation_settings(field, old_field, collection_type, collection_exists, is_view_collection, put)
    elif field_type == "password":
        minimum, maximum = field.get("min", 0), field.get("max", 0)
        put("min", _first(_min_error(minimum, 1), _max_error(minimum, PASSWORD_MAX_LENGTH)))
        put("max", _first(_min_error(maximum, minimum), _max_error(maximum, PASSWORD_MAX_LENGTH)))
        put("cost", _first(_min_error(field.get("cost", 0), 4), _max_error(field.get("cost", 0), 31)))
        pattern_error = regex_error(field.get("pattern", "")) if field.get("pattern") else None
        if pattern_error:
            put("pattern", _err("validation_invalid_regex", pattern_error).to_dict())
    elif field_type == "file":
        for key in ("maxSelect", "maxSize"):
            put(key, _first(_min_error(field.get(key, 0), 0), _max_error(field.get(key, 0), MAX_SAFE_JSON_INT)))
        for index, thumb in enumerate(field.get("thumbs") or []):
            if thumb in ("0x0", "0x0t", "0x0b", "0x0f"):
                put("thumbs", {str(index): _err("validation_not_in_invalid", "must not be in list").to_dict()})
                break
            if not _THUMB_SIZE.fullmatch(thumb):
                put("thumbs", {str(index): _err("validation_match_invalid", "must be in a valid format").to_dict()})
                break
    return errors


def _text_settings(field: Mapping[str, Any], collection_fields: Sequence[Mapping[str, Any]], put: Any) -> None:
    primary = bool(field.get("primaryKey"))
    if primary and field.get("name") != "id":
        put("name", _err("validation_in_invalid", 'The primary key must be named "id".').to_dict())
    if primary and sum(1 for f in collection_fields if f.get("type") == "text" and f.get("primaryKey")) > 1:
        put("primaryKey", _err("validation_unsupported_composite_pk",
                               "Composite PKs are not supported and the collection must have only 1 PK.").to_dict())
    minimum, maximum = field.get("min", 0), field.get("max", 0)
    put("min", _first(_min_error(minimum, 0), _max_error(minimum, MAX_SAFE_JSON_INT)))
    put("max", _first(_min_error(maximum, minimum), _max_error(maximum, MAX_SAFE_JSON_INT)))
    pattern = field.get("pattern", "")
    if primary and not pattern:
        put("pattern", _required().to_dict())
    elif pattern and regex_error(pattern):
        put("pattern", _err("validation_invalid_regex", regex_error(pattern) or "").to_dict())
    if primary and field.get("hidden"):
        put("hidden", _err("validation_empty", "must be blank").to_dict())
    if primary and not field.get("required"):
        put("required", _required().to_dict())
    auto = field.get("autogeneratePattern", "")
    if auto:
        compile_error = regex_error(auto)
        if compile_error:
            put("autogeneratePattern", _err("validation_invalid_regex", compile_error).to_dict())
            return
        for _ in range(10):
            try:
                generated = generate_by_pattern(auto)
            except ValueError as err:
                put("autogeneratePattern", _err("validation_invalid_autogenerate_pattern", str(err)).to_dict())
                return
            try:
                _validate_text_plain(field, generated)
            except FieldError:
                put("autogeneratePattern", _err(
                    "validation_invalid_autogenerate_pattern_value",
                    f"The provided autogenerate pattern could produce invalid field values, ex.: {generated!r}"
                    .replace("'", '"')).to_dict())
                return


def _number_settings(field: Mapping[str, Any], put: Any) -> None:
    only_int = bool(field.get("onlyInt"))
    minimum, maximum = field.get("min"), field.get("max")

    def check_int(value: float | None) -> dict[str, Any] | None:
        if value is None or not only_int or float(value).is_integer():
            return None
        return _err("validation_only_int_constraint", "Decimal numbers are not allowed").to_dict()

    put("min", check_int(minimum))
    max_error = check_int(maximum)
    if max_error is None and minimum is not None and maximum is not None and maximum < minimum:
        max_error = _templated("validation_min_number_constraint", "Must be greater or equal than {{.min}}",
                               {"min": float(minimum)}).to_dict()
    put("max", max_error)


def _autodate_settings(field: Mapping[str, Any], old_field: Mapping[str, Any] | None, put: Any) -> None:
    on_create, on_update = bool(field.get("onCreate")), bool(field.get("onUpdate"))
    old_create = bool(old_field.get("onCreate")) if old_field is not None else on_create
    old_update = bool(old_field.get("onUpdate")) if old_field is not None else on_update
    for key, value, old, other in (("onCreate", on_create, old_create, on_update),
                                   ("onUpdate", on_update, old_update, on_create)):
        if field.get("system") and value != old:
            put(key, _err("validation_values_mismatch", "Values don't match.").to_dict())
        elif not value and not other:
            put(key, _err("validation_required", "either onCreate or onUpdate must be enabled").to_dict())


def _relation_settings(field: Mapping[str, Any], old_field: Mapping[str, Any] | None, collection_type: str,
                       collection_exists: Any, is_view_collection: Any, put: Any) -> None:
    target = field.get("collectionId", "")
    if not target:
        put("collectionId", _required().to_dict())
    else:
        if old_field is not None and old_field.get("type") == "relation" and old_field.get("collectionId") != target:
            put("collectionId", _err("validation_field_relation_change",
                                     "The relation collection cannot be changed.").to_dict())
        elif collection_exists is not None and not collection_exists(target):
            put("collectionId", _err("validation_field_relation_missing_collection",
                                     "The relation collection doesn't exist.").to_dict())
        elif collection_type != "view" and is_view_collection is not None and is_view_collection(target):
            put("collectionId", _err("validation_relation_field_non_view_base_collection",
                                     "Only view collections are allowed to have relations to other views.").to_dict())
    min_select, max_select = field.get("minSelect", 0), field.get("maxSelect", 0)
    put("minSelect", _min_error(min_select, 0))
    if min_select > 0 and not max_select:
        put("maxSelect", _required().to_dict())
    else:
        put("maxSelect", _min_error(max_select, min_select))


# ------------------------------------------------------------------------------------ columns


def is_multiple(field: Mapping[str, Any]) -> bool:
    """True for select/relation/file fields configured with ``maxSelect > 1`` (stored as JSON arrays)."""
    return field.get("type") in ("select", "relation", "file") and int(field.get("maxSelect") or 0) > 1


def column_definition(field: Mapping[str, Any]) -> str:
    """The column definition PocketBase 0.40.6 uses for the field (``Field.ColumnType``)."""
    field_type = field.get("type")
    if field_type == "text" and field.get("primaryKey"):
        return "TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL"
    if field_type == "number":
        return "NUMERIC DEFAULT 0 NOT NULL"
    if field_type == "bool":
        return "BOOLEAN DEFAULT FALSE NOT NULL"
    if field_type == "json":
        return "JSON DEFAULT NULL"
    if field_type == "geoPoint":
        return """JSON DEFAULT '{"lon":0,"lat":0}' NOT NULL"""
    if field_type in ("select", "relation", "file") and is_multiple(field):
        return "JSON DEFAULT '[]' NOT NULL"
    if field_type in _TYPE_OPTIONS:
        return "TEXT DEFAULT '' NOT NULL"
    raise ValueError(f"unknown field type {field_type!r} of field {field.get('name')!r}")


# ------------------------------------------------------------------------------------- values


class PlainPassword(str):
    """A new plain-text password returned by :func:`prepare_value`: the caller must hash it (bcrypt,
    cost :func:`password_cost`) before storing it. A plain ``str`` returned for a password field is the
    unchanged stored hash."""

    __slots__ = ()


def needs_hashing(value: Any) -> bool:
    """True when a prepared password value is a new plain password (see :class:`PlainPassword`)."""
    return isinstance(value, PlainPassword)


def password_cost(field: Mapping[str, Any]) -> int:
    """The bcrypt cost PocketBase uses for this password field (its ``cost`` or bcrypt's default 10)."""
    cost = int(field.get("cost") or 0)
    return cost if cost > 0 else BCRYPT_DEFAULT_COST


def autodate_value(field: Mapping[str, Any], is_new: bool, now: str) -> str | None:
    """The value an ``autodate`` field gets when a record is saved: ``now`` when the field is set on
    create (``onCreate``, new records) or on update (``onUpdate``, existing records), else None (keep;
    a new record then stores the zero date ``""``)."""
    if is_new and field.get("onCreate"):
        return now
    if not is_new and field.get("onUpdate"):
        return now
    return None


def relation_ids(field: Mapping[str, Any], stored: Any) -> list[str]:
    """The record ids held by a relation (or select/file) value, stored or prepared."""
    return to_unique_strings(stored)


def stored_from_list(field: Mapping[str, Any], items: Sequence[str]) -> str:
    """Store a list of ids/values/filenames in a select/relation/file column (JSON text when multiple,
    else the last item or ``""``)."""
    unique = to_unique_strings(list(items))
    if is_multiple(field):
        return orjson.dumps(unique).decode()
    return unique[-1] if unique else ""


def _json_raw_from_input(raw: Any) -> str | None:
    """PocketBase's JSON field ``PrepareValue``: the JSON text stored for a submitted value (None = NULL)."""
    if raw is None or raw is MISSING:
        return None
    if isinstance(raw, DeepJson):
        return raw.text
    if isinstance(raw, str):
        text = raw
        if text in ("null", "true", "false"):
            return text
        if text and (text[0].isdigit() or text[0] in '-"[{') and _valid_json(text):
            return text
        return orjson.dumps(text).decode()
    return orjson.dumps(_go_json_value(raw), option=orjson.OPT_SORT_KEYS, default=go_json_default).decode()


def _valid_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _go_json_value(value: Any) -> Any:
    """A decoded JSON value as Go re-encodes it: numbers went through float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return json_number(as_float64(value))
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, Mapping):
        return {str(k): _go_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_go_json_value(v) for v in value]
    return cast_to_string(value)


def _geo_point(raw: Any) -> tuple[float, float] | None:
    """A submitted/stored geoPoint as (lon, lat); None when it cannot be decoded."""
    if raw is None or raw is MISSING:
        return (0.0, 0.0)
    if isinstance(raw, bytes | bytearray):
        raw = bytes(raw).decode("utf-8", errors="replace")
    if isinstance(raw, str):
        if raw == "":
            return (0.0, 0.0)
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(raw, Mapping):
        return None
    point = [0.0, 0.0]
    for index, key in enumerate(("lon", "lat")):
        value = raw.get(key, 0)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        point[index] = float(value)
    return (point[0], point[1])


def _validate_text_plain(field: Mapping[str, Any], value: str) -> None:
    primary = bool(field.get("primaryKey"))
    if (field.get("required") or primary) and value == "":
        raise _required()
    if value == "":
        return
    length = len(value)
    minimum = int(field.get("min") or 0)
    if minimum > 0 and length < minimum:
        raise _templated("validation_min_text_constraint", "Must be at least {{.min}} character(s).",
                         {"min": minimum})
    maximum = int(field.get("max") or 0) or DEFAULT_TEXT_MAX
    if length > maximum:
        raise _templated("validation_max_text_constraint", "Must be no more than {{.max}} character(s).",
                         {"max": maximum})
    pattern = field.get("pattern") or ""
    if pattern and not regex_search(pattern, value):
        raise _err("validation_invalid_format", "Invalid value format.")
    if primary and pattern != DEFAULT_ID_PATTERN:
        for char in (".", "/", "\\", "|", '"', "'", "`", "<", ">", ":", "?", "*", "%", "$",
                     "\0", "\t", "\n", "\r", " "):
            if char in value:
                raise _templated("validation_forbidden_pk_character",
                                 "'{{.ch}}' is not a valid primary key character.", {"ch": char})
        if length <= 4:
            for reserved in ("CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                             *(f"LPT{i}" for i in range(1, 10))):
                if value.upper() == reserved:
                    raise _templated("validation_reserved_pk",
                                     "The primary key '{{.reserved}}' is reserved and cannot be used.",
                                     {"reserved": reserved})


def _validate_select(field: Mapping[str, Any], values: list[str]) -> None:
    if not values:
        if field.get("required"):
            raise _required()
        return
    max_select = max(int(field.get("maxSelect") or 0), 1)
    if len(values) > max_select:
        raise _templated("validation_too_many_values", "Select no more than {{.maxSelect}}",
                         {"maxSelect": max_select})
    allowed = field.get("values") or []
    for value in values:
        if value not in allowed:
            raise _templated("validation_invalid_value", "Invalid value {{.value}}", {"value": value})


def _validate_relation(field: Mapping[str, Any], ids: list[str]) -> None:
    if not ids:
        if field.get("required"):
            raise _required()
        return
    min_select = int(field.get("minSelect") or 0)
    if min_select > 0 and len(ids) < min_select:
        raise _templated("validation_not_enough_values", "Select at least {{.minSelect}}",
                         {"minSelect": min_select})
    max_select = max(int(field.get("maxSelect") or 0), 1)
    if len(ids) > max_select:
        raise _templated("validation_too_many_values", "Select no more than {{.maxSelect}}",
                         {"maxSelect": max_select})


def _validate_file_names(field: Mapping[str, Any], names: list[str], current: Any, uploaded: Sequence[str]) -> None:
    if not names:
        if field.get("required"):
            raise _required()
        return
    known = set(to_unique_strings(current)) if current is not MISSING else set()
    known.update(uploaded)
    invalid = [name[:250] for name in names if name not in known]
    if invalid:
        raise _err("validation_invalid_file", f"Invalid new files: [{' '.join(invalid)}].",
                   {"invalidFiles": invalid})
    max_select = max(int(field.get("maxSelect") or 0), 1)
    if len(names) > max_select:
        raise _templated("validation_too_many_files", "The maximum allowed files is {{.maxSelect}}",
                         {"maxSelect": max_select})


def _typed_from_stored(field: Mapping[str, Any], stored: Any) -> Any:
    """A stored column value converted to the typed value PocketBase holds after loading the record."""
    field_type = field.get("type")
    text = stored_to_string(stored)
    if field_type in ("text", "email", "url", "editor", "password"):
        return text or ""
    if field_type == "number":
        return cast_to_float(text)
    if field_type == "bool":
        return cast_to_bool(text)
    if field_type in ("date", "autodate"):
        return parse_datetime(text)
    if field_type in ("select", "relation", "file"):
        return to_unique_strings(text)
    if field_type == "json":
        return _json_raw_from_input(text)
    if field_type == "geoPoint":
        return _geo_point(text) or (0.0, 0.0)
    return stored


def prepare_value(field: Mapping[str, Any], raw: Any, *, current: Any = MISSING, is_new: bool,
                  uploaded: Sequence[str] = ()) -> Any:
    """Cast, default and validate a submitted value; return what to store in the field's column.

    ``raw`` is the decoded JSON value the client sent for the field (:data:`MISSING` when the key was
    absent: a new record then gets the field's zero value, an existing one keeps ``current``, the stored
    column value, which is validated again as PocketBase does on every save). Casting follows PocketBase
    (``"12"`` → 12 for numbers, ``"true"``/``1`` → true for bools, text is not trimmed, a JSON array
    string is accepted for select/relation/file, the last item is kept for single ones).

    Storage forms: text-like and single select/relation/file → ``str``; number → ``float``; bool → 0/1;
    date → ``"2006-01-02 15:04:05.000Z"`` or ``""``; multi select/relation/file → JSON array text;
    json → JSON text or None (SQL NULL for a JSON null); geoPoint → ``{"lon":..,"lat":..}`` text;
    password → a :class:`PlainPassword` to hash when a new one was given, else the current hash;
    autodate → :func:`autodate_value` (or the current value). File fields take file *names* only:
    names not in ``current`` must be listed in ``uploaded`` (the caller stores uploads itself).

    Raises :class:`FieldError` with PocketBase's code/message/params. Relation ids are only checked for
    shape (min/maxSelect): the caller checks that the records exist (see :func:`relation_ids`); PK
    uniqueness is likewise left to the caller (the table's PRIMARY KEY enforces it).
    """
    field_type = field.get("type")
    if field_type not in _TYPE_OPTIONS:
        raise ValueError(f"unknown field type {field_type!r} of field {field.get('name')!r}")
    submitted = raw is not MISSING
    if field_type == "autodate":
        stamped = autodate_value(field, is_new, format_datetime(time.time()))
        if stamped is not None:
            return stamped
        if current is MISSING or current is None:
            return ""
        return format_datetime_value(parse_datetime(stored_to_string(current)))
    if field_type == "password":
        return _prepare_password(field, raw, current, is_new)
    if not submitted:
        if is_new or current is MISSING:
            raw = None
        else:
            return _revalidate_current(field, current)
    return _prepare_submitted(field, raw, current, is_new, uploaded)


def cast_value(field: Mapping[str, Any], raw: Any, *, current: Any = MISSING, is_new: bool) -> Any:
    """A submitted value cast to its storage form WITHOUT validating it (PocketBase's field setters, as
    ``Record.Set`` applies them when a request body is loaded, before any validation).

    ``raw`` :data:`MISSING` keeps ``current`` (or gives a new record the field's zero value). Passwords
    come back as :class:`PlainPassword` (a new plain value) or the current hash. Autodate fields keep
    their current value (they are stamped when the record is saved).
    """
    field_type = field.get("type")
    if raw is MISSING:
        if not is_new and current is not MISSING:
            if field_type == "password":
                return stored_to_string(current) or ""
            return _storage_of(field, _typed_from_stored(field, current))
        raw = None
    if field_type == "autodate":
        if current is MISSING or current is None:
            return ""
        return format_datetime_value(parse_datetime(stored_to_string(current)))
    if field_type == "password":
        plain = cast_to_string(raw)
        return PlainPassword(plain) if plain else ""
    if field_type in ("select", "relation", "file"):
        items = to_unique_strings(raw)
        return stored_from_list(field, items if is_multiple(field) else items[-1:])
    if field_type == "json":
        return _json_raw_from_input(raw)
    if field_type == "geoPoint":
        lon, lat = _geo_point(raw) or (0.0, 0.0)
        return orjson.dumps({"lon": json_number(lon), "lat": json_number(lat)}).decode()
    if field_type == "number":
        return cast_to_float(raw)
    if field_type == "bool":
        return 1 if cast_to_bool(raw) else 0
    if field_type == "date":
        return format_datetime_value(parse_datetime(raw))
    return cast_to_string(raw)


def _storage_of(field: Mapping[str, Any], typed: Any) -> Any:
    """A typed value (see :func:`_typed_from_stored`) back in storage form."""
    field_type = field.get("type")
    if field_type in ("select", "relation", "file"):
        return stored_from_list(field, typed)
    if field_type == "bool":
        return 1 if typed else 0
    if field_type in ("date", "autodate"):
        return format_datetime_value(typed)
    if field_type == "geoPoint":
        lon, lat = typed
        return orjson.dumps({"lon": json_number(lon), "lat": json_number(lat)}).decode()
    return typed


def _revalidate_current(field: Mapping[str, Any], current: Any) -> Any:
    """Validate an unchanged stored value (PocketBase validates every field on every save) and return it
    in storage form."""
    field_type = field.get("type")
    typed = _typed_from_stored(field, current)
    if field_type in ("select", "relation", "file"):
        if field_type == "select":
            _validate_select(field, typed)
        elif field_type == "relation":
            _validate_relation(field, typed)
        else:
            _validate_file_names(field, typed, typed, ())
        return stored_from_list(field, typed)
    if field_type == "json":
        _validate_json(field, typed)
        return typed
    if field_type == "text" and field.get("primaryKey"):
        return typed  # stored ids are never re-validated (they may come from other systems)
    return _finish(field, typed, is_new=False)


def _prepare_submitted(field: Mapping[str, Any], raw: Any, current: Any, is_new: bool,
                       uploaded: Sequence[str]) -> Any:
    field_type = field.get("type")
    if field_type in ("select", "relation", "file"):
        items = to_unique_strings(raw)
        if not is_multiple(field):
            items = items[-1:]
        if field_type == "select":
            _validate_select(field, items)
        elif field_type == "relation":
            _validate_relation(field, items)
        else:
            _validate_file_names(field, items, current, uploaded)
        return stored_from_list(field, items)
    if field_type == "json":
        text = _json_raw_from_input(raw)
        _validate_json(field, text)
        return text
    if field_type == "geoPoint":
        point = _geo_point(raw)
        if point is None:
            point = (0.0, 0.0)
        return _finish(field, point, is_new=is_new)
    if field_type == "number":
        return _finish(field, cast_to_float(raw), is_new=is_new)
    if field_type == "bool":
        return _finish(field, cast_to_bool(raw), is_new=is_new)
    if field_type == "date":
        return _finish(field, parse_datetime(raw), is_new=is_new)
    value = cast_to_string(raw)
    if field_type == "text":
        if field.get("primaryKey") and not is_new and current is not MISSING:
            old = stored_to_string(current) or ""
            if value != old:
                raise _err("validation_pk_change", "The record primary key cannot be changed.")
            return old
        if is_new and value == "" and field.get("autogeneratePattern"):
            value = generate_by_pattern(str(field["autogeneratePattern"]))
    return _finish(field, value, is_new=is_new)


def _validate_json(field: Mapping[str, Any], text: str | None) -> None:
    size_limit = int(field.get("maxSize") or 0)
    if size_limit <= 0:
        size_limit = DEFAULT_JSON_MAX_SIZE
    raw = text or ""
    if len(raw.encode()) > size_limit:
        raise _templated("validation_json_size_limit", "The maximum allowed JSON size is {{.maxSize}} bytes",
                         {"maxSize": size_limit})
    if raw and not _valid_json(raw):
        raise _err("validation_invalid_json", "Must be a valid json value")
    if field.get("required") and raw.strip() in ("null", '""', "[]", "{}", ""):
        raise _required()


def _finish(field: Mapping[str, Any], value: Any, *, is_new: bool) -> Any:
    """Validate a typed scalar value and convert it to its storage form."""
    field_type = field.get("type")
    if field_type == "number":
        number = float(value)
        if math.isinf(number) or math.isnan(number):
            raise _err("validation_not_a_number", "The submitted number is not properly formatted")
        if number == 0:
            if field.get("required"):
                raise _required()
            return number
        if field.get("onlyInt") and not number.is_integer():
            raise _err("validation_only_int_constraint", "Decimal numbers are not allowed")
        minimum, maximum = field.get("min"), field.get("max")
        if minimum is not None and number < float(minimum):
            raise _templated("validation_min_number_constraint", "Must be greater or equal than {{.min}}",
                             {"min": float(minimum)})
        if maximum is not None and number > float(maximum):
            raise _templated("validation_max_number_constraint", "Must be less or equal than {{.max}}",
                             {"max": float(maximum)})
        return number
    if field_type == "bool":
        if field.get("required") and not value:
            raise _required()
        return 1 if value else 0
    if field_type == "date":
        moment: datetime | None = value
        if moment is None:
            if field.get("required"):
                raise _required()
            return ""
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        low, high = parse_datetime(field.get("min")), parse_datetime(field.get("max"))
        if low is not None and moment < low:
            raise _err("validation_min_greater_equal_than_required",
                       f"must be no less than {time_string(low)}", {"threshold": time_json(low)})
        if high is not None and moment > high:
            raise _err("validation_max_less_equal_than_required",
                       f"must be no greater than {time_string(high)}", {"threshold": time_json(high)})
        return format_datetime_value(moment)
    if field_type == "geoPoint":
        lon, lat = value
        if lat == 0 and lon == 0:
            if field.get("required"):
                raise _required()
        elif lat < -90 or lat > 90:
            raise _err("validation_invalid_latitude", "Latitude must be between -90 and 90 degrees.")
        elif lon < -180 or lon > 180:
            raise _err("validation_invalid_longitude", "Longitude must be between -180 and 180 degrees.")
        return orjson.dumps({"lon": json_number(lon), "lat": json_number(lat)}).decode()
    text = str(value)
    if field_type == "text":
        _validate_text_plain(field, text)
        return text
    if field.get("required") and text == "":
        raise _required()
    if text == "":
        return text
    if field_type == "email":
        if not is_email(text):
            raise _err("validation_is_email", "must be a valid email address")
        domain = _email_domain(text)
        only, exclude = field.get("onlyDomains") or [], field.get("exceptDomains") or []
        if (only and domain not in only) or (exclude and domain in exclude):
            raise _err("validation_email_domain_not_allowed", "Email domain is not allowed")
    elif field_type == "url":
        if not is_url(text):
            raise _err("validation_invalid_url", "Must be a valid url")
        host = _url_host(text)
        only, exclude = field.get("onlyDomains") or [], field.get("exceptDomains") or []
        if (only and host not in only) or (exclude and host in exclude):
            raise _err("validation_url_domain_not_allowed", "Url domain is not allowed")
    elif field_type == "editor":
        limit = int(field.get("maxSize") or 0)
        if limit <= 0:
            limit = DEFAULT_EDITOR_MAX_SIZE
        if len(text.encode()) > limit:
            raise _templated("validation_content_size_limit",
                             "The maximum allowed content size is {{.maxSize}} bytes", {"maxSize": limit})
    return text


def _prepare_password(field: Mapping[str, Any], raw: Any, current: Any, is_new: bool) -> str:
    plain = "" if raw is MISSING else cast_to_string(raw)
    current_hash = "" if current is MISSING or current is None else (stored_to_string(current) or "")
    if not plain:
        stored = current_hash if raw is MISSING and not is_new else ""
        if field.get("required") and not stored:
            raise _required()
        return stored
    if len(plain.encode()) > 72:  # bcrypt refuses it: PocketBase reports the hashing error as is
        raise _err("validation_invalid_value", "Invalid value.")
    length = len(plain)
    minimum = int(field.get("min") or 0)
    if length < minimum:
        raise _err("validation_min_text_constraint", f"Must be at least {minimum} character(s)")
    maximum = int(field.get("max") or 0)
    if maximum <= 0:
        maximum = PASSWORD_MAX_LENGTH
    if length > maximum:
        raise _err("validation_max_text_constraint", f"Must be less than {maximum} character(s)")
    pattern = field.get("pattern") or ""
    if pattern and not regex_search(pattern, plain):
        raise _err("validation_invalid_format", "Invalid value format")
    return PlainPassword(plain)


# ---------------------------------------------------------------------------------------- API


def to_api_value(field: Mapping[str, Any], stored: Any) -> Any:
    """The JSON value PocketBase's record API shows for a stored column value.

    bool → true/false; number → int when integral, else float; text-like → str; date/autodate →
    ``"2006-01-02 15:04:05.000Z"`` or ``""``; multi select/relation/file → list; single ones → str (``""``
    when empty); json → the parsed value (None for NULL/``null``); geoPoint → ``{"lon", "lat"}``;
    password → ``""`` (PocketBase never serializes it: callers should omit password fields).
    """
    field_type = field.get("type")
    if field_type == "password":
        return ""
    typed = _typed_from_stored(field, stored)
    if field_type == "number":
        return json_number(typed) if math.isfinite(typed) else 0
    if field_type in ("date", "autodate"):
        return format_datetime_value(typed)
    if field_type in ("select", "relation", "file"):
        if is_multiple(field):
            return typed
        return typed[-1] if typed else ""
    if field_type == "json":
        if typed is None:
            return None
        value = orjson.loads(typed)
        if typed.count("[") + typed.count("{") > ORJSON_MAX_DEPTH and json_depth(value) > ORJSON_MAX_DEPTH:
            return DeepJson(typed)
        return value
    if field_type == "geoPoint":
        lon, lat = typed
        return {"lon": json_number(lon), "lat": json_number(lat)}
    return typed
