"""The collections API, superusers only (PocketBase's ``apis/collection.go`` and ``collection_import.go``):
list, view, create, update, delete, truncate, import and the scaffolds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import apsw

from pbfast.http import ApiError
from pbfast.pocketbase import collections, search
from pbfast.pocketbase.realtime import record_changed
from pbfast.pocketbase.apis.request import (
    BAD_REQUEST,
    NOT_FOUND,
    TenantRequest,
    collection_of,
    read_body,
    require_superuser,
    send_with_fields,
)
from pbfast.pocketbase.apis.form_body import struct_body
from pbfast.pocketbase.gocompat import parse_bool
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.fields import AutodateField, BoolField, FileField, TextField
from pbfast.pocketbase.filesystem import files_of
from pbfast.pocketbase.search import FilterError, TableResolver

__all__ = ["create_collection", "delete_collection", "import_collections", "list_collections", "scaffolds", "truncate_collection",
           "update_collection", "view_collection"]

# ``_collections`` as a collection of its filterable/sortable columns, for the collections list.
IMPORT_UNREADABLE: Final = "An error occurred while loading the submitted data."

_COLLECTIONS_TABLE: Final = Collection(id="_collections", name="_collections", fields=[
    *(TextField(name=name) for name in ("id", "name", "type")),
    BoolField(name="system"),
    *(TextField(name=name) for name in ("listRule", "viewRule", "createRule", "updateRule", "deleteRule")),
    AutodateField(name="created"),
    AutodateField(name="updated"),
])


def list_collections(request: TenantRequest) -> None:
    require_superuser(request)
    tenant = request.tenant
    resolver = TableResolver(_COLLECTIONS_TABLE)
    where, params = "", list[Any]()
    try:
        page, per_page = search.parse_paging(request.query("page"), request.query("perPage"))
        skip_total = search.parse_skip_total(request.query("skipTotal"))
        projection = search.parse_fields(request.query("fields") or "")
        user_filter = request.query("filter")
        if user_filter:
            where, params = search.compile_filter(user_filter, resolver)
        order = search.compile_sort(request.query("sort") or "", resolver)
    except (FilterError, ValueError) as err:
        raise ApiError(400, BAD_REQUEST) from err
    listed = collections.list_collection_ids(tenant.conn, where, params, order, page, per_page, skip_total)
    items = [c.to_api() for c in (tenant.collection_by_id(row["id"]) for row in listed.rows) if c is not None]
    # A collection is a Go struct: its keys in their declared order (to_api's), not sorted.
    request.send_json(200, {"items": search.apply_fields_many(items, projection), "page": page,
                            "perPage": per_page, "totalItems": listed.total, "totalPages": listed.pages},
                      sort_keys=False)


def scaffolds(request: TenantRequest) -> None:
    require_superuser(request)
    send_with_fields(request, collections.scaffolds(), sort_keys=False)


def view_collection(request: TenantRequest) -> None:
    require_superuser(request)
    send_with_fields(request, collection_of(request, NOT_FOUND).to_api(), sort_keys=False)


def create_collection(request: TenantRequest) -> None:
    require_superuser(request)
    unreadable = "Failed to load the collection type data due to invalid formatting."
    body = read_body(request, invalid=unreadable, unsupported=unreadable)
    created = _change(request, lambda conn: collections.create_collection(conn, body))
    send_with_fields(request, created.to_api(), sort_keys=False)


def update_collection(request: TenantRequest) -> None:
    require_superuser(request)
    collection = collection_of(request, NOT_FOUND)
    unreadable = "Failed to load the submitted data due to invalid formatting."
    body = read_body(request, invalid=unreadable, unsupported=unreadable)
    updated = _change(request, lambda conn: collections.update_collection(conn, collection, body))
    send_with_fields(request, updated.to_api(), sort_keys=False)


def delete_collection(request: TenantRequest) -> None:
    require_superuser(request)
    collection = collection_of(request, NOT_FOUND)
    _change(request, lambda conn: collections.delete_collection(conn, collection))
    _files_gone(request, collection)
    request.proto.response_empty(204, [])


def truncate_collection(request: TenantRequest) -> None:
    require_superuser(request)
    collection = collection_of(request, NOT_FOUND)
    changes: collections.RecordChanges = []
    try:
        collections.truncate_collection(request.tenant.conn, collection, changes)
    except collections.CollectionValidationError as err:
        raise ApiError(400, err.message, err.data) from err
    files = files_of(request.tenant)
    for action, changed_collection, row in changes:  # every record deleted (and referencing ones), committed
        record_changed(request.tenant, action, changed_collection, row)
        if action == "delete" and changed_collection.id != collection.id and \
                any(isinstance(f, FileField) for f in changed_collection.fields):
            request.file_changes.obsolete.append((files, f"{changed_collection.id}/{row['id']}/"))
    _files_gone(request, collection)
    request.proto.response_empty(204, [])


def _files_gone(request: TenantRequest, collection: Collection) -> None:
    """The collection's files go with its records once committed (as PocketBase deletes its storage prefix)."""
    if any(isinstance(f, FileField) for f in collection.fields):
        request.file_changes.obsolete.append((files_of(request.tenant), f"{collection.id}/"))


def import_collections(request: TenantRequest) -> None:
    """``PUT /api/collections/import``: a whole configuration in one transaction (``deleteMissing`` deletes
    the non-system collections it does not name); 204, or 400 naming the collection that failed."""
    require_superuser(request)
    body, sent_as_form = struct_body(request, first_api_error=True)
    data, delete_missing = body.get("collections"), body.get("deleteMissing", False)
    if sent_as_form and isinstance(delete_missing, str):  # a form's text, parsed for the bool field
        parsed = parse_bool(delete_missing)
        delete_missing = delete_missing if parsed is None else parsed
    if data is not None and (not isinstance(data, list) or not all(isinstance(item, dict) for item in data)) \
            or delete_missing is not None and not isinstance(delete_missing, bool):
        raise ApiError(400, IMPORT_UNREADABLE)
    if not data:
        raise ApiError(400, "An error occurred while validating the submitted data.",
                       {"collections": {"code": "validation_required", "message": "Cannot be blank."}})
    before = list(request.tenant.collections.values())
    _change(request, lambda conn: collections.import_collections(conn, data, bool(delete_missing)))
    for collection in before:  # the ones deleteMissing deleted take their files along
        if request.tenant.collection_by_id(collection.id) is None:
            _files_gone(request, collection)
    request.proto.response_empty(204, [])


_T = TypeVar("_T")


def _change(request: TenantRequest, change: Callable[[apsw.Connection], _T]) -> _T:
    """Run a schema change; its validation errors become 400; the tenant's collections are reloaded."""
    tenant = request.tenant
    try:
        return change(tenant.conn)
    except collections.CollectionValidationError as err:
        raise ApiError(400, err.message, err.data) from err
    finally:
        tenant.reload_collections()
