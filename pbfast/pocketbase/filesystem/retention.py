"""Deleted files kept for the restore window (see :mod:`pbfast.pocketbase.filesystem`): the deletes noted
under ``tenants/{id}/deleted/{due}-{random}.json`` are carried out once due, except for the files a record
of the tenant's current database references (its state may have been restored to a time before the delete).
The same for the files early uploads wrote before a crash (``deleted/pending-{due}-{random}.jsonl``, a line a
batch: :mod:`pbfast.pocketbase.apis.upload_journal`).

Run in the tenant's database turn (it reads the tenant's records; its store calls block): when a node opens
the tenant, then at most every :data:`SWEEP_SECONDS` while it stays open.
"""

from __future__ import annotations

import time
from typing import Final

import orjson

from pbfast.logs import component_logger
from pbfast.pocketbase.fields import FileField
from pbfast.pocketbase.filesystem import StorageError, delete_path, files_of
from pbfast.pocketbase.gocompat import to_unique_strings
from pbfast.pocketbase.records import load_row
from pbfast.pocketbase.tenant import Tenant

__all__ = ["SWEEP_SECONDS", "referenced", "sweep_deleted"]

log = component_logger("Files")

SWEEP_SECONDS: Final = 3600.0
PENDING_PREFIX: Final = "pending-"  # a journal of pending early uploads (apis.upload_journal), one JSON list a line


def _noted_paths(data: bytes) -> list[str]:
    """The paths a note names: one JSON list (a note of deletes, an early-upload note on S3), or one a line (a
    journal of pending uploads: empty once its requests were done; a last line torn by a crash was never
    fsynced, so none of its files was written). Raises ``orjson.JSONDecodeError`` on another damaged line."""
    lines = data.split(b"\n")
    found: list[str] = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            paths = orjson.loads(line)
        except orjson.JSONDecodeError:
            if number == len(lines) - 1:
                break
            raise
        found += [path for path in paths if isinstance(path, str)] if isinstance(paths, list) else []
    return found


def referenced(tenant: Tenant, path: str) -> bool:
    """Whether the tenant's records still reference ``path`` (``{collectionId}/{recordId}/{name}``, or a
    record's or a collection's whole directory, ending in ``/``)."""
    parts = path.rstrip("/").split("/")
    collection = tenant.collection_by_id(parts[0]) if parts else None
    if collection is None or len(parts) < 2:
        return collection is not None
    row = load_row(tenant, collection, parts[1])
    if row is None:
        return False
    if path.endswith("/") or len(parts) == 2:
        return True
    return any(isinstance(f, FileField) and parts[2] in to_unique_strings(f.typed(row.get(f.name, "")))
               for f in collection.fields)


def sweep_deleted(tenant: Tenant, now: float | None = None) -> int:
    """Carry out the tenant's due deletes; returns how many paths were deleted."""
    files = files_of(tenant)
    if not files.deleted_prefix:
        return 0
    now = time.time() if now is None else now
    deleted = 0
    try:
        for key in files.store.keys(files.deleted_prefix):
            due = key.rsplit("/", 1)[-1].removeprefix(PENDING_PREFIX).split("-", 1)[0]
            if not due.isdigit() or int(due) > now:
                continue
            note = files.store.read(key)
            for path in _noted_paths(note.data if note is not None else b""):
                if not referenced(tenant, path):
                    delete_path(files, path)
                    deleted += 1
            files.store.delete(key)
        if deleted:
            files.measure()
    except (StorageError, orjson.JSONDecodeError) as err:
        log.warning("tenant %s: deleting its due files failed (tried again later): %s", tenant.id, err)
    return deleted
