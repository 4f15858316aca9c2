"""What every handler of a tenant's API shares: the request (:class:`TenantRequest`, with its auth state
resolved lazily from ``Authorization``), the JSON body as PocketBase binds it, the ``@request.*`` info and
resolvers for API rules, answers (``fields`` applied, PocketBase-shaped errors) and PocketBase's messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol
from urllib.parse import parse_qsl

import orjson

from pbfast.http import JSON_HEADERS, ApiError, HTTPProtocol, Request, Scope
from pbfast.pocketbase import auth, gocompat, search
from pbfast.pocketbase.auth_records import VerifiedToken, keep_verified_token, load_auth_record, verified_token
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.filesystem import FileChanges
from pbfast.pocketbase.records import Row, Viewer
from pbfast.pocketbase.search import RequestInfo, TableResolver
from pbfast.pocketbase.tenant import Tenant

__all__ = [
    "Auth",
    "BAD_REQUEST",
    "DEFAULT_MAX_BODY",
    "JSON_SPACE",
    "MISSING_COLLECTION",
    "MISSING_OR_INVALID_COLLECTION",
    "NOT_FOUND",
    "NO_AUTH",
    "OffTurnFirst",
    "ONLY_SUPERUSERS",
    "SUPERUSERS",
    "AfterTurn",
    "TenantRequest",
    "LOAD_FAILED",
    "UNSUPPORTED_CONTENT_TYPE",
    "body_limit",
    "claimed_auth",
    "collection_of",
    "decode_json_body",
    "read_body",
    "record_body_limit",
    "request_info",
    "require_superuser",
    "resolver",
    "send_error",
    "send_with_fields",
]

SUPERUSERS = "_superusers"
BAD_REQUEST = "Something went wrong while processing your request."
UNSUPPORTED_CONTENT_TYPE = "Unsupported Content-Type."  # the body binder's own error (Go's router)
LOAD_FAILED = "An error occurred while loading the submitted data."  # a body a handler could not bind
ONLY_SUPERUSERS = "Only superusers can perform this action."
NOT_ALLOWED = "The authorized record is not allowed to perform this action."
NO_AUTH = "The request requires valid record authorization token."
MISSING_COLLECTION = "Missing collection context."
MISSING_OR_INVALID_COLLECTION = "Missing or invalid collection context."
NOT_FOUND = "The requested resource wasn't found."
DEFAULT_MAX_BODY = 32 << 20
_GUEST: Final = Viewer()  # (frozen: one for every guest request)


@dataclass(slots=True)
class Auth:
    collection: Collection
    record: Row
    token: str = ""
    refreshable: bool = True

    @property
    def superuser(self) -> bool:
        return self.collection.name == SUPERUSERS

    def viewer(self) -> Viewer:
        return Viewer(self.superuser, self.collection.id, str(self.record.get("id", "")))


class AfterTurn(Protocol):
    """Work that answers a request once its handler's database work is done, on the event loop (it hands
    its blocking part to a thread): the tenant's other requests do not wait for it."""

    async def send(self, proto: HTTPProtocol) -> None: ...


class OffTurnFirst(Exception):  # noqa: N818 - not an error: a request for work before the turn runs again
    """Raised by a handler in its turn, before it has written anything its transaction does not roll back: the
    caller runs ``step`` off the turn (network work, on a thread of its own), then the handler's turn again.
    (A bcrypt job asks the same through :class:`pbfast.pocketbase.auth.BcryptFirst`.)"""

    def __init__(self, step: Callable[[TenantRequest], None]) -> None:
        super().__init__(step)
        self.step = step


