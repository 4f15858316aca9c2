"""``multipart/form-data`` bodies as Go's ``mime/multipart`` reads them for PocketBase (``ParseMultipartForm``):
text fields by name, and uploaded files by field name (a part with a ``filename``).

Read by the batch API (the JS SDK always sends ``pb.createBatch()`` that way, its JSON under the
``@jsonPayload`` field) and by record create/update (:mod:`.form_body`); stored files are not built yet.
The body is already in memory (bounded by the route's body limit); parts and header lines are bounded like
Go's (1,000 parts, 10,000 header lines). Text values keep invalid UTF-8 as surrogates (``surrogateescape``):
a JSON payload refuses it, a plain value shows it as U+FFFD."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Final

from pbfast._native import find_bytes

__all__ = ["FormData", "MultipartError", "UploadedFile", "parse_form_data"]

MAX_PARTS: Final = 1000
MAX_HEADER_LINES: Final = 10_000
# The spellings clients send (browsers, the SDKs, curl, Go, Python's libraries) are read with one regular
# expression; the email package (~10 µs a header) reads any other, as it reads these.
_PLAIN_BOUNDARY: Final = re.compile(r'multipart/form-data;[ \t]*boundary=(?:([0-9A-Za-z_.+\-]{1,70})|"([0-9A-Za-z_.+\-]{1,70})")',
                                    re.ASCII)
# quoted values of printable ASCII without `"`, `\\`, `<`, `>` (email's unquote drops a value's <...>)
_PLAIN_DISPOSITION: Final = re.compile(r'form-data;[ \t]*name="([ !#-;=?-\[\]-~]*)"(?:;[ \t]*filename="([ !#-;=?-\[\]-~]*)")?',
                                       re.ASCII)


class MultipartError(ValueError):
    """A body that is not a well-formed multipart/form-data message (or exceeds its limits)."""


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One file part: the field it was sent under, its client-side name and type, and its bytes."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class FormData:
    """A multipart body's text values and files, each by field name in the order sent."""

    values: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[UploadedFile]] = field(default_factory=dict)


def _params(header_value: str, header: str) -> Message:
    message = Message()
    message[header] = header_value
    return message


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type. Raises :class:`MultipartError`."""
    if (plain := _PLAIN_BOUNDARY.fullmatch(content_type)) is not None:
        return plain.group(1) or plain.group(2)
    boundary = _params(content_type, "content-type").get_param("boundary", header="content-type")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 70:
        raise MultipartError("no multipart boundary param in Content-Type")
    return boundary


def parse_form_data(body: bytes, content_type: str) -> FormData:
    """The parts of ``body``. Raises :class:`MultipartError` for a malformed message."""
    delimiter = b"--" + boundary_of(content_type).encode()
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 1:start] != b"\n"):
        raise MultipartError("multipart: NextPart: EOF")
    form = FormData()
    position = start + len(delimiter)
    # Go's reader: lines end in CRLF, unless the first delimiter's line ends in a bare LF (a violation of the
    # spec that occurs in practice); then every delimiter follows a bare LF. Header lines may end either way.
    first_line_end = body.find(b"\n", position)
    newline = b"\n" if first_line_end >= 0 and not body[position:first_line_end].endswith(b"\r") else b"\r\n"
    parts = header_lines = 0
    while True:
        if body.startswith(b"--", position):  # the closing delimiter
            return form
        line_end = body.find(newline, position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise MultipartError("multipart: expected a line break after the boundary")
        headers, header_lines, content_start = _part_headers(body, line_end + len(newline), header_lines)
        content_end = find_bytes(body, newline + delimiter, content_start)  # bytes.find, in SIMD
        if content_end < 0:
            raise MultipartError("multipart: a part never ends")
        parts += 1
        if parts > MAX_PARTS:
            raise MultipartError("multipart: too many parts")
        _add_part(form, headers, body[content_start:content_end])
        position = content_end + len(newline) + len(delimiter)


def _part_headers(body: bytes, cursor: int, seen_lines: int) -> tuple[dict[str, str], int, int]:
    """The headers of the part that starts at ``cursor``, the header lines seen so far, and where its content
    starts (after the blank line; lines end in LF or CRLF, as Go's textproto reads them)."""
    headers: dict[str, str] = {}
    while True:
        line_end = body.find(b"\n", cursor)
        if line_end < 0:
            raise MultipartError("multipart: a part's headers never end")
        line = body[cursor:line_end].removesuffix(b"\r")
        cursor = line_end + 1
        if not line:
            return headers, seen_lines, cursor
        seen_lines += 1
        if seen_lines > MAX_HEADER_LINES:
            raise MultipartError("multipart: too many header lines")
        name, sep, value = line.decode("utf-8", errors="replace").partition(":")
        if not sep or not name.strip():
            raise MultipartError("multipart: malformed part header")
        headers.setdefault(name.strip().lower(), value.strip())


def _add_part(form: FormData, headers: dict[str, str], content: bytes) -> None:
    disposition = headers.get("content-disposition", "")
    if (plain := _PLAIN_DISPOSITION.fullmatch(disposition)) is not None:
        name, filename = plain.group(1), plain.group(2) and plain.group(2).strip()  # as email's get_filename
        if not name:
            return
    else:
        params = _params(disposition, "content-disposition")
        if params.get_content_disposition() != "form-data":
            return  # Go's FormName: only form-data parts have a name
        found = params.get_param("name", header="content-disposition")
        if not isinstance(found, str) or not found:
            return
        name, filename = found, params.get_filename()
    if filename:
        upload = UploadedFile(name, filename.replace("\\", "/").rsplit("/", 1)[-1],
                              headers.get("content-type", "application/octet-stream"), content)
        form.files.setdefault(name, []).append(upload)
    else:
        # invalid UTF-8 kept (as surrogates) for whoever reads the value: a JSON payload refuses it
        form.values.setdefault(name, []).append(content.decode("utf-8", errors="surrogateescape"))
