"""The files API (PocketBase's ``apis/file.go``): ``GET /api/files/{collection}/{recordId}/{filename}`` and
``POST /api/files/token``.

A download is decided on the database thread (the record, the field holding the name, a protected file's
token and view rule, the thumb asked for) and the bytes are read afterwards from the store through the
node's cache on a worker thread (:meth:`FileSend.send`), never on the event loop nor holding the tenant's
database turn. Thumbs are made once (Pillow, at most a few at a time) and kept in the store beside the
original, as PocketBase keeps them. Answers carry PocketBase's headers: Content-Type (sniffed, with its
extension overrides), Content-Disposition (``inline`` for media and PDFs, else ``attachment``; always
``attachment`` with ``download=1``), its Content-Security-Policy and Cache-Control, Last-Modified and
byte ranges (one, or several as ``multipart/byteranges``, as Go's ``http.ServeContent``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Final

from pbfast.http import ApiError, HTTPProtocol
from pbfast.logs import component_logger
from pbfast.pocketbase import auth, records
from pbfast.pocketbase.apis.front import NO_FRAME_OPTIONS
from pbfast.pocketbase.apis.settings import superuser_ip_allowed
from pbfast.pocketbase.apis.request import (MISSING_OR_INVALID_COLLECTION, NO_AUTH, NOT_FOUND, Auth, TenantRequest,
                                            request_info, send_error, send_with_fields)
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.fields import FileField
from pbfast.pocketbase.filesystem import ServedFile, StorageError, StoredObject, TenantFiles, files_of
from pbfast.pocketbase.filesystem.names import detect_type
from pbfast.pocketbase.filesystem.thumbs import THUMBABLE_TYPES, ThumbError, make_thumb
from pbfast.pocketbase.gocompat import to_unique_strings
from pbfast.pocketbase.records import RuleError
from pbfast.pocketbase.search import TableResolver

__all__ = ["FileSend", "download", "file_token"]

log = component_logger("Files")

DEFAULT_THUMB_SIZES: Final = ("100x100",)
STORE_TIMEOUT_SECONDS: Final = 60.0
UNREACHABLE: Final = "The file storage cannot be reached right now; retry."
CSP: Final = "default-src 'none'; media-src 'self'; style-src 'unsafe-inline'; sandbox"
CACHE_CONTROL: Final = "max-age=2592000, stale-while-revalidate=86400"
INLINE_TYPES: Final = frozenset((
    "image/png", "image/jpg", "image/jpeg", "image/gif", "image/webp", "image/x-icon", "image/bmp",
    "video/webm", "video/mp4", "video/3gpp", "video/quicktime", "video/x-ms-wmv",
    "audio/basic", "audio/aiff", "audio/mpeg", "audio/midi", "audio/mp3", "audio/wave", "audio/wav", "audio/x-wav",
    "audio/x-mpeg", "audio/x-m4a", "audio/aac", "application/pdf", "application/x-pdf"))
EXTENSION_TYPES: Final = {
    ".svg": "image/svg+xml", ".css": "text/css", ".js": "text/javascript", ".mjs": "text/javascript",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation"}
_THUMB_WORKERS = threading.BoundedSemaphore((os.cpu_count() or 1) + 2)
_IMAGE_EXTENSIONS: Final = frozenset((".png", ".jpg", ".jpeg", ".gif", ".webp"))
_THUMB_LOCKS: dict[str, threading.Lock] = {}
_THUMB_LOCKS_GUARD = threading.Lock()


def file_token(request: TenantRequest) -> None:
    if request.auth is None:
        raise ApiError(401, NO_AUTH)
    record, collection = request.auth.record, request.auth.collection
    config = collection.auth.tokens["fileToken"]
    token = auth.issue_file_token(str(record["id"]), str(record.get("tokenKey", "")), collection.id, config.secret,
                                  config.duration)
    send_with_fields(request, {"token": token})


def download(request: TenantRequest) -> None:
    tenant = request.tenant
    collection = tenant.collection(request.params["collection"])
    record_id, filename = request.params["id"], request.params["filename"]
    if collection is None:
        raise ApiError(404, MISSING_OR_INVALID_COLLECTION)  # worded by PocketBase's rate-limit middleware
    if not record_id:
        raise ApiError(404, NOT_FOUND)
    row = records.load_row(tenant, collection, record_id)
    if row is None:
        raise ApiError(404, NOT_FOUND)
    field = next((f for f in collection.fields if isinstance(f, FileField)
                  and filename in to_unique_strings(f.typed(row.get(f.name, "")))), None)
    if field is None:
        raise ApiError(404, NOT_FOUND)
    if field.protected and not _may_view(request, collection, record_id):
        raise ApiError(404, NOT_FOUND)
    directory = f"{collection.id}/{record_id}"
    if collection.type == "view":
        directory = _view_file_source(request, field.name, record_id, filename)
    thumb = request.query("thumb") or ""
    if thumb and thumb not in DEFAULT_THUMB_SIZES and thumb not in field.thumbs:
        thumb = ""
    request.after_turn = FileSend(files_of(tenant), directory, filename, thumb,
                                 _go_bool(request.query("download") or ""), request.header("range"),
                                 request.header("if-modified-since"), request.method == "HEAD")


def _view_file_source(request: TenantRequest, field_name: str, record_id: str, filename: str) -> str:
    """Where a view's file lives: with the record of a collection that holds it under the same field name
    and id (PocketBase follows the view's query to it; a view that renames the field or the id is not
    followed here)."""
    for source in request.tenant.collections.values():
        item = source.field(field_name)
        if source.type == "view" or not isinstance(item, FileField):
            continue
        row = records.load_row(request.tenant, source, record_id)
        if row is not None and filename in to_unique_strings(item.typed(row.get(field_name, ""))):
            return f"{source.id}/{record_id}"
    raise ApiError(404, NOT_FOUND)


def _may_view(request: TenantRequest, collection: Collection, record_id: str) -> bool:
    """A protected file: the holder of a valid file token passes the collection's view rule."""
    holder = _file_token_holder(request, (request.query("token") or "").strip())
    if holder is not None and holder.superuser:
        if superuser_ip_allowed(request):
            return True
        holder = None  # a superuser's token from outside the allowed addresses counts for nothing
    rule = collection.viewRule
    if rule is None:
        return False
    if not rule.strip():
        return True
    info = request_info(request, context="protectedFile", auth_state=holder)
    resolver = TableResolver(collection, info, collections=request.tenant.collections, allow_hidden_fields=True)
    try:
        condition = records.compile_rule(rule, resolver)
    except RuleError:
        return False
    return records.find_visible(request.tenant, collection, record_id, condition) is not None


