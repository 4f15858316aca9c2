"""Deleting a record (PocketBase semantics, see :func:`~pbfast.pocketbase.collections.delete_records`)."""

from __future__ import annotations

from pbfast.pocketbase import collections
from pbfast.pocketbase.collections import Collection, RecordChanges
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.records.errors import RecordValidationError
from pbfast.pocketbase.tenant import Tenant

__all__ = ["delete_record"]


def delete_record(tenant: Tenant, collection: Collection, record_id: str) -> RecordChanges:
    """Delete a record the way PocketBase does: records referencing it through a ``cascadeDelete``
    relation left without any other reference are deleted too (recursively), other references are
    removed from their relation fields (their ``updated`` is bumped), unless the field is required and
    would become empty: then nothing is deleted and :class:`RecordValidationError` (no field data) is
    raised. The only superuser cannot be deleted (:class:`~pbfast.pocketbase.collections.LastSuperuserError`).
    Returns the records changed, this one last (see :data:`~pbfast.pocketbase.collections.RecordChanges`)."""
    changes: RecordChanges = []
    with write_transaction(tenant.conn):
        try:
            collections.delete_records(tenant.conn, collection, [record_id], changes)
        except collections.RequiredReferenceError as err:
            raise RecordValidationError({}) from err
    return changes
