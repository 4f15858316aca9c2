"""The PocketBase HTTP API of one tenant (``/api/...``), answering like PocketBase 0.40.

Implemented: health, collections (list/view/create/update/delete/truncate and scaffolds, superusers only),
records (list/view/create/update/delete with API rules, field modifiers, the auth records' account rules and
``manageRule``), superuser and auth-collection password auth (``authRule`` and MFA's first step checked;
no OTP/OAuth2 yet, so a collection with MFA on cannot complete a login) and
token refresh. A ``fields`` query parameter trims successful JSON answers, as PocketBase does. Error bodies,
status codes and messages follow the stock server (checked by the differential tests in
``tests/pocketbase/test_differential.py``).

Thread-safety: handlers run on the node's event loop with the tenant pinned open.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import apsw
import orjson

from pbfast.http import (
    HEALTH_BODY,
    JSON_HEADERS,
    ApiError,
    HeldResponse,
    HTTPProtocol,
    Request,
    Router,
    Scope,
)
from pbfast.logs import component_logger
from pbfast.pocketbase import auth, collections, fields, gocompat, mfa, search
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.index import single_column_unique_index
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.search import (
    MAX_FILTER_LENGTH,
    FilterError,
    RequestInfo,
    TableResolver,
    compile_filter,
    superuser_only_field,
)
from pbfast.pocketbase.records import (
    LastSuperuserError,
    RecordValidationError,
    Viewer,
    delete_record,
    draft_row,
    load_row,
    record_json,
    resolve_modifiers,
    save_record,
    strip_hidden,
)
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.sqlite_guard import TimeLimitExceeded
from pbfast.pocketbase.tenant import Tenant

__all__ = ["TenantApi"]

log = component_logger("TenantNode")

SUPERUSERS = "_superusers"
BAD_REQUEST = "Something went wrong while processing your request."
ONLY_SUPERUSERS = "Only superusers can perform this action."
NOT_ALLOWED = "The authorized record is not allowed to perform this action."
NO_AUTH = "The request requires valid record authorization token."
MISSING_COLLECTION = "Missing collection context."
MISSING_OR_INVALID_COLLECTION = "Missing or invalid collection context."
NOT_FOUND = "The requested resource wasn't found."
FILE_NOT_FOUND = "File not found."
VALIDATION_FAILED = "An error occurred while validating the submitted data."
DEFAULT_MAX_BODY = 32 << 20
STORAGE_QUOTA_MESSAGE = "The tenant's storage quota is used up."
# SQLite errors that the tenant's own SQL or data can cause: a 400 for the request, never a 5xx.
_TENANT_SQL_ERRORS = (apsw.AuthError, apsw.SQLError, apsw.TooBigError, apsw.ConstraintError, apsw.MismatchError,
                      apsw.RangeError, apsw.InterruptError)
_LENGTH_1_255 = {"code": "validation_length_out_of_range", "message": "The length must be between 1 and 255.",
                 "params": {"max": 255, "min": 1}}

Handler = Callable[["TenantRequest"], None]
# Runs a piece of the tenant's database work where the node wants it (its scheduler's worker threads).
Runner = Callable[[Callable[[], None]], Awaitable[None]]
TIME_LIMIT_MESSAGE = ("The request was stopped: its database work took longer than the tenant's time limit of "
                      "{seconds:g} s.")


@dataclass(slots=True)
class Auth:
    collection: Collection
    record: dict[str, Any]
    token: str = ""
    refreshable: bool = True

    @property
    def superuser(self) -> bool:
        return self.collection.name == SUPERUSERS

    def viewer(self) -> Viewer:
        return Viewer(self.superuser, self.collection.id, str(self.record.get("id", "")))


class TenantRequest(Request):
    """A request to one tenant, with its auth state resolved lazily from ``Authorization``."""

    __slots__ = ("_auth", "_auth_done", "raw_body", "tenant")

    def __init__(self, scope: Scope, proto: HTTPProtocol, path: str, params: dict[str, str], tenant: Tenant) -> None:
        super().__init__(scope, proto, path, params)
        self.tenant = tenant
        self._auth: Auth | None = None
        self._auth_done = False
        self.raw_body: bytes | None = b""  # None: larger than the route's limit (413 when the handler reads it)

    @property
    def auth(self) -> Auth | None:
        if not self._auth_done:
            self._auth = _authenticate(self.tenant, self.header("authorization"))
            self._auth_done = True
        return self._auth

    @property
    def viewer(self) -> Viewer:
        return self.auth.viewer() if self.auth else Viewer()

    def send_json(self, status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> None:
        # PocketBase (Go) marshals maps with sorted keys.
        self.proto.response_bytes(status, JSON_HEADERS + (headers or []),
                                  orjson.dumps(payload, option=orjson.OPT_SORT_KEYS, default=gocompat.go_json_default))


def _authenticate(tenant: Tenant, header: str | None) -> Auth | None:
    """The record a token belongs to, or None for a missing/invalid/expired token (PocketBase treats those
    requests as guests)."""
    if not header:
        return None
    token = header.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    try:
        claims = auth.peek_token_claims(token)
    except auth.TokenError:
        return None
    if claims.get("type") != "auth":
        return None
    collection = tenant.collection_by_id(claims["collectionId"])
    if collection is None or collection.type != "auth":
        return None
    row = load_row(tenant, collection, claims["id"])
    secret = (collection.options.get("authToken") or {}).get("secret", "")
    if row is None or not secret or not auth.verify_token_signature(token, str(row.get("tokenKey", "")), secret):
        return None
    return Auth(collection, row, token, bool(claims.get("refreshable")))


class TenantApi:
    """Routes and handlers of a tenant's PocketBase API."""

    def __init__(self) -> None:
        self.on_time_limit: Callable[[str], None] | None = None  # called with the tenant id (any thread)
        self.router: Router[Handler] = Router()
        add = self.router.add
        add("GET", "/api/health", self.health)
        add("GET", "/api/collections", self.list_collections)
        add("POST", "/api/collections", self.create_collection)
        add("GET", "/api/collections/meta/scaffolds", self.collection_scaffolds)
        add("GET", "/api/collections/{collection}", self.view_collection)
        add("PATCH", "/api/collections/{collection}", self.update_collection)
        add("DELETE", "/api/collections/{collection}", self.delete_collection)
        add("DELETE", "/api/collections/{collection}/truncate", self.truncate_collection)
        add("GET", "/api/collections/{collection}/records", self.list_records)
        add("POST", "/api/collections/{collection}/records", self.create_record)
        add("GET", "/api/collections/{collection}/records/{id}", self.view_record)
        add("PATCH", "/api/collections/{collection}/records/{id}", self.update_record)
        add("DELETE", "/api/collections/{collection}/records/{id}", self.delete_record)
        add("POST", "/api/collections/{collection}/auth-with-password", self.auth_with_password)
        add("POST", "/api/collections/{collection}/auth-refresh", self.auth_refresh)

    async def handle(self, tenant: Tenant, path: str, scope: Scope, proto: HTTPProtocol, *,
                     run: Runner | None = None, time_limit: float | None = None) -> None:
        """Answer one request. The body is read here, on the event loop; the handler, which does all the
        database work, then runs through ``run`` (inline when None) within ``time_limit`` seconds of SQLite
        work, writing its answer to a held response that is sent from here."""
        handler, params, _ = self.router.find(scope.method, path)
        if handler is None:
            # PocketBase falls through to its static file handler for GET, else to the router's 404.
            _error(proto, 404, FILE_NOT_FOUND if scope.method in ("GET", "HEAD") else NOT_FOUND)
            return
        held = HeldResponse()
        request = TenantRequest(scope, held, path, params, tenant)
        if scope.method not in ("GET", "HEAD"):
            limit = _body_limit(tenant, params)
            try:
                request.raw_body = await Request(scope, proto, path, params).body(limit)
            except ApiError as err:
                if err.status != 413:  # a malformed or cut-short body
                    _error(proto, err.status, err.message, err.data, err.headers)
                    return
                request.raw_body = None

        def work() -> None:
            self._run(handler, request, time_limit)

        if run is None:
            work()
        else:
            await run(work)
        held.replay(proto)

    def _run(self, handler: Handler, request: TenantRequest, time_limit: float | None) -> None:
        """Run ``handler`` on the thread that holds the tenant's connection; every failure becomes an answer."""
        tenant, proto = request.tenant, request.proto
        try:
            if tenant.closed:  # closed (moved, evicted) while the request waited for its turn
                raise ApiError(503, "The tenant was closed on this node; retry.", headers=[("retry-after", "1")])
            with tenant.time_limit.running(time_limit):
                handler(request)
        except ApiError as err:
            _error(proto, err.status, err.message, err.data, err.headers)
        except TimeLimitExceeded as err:
            self._time_limited(request, err.seconds)
        except apsw.BusyError as err:
            log.warning("tenant %s busy: %s", tenant.id, err)
            _error(proto, 503, "The database is busy; retry.", headers=[("retry-after", "1")])
        except apsw.FullError:
            _error(proto, 403, STORAGE_QUOTA_MESSAGE)
        except apsw.NoMemError:
            log.warning("tenant %s: SQLite is at the node's memory limit", tenant.id)
            _error(proto, 503, "The node is short of memory for this request; retry.", headers=[("retry-after", "2")])
        except _TENANT_SQL_ERRORS as err:
            if tenant.time_limit.expired:  # stopped mid-way, e.g. while a savepoint was rolled back
                self._time_limited(request, time_limit or 0.0)
                return
            # The tenant's own SQL (a view, an index, an imported trigger) failed or was refused by the guards.
            log.warning("tenant %s: %s %s: %s", tenant.id, request.method, request.path, err)
            _error(proto, 400, BAD_REQUEST)
        except Exception as err:  # noqa: BLE001 - answer, log, stay up
            log.error("tenant %s: %s %s failed: %r", tenant.id, request.method, request.path, err, exc_info=err)
            _error(proto, 500, BAD_REQUEST)

    def _time_limited(self, request: TenantRequest, seconds: float) -> None:
        log.warning("tenant %s: %s %s stopped by its time limit (%g s)", request.tenant.id, request.method,
                    request.path, seconds)
        if self.on_time_limit is not None:
            self.on_time_limit(request.tenant.id)
        _error(request.proto, 400, TIME_LIMIT_MESSAGE.format(seconds=seconds))

    # ---- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _collection(request: TenantRequest, missing: str = MISSING_COLLECTION) -> Collection:
        collection = request.tenant.collection(request.params["collection"])
        if collection is None:
            raise ApiError(404, missing)
        return collection

    @staticmethod
    def _require_superuser(request: TenantRequest) -> None:
        if request.auth is None:
            raise ApiError(401, NO_AUTH)
        if not request.auth.superuser:
            raise ApiError(403, NOT_ALLOWED)

    @staticmethod
    def _body(request: TenantRequest, limit: int = DEFAULT_MAX_BODY, invalid: str = BAD_REQUEST) -> dict[str, Any]:
        """The JSON object of the body (read before the handler ran, see :meth:`handle`) as PocketBase binds it:
        empty or ``null`` is ``{}``, only the first JSON value counts; anything but an object is 400 with
        ``invalid`` as the message."""
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        raw = request.raw_body
        if raw is None or len(raw) > limit:
            raise ApiError(413, "Request entity too large.")
        if not raw.strip():
            return {}
        if content_type and content_type != "application/json" and not content_type.endswith("+json"):
            raise ApiError(400, "Unsupported Content-Type.")  # multipart (file uploads): not supported yet
        value = decode_json_body(raw, invalid)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ApiError(400, invalid)
        return value

    @staticmethod
    def _request_context(request: TenantRequest, body: dict[str, Any] | None = None) -> RequestInfo:
        auth_state = request.auth
        auth_data: dict[str, Any] = {}
        if auth_state is not None:
            auth_data = {**auth_state.record, "collectionId": auth_state.collection.id,
                         "collectionName": auth_state.collection.name}
        query_string = request.scope.query_string
        from urllib.parse import parse_qsl  # noqa: PLC0415 - cold path

        headers = {k.lower().replace("-", "_"): v for k, v in request.scope.headers.items()}
        return RequestInfo(auth=auth_data, body=body or {}, query=dict(parse_qsl(query_string)),
                           method=request.method, headers=headers)

    @staticmethod
    def _deny_null_rule(request: TenantRequest, rule: str | None) -> None:
        if rule is None and not (request.auth is not None and request.auth.superuser):
            raise ApiError(403, ONLY_SUPERUSERS)

    def _rule_sql(self, request: TenantRequest, collection: Collection, rule: str | None,
                  body: dict[str, Any] | None = None) -> tuple[str, list[Any]] | None:
        """The SQL condition of an API rule for this requester; None means "no condition" (superuser or an
        empty rule). A null rule for a non-superuser raises 403."""
        if request.auth is not None and request.auth.superuser:
            return None
        if rule is None:
            raise ApiError(403, ONLY_SUPERUSERS)
        if not rule.strip():
            return None
        resolver = self._resolver(request, collection, body, hidden=True)
        try:
            return compile_filter(rule, resolver, max_length=None)
        except FilterError as err:
            log.warning("tenant %s: rule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
            raise ApiError(404, NOT_FOUND) from err  # PocketBase: the record lookup with the rule fails

    def _resolver(self, request: TenantRequest, collection: Collection, body: dict[str, Any] | None,
                  hidden: bool) -> TableResolver:
        return TableResolver(collection, self._request_context(request, body), collections=request.tenant.collections,
                             allow_hidden_fields=hidden)

    # ---- handlers -----------------------------------------------------------------------------------

    def health(self, request: TenantRequest) -> None:
        request.proto.response_bytes(200, JSON_HEADERS, HEALTH_BODY)

    def list_records(self, request: TenantRequest) -> None:
        collection = self._collection(request)
        tenant = request.tenant
        superuser = request.auth is not None and request.auth.superuser
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
        resolver = self._resolver(request, collection, None, hidden=superuser)
        filters: list[Any] = []
        if not superuser and collection.listRule:
            filters.append((collection.listRule, resolver.with_hidden_fields(True)))
        if user_filter:
            filters.append((user_filter, resolver))
        try:
            if len(user_filter.encode()) > MAX_FILTER_LENGTH:  # the client's filter only: rules are not limited
                raise FilterError("max filter length limit reached")
            compiled = search.compile_list_query(filters, sort, resolver, max_length=None)
        except (FilterError, ValueError) as err:
            raise ApiError(400, BAD_REQUEST) from err
        table = quote(collection.name)
        condition = f" WHERE {compiled.where}" if compiled.where and compiled.where != "1=1" else ""
        order = f" ORDER BY {compiled.order_by}" if compiled.order_by else ""
        names = None
        rows = []
        try:
            cursor = tenant.conn.execute(f"SELECT {table}.* FROM {table}{condition}{order} LIMIT ? OFFSET ?",
                                         [*compiled.params, per_page, (page - 1) * per_page])
            for values in cursor:
                names = names or [d[0] for d in cursor.getdescription()]
                rows.append(dict(zip(names, values)))
            if skip_total:
                total, pages = -1, -1
            else:
                total = tenant.conn.execute(f"SELECT COUNT(*) FROM {table}{condition}",
                                            compiled.params).fetchone()[0]
                pages = (total + per_page - 1) // per_page
        except apsw.SQLError as err:
            # SQLite refused the query the filter/sort/rule made (too deep, too many joins ...): PocketBase
            # answers any failure of its list query with 400.
            log.warning("tenant %s: listing %s failed: %s", tenant.id, collection.name, err)
            raise ApiError(400, BAD_REQUEST) from err
        items = self._records_json(request, collection, rows)
        items = search.apply_fields_many(items, projection)
        request.send_json(200, {"items": items, "page": page, "perPage": per_page, "totalItems": total,
                                "totalPages": pages})

    def view_record(self, request: TenantRequest) -> None:
        collection = self._collection(request)
        row = self._visible_row(request, collection, collection.viewRule)
        self._send_record(request, collection, row)

    def _send_record(self, request: TenantRequest, collection: Collection, row: dict[str, Any]) -> None:
        try:
            projection = search.parse_fields(request.query("fields") or "")
        except ValueError as err:
            raise ApiError(400, BAD_REQUEST) from err
        request.send_json(200, search.apply_fields(self._records_json(request, collection, [row])[0], projection))

    def _records_json(self, request: TenantRequest, collection: Collection,
                      rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows as record JSON for this requester (PocketBase's enrich step: hidden fields, and emails shown
        to superusers, to the record itself and to those the collection's ``manageRule`` lets manage it)."""
        managed = self._managed_ids(request, collection, [str(r.get("id")) for r in rows])
        viewer = request.viewer
        return [record_json(collection, row, viewer, show_email=str(row.get("id")) in managed) for row in rows]

    def _managed_ids(self, request: TenantRequest, collection: Collection, ids: list[str],
                     body: dict[str, Any] | None = None) -> set[str]:
        """The ids among ``ids`` the requester manages through the auth collection's ``manageRule``."""
        rule = collection.rule("manageRule") if collection.type == "auth" else None
        if not rule or not ids or (request.auth is not None and request.auth.superuser):
            return set()
        try:
            sql, params = compile_filter(rule, self._resolver(request, collection, body, hidden=True),
                                         max_length=None)
        except FilterError as err:
            log.warning("tenant %s: manageRule of %s cannot be evaluated: %s", request.tenant.id,
                        collection.name, err)
            return set()
        table = quote(collection.name)
        found: set[str] = set()
        try:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                found.update(str(row[0]) for row in request.tenant.conn.execute(
                    f"SELECT {table}.id FROM {table} WHERE {table}.id IN ({', '.join('?' * len(chunk))}) AND ({sql})",
                    [*chunk, *params]))
        except apsw.SQLError as err:  # a rule SQLite refuses manages nothing
            log.warning("tenant %s: manageRule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
            return set()
        return found

    def _visible_row(self, request: TenantRequest, collection: Collection, rule_text: str | None,
                     body: dict[str, Any] | None = None) -> dict[str, Any]:
        rule = self._rule_sql(request, collection, rule_text, body)
        table = quote(collection.name)
        sql, params = f"SELECT {table}.* FROM {table} WHERE {table}.id = ?", [request.params["id"]]
        if rule is not None:
            sql += f" AND ({rule[0]})"
            params += rule[1]
        try:
            cursor = request.tenant.conn.execute(sql, params)
            for values in cursor:
                return dict(zip([d[0] for d in cursor.getdescription()], values))
        except apsw.SQLError as err:  # a rule SQLite refuses: PocketBase's lookup with the rule fails
            log.warning("tenant %s: rule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
        raise ApiError(404, NOT_FOUND)

    def _write_context(self, request: TenantRequest) -> tuple[Collection, dict[str, Any], bool]:
        """The checks PocketBase's create/update handlers start with: the collection (404, worded as its
        body-limit middleware does), not a view (400), the parsed body (400), then the null-rule check."""
        collection = self._collection(request, MISSING_OR_INVALID_COLLECTION)
        if collection.type == "view":
            raise ApiError(400, "Unsupported collection type.")
        body = self._body(request, _record_body_limit(collection))
        superuser = request.auth is not None and request.auth.superuser
        return collection, body, superuser

    def create_record(self, request: TenantRequest) -> None:
        collection, body, superuser = self._write_context(request)
        self._deny_null_rule(request, collection.createRule)
        tenant = request.tenant
        data = resolve_modifiers(collection, body, None)
        if not superuser:
            data = strip_hidden(collection, data)
        manage = superuser
        manage_rule = collection.rule("manageRule") if collection.type == "auth" and request.auth else None
        if not superuser and (collection.createRule or manage_rule):
            # the create rule (and the manage rule) are checked against the submitted record before it is
            # validated or saved, as PocketBase does
            draft = draft_row(collection, data, None)
            if not draft.get("id"):
                draft["id"] = "__temp_id____pb_create__"
            if collection.type == "auth" and "verified" in draft:
                draft["verified"] = 0
            if collection.createRule and not self._draft_matches(request, collection, draft, collection.createRule,
                                                                 data):
                raise ApiError(400, "Failed to create record.")
            manage = bool(manage_rule) and self._draft_matches(request, collection, draft, manage_rule, data)
        try:
            row = save_record(tenant, collection, data, None, manage=manage, superuser=superuser)
        except RecordValidationError as err:
            raise ApiError(400, "Failed to create record.", err.data) from err
        self._send_record(request, collection, row)

    def _draft_matches(self, request: TenantRequest, collection: Collection, draft: dict[str, Any],
                       rule: str, body: dict[str, Any]) -> bool:
        """Whether a non-empty ``rule`` holds for a not yet saved record (``draft``, a full row), evaluated
        over a one-row CTE standing in for the collection's table."""
        alias = "__pb_create__" + collection.name
        resolver = TableResolver(collection, self._request_context(request, body),
                                 collections=request.tenant.collections, allow_hidden_fields=True, table_alias=alias)
        try:
            sql, params = compile_filter(rule, resolver, max_length=None)
        except FilterError as err:
            log.warning("tenant %s: rule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
            return False
        columns = list(draft)
        selects = ", ".join(f"? AS {quote(c)}" for c in columns)
        try:
            found = request.tenant.conn.execute(
                f"WITH {quote(alias)} AS (SELECT {selects}) SELECT 1 FROM {quote(alias)} WHERE ({sql}) LIMIT 1",
                [*(draft[c] for c in columns), *params]).fetchone()
        except apsw.SQLError as err:  # a rule SQLite refuses does not hold
            log.warning("tenant %s: rule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
            return False
        return found is not None

    def update_record(self, request: TenantRequest) -> None:
        collection, body, superuser = self._write_context(request)
        self._deny_null_rule(request, collection.updateRule)
        tenant = request.tenant
        current = load_row(tenant, collection, request.params["id"])
        if current is None:
            raise ApiError(404, NOT_FOUND)
        data = resolve_modifiers(collection, body, current)
        if not superuser:
            data = strip_hidden(collection, data)
        existing = self._visible_row(request, collection, collection.updateRule, data)
        manage = superuser or bool(self._managed_ids(request, collection, [existing["id"]], data)
                                   if request.auth is not None else False)
        try:
            row = save_record(tenant, collection, data, existing, manage=manage, superuser=superuser)
        except RecordValidationError as err:
            raise ApiError(400, "Failed to update record.", err.data) from err
        self._send_record(request, collection, row)

    def delete_record(self, request: TenantRequest) -> None:
        collection = self._collection(request)
        if collection.type == "view":
            raise ApiError(400, "Unsupported collection type.")
        existing = self._visible_row(request, collection, collection.deleteRule)
        try:
            delete_record(request.tenant, collection, existing["id"])
        except LastSuperuserError as err:
            raise ApiError(400, str(err)) from err
        except RecordValidationError as err:
            raise ApiError(400, "Failed to delete record. Make sure that the record is not part of a required "
                                "relation reference.", err.data) from err
        request.proto.response_empty(204, [])

    # ---- auth ---------------------------------------------------------------------------------------

    def _auth_response(self, collection: Collection, row: dict[str, Any], request: TenantRequest,
                       token: str | None = None, auth_method: str = "", body: dict[str, Any] | None = None) -> None:
        """PocketBase's ``recordAuthResponse``: the collection's ``authRule`` must hold for the record
        (evaluated for the requester; superusers always pass), then MFA for an ``auth_method`` (a first
        method answers ``401 {"mfaId"}``, see :mod:`pbfast.pocketbase.mfa`), then ``{"record", "token"}``."""
        if not (request.auth is not None and request.auth.superuser):
            rule = collection.rule("authRule")
            allowed = rule is not None
            if rule:
                try:
                    sql, params = compile_filter(rule, self._resolver(request, collection, None, hidden=True),
                                                 max_length=None)
                except FilterError as err:
                    log.warning("tenant %s: authRule of %s cannot be evaluated: %s", request.tenant.id,
                                collection.name, err)
                    allowed = False
                else:
                    table = quote(collection.name)
                    try:
                        allowed = request.tenant.conn.execute(
                            f"SELECT 1 FROM {table} WHERE {table}.id = ? AND ({sql}) LIMIT 1",
                            [row["id"], *params]).fetchone() is not None
                    except apsw.SQLError as err:  # a rule SQLite refuses does not hold
                        log.warning("tenant %s: authRule of %s cannot be evaluated: %s", request.tenant.id,
                                    collection.name, err)
                        allowed = False
            if not allowed:
                raise ApiError(403, "The request doesn't satisfy the collection requirements to authenticate.")
        if auth_method:
            mfa_id = self._check_mfa(request, collection, row, auth_method, body or {})
            if mfa_id:
                request.send_json(401, {"mfaId": mfa_id})
                return
        if token is None:
            token_options = collection.options.get("authToken") or {}
            token = auth.issue_auth_token(row["id"], str(row.get("tokenKey", "")), collection.id,
                                          token_options.get("secret", ""), int(token_options.get("duration", 604800)))
        viewer = Viewer(collection.name == SUPERUSERS, collection.id, row["id"])
        payload = {"record": record_json(collection, row, viewer, show_email=True), "token": token}
        try:
            projection = search.parse_fields(request.query("fields") or "")
        except ValueError as err:
            raise ApiError(400, BAD_REQUEST) from err
        request.send_json(200, search.apply_fields(payload, projection))

    def _check_mfa(self, request: TenantRequest, collection: Collection, row: dict[str, Any], method: str,
                   body: dict[str, Any]) -> str | None:
        """PocketBase's ``checkMFA``: the id of a new MFA session when this login needs another method,
        None when it may complete (MFA off, its rule does not hold, or a valid session of another method
        was given); 400 for an unusable session."""
        options = mfa.MfaOptions.of(collection)
        if not options.enabled or not self._wants_mfa(request, collection, row, options.rule, body):
            return None
        mfa_id = mfa.submitted_mfa_id(request.scope.query_string, body)
        if not mfa_id:
            return mfa.start_session(request.tenant, collection, row["id"], method)
        mfa.finish_session(request.tenant, collection, row["id"], method, mfa_id, options)
        return None

    def _wants_mfa(self, request: TenantRequest, collection: Collection, row: dict[str, Any], rule: str,
                   body: dict[str, Any]) -> bool:
        """Whether the collection's ``mfa.rule`` holds for the record (an empty rule always does), evaluated
        for this request like the other API rules; a rule that cannot be evaluated fails the login."""
        if not rule:
            return True
        try:
            sql, params = compile_filter(rule, self._resolver(request, collection, body, hidden=True),
                                         max_length=None)
            table = quote(collection.name)
            return request.tenant.conn.execute(f"SELECT 1 FROM {table} WHERE {table}.id = ? AND ({sql}) LIMIT 1",
                                               [row["id"], *params]).fetchone() is not None
        except (FilterError, apsw.SQLError) as err:
            log.warning("tenant %s: mfa.rule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
            raise ApiError(400, "Failed to authenticate.") from err

    def _auth_collection(self, request: TenantRequest) -> Collection:
        """The path's collection as PocketBase's auth routes find it: missing → 404 (their rate-limit
        middleware's wording), not an auth collection → 404."""
        collection = self._collection(request, MISSING_OR_INVALID_COLLECTION)
        if collection.type != "auth":
            raise ApiError(404, "Missing or invalid auth collection context.")
        return collection

    def auth_with_password(self, request: TenantRequest) -> None:
        collection = self._auth_collection(request)
        password_auth = collection.options.get("passwordAuth") or {}
        if not password_auth.get("enabled", False) and collection.name != SUPERUSERS:
            raise ApiError(403, "The collection is not configured to allow password authentication.")
        try:
            body = self._body(request)
        except ApiError as err:
            if err.status == 400:
                raise ApiError(400, "An error occurred while loading the submitted data.") from err
            raise
        identity_fields = [str(f) for f in (password_auth.get("identityFields") or [])]
        form: dict[str, str] = {}
        for key in ("identity", "password", "identityField"):
            value = body.get(key)
            if value is not None and not isinstance(value, str):
                raise ApiError(400, "An error occurred while loading the submitted data.")
            form[key] = value or ""
        errors = {}
        for key in ("identity", "password"):
            if not form[key]:
                errors[key] = {"code": "validation_required", "message": "Cannot be blank."}
            elif len(form[key]) > 255:
                errors[key] = dict(_LENGTH_1_255)
        if form["identityField"]:
            if len(form["identityField"]) > 255:
                errors["identityField"] = dict(_LENGTH_1_255)
            elif form["identityField"] not in identity_fields:
                errors["identityField"] = {"code": "validation_in_invalid", "message": "Must be a valid value."}
        if errors:
            raise ApiError(400, VALIDATION_FAILED, errors)
        identity, password = form["identity"], form["password"]
        if form["identityField"]:
            candidates = [form["identityField"]]
        else:
            # PocketBase looks the email up first, and only when the identity looks like one
            candidates = sorted(identity_fields, key=lambda name: name != "email")
            if "email" in candidates and not fields.is_email(identity):
                candidates.remove("email")
        row = None
        for name in candidates:
            row = self._find_by_identity(request.tenant, collection, name, identity)
            if row is not None:
                break
        if row is None or not auth.verify_password(password, str(row.get("password", ""))):
            raise ApiError(400, "Failed to authenticate.")
        self._auth_response(collection, row, request, auth_method=mfa.PASSWORD_METHOD, body=body)

    @staticmethod
    def _find_by_identity(tenant: Tenant, collection: Collection, name: str, identity: str) -> dict[str, Any] | None:
        """A record by an identity field, compared as the field's single-column unique index collates it
        (no such index: not an identity field PocketBase can use)."""
        if collection.field(name) is None:
            return None
        index = single_column_unique_index(collection.indexes, name)
        if index is None:
            return None
        collate = " COLLATE NOCASE" if index.columns[0].collate.lower() == "nocase" else ""
        table = quote(collection.name)
        cursor = tenant.conn.execute(f"SELECT * FROM {table} WHERE {quote(name)} = ?{collate} LIMIT 1", (identity,))
        for values in cursor:
            return dict(zip([d[0] for d in cursor.getdescription()], values))
        return None

    def auth_refresh(self, request: TenantRequest) -> None:
        collection = self._collection(request, MISSING_OR_INVALID_COLLECTION)
        current = request.auth
        if current is None:
            raise ApiError(401, NO_AUTH)
        if current.collection.id != collection.id:
            raise ApiError(403, f"The request requires auth record from {current.collection.name} collection.")
        token = None
        if not current.refreshable:
            token = current.token  # non-refreshable tokens (e.g. impersonation) are returned as they are
        self._auth_response(collection, current.record, request, token)

    # ---- collections ----------------------------------------------------------------------------------

    def list_collections(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        tenant = request.tenant
        resolver = TableResolver(_COLLECTIONS_TABLE)
        where, params = "", []
        try:
            page, per_page = search.parse_paging(request.query("page"), request.query("perPage"))
            skip_total = search.parse_skip_total(request.query("skipTotal"))
            projection = search.parse_fields(request.query("fields") or "")
            user_filter = request.query("filter")
            if user_filter:
                sql, params = compile_filter(user_filter, resolver)
                where = f" WHERE ({sql})"
            order = search.compile_sort(request.query("sort") or "", resolver)
        except (FilterError, ValueError) as err:
            raise ApiError(400, BAD_REQUEST) from err
        ids = [row[0] for row in tenant.conn.execute(
            f"SELECT id FROM _collections{where}{(' ORDER BY ' + order) if order else ''} LIMIT ? OFFSET ?",
            [*params, per_page, (page - 1) * per_page])]
        if skip_total:
            total, pages = -1, -1
        else:
            total = tenant.conn.execute(f"SELECT COUNT(*) FROM _collections{where}", params).fetchone()[0]
            pages = (total + per_page - 1) // per_page
        items = [c.to_api() for c in (tenant.collection_by_id(i) for i in ids) if c is not None]
        request.send_json(200, {"items": search.apply_fields_many(items, projection), "page": page,
                                "perPage": per_page, "totalItems": total, "totalPages": pages})

    @staticmethod
    def _send_collection(request: TenantRequest, collection: Collection) -> None:
        try:
            projection = search.parse_fields(request.query("fields") or "")
        except ValueError as err:
            raise ApiError(400, BAD_REQUEST) from err
        request.send_json(200, search.apply_fields(collection.to_api(), projection))

    def collection_scaffolds(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        try:
            projection = search.parse_fields(request.query("fields") or "")
        except ValueError as err:
            raise ApiError(400, BAD_REQUEST) from err
        request.send_json(200, search.apply_fields(collections.scaffolds(), projection))

    def view_collection(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        self._send_collection(request, self._collection(request, NOT_FOUND))

    def create_collection(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        body = self._body(request, invalid="Failed to load the collection type data due to invalid formatting.")
        tenant = request.tenant
        try:
            with write_transaction(tenant.conn):
                created = collections.create_collection(tenant.conn, body)
        except collections.CollectionValidationError as err:
            raise ApiError(400, err.message, err.data) from err
        finally:
            tenant.reload_collections()
        self._send_collection(request, created)

    def update_collection(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        collection = self._collection(request, NOT_FOUND)
        body = self._body(request, invalid="Failed to load the submitted data due to invalid formatting.")
        tenant = request.tenant
        try:
            with write_transaction(tenant.conn):
                updated = collections.update_collection(tenant.conn, collection, body)
        except collections.CollectionValidationError as err:
            raise ApiError(400, err.message, err.data) from err
        finally:
            tenant.reload_collections()
        self._send_collection(request, updated)

    def delete_collection(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        collection = self._collection(request, NOT_FOUND)
        tenant = request.tenant
        try:
            with write_transaction(tenant.conn):
                collections.delete_collection(tenant.conn, collection)
        except collections.CollectionValidationError as err:
            raise ApiError(400, err.message, err.data) from err
        finally:
            tenant.reload_collections()
        request.proto.response_empty(204, [])

    def truncate_collection(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        collection = self._collection(request, NOT_FOUND)
        try:
            with write_transaction(request.tenant.conn):
                collections.truncate_collection(request.tenant.conn, collection)
        except collections.CollectionValidationError as err:
            raise ApiError(400, err.message, err.data) from err
        request.proto.response_empty(204, [])


# ``_collections`` as a collection of its filterable/sortable columns, for the collections list.
_COLLECTION_COLUMNS: list[dict[str, Any]] = [
    {"name": "id", "type": "text"},
    {"name": "name", "type": "text"},
    {"name": "type", "type": "text"},
    {"name": "system", "type": "bool"},
    {"name": "listRule", "type": "text"},
    {"name": "viewRule", "type": "text"},
    {"name": "createRule", "type": "text"},
    {"name": "updateRule", "type": "text"},
    {"name": "deleteRule", "type": "text"},
    {"name": "created", "type": "autodate"},
    {"name": "updated", "type": "autodate"},
]
_COLLECTIONS_TABLE: Final = Collection(id="_collections", name="_collections", fields=_COLLECTION_COLUMNS)


def _body_limit(tenant: Tenant, params: dict[str, str]) -> int:
    """The most a route's handler reads: a record route's limit grows with its collection's file fields."""
    name = params.get("collection")
    collection = tenant.collection(name) if name else None
    return _record_body_limit(collection) if collection is not None else DEFAULT_MAX_BODY


_JSON_WHITESPACE: Final = " \t\n\r"
_MIN_INT64, _MAX_UINT64 = -(2**63), 2**64 - 1


def decode_json_body(raw: bytes, invalid: str = BAD_REQUEST) -> Any:
    """A request body's first JSON value, as Go's ``json.Decoder`` reads it: what follows that value is
    never looked at and invalid UTF-8 becomes U+FFFD. Values nested deeper than the answers can be written
    are refused (Go allows 10,000 levels; orjson writes 254). Raises ``ApiError(400, invalid)``."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = _first_json_value(raw, invalid)
    if raw.count(b"[") + raw.count(b"{") > gocompat.ORJSON_MAX_DEPTH and gocompat.json_depth(value) > \
            gocompat.ORJSON_MAX_DEPTH:
        raise ApiError(400, invalid)
    return value


def _first_json_value(raw: bytes, invalid: str) -> Any:
    """The slow path of :func:`decode_json_body` for bodies orjson refuses as a whole."""
    text = raw.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(_JSON_WHITESPACE))
    decoder = json.JSONDecoder(parse_constant=_no_json_constant, parse_float=_finite_float, parse_int=_json_int)
    try:
        value, _ = decoder.raw_decode(text, start)
        orjson.dumps(value)  # lone surrogates and too deep nesting, which the answers could not carry
    except (ValueError, RecursionError, orjson.JSONEncodeError) as err:
        raise ApiError(400, invalid) from err
    return value


def _no_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a float64")
    return value


def _json_int(text: str) -> int | float:
    """Like orjson: integers outside int64/uint64 become floats."""
    value = int(text)
    return value if _MIN_INT64 <= value <= _MAX_UINT64 else _finite_float(text)


def _record_body_limit(collection: Collection) -> int:
    """PocketBase's record body limit: the default plus what the collection's file fields may carry."""
    extra = sum(int(f.get("maxSize") or 0) * max(1, int(f.get("maxSelect") or 1))
                for f in collection.fields if f["type"] == "file")
    return DEFAULT_MAX_BODY + extra


def _error(proto: HTTPProtocol, status: int, message: str, data: dict[str, Any] | None = None,
           headers: list[tuple[str, str]] | None = None) -> None:
    body = {"data": data or {}, "message": message, "status": status}
    proto.response_bytes(status, JSON_HEADERS + (headers or []), orjson.dumps(body, default=gocompat.go_json_default))
