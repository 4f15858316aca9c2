"""A batch request's form (PocketBase's ``batchRequestsForm`` in ``apis/batch.go``): the list of internal
requests ``{"method", "url", "headers", "body"}`` read from the body as PocketBase binds it, then validated.

Bodies PocketBase reads: ``application/json`` (field names matched case-insensitively), and form bodies
(``multipart/form-data``, ``application/x-www-form-urlencoded``) whose ``@jsonPayload`` field holds that
JSON (names matched exactly); XML binds to nothing. In a multipart body, files meant for request N
are sent as ``requests.N.<field>`` or ``requests[N].<field>`` (what the JS SDK sends): they are collected
into :attr:`BatchItem.files`. Go's JSON decoder is strict here: duplicate names, invalid UTF-8, and a
value of the wrong type fail the whole form (400 "Failed to read the submitted batch data.")."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson

from pbfast.http import ApiError
from pbfast.pocketbase import gocompat
from pbfast.pocketbase.apis.multipart import MultipartError, UploadedFile, parse_form_data
from pbfast.pocketbase.apis.request import TenantRequest

__all__ = ["BATCH_METHODS", "JSON_PAYLOAD", "BatchItem", "Unreadable", "read_batch_form", "strict_json",
           "validate_batch_form"]

READ_FAILED: Final = "Failed to read the submitted batch data."
INVALID: Final = "Invalid batch request data."
BATCH_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_URL_LENGTH: Final = 2000
JSON_PAYLOAD: Final = "@jsonPayload"
_FILE_KEY: Final = re.compile(r"requests(?:\.(\d+)\.|\[(\d+)\]\.)(.+)", re.DOTALL)


@dataclass(slots=True)
class BatchItem:
    """One internal request (PocketBase's ``core.InternalRequest``); ``files`` are its uploads, by field."""

    method: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    files: dict[str, list[UploadedFile]] = field(default_factory=dict)


class Unreadable(ValueError):
    """The body does not bind to the form."""


def read_batch_form(request: TenantRequest) -> list[BatchItem]:
    """The requests of a batch body (an empty body has none). Raises ``ApiError(400, READ_FAILED)``."""
    raw = request.raw_body or b""
    if not raw:
        return []  # PocketBase binds nothing from an empty body, whatever its type
    content_type = request.header("content-type") or ""
    try:
        if content_type.startswith("application/json"):
            return _items(strict_json(raw), fold_case=True)
        if content_type.startswith("multipart/form-data"):
            form = parse_form_data(raw, content_type)
            items = _form_items(form.values)
            _attach_files(items, form.files)
            return items
        if content_type.startswith("application/x-www-form-urlencoded"):
            values: dict[str, list[str]] = {}
            for key, value in parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True):
                values.setdefault(key, []).append(value)
            return _form_items(values)
        if content_type.startswith(("text/xml", "application/xml")):
            # binds to no field of the form (left unparsed: PocketBase would answer a malformed one with
            # READ_FAILED instead of INVALID, both 400s, and untrusted XML is not worth parsing)
            return []
    except (Unreadable, MultipartError, UnicodeDecodeError) as err:
        raise ApiError(400, READ_FAILED) from err
    raise ApiError(400, READ_FAILED)  # any other Content-Type


def validate_batch_form(items: list[BatchItem], max_requests: int) -> None:
    """PocketBase's validation of the form: at least one request and at most ``max_requests``, then each
    request's method and URL. Raises ``ApiError(400, INVALID, {"requests": ...})``."""
    if not items:
        raise ApiError(400, INVALID, {"requests": {"code": "validation_required", "message": "Cannot be blank."}})
    if len(items) > max_requests:
        raise ApiError(400, INVALID, {"requests": _too_long(max_requests)})
    problems: dict[str, Any] = {}
    for index, item in enumerate(items):
        errors: dict[str, Any] = {}
        if not item.method:
            errors["method"] = {"code": "validation_required", "message": "Cannot be blank."}
        elif item.method not in BATCH_METHODS:
            errors["method"] = {"code": "validation_in_invalid", "message": "Must be a valid value."}
        if not item.url:
            errors["url"] = {"code": "validation_required", "message": "Cannot be blank."}
        elif len(item.url) > MAX_URL_LENGTH:
            errors["url"] = _too_long(MAX_URL_LENGTH)
        if errors:
            problems[str(index)] = errors
    if problems:
        raise ApiError(400, INVALID, {"requests": problems})


