"""Record bodies sent as forms (``multipart/form-data``, ``application/x-www-form-urlencoded``), bound as
PocketBase binds them into ``@request.body`` (``router.UnmarshalRequestData`` over Go's ``Request.Form``):

* the URL's query values count as form values too (Go's ``Request.Form``): for a multipart body they come
  first and the body's after them, for an urlencoded one the body's first;
* a key sent once is one value, a repeated key a list; each plain value is inferred as PocketBase does
  (``"true"``/``"false"`` are bools, a number only when its shortest form is the text itself, anything
  else stays text);
* each ``@jsonPayload`` value is a JSON object merged over the rest, keys and types as sent (how the JS SDK
  sends a body with files);
* a query Go refuses (a ``;``, a bad ``%`` escape) or a malformed body is :class:`FormError`.

Files (parts with a ``filename``) are returned apart: the records API stores those sent for a file field of
the collection (:mod:`.file_uploads`) and ignores the others, as PocketBase does."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_plus

from pbfast.http import ApiError
from pbfast.pocketbase.apis.batch_form import JSON_PAYLOAD, Unreadable, strict_json
from pbfast.pocketbase.apis.multipart import MultipartError, UploadedFile, parse_form_data
from pbfast.pocketbase.apis.request import BAD_REQUEST, LOAD_FAILED, UNSUPPORTED_CONTENT_TYPE, TenantRequest, read_body
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.fields import FileField
from pbfast.pocketbase.gocompat import format_float_f

__all__ = ["FORM_TYPES", "FormBody", "FormError", "bind_form_values", "infer_value",
           "bind_form_struct", "check_uploads", "parse_go_query", "read_form_body", "read_form_values",
           "record_form_body", "struct_body", "struct_form_body"]

FORM_TYPES: Final = ("multipart/form-data", "application/x-www-form-urlencoded")
_NUMBER_CHARS: Final = re.compile(r"[-.0-9]+")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


class FormError(ValueError):
    """A form body (or its URL query) PocketBase cannot bind."""


@dataclass(frozen=True, slots=True)
class FormBody:
    """What a form body binds to: ``data`` (``@request.body``) and the uploaded files by field name;
    ``multipart``: sent as multipart/form-data; ``empty``: with no body at all."""

    data: dict[str, Any]
    files: dict[str, list[UploadedFile]] = field(default_factory=dict)
    multipart: bool = False
    empty: bool = False


def parse_go_query(raw: str) -> dict[str, list[str]]:
    """Go's ``url.ParseQuery``: ``&``-separated pairs, ``+`` is a space; a ``;`` or a bad escape is an error."""
    values: dict[str, list[str]] = {}
    for pair in raw.split("&"):
        if not pair:
            continue
        if ";" in pair or _BAD_ESCAPE.search(pair):
            raise FormError("invalid query")
        key, _, value = pair.partition("=")
        values.setdefault(unquote_plus(key, errors="surrogateescape"), []).append(
            unquote_plus(value, errors="surrogateescape"))
    return values


def infer_value(raw: str) -> Any:
    """PocketBase's ``inferValue`` for one plain form value (invalid UTF-8 in it, kept as surrogates by the
    parsers, shown as U+FFFD per byte, as Go's JSON encoder shows it)."""
    if not raw.isascii():
        raw = _valid_text(raw)
    if raw == "true":
        return True
    if raw == "false":
        return False
    if raw and (raw[0] == "-" or raw[0].isdigit()) and _NUMBER_CHARS.fullmatch(raw):
        try:
            number = float(raw)
        except ValueError:
            return raw
        if format_float_f(number) == raw:
            # a whole number is exact in a float64; kept an int so that it prints as Go prints it
            return int(number) if number.is_integer() and raw != "-0" else number
    return raw


def _valid_text(text: str) -> str:
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def bind_form_values(values: dict[str, list[str]]) -> dict[str, Any]:
    """``@request.body`` from form values (see the module doc). Raises :class:`FormError`."""
    data: dict[str, Any] = {}
    for key, items in values.items():
        if key == JSON_PAYLOAD:
            continue
        if not key.isascii():
            key = _valid_text(key)
        data[key] = infer_value(items[0]) if len(items) == 1 else [infer_value(item) for item in items]
    return _merge_payloads(data, values.get(JSON_PAYLOAD, []))


def bind_form_struct(values: dict[str, list[str]]) -> dict[str, Any]:
    """Form values as PocketBase binds them into a struct of text fields (an auth form): a key's first value,
    as text, then the ``@jsonPayload`` objects over them (names matched exactly, values as typed). Raises
    :class:`FormError`."""
    data: dict[str, Any] = {key: _valid_text(items[0]) for key, items in values.items() if key != JSON_PAYLOAD}
    return _merge_payloads(data, values.get(JSON_PAYLOAD, []))


