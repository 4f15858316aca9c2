"""``POST /api/realtime`` (PocketBase's ``realtimeSetSubscriptions``): set a realtime client's topics, and make
the request's auth the client's. ``GET /api/realtime``, the stream itself, is served on the event loop by
:meth:`pbfast.pocketbase.realtime.RealtimeHub.connect`.

Answers as PocketBase 0.40: 400 with the validation errors for a missing or too long ``clientId``, more than
1000 topics or a topic longer than 2500 characters; 404 "Missing or invalid client id." for a client that is
not connected to this tenant; 400 "Invalid realtime client." for a request from another address than the
stream's (PocketBase's ``RealIP``, with the tenant's ``trustedProxy`` settings); 403 when the client already has an auth and the request brings another (only a
guest may become a user); else 204, the client's topics replaced."""

from __future__ import annotations

import sys
from typing import Any, Final

from pbfast.http import ApiError, Scope
from pbfast.pocketbase.apis.form_body import FORM_TYPES, FormError, read_form_values
from pbfast.pocketbase.apis.request import BAD_REQUEST, JSON_SPACE, TenantRequest, decode_json_body
from pbfast.pocketbase.apis.settings import client_ip, real_ip, scope_client_ip, scope_real_ip
from pbfast.pocketbase.realtime.hub import RealtimeHub
from pbfast.pocketbase.realtime.subscriptions import ClientAuth, ClientState, ConnectAddress, parse_subscription
from pbfast.pocketbase.records import load_row
from pbfast.pocketbase.request_logs import cached_settings, settings_at_hand

__all__ = ["connect_address", "set_subscriptions"]

MAX_CLIENT_ID: Final = 255
MAX_TOPICS: Final = 1000
MAX_TOPIC_LENGTH: Final = 2500
MISSING_CLIENT: Final = "Missing or invalid client id."
INVALID_CLIENT: Final = "Invalid realtime client."
AUTH_MISMATCH: Final = "The current and the previous request authorization don't match."


def _form(request: TenantRequest) -> tuple[str, list[str]]:
    """``clientId`` and ``subscriptions`` as PocketBase's body binder reads them (a body of another Content-Type
    than JSON or a form, as sent, is 400); 400 when they have the wrong types."""
    raw = request.raw_body
    if raw is None:
        raise ApiError(413, "Request entity too large.")
    if not raw:
        return "", []
    content_type = request.header("content-type") or ""
    if content_type.startswith(FORM_TYPES):
        try:
            values, _ = read_form_values(raw, content_type, request.scope.query_string)
        except FormError as err:
            raise ApiError(400, BAD_REQUEST) from err
        return (values.get("clientId") or [""])[0], values.get("subscriptions") or []
    if not content_type.startswith("application/json"):
        raise ApiError(400, BAD_REQUEST)
    if not raw.strip(JSON_SPACE):
        raise ApiError(400, BAD_REQUEST)  # Go's decoder finds no value (EOF)
    body: Any = decode_json_body(raw)
    if body is None:
        return "", []
    if not isinstance(body, dict):
        raise ApiError(400, BAD_REQUEST)
    client_id = body.get("clientId")
    topics = body.get("subscriptions")
    if client_id is None:
        client_id = ""
    if topics is None:
        topics = []
    if not isinstance(client_id, str) or not isinstance(topics, list) \
            or not all(topic is None or isinstance(topic, str) for topic in topics):
        raise ApiError(400, BAD_REQUEST)
    return client_id, [topic or "" for topic in topics]


def _validate(client_id: str, topics: list[str]) -> None:
    errors: dict[str, Any] = {}
    if not client_id:
        errors["clientId"] = {"code": "validation_required", "message": "Cannot be blank."}
    elif len(client_id) > MAX_CLIENT_ID:
        errors["clientId"] = {"code": "validation_length_out_of_range",
                              "message": f"The length must be between 1 and {MAX_CLIENT_ID}.",
                              "params": {"max": MAX_CLIENT_ID, "min": 1}}
    if len(topics) > MAX_TOPICS:
        errors["subscriptions"] = {"code": "validation_length_too_long",
                                   "message": f"The length must be no more than {MAX_TOPICS}.",
                                   "params": {"max": MAX_TOPICS, "min": 0}}
    else:
        too_long = {str(index): {"code": "validation_length_too_long",
                                 "message": f"The length must be no more than {MAX_TOPIC_LENGTH}.",
                                 "params": {"max": MAX_TOPIC_LENGTH, "min": 0}}
                    for index, topic in enumerate(topics) if len(topic) > MAX_TOPIC_LENGTH}
        if too_long:
            errors["subscriptions"] = too_long
    if errors:
        raise ApiError(400, BAD_REQUEST, errors)


def connect_address(tenant_id: str, scope: Scope) -> ConnectAddress:
    """Where ``GET /api/realtime`` comes from, as its subscription requests must (on the event loop: the
    tenant's settings as last read, if any)."""
    settings = settings_at_hand(tenant_id)
    if settings is None:
        return ConnectAddress(sys.intern(scope_client_ip(scope)), exact=False)
    return ConnectAddress(sys.intern(scope_real_ip(scope, settings)), exact=True)


def set_subscriptions(hub: RealtimeHub, request: TenantRequest) -> None:
    client_id, topics = _form(request)
    _validate(client_id, topics)
    broker = hub.broker(request.tenant.id)
    client = broker.client(client_id) if broker is not None else None
    if client is None or client.discarded:
        raise ApiError(404, MISSING_CLIENT)
    if client.address is not None and not same_address(request, client.address):
        # PocketBase's precaution against guessed client ids: only the stream's own address may subscribe.
        raise ApiError(400, INVALID_CLIENT)
    auth = request.auth
    requested = ClientAuth(auth.collection.id, str(auth.record.get("id", "")), str(auth.record.get("tokenKey") or "")) \
        if auth is not None else None
    current = client.state.auth
    if current is not None and not current.same_record(requested) and _still_valid(request, current):
        raise ApiError(403, AUTH_MISMATCH)
    subscriptions = tuple(parse_subscription(topic) for topic in dict.fromkeys(topics) if topic)
    client.state = ClientState(requested, subscriptions)  # one store: the database threads see all or nothing
    request.proto.response_empty(204, [])


def same_address(request: TenantRequest, address: ConnectAddress) -> bool:
    """Whether ``request`` comes from the address a realtime stream was opened from."""
    settings = cached_settings(request.tenant)
    if address.exact:
        return real_ip(request, settings) == address.ip
    if settings.trusted_proxy_headers:
        return True  # what RealIP was when the stream opened is not known: not refused on a guess
    return client_ip(request) == address.ip


def _still_valid(request: TenantRequest, auth: ClientAuth) -> bool:
    """Whether the client's auth still holds: PocketBase unsets it when its record is deleted or gets a new
    ``tokenKey`` (see :class:`ClientAuth`)."""
    collection = request.tenant.collection_by_id(auth.collection_id)
    row = load_row(request.tenant, collection, auth.record_id) if collection is not None else None
    return row is not None and str(row.get("tokenKey") or "") == auth.token_key