class TenantRequest(Request):
    """A request to one tenant, with its auth state resolved lazily from ``Authorization``."""

    __slots__ = ("_auth", "_auth_done", "after_turn", "bcrypt", "bound_body", "bound_files",
                 "deferred_changes", "file_changes", "first", "info_context", "prepared", "raw_body", "remembered",
                 "tenant")

    def __init__(self, scope: Scope, proto: HTTPProtocol, path: str, params: dict[str, str], tenant: Tenant) -> None:
        super().__init__(scope, proto, path, params)
        self.tenant = tenant
        self._auth: Auth | None = None
        self._auth_done = False
        self.raw_body: bytes | None = b""  # None: larger than the route's limit (413 when the handler reads it)
        # The body already bound (a batch's item): what read_body returns instead of parsing raw_body.
        self.bound_body: dict[str, Any] | None = None
        self.bound_files: dict[str, Any] = {}  # its uploads by key (a batch's item), when bound_body is set
        self.info_context = "default"  # @request.context ("batch" for a batch's items)
        # Record changes for realtime held until the transaction commits (a batch's items), else None.
        self.deferred_changes: list[tuple[str, Collection, Row]] | None = None
        # What a handler's network step found before its database work (see TenantApi.handle).
        self.prepared: object | None = None
        # Its file uploads and the deletes they make due (shared by a batch's items).
        self.file_changes = FileChanges()
        # The answer's slow part, done after the database work off the tenant's turn (a file read from the
        # store, a backup made and uploaded): see AfterTurn.
        self.after_turn: AfterTurn | None = None
        # Work a handler asked for off its turn (see OffTurnFirst), then its turn runs again; its bcrypt work made
        # so (None: bcrypt runs in the turn) and what a run that stopped so had done that must not be done twice.
        self.first: OffTurnFirst | auth.BcryptFirst | None = None
        self.bcrypt: auth.BcryptRuns | None = None
        self.remembered: dict[str, object] = {}

    def share_auth(self, other: TenantRequest) -> None:
        """Take ``other``'s auth state and file changes (a batch's items are made as the batch request)."""
        self._auth, self._auth_done = other.auth, True
        self.file_changes = other.file_changes

    @property
    def auth(self) -> Auth | None:
        if not self._auth_done:
            self._auth = authenticate(self.tenant, self.header("authorization"))
            self._auth_done = True
        return self._auth

    @property
    def viewer(self) -> Viewer:
        auth = self.auth
        return auth.viewer() if auth else _GUEST

    @property
    def superuser(self) -> bool:
        return self.auth is not None and self.auth.superuser

    def send_json(self, status: int, payload: Any, headers: list[tuple[str, str]] | None = None, *,
                  sort_keys: bool = True) -> None:
        # PocketBase (Go) marshals maps with sorted keys; structs (sort_keys=False) in their fields' order.
        option = orjson.OPT_SORT_KEYS if sort_keys else 0
        self.proto.response_bytes(status, JSON_HEADERS + (headers or []),
                                  orjson.dumps(payload, option=option, default=gocompat.go_json_default))


def _header_token(header: str) -> str:
    token = header.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    return token


def claimed_auth(tenant: Tenant, header: str | None) -> tuple[str, Collection, dict[str, Any]] | None:
    """An ``Authorization`` header's token, the auth collection it claims to be of and its claims, read without
    the database (neither its signature nor its record checked: :func:`authenticate` does that); None when the
    request is a guest for certain (no token, or one that cannot be valid)."""
    if not header:
        return None
    token = _header_token(header)
    try:
        claims = auth.peek_token_claims(token)
    except auth.TokenError:
        return None
    if claims.get("type") != "auth":
        return None
    collection = tenant.collection_by_id(claims["collectionId"])
    if collection is None or collection.type != "auth":
        return None
    return token, collection, claims


def authenticate(tenant: Tenant, header: str | None) -> Auth | None:
    """The record a token belongs to, or None for a missing/invalid/expired token (PocketBase treats those
    requests as guests). A token verified before against its record, both unchanged since, is not parsed and
    checked again (:func:`pbfast.pocketbase.auth_records.verified_token`)."""
    if not header:
        return None
    token = _header_token(header)
    known = verified_token(tenant, token)
    if known is not None:
        return Auth(known[0].collection, known[1], token, known[0].refreshable)
    claimed = claimed_auth(tenant, header)
    if claimed is None:
        return None
    token, collection, claims = claimed
    row = load_auth_record(tenant, collection, claims["id"])
    secret = collection.auth.auth_token.secret
    if row is None or not secret or not auth.verify_token_signature(token, str(row.get("tokenKey", "")), secret):
        return None
    refreshable = bool(claims.get("refreshable"))
    keep_verified_token(tenant, token, VerifiedToken(collection, claims["id"], refreshable, claims["exp"]))
    return Auth(collection, row, token, refreshable)


def collection_of(request: TenantRequest, missing: str = MISSING_COLLECTION) -> Collection:
    """The path's collection (by name or id); 404 with ``missing`` when there is none."""
    collection = request.tenant.collection(request.params["collection"])
    if collection is None:
        raise ApiError(404, missing)
    return collection


def require_superuser(request: TenantRequest) -> None:
    if request.auth is None:
        raise ApiError(401, NO_AUTH)
    if not request.auth.superuser:
        raise ApiError(403, NOT_ALLOWED)


def read_body(request: TenantRequest, limit: int = DEFAULT_MAX_BODY, invalid: str = BAD_REQUEST,
              unsupported: str = UNSUPPORTED_CONTENT_TYPE) -> dict[str, Any]:
    """The JSON object of the body (read before the handler ran, see :meth:`~pbfast.pocketbase.api.TenantApi.handle`) as PocketBase's
    body binder reads it: an empty body binds nothing (``{}``); any other is JSON only when its Content-Type, as
    sent, begins with ``application/json`` (no type, another case or a ``+json`` type: 400 ``unsupported``);
    ``null`` is ``{}``, only the first JSON value counts, anything but an object (white space only too) is 400
    ``invalid``."""
    if request.bound_body is not None:
        return request.bound_body
    raw = request.raw_body
    if raw is None or len(raw) > limit:
        raise ApiError(413, "Request entity too large.")
    if not raw:
        return {}
    if not (request.header("content-type") or "").startswith("application/json"):
        raise ApiError(400, unsupported)
    if not raw.strip(JSON_SPACE):
        raise ApiError(400, invalid)  # Go's decoder finds no value (EOF)
    value = decode_json_body(raw, invalid)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, invalid)
    return value


