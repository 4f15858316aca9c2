"""Record authentication (PocketBase's ``apis/record_auth_*.go`` and ``record_helpers.go``): password auth and
token refresh, and the answer every login method shares (``authRule``, MFA, login alert)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from pbfast.http import JSON_HEADERS, ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase import auth, auth_alert, fields, gocompat, mfa, records
from pbfast.pocketbase.apis.expand import expand_items
from pbfast.pocketbase.apis.form_body import struct_body, struct_form_body
from pbfast.pocketbase.apis.request import (
    LOAD_FAILED,
    Auth,
    MISSING_OR_INVALID_COLLECTION,
    NO_AUTH,
    SUPERUSERS,
    TenantRequest,
    collection_of,
    read_body,
    resolver,
    send_with_fields,
)
from pbfast.pocketbase.apis.settings import check_superuser_ip, client_ip
from pbfast.pocketbase.auth_records import auth_answer_json
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.records import Row, RuleError, Viewer

__all__ = ["auth_collection", "auth_refresh", "auth_response", "auth_with_password", "password_to_check"]

log = component_logger("TenantNode")

VALIDATION_FAILED: Final = "An error occurred while validating the submitted data."
_LENGTH_1_255: Final[dict[str, Any]] = {"code": "validation_length_out_of_range",
                                        "message": "The length must be between 1 and 255.",
                                        "params": {"max": 255, "min": 1}}


@dataclass(slots=True)
class _PasswordLogin:
    collection: Collection
    body: dict[str, Any]
    password: str
    row: Row | None  # the record the identity names, None when none does


def auth_with_password(request: TenantRequest) -> None:
    login = _password_login(request)
    checked = request.prepared if isinstance(request.prepared, auth.PasswordCheck) else None
    if login.row is None or not auth.verify_password(login.password, str(login.row.get("password", "")), checked):
        raise ApiError(400, "Failed to authenticate.")
    auth_response(request, login.collection, login.row, auth_method=mfa.PASSWORD_METHOD, body=login.body)


def password_to_check(request: TenantRequest) -> auth.PasswordCheck | None:
    """The bcrypt check :func:`auth_with_password` will make (the record's hash, read in the tenant's turn), for
    the caller to make off the turn and leave in ``request.prepared``; None when the handler answers without."""
    try:
        login = _password_login(request)
    except ApiError:
        return None  # the handler's turn answers it
    return None if login.row is None else auth.PasswordCheck(login.password, str(login.row.get("password", "")))


def _password_login(request: TenantRequest) -> _PasswordLogin:
    """The form of a password login, validated, and the record its identity names."""
    collection = auth_collection(request)
    password_auth = collection.auth.password_auth
    if not password_auth.enabled and collection.name != SUPERUSERS:
        raise ApiError(403, "The collection is not configured to allow password authentication.")
    body, _ = struct_body(request, first_api_error=True)
    identity_fields = password_auth.identity_fields
    form: dict[str, str] = {}
    for key in ("identity", "password", "identityField"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, LOAD_FAILED)
        form[key] = value or ""
    errors: dict[str, Any] = {}
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
    identity = form["identity"]
    if form["identityField"]:
        candidates = [form["identityField"]]
    else:
        # PocketBase looks the email up first, and only when the identity looks like one
        candidates = sorted(identity_fields, key=lambda name: name != "email")
        if "email" in candidates and not fields.is_email(identity):
            candidates.remove("email")
    row = None
    for name in candidates:
        row = records.find_by_identity(request.tenant, collection, name, identity)
        if row is not None:
            break
    return _PasswordLogin(collection, body, form["password"], row)


def auth_refresh(request: TenantRequest) -> None:
    collection = collection_of(request, MISSING_OR_INVALID_COLLECTION)
    current = request.auth
    if current is None:
        raise ApiError(401, NO_AUTH)
    if current.collection.id != collection.id:
        raise ApiError(403, f"The request requires auth record from {current.collection.name} collection.")
    if struct_form_body(request) is None:
        read_body(request)  # PocketBase reads the body for the authRule's request info: unreadable is 400
    token = None
    if not current.refreshable:
        token = current.token  # non-refreshable tokens (e.g. impersonation) are returned as they are
    auth_response(request, collection, current.record, token)


def auth_collection(request: TenantRequest) -> Collection:
    """The path's collection as PocketBase's auth routes find it: missing → 404 (their rate-limit
    middleware's wording), not an auth collection → 404."""
    collection = collection_of(request, MISSING_OR_INVALID_COLLECTION)
    if collection.type != "auth":
        raise ApiError(404, "Missing or invalid auth collection context.")
    return collection


def auth_response(request: TenantRequest, collection: Collection, row: Row, token: str | None = None,
                   auth_method: str = "", body: dict[str, Any] | None = None,
                   meta: dict[str, Any] | None = None) -> None:
    """PocketBase's ``recordAuthResponse``: the collection's ``authRule`` must hold for the record
    (evaluated for the requester; superusers always pass), then MFA for an ``auth_method`` (a first
    method answers ``401 {"mfaId"}``, see :mod:`pbfast.pocketbase.mfa`), then the login alert
    (:mod:`pbfast.pocketbase.auth_alert`) and ``{"meta"?, "record", "token"}``."""
    check_superuser_ip(request, superuser=collection.name == SUPERUSERS)
    if not request.superuser and not _auth_rule_holds(request, collection, row):
        raise ApiError(403, "The request doesn't satisfy the collection requirements to authenticate.")
    if auth_method:
        mfa_id = _check_mfa(request, collection, row, auth_method, body or {})
        if mfa_id:
            request.send_json(401, {"mfaId": mfa_id})
            return
    if token is None:
        token_config = collection.auth.auth_token
        token = auth.issue_auth_token(row["id"], str(row.get("tokenKey", "")), collection.id, token_config.secret,
                                      token_config.duration)
    alert = bool(auth_method) and collection.auth.auth_alert_enabled
    if meta is None and not request.query("expand") and not request.query("fields"):
        # The usual answer (an auth-refresh's, a plain login's): the record's JSON as bytes, kept while the record
        # is unchanged, and the token spliced in; keys in the order sort_keys gives ("record" < "token").
        if alert:
            auth_alert.record_login(request.tenant, collection, row, client_ip(request),
                                    request.header("user-agent") or "")
        record_bytes = auth_answer_json(request.tenant, collection, row, lambda: orjson.dumps(
            records.record_json(collection, row, _viewer(collection, row), show_email=True),
            option=orjson.OPT_SORT_KEYS, default=gocompat.go_json_default))
        request.proto.response_bytes(200, JSON_HEADERS, b'{"record":%b,"token":%b}' % (record_bytes,
                                                                                       orjson.dumps(token)))
        return
    record = records.record_json(collection, row, _viewer(collection, row), show_email=True)
    # expanded as the record being authenticated sees its relations
    expand_items(request, collection, [row], [record], body=body, auth_state=Auth(collection, row))
    if alert:
        auth_alert.record_login(request.tenant, collection, row, client_ip(request), request.header("user-agent") or "")
    answer: dict[str, Any] = {"record": record, "token": token}
    if meta is not None:
        answer["meta"] = meta
    send_with_fields(request, answer)


def _viewer(collection: Collection, row: Row) -> Viewer:
    """The record being authenticated, as the viewer of its own JSON."""
    return Viewer(collection.name == SUPERUSERS, collection.id, row["id"])


def _auth_rule_holds(request: TenantRequest, collection: Collection, row: Row) -> bool:
    """The ``authRule`` for this requester: null refuses, empty allows, a rule that cannot be evaluated
    does not hold."""
    rule = collection.rule("authRule")
    if not rule:
        return rule is not None
    try:
        return records.rule_holds(request.tenant, collection, row["id"], rule, resolver(request, collection))
    except RuleError as err:
        log.warning("tenant %s: authRule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
        return False


def _check_mfa(request: TenantRequest, collection: Collection, row: Row, method: str,
               body: dict[str, Any]) -> str | None:
    """PocketBase's ``checkMFA``: the id of a new MFA session when this login needs another method,
    None when it may complete (MFA off, its rule does not hold, or a valid session of another method
    was given); 400 for an unusable session."""
    options = mfa.MfaOptions.of(collection)
    if not options.enabled or not _wants_mfa(request, collection, row, options.rule, body):
        return None
    mfa_id = mfa.submitted_mfa_id(request.scope.query_string, body)
    if not mfa_id:
        return mfa.start_session(request.tenant, collection, row["id"], method)
    mfa.finish_session(request.tenant, collection, row["id"], method, mfa_id, options)
    return None


def _wants_mfa(request: TenantRequest, collection: Collection, row: Row, rule: str, body: dict[str, Any]) -> bool:
    """Whether the collection's ``mfa.rule`` holds for the record (an empty rule always does), evaluated
    for this request like the other API rules; a rule that cannot be evaluated fails the login."""
    if not rule:
        return True
    try:
        return records.rule_holds(request.tenant, collection, row["id"], rule, resolver(request, collection, body))
    except RuleError as err:
        log.warning("tenant %s: mfa.rule of %s cannot be evaluated: %s", request.tenant.id, collection.name, err)
        raise ApiError(400, "Failed to authenticate.") from err
