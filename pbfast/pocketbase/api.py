"""The PocketBase HTTP API of one tenant (``/api/...``), answering like PocketBase 0.40.

Implemented: health, collections (list/view/create/update/delete/truncate, superusers only), records
(list/view/create/update/delete with API rules), superuser and auth-collection password auth and token
refresh. Error bodies, status codes and messages follow the stock server (checked by the differential
tests in ``tests/pocketbase/test_differential.py``).

Thread-safety: handlers run on the node's event loop with the tenant pinned open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import apsw
import orjson

from pbfast.http import (
    HEALTH_BODY,
    JSON_HEADERS,
    ApiError,
    HTTPProtocol,
    Request,
    Router,
    Scope,
)
from pbfast.logs import component_logger
from pbfast.pocketbase import auth, query, schema
from pbfast.pocketbase.filter import Collections, FilterError, TableResolver, compile_filter, superuser_only_field
from pbfast.pocketbase.records import (
    RecordValidationError,
    Viewer,
    delete_record,
    load_row,
    quote,
    record_json,
    save_record,
)
from pbfast.pocketbase.schema import Collection
from pbfast.pocketbase.tenant import Tenant

__all__ = ["TenantApi"]

log = component_logger("TenantNode")

SUPERUSERS = "_superusers"
BAD_REQUEST = "Something went wrong while processing your request."
ONLY_SUPERUSERS = "Only superusers can perform this action."
NO_AUTH = "The request requires valid record authorization token."
MISSING_COLLECTION = "Missing collection context."
NOT_FOUND = "The requested resource wasn't found."
FILE_NOT_FOUND = "File not found."
VALIDATION_FAILED = "An error occurred while validating the submitted data."
DEFAULT_MAX_BODY = 32 << 20

Handler = Callable[["TenantRequest"], Awaitable[None]]


@dataclass(slots=True)
class Auth:
    collection: Collection
    record: dict[str, Any]

    @property
    def superuser(self) -> bool:
        return self.collection.name == SUPERUSERS

    def viewer(self) -> Viewer:
        return Viewer(self.superuser, self.collection.id, str(self.record.get("id", "")))


class TenantRequest(Request):
    """A request to one tenant, with its auth state resolved lazily from ``Authorization``."""

    __slots__ = ("_auth", "_auth_done", "tenant")

    def __init__(self, scope: Scope, proto: HTTPProtocol, path: str, params: dict[str, str], tenant: Tenant) -> None:
        super().__init__(scope, proto, path, params)
        self.tenant = tenant
        self._auth: Auth | None = None
        self._auth_done = False

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
        self.proto.response_bytes(status, JSON_HEADERS + (headers or []), orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))


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
    return Auth(collection, row)


class TenantApi:
    """Routes and handlers of a tenant's PocketBase API."""

    def __init__(self) -> None:
        self.router = Router()
        add = self.router.add
        add("GET", "/api/health", self.health)
        add("GET", "/api/collections", self.list_collections)
        add("POST", "/api/collections", self.create_collection)
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

    async def handle(self, tenant: Tenant, path: str, scope: Scope, proto: HTTPProtocol) -> None:
        handler, params, _ = self.router.find(scope.method, path)
        if handler is None:
            # PocketBase falls through to its static file handler for GET, else to the router's 404.
            _error(proto, 404, FILE_NOT_FOUND if scope.method in ("GET", "HEAD") else NOT_FOUND)
            return
        request = TenantRequest(scope, proto, path, params, tenant)
        try:
            await handler(request)  # type: ignore[arg-type]
        except ApiError as err:
            _error(proto, err.status, err.message, err.data, err.headers)
        except apsw.BusyError as err:
            log.warning("tenant %s busy: %s", tenant.id, err)
            _error(proto, 503, "The database is busy; retry.", headers=[("retry-after", "1")])
        except Exception as err:  # noqa: BLE001 - answer, log, stay up
            log.error("tenant %s: %s %s failed: %r", tenant.id, scope.method, path, err, exc_info=err)
            _error(proto, 500, BAD_REQUEST)

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
            raise ApiError(403, ONLY_SUPERUSERS)

    @staticmethod
    async def _body(request: TenantRequest, limit: int = DEFAULT_MAX_BODY) -> dict[str, Any]:
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        try:
            raw = await request.body(limit)
        except ApiError as err:
            if err.status == 413:
                raise ApiError(413, "Request entity too large.") from err
            raise
        if not raw.strip():
            return {}
        if content_type and content_type != "application/json" and not content_type.endswith("+json"):
            raise ApiError(400, "Unsupported Content-Type.")  # multipart (file uploads): not supported yet
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise ApiError(400, BAD_REQUEST) from err
        if not isinstance(value, dict):
            raise ApiError(400, BAD_REQUEST)
        return value

    @staticmethod
    def _request_context(request: TenantRequest, body: dict[str, Any] | None = None) -> dict[str, Any]:
        auth_state = request.auth
        auth_data: dict[str, Any] = {}
        if auth_state is not None:
            auth_data = {**auth_state.record, "collectionId": auth_state.collection.id,
                         "collectionName": auth_state.collection.name}
        query_string = request.scope.query_string
        from urllib.parse import parse_qsl  # noqa: PLC0415 - cold path

        headers = {k.lower().replace("-", "_"): v for k, v in request.scope.headers.items()}
        return {"auth": auth_data, "body": body or {}, "query": dict(parse_qsl(query_string)),
                "method": request.method, "headers": headers, "context": "default"}

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
            return compile_filter(rule, resolver)
        except FilterError as err:
            log.warning("tenant %s: rule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
            raise ApiError(403, "The request is not allowed by the collection's API rule.") from err

    def _resolver(self, request: TenantRequest, collection: Collection, body: dict[str, Any] | None,
                  hidden: bool) -> TableResolver:
        return TableResolver.from_collection(request.tenant.info(collection), self._request_context(request, body),
                                             collections=request.tenant.registry, allow_hidden_fields=hidden)

    # ---- handlers -----------------------------------------------------------------------------------

    async def health(self, request: TenantRequest) -> None:
        request.proto.response_bytes(200, JSON_HEADERS, HEALTH_BODY)

    async def list_records(self, request: TenantRequest) -> None:
        collection = self._collection(request)
        tenant = request.tenant
        superuser = request.auth is not None and request.auth.superuser
        if not superuser and collection.listRule is None:
            raise ApiError(403, ONLY_SUPERUSERS)
        try:
            page, per_page = query.parse_paging(request.query("page"), request.query("perPage"))
            skip_total = query.parse_skip_total(request.query("skipTotal"))
            projection = query.parse_fields(request.query("fields") or "")
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
            compiled = query.compile_list_query(filters, sort, resolver)
        except (FilterError, ValueError) as err:
            raise ApiError(400, BAD_REQUEST) from err
        table = quote(collection.name)
        condition = f" WHERE {compiled.where}" if compiled.where and compiled.where != "1=1" else ""
        order = f" ORDER BY {compiled.order_by}" if compiled.order_by else ""
        cursor = tenant.conn.execute(f"SELECT {table}.* FROM {table}{condition}{order} LIMIT ? OFFSET ?",
                                     [*compiled.params, per_page, (page - 1) * per_page])
        names = None
        viewer = request.viewer
        items = []
        for values in cursor:
            names = names or [d[0] for d in cursor.getdescription()]
            items.append(record_json(collection, dict(zip(names, values)), viewer))
        items = query.apply_fields_many(items, projection)
        if skip_total:
            total, pages = -1, -1
        else:
            total = tenant.conn.execute(f"SELECT COUNT(*) FROM {table}{condition}", compiled.params).fetchone()[0]
            pages = (total + per_page - 1) // per_page
        request.send_json(200, {"items": items, "page": page, "perPage": per_page, "totalItems": total,
                                "totalPages": pages})

    async def view_record(self, request: TenantRequest) -> None:
        collection = self._collection(request)
        row = self._visible_row(request, collection, collection.viewRule)
        try:
            projection = query.parse_fields(request.query("fields") or "")
        except ValueError as err:
            raise ApiError(400, BAD_REQUEST) from err
        request.send_json(200, query.apply_fields(record_json(collection, row, request.viewer), projection))

    def _visible_row(self, request: TenantRequest, collection: Collection, rule_text: str | None,
                     body: dict[str, Any] | None = None) -> dict[str, Any]:
        rule = self._rule_sql(request, collection, rule_text, body)
        table = quote(collection.name)
        sql, params = f"SELECT {table}.* FROM {table} WHERE {table}.id = ?", [request.params["id"]]
        if rule is not None:
            sql += f" AND ({rule[0]})"
            params += rule[1]
        cursor = request.tenant.conn.execute(sql, params)
        for values in cursor:
            return dict(zip([d[0] for d in cursor.getdescription()], values))
        raise ApiError(404, NOT_FOUND)

    async def create_record(self, request: TenantRequest) -> None:
        collection = self._collection(request)
        if collection.type == "view":
            raise ApiError(400, BAD_REQUEST)
        self._deny_null_rule(request, collection.createRule)
        body = await self._body(request, _record_body_limit(collection))
        rule = self._rule_sql(request, collection, collection.createRule, body)
        tenant = request.tenant
        try:
            with tenant.conn:  # the rule check and the insert commit together, or not at all
                row = save_record(tenant, collection, body, None, request.viewer)
                if rule is not None and not self._row_matches(tenant, collection, row["id"], rule):
                    raise _RuleDenied
        except _RuleDenied as err:
            raise ApiError(400, "Failed to create record.") from err
        except RecordValidationError as err:
            raise ApiError(400, "Failed to create record.", err.data) from err
        request.send_json(200, record_json(collection, row, request.viewer))

    async def update_record(self, request: TenantRequest) -> None:
        collection = self._collection(request)
        if collection.type == "view":
            raise ApiError(400, BAD_REQUEST)
        self._deny_null_rule(request, collection.updateRule)
        body = await self._body(request, _record_body_limit(collection))
        existing = self._visible_row(request, collection, collection.updateRule, body)
        try:
            row = save_record(request.tenant, collection, body, existing, request.viewer)
        except RecordValidationError as err:
            raise ApiError(400, "Failed to update record.", err.data) from err
        request.send_json(200, record_json(collection, row, request.viewer))

    async def delete_record(self, request: TenantRequest) -> None:
        collection = self._collection(request)
        if collection.type == "view":
            raise ApiError(400, BAD_REQUEST)
        existing = self._visible_row(request, collection, collection.deleteRule)
        try:
            delete_record(request.tenant, collection, existing["id"])
        except RecordValidationError as err:
            raise ApiError(400, "Failed to delete record. Make sure that the record is not part of a required "
                                "relation reference.", err.data) from err
        request.proto.response_empty(204, [])

    @staticmethod
    def _row_matches(tenant: Tenant, collection: Collection, record_id: str, rule: tuple[str, list[Any]]) -> bool:
        table = quote(collection.name)
        found = tenant.conn.execute(f"SELECT 1 FROM {table} WHERE {table}.id = ? AND ({rule[0]})",
                                    [record_id, *rule[1]]).fetchone()
        return found is not None

    # ---- auth ---------------------------------------------------------------------------------------

    def _auth_response(self, collection: Collection, row: dict[str, Any], request: TenantRequest) -> None:
        token_options = collection.options.get("authToken") or {}
        token = auth.issue_auth_token(row["id"], str(row.get("tokenKey", "")), collection.id,
                                      token_options.get("secret", ""), int(token_options.get("duration", 604800)))
        viewer = Viewer(collection.name == SUPERUSERS, collection.id, row["id"])
        request.send_json(200, {"record": record_json(collection, row, viewer), "token": token})

    async def auth_with_password(self, request: TenantRequest) -> None:
        collection = self._collection(request)
        if collection.type != "auth":
            raise ApiError(403, "The collection is not configured to allow password authentication.")
        password_auth = collection.options.get("passwordAuth") or {}
        if not password_auth.get("enabled", False):
            raise ApiError(403, "The collection is not configured to allow password authentication.")
        body = await self._body(request)
        identity, password = body.get("identity"), body.get("password")
        errors = {}
        if not isinstance(identity, str) or not identity:
            errors["identity"] = {"code": "validation_required", "message": "Cannot be blank."}
        if not isinstance(password, str) or not password:
            errors["password"] = {"code": "validation_required", "message": "Cannot be blank."}
        if errors:
            raise ApiError(400, VALIDATION_FAILED, errors)
        assert isinstance(identity, str) and isinstance(password, str)
        identity_fields = body.get("identityField") or None
        candidates = [identity_fields] if isinstance(identity_fields, str) else \
            list(password_auth.get("identityFields") or ["email"])
        row = None
        table = quote(collection.name)
        for name in candidates:
            if collection.field(name) is None:
                continue
            column = quote(name)
            cursor = request.tenant.conn.execute(
                f"SELECT * FROM {table} WHERE {column} = ? COLLATE NOCASE LIMIT 1" if name == "email"
                else f"SELECT * FROM {table} WHERE {column} = ? LIMIT 1", (identity,))
            for values in cursor:
                row = dict(zip([d[0] for d in cursor.getdescription()], values))
            if row is not None:
                break
        if row is None or not auth.verify_password(password, str(row.get("password", ""))):
            raise ApiError(400, "Failed to authenticate.")
        rule = collection.options.get("authRule")
        if rule is None and collection.name != SUPERUSERS:
            raise ApiError(400, "Failed to authenticate.")
        self._auth_response(collection, row, request)

    async def auth_refresh(self, request: TenantRequest) -> None:
        collection = self._collection(request)
        current = request.auth
        if current is None:
            raise ApiError(401, NO_AUTH)
        if current.collection.id != collection.id:
            raise ApiError(403, "The request can be accessed only by valid record authorization token.")
        self._auth_response(collection, current.record, request)

    # ---- collections ----------------------------------------------------------------------------------

    async def list_collections(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        tenant = request.tenant
        page, per_page = query.parse_paging(request.query("page"), request.query("perPage"))
        resolver = TableResolver("_collections", _COLLECTION_COLUMNS, None, collections=(),
                                 collection_id="_collections", collection_type="base")
        where, params = "", []
        try:
            user_filter = request.query("filter")
            if user_filter:
                sql, params = compile_filter(user_filter, resolver)
                where = f" WHERE ({sql})"
            order = query.compile_sort(request.query("sort") or "", resolver)
        except (FilterError, ValueError) as err:
            raise ApiError(400, BAD_REQUEST) from err
        ids = [row[0] for row in tenant.conn.execute(
            f"SELECT id FROM _collections{where}{(' ORDER BY ' + order) if order else ''} LIMIT ? OFFSET ?",
            [*params, per_page, (page - 1) * per_page])]
        total = tenant.conn.execute(f"SELECT COUNT(*) FROM _collections{where}", params).fetchone()[0]
        items = [c.to_api() for c in (tenant.collection_by_id(i) for i in ids) if c is not None]
        request.send_json(200, {"items": items, "page": page, "perPage": per_page, "totalItems": total,
                                "totalPages": (total + per_page - 1) // per_page})

    async def view_collection(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        request.send_json(200, self._collection(request, NOT_FOUND).to_api())

    async def create_collection(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        body = await self._body(request)
        tenant = request.tenant
        try:
            created = schema.create_collection(tenant.conn, body)
        except schema.CollectionValidationError as err:
            raise ApiError(400, err.message, err.data) from err
        finally:
            tenant.reload_collections()
        request.send_json(200, created.to_api())

    async def update_collection(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        collection = self._collection(request, NOT_FOUND)
        body = await self._body(request)
        tenant = request.tenant
        try:
            updated = schema.update_collection(tenant.conn, collection, body)
        except schema.CollectionValidationError as err:
            raise ApiError(400, err.message, err.data) from err
        finally:
            tenant.reload_collections()
        request.send_json(200, updated.to_api())

    async def delete_collection(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        collection = self._collection(request, NOT_FOUND)
        tenant = request.tenant
        try:
            schema.delete_collection(tenant.conn, collection)
        except schema.CollectionValidationError as err:
            raise ApiError(400, err.message, err.data) from err
        finally:
            tenant.reload_collections()
        request.proto.response_empty(204, [])

    async def truncate_collection(self, request: TenantRequest) -> None:
        self._require_superuser(request)
        collection = self._collection(request, NOT_FOUND)
        try:
            schema.truncate_collection(request.tenant.conn, collection)
        except schema.CollectionValidationError as err:
            raise ApiError(400, err.message, err.data) from err
        request.proto.response_empty(204, [])


# The filterable/sortable columns of ``_collections`` as field definitions, for the collections list.
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


def _record_body_limit(collection: Collection) -> int:
    """PocketBase's record body limit: the default plus what the collection's file fields may carry."""
    extra = sum(int(f.get("maxSize") or 0) * max(1, int(f.get("maxSelect") or 1))
                for f in collection.fields if f["type"] == "file")
    return DEFAULT_MAX_BODY + extra


def _check_rule(collection: Collection, rule: str, others: Any) -> None:
    """Validate an API rule with the filter engine (installed into the schema layer below)."""
    infos = [{"id": c.id, "name": c.name, "type": c.type, "fields": c.fields, "indexes": c.indexes,
              "listRule": c.listRule} for c in {**{o.id: o for o in others.values()}, collection.id: collection}.values()]
    registry = Collections(infos)
    info = next(i for i in infos if i["id"] == collection.id)
    compile_filter(rule, TableResolver.from_collection(info, None, collections=registry))


schema.set_rule_checker(_check_rule)


class _RuleDenied(Exception):
    """A create rule rejected the new record; the insert is rolled back."""


def _error(proto: HTTPProtocol, status: int, message: str, data: dict[str, Any] | None = None,
           headers: list[tuple[str, str]] | None = None) -> None:
    body = {"data": data or {}, "message": message, "status": status}
    proto.response_bytes(status, JSON_HEADERS + (headers or []), orjson.dumps(body))