def request_info(request: TenantRequest, body: dict[str, Any] | None = None, *, context: str | None = None,
                 auth_state: Auth | None | Literal[False] = False) -> RequestInfo:
    """What ``@request.*`` reads for this request (``body``: the submitted data the rule sees; ``context``:
    ``@request.context`` if not the request's own; ``auth_state``: ``@request.auth`` if not the request's
    own, e.g. the record an auth answer is for)."""
    if auth_state is False:
        auth_state = request.auth
    auth_data: dict[str, Any] = {}
    if auth_state is not None:
        auth_data = {**auth_state.record, "collectionId": auth_state.collection.id,
                     "collectionName": auth_state.collection.name}
    headers = {k.lower().replace("-", "_"): v for k, v in request.scope.headers.items()}
    return RequestInfo(auth=auth_data, body=body or {}, query=dict(parse_qsl(request.scope.query_string)),
                       method=request.method, headers=headers, context=context or request.info_context)


def resolver(request: TenantRequest, collection: Collection, body: dict[str, Any] | None = None, *,
             hidden: bool = True, table_alias: str | None = None) -> TableResolver:
    """A resolver of ``collection``'s identifiers for this request (``hidden``: hidden fields allowed, as
    for API rules and superusers)."""
    return TableResolver(collection, request_info(request, body), collections=request.tenant.collections,
                         allow_hidden_fields=hidden, table_alias=table_alias)


def send_with_fields(request: TenantRequest, payload: dict[str, Any] | list[Any], *, sort_keys: bool = True) -> None:
    """Answer 200 with ``payload`` trimmed by the ``fields`` query parameter, as PocketBase trims every
    successful JSON answer (a list: each of its items; ``sort_keys=False``: a Go struct's answer, in its
    fields' order)."""
    fields = request.query("fields")
    if not fields:
        request.send_json(200, payload, sort_keys=sort_keys)
        return
    try:
        projection = search.parse_fields(fields)
    except ValueError as err:
        raise ApiError(400, BAD_REQUEST) from err
    picked = search.apply_fields_many(payload, projection) if isinstance(payload, list) \
        else search.apply_fields(payload, projection)
    request.send_json(200, picked, sort_keys=sort_keys)


def body_limit(tenant: Tenant, params: dict[str, str]) -> int:
    """The most a route's handler reads: a record route's limit grows with its collection's file fields."""
    name = params.get("collection")
    collection = tenant.collection(name) if name else None
    return record_body_limit(collection) if collection is not None else DEFAULT_MAX_BODY


JSON_SPACE: Final = b" \t\n\r"
_JSON_WHITESPACE: Final = " \t\n\r"


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
    decoder = json.JSONDecoder(parse_constant=_no_json_constant, parse_float=gocompat.decoded_float,
                               parse_int=gocompat.decoded_int)
    try:
        value, _ = decoder.raw_decode(text, start)
        orjson.dumps(value)  # lone surrogates and too deep nesting, which the answers could not carry
    except (ValueError, RecursionError, orjson.JSONEncodeError) as err:
        raise ApiError(400, invalid) from err
    return value


def _no_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")



def record_body_limit(collection: Collection) -> int:
    """PocketBase's record body limit: the default plus what the collection's file, JSON and editor fields may
    carry (a view's fields add nothing: it takes no writes)."""
    known = _body_limits.get(id(collection))
    if known is not None and known[0] is collection:  # read twice per write request; a collection is never
        return known[1]                                 # changed once loaded (an update loads a new one)
    limit = DEFAULT_MAX_BODY if collection.is_view else DEFAULT_MAX_BODY + sum(f.max_body_size()
                                                                               for f in collection.fields)
    if len(_body_limits) >= _BODY_LIMITS_KEPT:
        _body_limits.clear()
    _body_limits[id(collection)] = (collection, limit)  # the collection held: its id is not reused meanwhile
    return limit


_BODY_LIMITS_KEPT: Final = 1024
_body_limits: dict[int, tuple[Collection, int]] = {}


def send_error(proto: HTTPProtocol, status: int, message: str, data: dict[str, Any] | None = None,
           headers: list[tuple[str, str]] | None = None) -> None:
    body = {"data": data or {}, "message": message, "status": status}
    # Go marshals an error's data (validation.Errors, maps) with its keys sorted, at every depth.
    proto.response_bytes(status, JSON_HEADERS + (headers or []),
                         orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=gocompat.go_json_default))