def _too_long(limit: int) -> dict[str, Any]:
    return {"code": "validation_length_too_long", "message": f"The length must be no more than {limit}.",
            "params": {"max": limit, "min": 0}}


def strict_json(raw: bytes, *, whole: bool = False) -> Any:
    """The body's first JSON value as Go's json v2 decodes it: valid UTF-8 only, no duplicate names, numbers
    within float64; what follows the first value is not read (``whole``: only white space may follow, as
    ``json.Unmarshal`` wants)."""
    text = raw.decode("utf-8")  # invalid UTF-8: UnicodeDecodeError
    decoder = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_no_constant,
                               parse_float=gocompat.decoded_float, parse_int=gocompat.decoded_int)
    start = len(text) - len(text.lstrip(" \t\r\n"))
    try:
        value, end = decoder.raw_decode(text, start)
        if whole and text[end:].strip(" \t\r\n"):
            raise Unreadable("invalid character after top-level value")
        orjson.dumps(value)  # lone surrogates (\ud800), which Go refuses as invalid UTF-8
    except (ValueError, RecursionError, orjson.JSONEncodeError) as err:
        raise Unreadable(str(err)) from err
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise Unreadable("duplicate name in object")
    return value


def _no_constant(name: str) -> Any:
    raise Unreadable(f"{name} is not JSON")



def _member(obj: dict[str, Any], name: str, fold_case: bool) -> Any:
    """The value of struct field ``name`` in a JSON object (Go's case-insensitive match when ``fold_case``;
    two names matching the same field are duplicates)."""
    if not fold_case:
        return obj.get(name)
    matches = [key for key in obj if key.lower() == name.lower()]
    if len(matches) > 1:
        raise Unreadable(f"duplicate name {name!r}")
    return obj[matches[0]] if matches else None


def _items(value: Any, *, fold_case: bool) -> list[BatchItem]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise Unreadable("the batch body is not an object")
    requests = _member(value, "requests", fold_case)
    if requests is None:
        return []
    if not isinstance(requests, list):
        raise Unreadable("requests is not a list")
    return [_item(entry, fold_case) for entry in requests]


def _item(entry: Any, fold_case: bool) -> BatchItem:
    if entry is None:
        # PocketBase answers a null request with a 500 (a nil pointer); here it is a request with nothing set
        return BatchItem()
    if not isinstance(entry, dict):
        raise Unreadable("a request is not an object")
    method, url = _member(entry, "method", fold_case), _member(entry, "url", fold_case)
    headers, body = _member(entry, "headers", fold_case), _member(entry, "body", fold_case)
    if not isinstance(method, str | None) or not isinstance(url, str | None):
        raise Unreadable("method and url are strings")
    if headers is not None and (not isinstance(headers, dict)
                                or not all(isinstance(v, str | None) for v in headers.values())):
        raise Unreadable("headers is an object of strings")
    if body is not None and not isinstance(body, dict):
        raise Unreadable("body is an object")
    return BatchItem(method or "", url or "", {k: v or "" for k, v in (headers or {}).items()}, body)


def _form_items(values: dict[str, list[str]]) -> list[BatchItem]:
    """The form from a form body's fields: each ``@jsonPayload`` in turn (the last one that has requests
    wins); a plain ``requests`` field cannot bind."""
    if "requests" in values:
        raise Unreadable("requests cannot be a plain form field")
    items: list[BatchItem] = []
    for payload in values.get(JSON_PAYLOAD, []):
        decoded = strict_json(payload.encode("utf-8", errors="surrogateescape"), whole=True)
        if decoded is not None and not isinstance(decoded, dict):
            raise Unreadable("the batch payload is not an object")
        if decoded and "requests" in decoded:
            items = _items(decoded, fold_case=False)
    return items


def _attach_files(items: list[BatchItem], files: dict[str, list[UploadedFile]]) -> None:
    """Files sent as ``requests.N.<field>`` or ``requests[N].<field>`` go to request N (others are ignored)."""
    for key, uploads in files.items():
        match = _FILE_KEY.fullmatch(key)
        if match is None:
            continue
        index = int(match.group(1) or match.group(2))
        if index < len(items):
            items[index].files.setdefault(match.group(3), []).extend(uploads)
