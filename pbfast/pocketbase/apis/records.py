"""The records API (PocketBase's ``apis/record_crud.go``): list, view, create, update and delete, with the
collection's API rules evaluated for the requester and the auth records' ``manageRule``, and ``expand``
(:mod:`.expand`) on every record answer."""

from __future__ import annotations

from typing import Any

import apsw
import orjson

from pbfast.http import JSON_HEADERS, ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase import auth, records, search
from pbfast.pocketbase.apis.early_uploads import EarlyUploads
from pbfast.pocketbase.apis.expand import expand_items
from pbfast.pocketbase.apis.file_uploads import PendingUploads, file_uploads, obsolete_files, with_uploads
from pbfast.pocketbase.apis.form_body import FormBody, check_uploads, record_form_body
from pbfast.pocketbase.fields import FileField
from pbfast.pocketbase.filesystem import files_of
from pbfast.pocketbase.oauth2.providers import random_string
from pbfast.pocketbase.realtime import record_changed
from pbfast.pocketbase.apis.request import (
    BAD_REQUEST,
    MISSING_COLLECTION,
    MISSING_OR_INVALID_COLLECTION,
    NOT_FOUND,
    ONLY_SUPERUSERS,
    UNSUPPORTED_CONTENT_TYPE,
    TenantRequest,
    collection_of,
    read_body,
    record_body_limit,
    resolver,
    send_with_fields,
)
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.records import RecordValidationError, Row, RuleError, native_view
from pbfast.pocketbase.search import MAX_FILTER_LENGTH, FilterError, superuser_only_field

__all__ = ["create_record", "delete_record", "list_records", "records_json", "update_record", "view_record"]

log = component_logger("TenantNode")


def list_records(request: TenantRequest) -> None:
    collection = collection_of(request)
    tenant = request.tenant
    superuser = request.superuser
    if not superuser and collection.listRule is None:
        raise ApiError(403, ONLY_SUPERUSERS)
    try:
        page, per_page = search.parse_paging(request.query("page"), request.query("perPage"))
        skip_total = search.parse_skip_total(request.query("skipTotal"))
        projection = search.parse_fields(request.query("fields") or "")
    except (FilterError, ValueError) as err:
        raise ApiError(400, BAD_REQUEST) from err
    user_filter, sort = request.query("filter") or "", request.query("sort") or ""
    if not superuser:
        for expression in (user_filter, sort):
            prefix = superuser_only_field(expression)
            if prefix:
                raise ApiError(403, f"Only superusers can filter by {prefix}")
    compiled = _compiled_list_query(request, collection, superuser, user_filter, sort)
    try:
        if not projection and not request.query("expand"):
            # the page read and its items written by the extension when it can prove Python's bytes (else None)
            native = native_view.page_json(tenant, collection, compiled, page, per_page, skip_total, request.viewer)
            if native is not None:
                request.send_json(200, {"items": orjson.Fragment(native[0]), "page": page, "perPage": per_page,
                                        "totalItems": native[1], "totalPages": native[2]})
                return
        listed = records.list_records(tenant, collection, compiled, page, per_page, skip_total)
    except apsw.SQLError as err:
        # SQLite refused the query the filter/sort/rule made (too deep, too many joins ...): PocketBase
        # answers any failure of its list query with 400.
        log.warning("tenant %s: listing %s failed: %s", tenant.id, collection.name, err)
        raise ApiError(400, BAD_REQUEST) from err
    items = records_json(request, collection, listed.rows)
    expand_items(request, collection, listed.rows, items)
    if projection:
        items = search.apply_fields_many(items, projection)
    request.send_json(200, {"items": items, "page": page, "perPage": per_page, "totalItems": listed.total,
                            "totalPages": listed.pages})


def _request_free(text: str) -> bool:
    """Whether a filter, sort or rule compiles the same for every request: no ``@`` (``@request.*``, a date
    macro, ``@collection``) and no ``.`` (a relation's field: the related collection's list rule, which may name
    ``@request``, joins in for non-superusers). Conservative: a literal holding either is compiled every time."""
    return "@" not in text and "." not in text


