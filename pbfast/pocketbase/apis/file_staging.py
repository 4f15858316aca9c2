"""Uploads written to the store before the handler's turn (:func:`stage_uploads`): a record create/update
sent as ``multipart/form-data`` is parsed, its files for file fields named and written under the record's
directory on a worker thread, several requests at once, so the tenant's turn (one job at a time) holds only
the database work and not the store's latency (a fsync, an S3 PUT). The handler then uses the parsed form
and the names (:class:`~.file_uploads.PendingUploads`): an upload the save keeps is already stored, one it
drops is deleted at once, and every staged file of a request that fails is deleted (they are in its
:class:`~pbfast.pocketbase.filesystem.FileChanges` from the start).

Staged only where a write may follow: the collection's create/update rule is public (``""``, anyone may
store files there as in PocketBase) or the request carries an ``Authorization`` header; otherwise, and on
any problem (a form that does not parse, a store that fails), the handler does it all itself, as before.

Thread-safety: :func:`stage_uploads` runs on the event loop, its work on a worker thread (it reads the
request's body and the tenant's collection map, which a schema change replaces whole, and writes to the
store only).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pbfast.logs import component_logger
from pbfast.pocketbase.apis.file_uploads import file_uploads
from pbfast.pocketbase.apis.form_body import FormBody, FormError, read_form_body
from pbfast.pocketbase.apis.request import TenantRequest, record_body_limit
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.fields import FileField
from pbfast.pocketbase.filesystem import StorageError, TenantFiles, files_of
from pbfast.pocketbase.filesystem.names import normalize_name
from pbfast.pocketbase.gocompat import cast_to_string
from pbfast.pocketbase.tenant import new_record_id

__all__ = ["StagedUploads", "stage_uploads"]

log = component_logger("Files")


@dataclass(slots=True)
class StagedUploads:
    """A form parsed before the handler's turn, and its uploads named and stored for ``record_id``."""

    form: FormBody
    record_id: str = ""
    names: dict[str, list[str]] = field(default_factory=dict)  # body key -> stored names, in the order sent
    stored: set[str] = field(default_factory=set)  # names written below {collectionId}/{record_id}/
    stored_bytes: int = 0  # already counted in the tenant's files (its quota)

    def name_for(self, key: str, index: int) -> str | None:
        names = self.names.get(key, [])
        return names[index] if index < len(names) else None


async def stage_uploads(request: TenantRequest) -> None:
    """Stage a record save's uploads (see the module doc); sets ``request.staged_uploads``."""
    raw = request.raw_body
    content_type = request.header("content-type") or ""
    if not raw or not content_type.lower().startswith("multipart/form-data") or request.bound_body is not None:
        return
    collection = request.tenant.collection(request.params.get("collection", ""))
    if collection is None or collection.type == "view" or not any(isinstance(f, FileField)
                                                                    for f in collection.fields):
        return
    rule = collection.createRule if request.method == "POST" else collection.updateRule
    if rule != "" and not request.header("authorization"):
        return  # a guest where only some may write: nothing is stored before the rules are checked
    if len(raw) > record_body_limit(collection):
        return
    files = files_of(request.tenant)
    try:
        staged = await asyncio.to_thread(_stage, request, collection, files, raw, content_type)
    except Exception as err:  # noqa: BLE001 - the handler does it all itself then
        log.error("%s: staging uploads failed: %r", files.prefix, err, exc_info=err)
        return
    if staged is not None:
        request.file_changes.uploaded += [(files, f"{collection.id}/{staged.record_id}/{name}")
                                          for name in staged.stored]
        request.staged_uploads = staged


def _stage(request: TenantRequest, collection: Collection, files: TenantFiles, raw: bytes,
           content_type: str) -> StagedUploads | None:
    try:
        form = read_form_body(raw, content_type, request.scope.query_string)
    except FormError:
        return None  # the handler answers it
    staged = StagedUploads(form)
    uploads = file_uploads(collection, form.files)
    if not uploads:
        return staged
    if request.method == "POST":
        submitted = form.data.get("id")
        staged.record_id = cast_to_string(submitted) if submitted is not None else new_record_id()
    else:
        staged.record_id = request.params.get("id", "")
    if not staged.record_id or "/" in staged.record_id or staged.record_id in (".", ".."):
        return staged  # not a usable path part: the handler writes (and validates the id) itself
    for key, items in uploads.items():
        staged.names[key] = [normalize_name(upload.filename, upload.data) for upload in items]
    directory = f"{collection.id}/{staged.record_id}"
    try:
        for key, items in uploads.items():
            for name, upload in zip(staged.names[key], items, strict=True):
                files.write(f"{directory}/{name}", upload.data)
                staged.stored.add(name)
                staged.stored_bytes += len(upload.data)
    except StorageError as err:
        log.warning("%s%s: staging an upload failed (the handler tries again): %s", files.prefix, directory, err)
        for name in staged.stored:
            try:
                files.delete(f"{directory}/{name}")
            except StorageError:
                pass
        staged.stored.clear()
        staged.stored_bytes = 0
    return staged