def _merge_payloads(data: dict[str, Any], payloads: list[str]) -> dict[str, Any]:
    for payload in payloads:
        try:
            decoded = strict_json(payload.encode("utf-8", errors="surrogateescape"), whole=True)
        except (Unreadable, UnicodeDecodeError) as err:
            raise FormError(str(err)) from err
        if decoded is None:
            data.clear()  # Go's decoder zeroes its target on null: every value so far is gone
            continue
        if not isinstance(decoded, dict):
            raise FormError("@jsonPayload is not a JSON object")
        data.update(decoded)
    return data


def read_form_values(raw: bytes, content_type: str,
                     query: str) -> tuple[dict[str, list[str]], dict[str, list[UploadedFile]]]:
    """The values (the URL's query values included, in Go's order) and files of a form body sent with
    ``content_type`` to a URL with ``query``. Raises :class:`FormError`."""
    query_values = parse_go_query(query)
    values: dict[str, list[str]] = {}
    files: dict[str, list[UploadedFile]] = {}
    try:
        if _media_type(content_type) == "multipart/form-data":
            form = parse_form_data(raw, content_type)
            _extend(values, query_values)
            _extend(values, form.values)
            files = form.files
        else:
            _extend(values, parse_go_query(raw.decode("utf-8", errors="surrogateescape")))
            _extend(values, query_values)
    except MultipartError as err:
        raise FormError(str(err)) from err
    return values, files


def read_form_body(raw: bytes, content_type: str, query: str) -> FormBody:
    """Bind a form body sent with ``content_type`` to a URL with ``query``. Raises :class:`FormError`."""
    values, files = read_form_values(raw, content_type, query)
    return FormBody(bind_form_values(values), files, multipart=_media_type(content_type) == "multipart/form-data")


def struct_form_body(request: TenantRequest) -> dict[str, Any] | None:
    """The body of a request whose handler binds a struct of text fields (password auth) when sent as a
    form (None: not a form, read it as JSON); a form that cannot be read is ``ApiError(400)``."""
    content_type = request.header("content-type") or ""
    if _media_type(content_type) not in FORM_TYPES:
        return None
    raw = request.raw_body
    if raw is None:
        raise ApiError(413, "Request entity too large.")
    if not raw:
        return {}
    try:
        values, _ = read_form_values(raw, content_type, request.scope.query_string)
        return bind_form_struct(values)
    except FormError as err:
        raise ApiError(400, BAD_REQUEST) from err


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _extend(values: dict[str, list[str]], more: dict[str, list[str]]) -> None:
    for key, items in more.items():
        values.setdefault(key, []).extend(items)



def record_form_body(request: TenantRequest, limit: int) -> FormBody | None:
    """The body of a record create/update sent as a form (None: not a form, read it as JSON)."""
    content_type = request.header("content-type") or ""
    media_type = _media_type(content_type)
    if request.bound_body is not None or media_type not in FORM_TYPES:
        return None
    raw = request.raw_body
    if raw is None or len(raw) > limit:
        raise ApiError(413, "Request entity too large.")
    multipart = media_type == "multipart/form-data"
    if not raw:
        return FormBody({}, multipart=multipart, empty=True)  # PocketBase binds nothing (not even the query)
    try:
        form = read_form_body(raw, content_type, request.scope.query_string)
    except FormError as err:
        raise ApiError(400, BAD_REQUEST) from err
    return form


def check_uploads(collection: Collection, form: FormBody | None) -> None:
    """PocketBase's look for uploads, once the requester may write (after the null-rule check, or the
    record lookup of an update): only for a multipart body to a collection with file fields, where an
    empty body cannot be read (400)."""
    if form is None or not form.multipart or not form.empty:
        return
    if any(isinstance(f, FileField) for f in collection.fields):
        raise ApiError(400, "Failed to read the submitted data.")


def struct_body(request: TenantRequest, *, first_api_error: bool = False) -> tuple[dict[str, Any], bool]:
    """The body of a handler that binds a struct, sent as a form or as JSON, and whether it came as a form; a
    body that cannot be read is 400 :data:`LOAD_FAILED`, except, with ``first_api_error`` (PocketBase's
    ``firstApiError``), the binder's own 400 for a body of another content type."""
    try:
        sent_as_form = struct_form_body(request)
        body = read_body(request) if sent_as_form is None else sent_as_form
    except ApiError as err:
        if err.status == 400 and not (first_api_error and err.message == UNSUPPORTED_CONTENT_TYPE):
            raise ApiError(400, LOAD_FAILED) from err
        raise
    return body, sent_as_form is not None
