"""``POST /api/batch`` (PocketBase's ``apis/batch.go``): record creates, updates, upserts and deletes run in
one transaction, each through the records API's own handler (its rules, validation, ``expand`` and
``fields``), as the batch's requester. A failing request rolls everything back and is named in the answer:

``{"status": 400, "message": "Batch transaction failed.", "data": {"requests": {"<index>": {"code":
"batch_request_failed", "message": "Batch request failed.", "response": <that request's error>}}}}``.

The tenant's ``batch`` settings (:mod:`pbfast.pocketbase.app_settings`) decide: off by default (403), at most
``maxRequests`` requests, ``maxBodySize`` bytes of body and ``timeout`` seconds for the whole transaction
(past it: 400 with no data, nothing written; statements still running are stopped by SQLite). The body is
read as PocketBase binds it (:mod:`.batch_form`): JSON, or a form's ``@jsonPayload`` (how the JS SDK
sends it). Files for a request (``requests.N.<field>``) are stored with its record; a batch that fails
deletes the files it stored, and deletes the files it made obsolete only once it commits (see
:class:`~pbfast.pocketbase.filesystem.FileChanges`; the API does both once the handler ends).

Realtime: the items' record changes are published once the batch commits, in order (none if it fails),
as PocketBase publishes them after its transaction.

Thread-safety: runs on the tenant's database thread like every handler (one job per tenant at a time),
holding the write lock (``BEGIN IMMEDIATE``) for the whole batch.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

import apsw
import orjson

from pbfast.http import JSON_HEADERS, ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase import records as record_service
from pbfast.pocketbase import search
from pbfast.pocketbase.apis import records
from pbfast.pocketbase.apis.batch_form import BatchItem, read_batch_form, validate_batch_form
from pbfast.pocketbase.apis.internal_request import InternalScope, internal_request
from pbfast.pocketbase.apis.form_body import FormError, bind_form_values, parse_go_query
from pbfast.pocketbase.apis.request import BAD_REQUEST, TenantRequest
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.filesystem.names import normalize_name
from pbfast.pocketbase.gocompat import cast_to_string
from pbfast.pocketbase.search import FilterError
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.realtime import record_changed
from pbfast.pocketbase.records import Row
from pbfast.pocketbase.app_settings import BatchSettings, load_settings, on_saved
from pbfast.pocketbase.tenant import Tenant

__all__ = ["MAX_BODY_CEILING", "batch_transaction", "body_read_limit", "remember_settings"]

log = component_logger("TenantNode")

NOT_ALLOWED: Final = "Batch requests are not allowed."
BATCH_FAILED: Final = "Batch transaction failed."
MAX_BODY_CEILING: Final = BatchSettings.DEFAULT_MAX_BODY_SIZE
"""The most of a batch body the node reads before the handler runs while it does not know the tenant's
settings yet (PocketBase's default ``maxBodySize``); the tenant's own setting is applied by the handler."""

# Each open tenant's batch settings as last read or saved (PATCH /api/settings), for the event loop to size
# the body read (a restore or an import opens a new Tenant). Written on a database thread, read on the event
# loop: single get/set operations under the GIL.
_known_settings: Final[weakref.WeakKeyDictionary[Tenant, BatchSettings]] = weakref.WeakKeyDictionary()
on_saved(lambda tenant, saved: _known_settings.__setitem__(tenant, saved.batch))


def body_read_limit(tenant: Tenant) -> int:
    """How much of a batch body the node reads before the handler runs: none while batches are off for
    the tenant (the answer is 403 whatever the body), its ``maxBodySize`` when on, :data:`MAX_BODY_CEILING`
    until a batch has read its settings."""
    settings = _known_settings.get(tenant)
    if settings is None:
        return MAX_BODY_CEILING
    return settings.effective_max_body_size if _allowed(settings) else 0


def remember_settings(tenant: Tenant) -> None:
    """Read the tenant's batch settings again (in its turn), for :func:`body_read_limit`: another process
    (a worker of the node) may have saved new ones."""
    _known_settings[tenant] = load_settings(tenant.conn).batch


def _allowed(settings: BatchSettings) -> bool:
    return settings.enabled and settings.max_requests > 0

# What an item's SQL can fail with because of the tenant's own SQL or data (a rule, a view, a trigger):
# that item's 400, as PocketBase answers any error of an item.
_ITEM_SQL_ERRORS: Final = (apsw.AuthError, apsw.SQLError, apsw.TooBigError, apsw.ConstraintError,
                           apsw.MismatchError, apsw.RangeError)

_Handler = Callable[[TenantRequest], None]
# PocketBase's ValidBatchActions, matched against "METHOD URL" (path values are kept as written).
_ACTIONS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("upsert", re.compile(r"PUT /api/collections/(?P<collection>[^/?]+)/records(?P<query>\?.*)?")),
    ("create", re.compile(r"POST /api/collections/(?P<collection>[^/?]+)/records(?P<query>\?.*)?")),
    ("update", re.compile(r"PATCH /api/collections/(?P<collection>[^/?]+)/records/(?P<id>[^/?]+)(?P<query>\?.*)?")),
    ("delete", re.compile(r"DELETE /api/collections/(?P<collection>[^/?]+)/records/(?P<id>[^/?]+)(?P<query>\?.*)?")),
)
_HANDLERS: Final[dict[str, _Handler]] = {"create": records.create_record, "update": records.update_record,
                                          "delete": records.delete_record}
_METHODS: Final = {"create": "POST", "update": "PATCH", "delete": "DELETE"}
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class _BatchTimeout(Exception):
    """The batch ran past its ``timeout`` setting."""


def batch_transaction(request: TenantRequest) -> None:
    settings = load_settings(request.tenant.conn).batch
    _known_settings[request.tenant] = settings
    if not _allowed(settings):
        raise ApiError(403, NOT_ALLOWED)
    raw = request.raw_body
    if raw is None or len(raw) > settings.effective_max_body_size:
        raise ApiError(413, "Request entity too large.")
    items = read_batch_form(request)
    validate_batch_form(items, settings.max_requests)
    try:
        projection = search.parse_fields(request.query("fields") or "")
    except (FilterError, ValueError) as err:
        raise ApiError(400, BAD_REQUEST) from err
    results = _process(request, items, settings.effective_timeout)
    if projection:
        answer = [{"body": orjson.loads(body), "status": status} for status, body in results]
        request.send_json(200, search.apply_fields_many(answer, projection))
        return
    payload = b"[" + b",".join(b'{"body":%s,"status":%d}' % (body, status) for status, body in results) + b"]"
    request.proto.response_bytes(200, JSON_HEADERS, payload)


def _process(request: TenantRequest, items: list[BatchItem], timeout: int) -> list[tuple[int, bytes]]:
    """Run the items in order in one transaction; each item's (status, JSON body)."""
    tenant = request.tenant
    deadline = time.monotonic() + timeout
    results: list[tuple[int, bytes]] = []
    changes: list[tuple[str, Collection, Row]] = []  # for realtime, published once the batch commits
    try:
        with write_transaction(tenant.conn), tenant.time_limit.narrowed(timeout):
            for index, item in enumerate(items):
                try:
                    results.append(_run_item(request, item, changes))
                except ApiError as err:
                    raise ApiError(400, BATCH_FAILED, {"requests": {str(index): _failure(err)}}) from err
                except _ITEM_SQL_ERRORS as err:
                    if time.monotonic() > deadline:
                        raise _BatchTimeout from err
                    log.warning("tenant %s: batch request %d (%s %s) failed: %s", tenant.id, index, item.method,
                                item.url[:200], err)
                    raise ApiError(400, BATCH_FAILED, {"requests": {str(index): _failure(ApiError(400, BAD_REQUEST))}}
                                   ) from err
                except apsw.InterruptError as err:
                    if time.monotonic() > deadline:
                        raise _BatchTimeout from err
                    raise  # the request's own time limit (answered by TenantApi)
                if time.monotonic() > deadline:
                    raise _BatchTimeout
    except _BatchTimeout as err:
        log.warning("tenant %s: batch of %d requests stopped by its timeout (%d s)", tenant.id, len(items), timeout)
        raise ApiError(400, BATCH_FAILED) from err
    for action, collection, row in changes:
        record_changed(tenant, action, collection, row)
    return results


def _failure(err: ApiError) -> dict[str, Any]:
    return {"code": "batch_request_failed", "message": "Batch request failed.",
            "response": {"data": err.data or {}, "message": err.message, "status": err.status}}


def _run_item(batch: TenantRequest, item: BatchItem, changes: list[tuple[str, Collection, Row]]) -> tuple[int, bytes]:
    """One internal request through its records API handler, as the batch's requester."""
    request_line = f"{item.method.upper()} {item.url}"
    found = next(((name, m) for name, pattern in _ACTIONS if (m := pattern.fullmatch(request_line)) is not None),
                 None)
    if found is None:
        raise ApiError(400, BAD_REQUEST)  # PocketBase: "unknown batch request action"
    action, match = found
    if not _valid_url(item.url):
        raise ApiError(400, BAD_REQUEST)  # what Go's URL and query parsing refuse
    collection = match["collection"]
    params = {"collection": collection}
    query = (match["query"] or "?")[1:].split("#", 1)[0]
    path = item.url.split("?", 1)[0].split("#", 1)[0]
    try:
        # each item is sent on as a multipart form: its URL's query values are body values, under its own
        body = {**bind_form_values(parse_go_query(query)), **(item.body or {})}
    except FormError as err:
        raise ApiError(400, BAD_REQUEST) from err
    if action == "upsert":
        record_id = cast_to_string((item.body or {}).get("id"))  # the body's id, not the query's
        action = "update" if record_id and _exists(batch, collection, record_id) else "create"
        if action == "update":
            params["id"] = record_id
            path = f"/api/collections/{collection}/records/{record_id}"
    elif "id" in match.groupdict() and match["id"] is not None:
        params["id"] = match["id"]
    scope = InternalScope(_METHODS[action], path, query, _item_headers(batch, item))
    inner, response = internal_request(batch, scope, params, body, "batch", changes)
    # PocketBase hands each item its files as uploads already named once: they are named again
    inner.bound_files = {key: [dataclasses.replace(upload, filename=normalize_name(upload.filename, upload.data))
                               for upload in uploads] for key, uploads in item.files.items()}
    _HANDLERS[action](inner)
    return response.status, response.body


def _exists(batch: TenantRequest, collection_name: str, record_id: str) -> bool:
    collection = batch.tenant.collection(collection_name)
    return collection is not None and record_service.load_row(batch.tenant, collection, record_id) is not None


def _valid_url(url: str) -> bool:
    """Whether Go parses ``url`` and its query: no control characters, valid %-escapes, no ``;`` in the query."""
    if _CONTROL.search(url):
        return False
    rest, _, fragment = url.partition("#")
    path, _, query = rest.partition("?")
    return not (_BAD_ESCAPE.search(path) or _BAD_ESCAPE.search(query) or _BAD_ESCAPE.search(fragment) or ";" in query)


def _item_headers(batch: TenantRequest, item: BatchItem) -> dict[str, str]:
    """The batch request's headers with the item's own (its ``Authorization`` is ignored: items run as the
    batch's requester); PocketBase sends each item as multipart/form-data."""
    headers = {str(k).lower(): str(v) for k, v in batch.scope.headers.items()}
    for name, value in item.headers.items():
        if name.lower() != "authorization":
            headers[name.lower()] = value
    headers["content-type"] = "multipart/form-data; boundary=" + secrets.token_hex(30)
    return headers