def _file_token_holder(request: TenantRequest, token: str) -> Auth | None:
    if not token:
        return None
    try:
        claims = auth.peek_token_claims(token)
    except auth.TokenError:
        return None
    if claims.get("type") != "file":
        return None
    collection = request.tenant.collection_by_id(claims["collectionId"])
    if collection is None or collection.type != "auth":
        return None
    row = records.load_row(request.tenant, collection, claims["id"])
    secret = collection.auth.tokens["fileToken"].secret
    if row is None or not auth.verify_token_signature(token, str(row.get("tokenKey", "")), secret):
        return None
    return Auth(collection, row, token)


def _go_bool(raw: str) -> bool:
    return raw in ("1", "t", "T", "TRUE", "true", "True")


@dataclass(slots=True)
class _Answer:
    body: bytes
    modified: float
    name: str
    content_type: str
    path: str  # in the tenant's storage


@dataclass(slots=True)
class FileSend:
    """A file (or its thumb) to answer with, read from the store once the database work is done."""

    files: TenantFiles
    directory: str  # {collectionId}/{recordId}
    filename: str
    thumb: str
    attachment: bool
    range_header: str | None
    if_modified_since: str | None
    head: bool

    async def send(self, proto: HTTPProtocol) -> None:
        whole = self.range_header is None and not self.head
        if whole and (served := self.files.served_file(self.directory, self.filename, self.thumb)) is not None:
            self._respond_from_file(proto, served)  # as answered before, from the local store's file
            return
        try:
            answer = await asyncio.wait_for(asyncio.to_thread(self._read), STORE_TIMEOUT_SECONDS)
        except (StorageError, TimeoutError) as err:
            log.warning("%s%s/%s: %s", self.files.prefix, self.directory, self.filename, err or "timed out")
            send_error(proto, 503, UNREACHABLE, headers=[("retry-after", "2")])
            return
        if answer is None:
            send_error(proto, 404, NOT_FOUND)
            return
        if (root := self.files.local_root) is not None:
            self.files.remember_served(self.directory, self.filename, self.thumb, ServedFile(
                os.path.join(root, self.files.prefix + answer.path), len(answer.body), answer.modified, answer.name,
                answer.content_type))
        self._respond(proto, answer)

    def _respond_from_file(self, proto: HTTPProtocol, served: ServedFile) -> None:
        """The whole file, sent by the server from the file itself (granian reads it, off the event loop)."""
        headers = self._headers(served.name, served.content_type, served.modified)
        if self._not_modified(served.modified):
            proto.response_empty(304, [h for h in headers if h[0] != "content-type" and h[0] != "accept-ranges"])
            return
        headers.append(("content-length", str(served.size)))
        proto.response_file(200, headers, served.path)  # type: ignore[attr-defined]

    def _read(self) -> _Answer | None:
        if self.thumb and os.path.splitext(self.filename)[1].lower() in _IMAGE_EXTENSIONS:
            # A kept thumb was made from this original (an image; they are deleted together): answered without
            # reading the original again, which PocketBase too only looks at (its attributes) then. Only tried
            # for an image's name, so that a document's ?thumb= costs no store miss (an S3 GET).
            name = f"{self.thumb}_{self.filename}"
            kept = self.files.read(self._thumb_path(name))
            if kept is not None:
                return _Answer(kept.data, kept.modified, name, detect_type(kept.data)[0], self._thumb_path(name))
        original = f"{self.directory}/{self.filename}"
        stored = self.files.read(original)
        if stored is None:
            return None
        content_type = detect_type(stored.data)[0]
        if self.thumb and content_type in THUMBABLE_TYPES:
            name = f"{self.thumb}_{self.filename}"
            thumb = self._thumb(self._thumb_path(name), stored, content_type)
            if thumb is not None:
                return _Answer(thumb.data, thumb.modified, name, detect_type(thumb.data)[0], self._thumb_path(name))
        return _Answer(stored.data, stored.modified, self.filename, content_type, original)

    def _thumb_path(self, name: str) -> str:
        return f"{self.directory}/thumbs_{self.filename}/{name}"

    def _thumb(self, path: str, original: StoredObject, content_type: str) -> StoredObject | None:
        """The kept thumb, made now if there is none yet (once, whoever asks meanwhile)."""
        found = self.files.read(path)
        if found is not None:
            return found
        key = self.files.prefix + path
        with _THUMB_LOCKS_GUARD:
            lock = _THUMB_LOCKS.setdefault(key, threading.Lock())
        try:
            with lock:
                found = self.files.read(path)
                if found is not None:
                    return found
                with _THUMB_WORKERS:
                    try:
                        data, _ = make_thumb(original.data, self.thumb, content_type)
                    except ThumbError as err:
                        log.warning("%s: no thumb %s (the original is served): %s", key, self.thumb, err)
                        return None
                self.files.write(path, data)
                return self.files.read(path)
        finally:
            with _THUMB_LOCKS_GUARD:
                _THUMB_LOCKS.pop(key, None)

    def _headers(self, name: str, content_type: str, modified: float) -> list[tuple[str, str]]:
        disposition = "inline" if not self.attachment and content_type in INLINE_TYPES else "attachment"
        extension = os.path.splitext(self.directory + "/" + name)[1]
        return [("content-disposition", f'{disposition}; filename="{name}"'),
                ("content-type", EXTENSION_TYPES.get(extension, content_type)),
                ("content-security-policy", CSP), ("cache-control", CACHE_CONTROL),
                ("last-modified", formatdate(int(modified), usegmt=True)), ("accept-ranges", "bytes"),
                NO_FRAME_OPTIONS]  # a file may be embedded (PocketBase unsets the middleware's X-Frame-Options)

    def _respond(self, proto: HTTPProtocol, answer: _Answer) -> None:
        headers = self._headers(answer.name, answer.content_type, answer.modified)
        if self._not_modified(answer.modified):
            proto.response_empty(304, [h for h in headers if h[0] != "content-type" and h[0] != "accept-ranges"])
            return
        body, size = answer.body, len(answer.body)
        status = 200
        spans = _byte_ranges(self.range_header, size) if self.range_header else None
        if spans == []:
            proto.response_bytes(416, [headers[0], headers[2], ("content-type", "text/plain; charset=utf-8"),
                                       ("content-range", f"bytes */{size}"), ("x-content-type-options", "nosniff"),
                                       NO_FRAME_OPTIONS],
                                 b"invalid range: failed to overlap\n")
            return
        if spans and len(spans) == 1:
            start, end = spans[0]
            body, status = body[start:end + 1], 206
            headers.append(("content-range", f"bytes {start}-{end}/{size}"))
        elif spans:
            # several ranges: one multipart/byteranges body, as Go's http.ServeContent writes it
            boundary = secrets.token_hex(30)
            content_type = headers[1][1]
            parts = [b"--%s\r\nContent-Range: bytes %d-%d/%d\r\nContent-Type: %s\r\n\r\n" % (
                boundary.encode(), start, end, size, content_type.encode()) + body[start:end + 1]
                for start, end in spans]
            body = b"\r\n".join(parts) + b"\r\n--%s--\r\n" % boundary.encode()
            headers[1] = ("content-type", f"multipart/byteranges; boundary={boundary}")
            status = 206
        headers.append(("content-length", str(len(body))))
        proto.response_bytes(status, headers, b"" if self.head else body)

    def _not_modified(self, modified: float) -> bool:
        if not self.if_modified_since or self.range_header:
            return False
        try:
            since = parsedate_to_datetime(self.if_modified_since).timestamp()
        except (TypeError, ValueError):
            return False
        return int(modified) <= since


def _byte_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The ``bytes=`` ranges of ``size`` bytes that overlap it, as (first, last), as Go's ``http.ServeContent``
    reads them: [] when none overlaps (416); None to send the whole file (a header it cannot parse, or
    ranges adding up to more than the file)."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip() != "bytes" or not spec:
        return None
    spans: list[tuple[int, int]] = []
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        first, last = first.strip(), last.strip()
        if not dash or (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
            return None
        if not first:
            suffix = int(last)
            if suffix == 0:
                continue
            spans.append((max(0, size - suffix), size - 1))
            continue
        start = int(first)
        if start >= size:
            continue
        end = int(last) if last else size - 1
        if end < start:
            return None
        spans.append((start, min(end, size - 1)))
    if sum(end - start + 1 for start, end in spans) > size:
        return None
    return spans