# Compiled list queries whose filter, sort and list rule are _request_free: what they compile to depends only on
# the texts and the tenant's collections, not on the request. By (the
# tenant's collections, the collection, superuser, filter, sort); the collections kept in the value, so a reload
# (a new map) or an id reused meanwhile never matches. Cleared when full. Any thread: single dict operations.
_LIST_QUERIES: dict[tuple[int, int, bool, str, str], tuple[object, Collection, search.ListQuery]] = {}
_LIST_QUERIES_KEPT = 1024


def _compiled_list_query(request: TenantRequest, collection: Collection, superuser: bool, user_filter: str,
                         sort: str) -> search.ListQuery:
    """The list rule (for non-superusers), the ``filter`` and the ``sort`` compiled for this request (400 when
    they cannot be)."""
    tenant = request.tenant
    rule = None if superuser else collection.listRule
    key = None
    if _request_free(user_filter) and _request_free(sort) and (rule is None or _request_free(rule)) \
            and len(user_filter) <= MAX_FILTER_LENGTH // 4:  # (a UTF-8 character is at most 4 bytes)
        key = (id(tenant.collections), id(collection), superuser, user_filter, sort)
        known = _LIST_QUERIES.get(key)
        if known is not None and known[0] is tenant.collections and known[1] is collection:
            return known[2]
    filter_resolver = resolver(request, collection, hidden=superuser)
    filters: list[Any] = []
    if rule:
        filters.append((rule, filter_resolver.with_hidden_fields(True)))
    if user_filter:
        filters.append((user_filter, filter_resolver))
    try:
        if len(user_filter.encode()) > MAX_FILTER_LENGTH:  # the client's filter only: rules are not limited
            raise FilterError("max filter length limit reached")
        compiled = search.compile_list_query(filters, sort, filter_resolver, max_length=None)
    except (FilterError, ValueError) as err:
        raise ApiError(400, BAD_REQUEST) from err
    if key is not None:
        if len(_LIST_QUERIES) >= _LIST_QUERIES_KEPT:
            _LIST_QUERIES.clear()
        _LIST_QUERIES[key] = (tenant.collections, collection, compiled)
    return compiled


def view_record(request: TenantRequest) -> None:
    collection = collection_of(request)
    condition = _rule_condition(request, collection, collection.viewRule)
    record_id = request.params["id"]
    if not request.query("expand") and not request.query("fields"):
        # read and written by the extension when it can prove the bytes Python would write (else None)
        body = native_view.record_json_bytes(request.tenant, collection, record_id, condition, request.viewer)
        if body is not None:
            if not body:
                raise ApiError(404, NOT_FOUND)
            request.proto.response_bytes(200, JSON_HEADERS, body)
            return
    row = records.find_visible(request.tenant, collection, record_id, condition)
    if row is None:
        raise ApiError(404, NOT_FOUND)
    _send_record(request, collection, row)


def create_record(request: TenantRequest) -> None:
    collection, body, superuser, form = _write_context(request)
    _deny_null_rule(request, collection.createRule)
    check_uploads(collection, form)
    if request.info_context == "oauth2" and collection.type == "auth" and "password" not in body:
        # an OAuth2 sign-up without a password gets a random one (PocketBase's recordCreate)
        password = auth.stable_random("password", lambda: random_string(30))  # the same when run again
        body = {**body, "password": password, "passwordConfirm": password}
    data, uploads = _resolve_body(request, collection, body, form, None)
    if not superuser:
        data = records.strip_hidden(collection, data)
    manage = superuser
    manage_rule = collection.rule("manageRule") if collection.type == "auth" and request.auth else None
    if not superuser and (collection.createRule or manage_rule):
        # the create rule (and the manage rule) are checked against the submitted record before it is
        # validated or saved, as PocketBase does
        draft = records.draft_row(collection, data, None)
        if not draft.get("id"):
            draft["id"] = "__temp_id____pb_create__"
        if collection.type == "auth" and "verified" in draft:
            draft["verified"] = 0
        if collection.createRule and not _draft_matches(request, collection, draft, collection.createRule, data):
            raise ApiError(400, "Failed to create record.")
        manage = bool(manage_rule) and _draft_matches(request, collection, draft, manage_rule or "", data)
    try:
        row = records.save_record(request.tenant, collection, data, None, manage=manage, superuser=superuser,
                                  uploads=uploads)
    except RecordValidationError as err:
        raise ApiError(400, "Failed to create record.", err.data) from err
    _files_saved(request)
    _record_changed(request, "create", collection, row)
    _send_record(request, collection, row, data)


def update_record(request: TenantRequest) -> None:
    collection, body, superuser, form = _write_context(request)
    _deny_null_rule(request, collection.updateRule)
    tenant = request.tenant
    current = records.load_row(tenant, collection, request.params["id"])
    if current is None:
        raise ApiError(404, NOT_FOUND)
    check_uploads(collection, form)
    data, uploads = _resolve_body(request, collection, body, form, current)
    if not superuser:
        data = records.strip_hidden(collection, data)
    existing = _visible_row(request, collection, collection.updateRule, data)
    manage = superuser or bool(_managed_ids(request, collection, [existing["id"]], data)
                               if request.auth is not None else False)
    try:
        row = records.save_record(tenant, collection, data, existing, manage=manage, superuser=superuser,
                                  uploads=uploads)
    except RecordValidationError as err:
        raise ApiError(400, "Failed to update record.", err.data) from err
    paths = obsolete_files(collection, existing, row)
    if paths:
        files = files_of(tenant)
        request.file_changes.obsolete += [(files, path) for path in paths]
    _files_saved(request)
    _record_changed(request, "update", collection, row)
    _send_record(request, collection, row, data)


def delete_record(request: TenantRequest) -> None:
    collection = collection_of(request)
    if collection.type == "view":
        raise ApiError(400, "Unsupported collection type.")
    existing = _visible_row(request, collection, collection.deleteRule)
    try:
        changes = records.delete_record(request.tenant, collection, existing["id"])
    except records.LastSuperuserError as err:
        raise ApiError(400, str(err)) from err
    except RecordValidationError as err:
        raise ApiError(400, "Failed to delete record. Make sure that the record is not part of a required "
                            "relation reference.", err.data) from err
    files = files_of(request.tenant)
    for action, changed_collection, row in changes:  # references removed and cascaded deletes, then this one
        if action == "delete" and any(isinstance(f, FileField) for f in changed_collection.fields):
            request.file_changes.obsolete.append((files, f"{changed_collection.id}/{row['id']}/"))
        _record_changed(request, action, changed_collection, row)
    _files_saved(request)
    request.proto.response_empty(204, [])


def _resolve_body(request: TenantRequest, collection: Collection, body: dict[str, Any], form: FormBody | None,
                  current: Row | None) -> tuple[dict[str, Any], PendingUploads | None]:
    """The body with its modifiers resolved and the uploads for file fields named (PocketBase's
    ``recordDataFromRequest``); the uploads to store with the record, if any."""
    data = records.resolve_modifiers(collection, body, current)
    uploads = file_uploads(collection, form.files if form is not None else request.bound_files)
    if not uploads:
        return data, None
    tenant = request.tenant
    room = None if tenant.max_bytes is None else max(0, tenant.max_bytes - tenant.size_bytes())
    early = request.prepared if isinstance(request.prepared, EarlyUploads) else None
    pending = PendingUploads(collection, files_of(tenant), request.file_changes, room, early)
    return records.resolve_modifiers(collection, with_uploads(data, body, uploads, pending), current), pending


def _files_saved(request: TenantRequest) -> None:
    """The record's transaction committed (not a batch's item, whose batch decides): its obsolete files go."""
    if request.deferred_changes is None:
        request.file_changes.committed()


def _record_changed(request: TenantRequest, action: str, collection: Collection, row: Row) -> None:
    """The realtime hook for a committed write: now, or for a batch's item once the batch commits."""
    if request.deferred_changes is not None:
        request.deferred_changes.append((action, collection, row))
    else:
        record_changed(request.tenant, action, collection, row)


def records_json(request: TenantRequest, collection: Collection, rows: list[Row]) -> list[dict[str, Any]]:
    """Rows as record JSON for this requester (PocketBase's enrich step: hidden fields, and emails shown
    to superusers, to the record itself and to those the collection's ``manageRule`` lets manage it)."""
    viewer = request.viewer
    if collection.type != "auth":  # no email to show or hide, and no manageRule
        return [records.record_json(collection, row, viewer) for row in rows]
    managed = _managed_ids(request, collection, [str(r.get("id")) for r in rows])
    return [records.record_json(collection, row, viewer, show_email=str(row.get("id")) in managed) for row in rows]


def _send_record(request: TenantRequest, collection: Collection, row: Row, body: dict[str, Any] | None = None) -> None:
    items = records_json(request, collection, [row])
    expand_items(request, collection, [row], items, body=body)
    send_with_fields(request, items[0])


def _deny_null_rule(request: TenantRequest, rule: str | None) -> None:
    if rule is None and not request.superuser:
        raise ApiError(403, ONLY_SUPERUSERS)


def _write_context(request: TenantRequest) -> tuple[Collection, dict[str, Any], bool, FormBody | None]:
    """The checks PocketBase's create/update handlers start with: the collection (404, worded as its
    body-limit middleware does), not a view (400), the parsed body (400), then the null-rule check."""
    # the route's body-limit middleware words a missing collection its own way; a batch's items skip it
    collection = collection_of(request, MISSING_COLLECTION if request.bound_body is not None
                               else MISSING_OR_INVALID_COLLECTION)
    if collection.type == "view":
        raise ApiError(400, "Unsupported collection type.")
    limit = record_body_limit(collection)
    early = request.prepared if isinstance(request.prepared, EarlyUploads) else None
    raw = request.raw_body
    # a create's form was parsed before its turn, when its uploads were written early (the same limit holds)
    form = early.form if early is not None and raw is not None and len(raw) <= limit \
        else record_form_body(request, limit)
    body = read_body(request, limit, unsupported=UNSUPPORTED_CONTENT_TYPE) if form is None else form.data
    return collection, body, request.superuser, form


def _rule_condition(request: TenantRequest, collection: Collection, rule: str | None,
                    body: dict[str, Any] | None = None) -> records.Condition | None:
    """The SQL condition of an API rule for this requester; None means "no condition" (superuser or an
    empty rule). A null rule for a non-superuser is 403; a rule that cannot be compiled 404 (PocketBase: the
    record lookup with the rule fails)."""
    if request.superuser:
        return None
    if rule is None:
        raise ApiError(403, ONLY_SUPERUSERS)
    if not rule.strip():
        return None
    try:
        return records.compile_rule(rule, resolver(request, collection, body))
    except RuleError as err:
        log.warning("tenant %s: rule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
        raise ApiError(404, NOT_FOUND) from err


def _visible_row(request: TenantRequest, collection: Collection, rule: str | None,
                 body: dict[str, Any] | None = None) -> Row:
    condition = _rule_condition(request, collection, rule, body)
    row = records.find_visible(request.tenant, collection, request.params["id"], condition)
    if row is None:
        raise ApiError(404, NOT_FOUND)
    return row


def _managed_ids(request: TenantRequest, collection: Collection, ids: list[str],
                 body: dict[str, Any] | None = None) -> set[str]:
    """The ids among ``ids`` the requester manages through the auth collection's ``manageRule`` (a rule
    that cannot be evaluated manages nothing)."""
    rule = collection.rule("manageRule") if collection.type == "auth" else None
    if not rule or not ids or request.superuser:
        return set()
    try:
        return records.managed_ids(request.tenant, collection, ids, rule, resolver(request, collection, body))
    except RuleError as err:
        log.warning("tenant %s: manageRule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
        return set()


def _draft_matches(request: TenantRequest, collection: Collection, draft: Row, rule: str,
                   body: dict[str, Any]) -> bool:
    """Whether a non-empty ``rule`` holds for the record about to be created (a rule that cannot be
    evaluated does not hold)."""
    draft_resolver = resolver(request, collection, body, table_alias="__pb_create__" + collection.name)
    try:
        return records.draft_matches(request.tenant, draft, rule, draft_resolver)
    except RuleError as err:
        log.warning("tenant %s: rule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
        return False
