"""``POST /api/collections/{collection}/auth-with-oauth2`` (PocketBase's ``apis/record_auth_with_oauth2.go``).

In two parts, so that the calls to the provider hold neither the event loop nor the tenant's database turn:

1. :func:`exchange_code` (on a thread of :data:`PROVIDER_THREADS`, before the database work): the form is
   checked, the code exchanged at the provider's token URL (with the PKCE verifier) and the user fetched
   (:mod:`pbfast.pocketbase.oauth2.exchange`), within 30 s as PocketBase allows.
2. :func:`auth_with_oauth2` (the database work): the record is found through its ``_externalAuths`` link,
   else the requester's own record (linking a provider to a logged-in account), else by the provider's
   verified email; none: a new record is created from ``createData`` and the mapped provider fields through
   the records API (the collection's ``createRule`` applies). An unverified record found by email gets a
   random password and loses its other links (PocketBase's guards against pre-registered accounts), and
   becomes verified when its email is the provider's. The link is stored, then the login is answered as
   every login is (``authRule``, MFA, login alert) with ``meta``: the provider's user and ``isNew``.

An ``avatarURL`` mapped to a file field is downloaded on sign-up only, where PocketBase downloads it (a login
to an existing record, linked or not, fetches nothing): part 2 stops there (:class:`OffTurnFirst`), the picture
is fetched on a provider thread (public internet addresses only, as PocketBase's safe HTTP client allows), and
part 2 runs again with it; a text field receives the URL. Differences: redirects are not followed and a picture
over 8 MiB is not stored (PocketBase follows redirects and cuts the picture at 32 MiB).
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import orjson

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase import auth, records
from pbfast.pocketbase.apis import records as records_api
from pbfast.pocketbase.apis.internal_request import InternalScope, internal_request
from pbfast.pocketbase.apis.record_auth import auth_collection, auth_response
from pbfast.pocketbase.apis.record_auth_forms import LOAD_FAILED, error, required_error, string_form
from pbfast.pocketbase.apis.request import BAD_REQUEST, SUPERUSERS, OffTurnFirst, TenantRequest
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.index import single_column_unique_index
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.fields import FieldError, FileField, TextField
from pbfast.pocketbase.apis.multipart import UploadedFile
from pbfast.pocketbase.oauth2 import apple_names, http_client
from pbfast.pocketbase.oauth2.exchange import AuthUser, ExchangeError, fetch_auth_user, fetch_token
from pbfast.pocketbase.oauth2.providers import random_string, resolve
from pbfast.pocketbase.realtime import record_changed
from pbfast.pocketbase.records import Row

__all__ = ["PROVIDER_THREADS", "OAuth2Login", "auth_with_oauth2", "exchange_code", "fetch_avatar"]

log = component_logger("TenantNode")

OAUTH2_METHOD: Final = "oauth2"  # PocketBase's core.MFAMethodOAuth2
EXTERNAL_AUTHS: Final = "_externalAuths"
EXCHANGE_SECONDS: Final = 30.0
# Provider calls wait on the network: their own threads, so that slow providers cannot take the node's.
PROVIDER_THREADS: Final = ThreadPoolExecutor(max_workers=8, thread_name_prefix="oauth2")


@dataclass(frozen=True, slots=True)
class OAuth2Login:
    """What the provider said, handed from :func:`exchange_code` to :func:`auth_with_oauth2`."""

    collection_id: str
    provider: str
    user: AuthUser
    create_data: dict[str, Any] | None
    body: dict[str, Any]
    avatar: UploadedFile | None = None  # the picture, when the collection maps avatarURL to a file field
    avatar_fetched: bool = False  # tried (avatar None: it could not be had)


def exchange_code(request: TenantRequest) -> None:
    """Part 1 (no database work; blocking network): sets ``request.prepared`` or raises :class:`ApiError`."""
    collection = auth_collection(request)
    oauth2 = collection.auth.oauth2
    if not oauth2.enabled:
        raise ApiError(403, "The collection is not configured to allow OAuth2 authentication.")
    form, body = string_form(request, ("provider", "code", "codeVerifier", "redirectURL", "redirectUrl"))
    create_data = body.get("createData")
    if create_data is not None and not isinstance(create_data, dict):
        raise ApiError(400, LOAD_FAILED)
    name = form["provider"]
    config = next((p for p in oauth2.providers if p.name == name), None)
    errors: dict[str, Any] = {}
    if not name:
        errors["provider"] = required_error()
    elif len(name) > 100:
        errors["provider"] = {"code": "validation_length_too_long", "message": "The length must be no more than 100.",
                              "params": {"max": 100, "min": 0}}
    elif config is None:
        errors["provider"] = {**error("validation_invalid_provider",
                                      f"Provider with name {name} is missing or is not enabled."),
                              "params": {"name": name}}
    if not form["code"]:
        errors["code"] = required_error()
    if errors or config is None:
        raise ApiError(400, LOAD_FAILED, errors)  # sic: PocketBase's message for this form's validation
    provider = resolve(config)
    if provider is None:
        raise ApiError(500, f"Failed to init provider {name}.")
    deadline = time.monotonic() + EXCHANGE_SECONDS
    tenant_id = request.tenant.id
    try:
        token = fetch_token(provider, form["code"], form["codeVerifier"], form["redirectURL"] or form["redirectUrl"],
                            deadline)
    except ExchangeError as err:
        log.info("tenant %s: OAuth2 token from %s refused: %s", tenant_id, name, err)
        raise ApiError(400, "Failed to fetch OAuth2 token.") from err
    try:
        user = fetch_auth_user(provider, token, deadline)
    except ExchangeError as err:
        log.info("tenant %s: OAuth2 user from %s refused: %s", tenant_id, name, err)
        raise ApiError(400, "Failed to fetch OAuth2 user.") from err
    if name == "apple" and not user.name:  # the name Apple posted once to the redirect URL
        user = dataclasses.replace(user, name=apple_names.take(tenant_id, form["code"]) or "")
    request.prepared = OAuth2Login(collection.id, name, user, create_data, body)


def fetch_avatar(request: TenantRequest) -> None:
    """Between two runs of part 2 (a sign-up): the picture, on a provider thread."""
    login = request.prepared
    assert isinstance(login, OAuth2Login)
    collection = request.tenant.collection_by_id(login.collection_id)
    avatar = None if collection is None else _download_avatar(collection, login.user, request.tenant.id)
    request.prepared = dataclasses.replace(login, avatar=avatar, avatar_fetched=True)


AVATAR_SECONDS: Final = 10.0  # PocketBase's timeout for the picture
AVATAR_MAX_BYTES: Final = 8 << 20


def _download_avatar(collection: Collection, user: AuthUser, tenant_id: str) -> UploadedFile | None:
    """PocketBase's ``safeFileFromURL`` of the user's avatar when the collection maps ``avatarURL`` to a file
    field: named as Go's ``path.Base`` names the URL; None (and logged) when it cannot be had."""
    field_name = collection.auth.oauth2.mapped_fields.get("avatarURL") or ""
    if not user.avatar_url or not isinstance(collection.field(field_name), FileField):
        return None
    try:
        answer = http_client.request("GET", user.avatar_url, {"Accept": "*/*"}, None,
                                     time.monotonic() + AVATAR_SECONDS, AVATAR_MAX_BYTES, public_only=True)
    except http_client.ProviderUnreachable as err:
        log.info("tenant %s: OAuth2 avatar not retrieved: %s", tenant_id, err)
        return None
    if not 200 <= answer.status < 300:
        log.info("tenant %s: OAuth2 avatar not retrieved: status %d", tenant_id, answer.status)
        return None
    base = user.avatar_url.rstrip("/").rsplit("/", 1)[-1] if user.avatar_url.strip("/") else "/"
    return UploadedFile(field_name, base or ".", answer.content_type, answer.body)  # named as every upload is


def auth_with_oauth2(request: TenantRequest) -> None:
    """Part 2: link or create the record and answer the login."""
    login = request.prepared
    if not isinstance(login, OAuth2Login):  # only reached through TenantApi, which runs part 1 first
        raise ApiError(400, BAD_REQUEST)
    tenant = request.tenant
    collection = tenant.collection_by_id(login.collection_id)
    links = tenant.collection(EXTERNAL_AUTHS)
    if collection is None or links is None:
        raise ApiError(404, "Missing or invalid auth collection context.")
    request.info_context = "oauth2"
    user = login.user
    link = _link_of(request, links, collection, login.provider, user.id)
    current = request.auth
    record: Row | None = None
    if link is not None:
        record = records.load_row(tenant, collection, link)
        if record is None:
            raise ApiError(400, BAD_REQUEST)
    elif current is not None and current.collection.id == collection.id:
        record = current.record
    elif user.email:
        record = records.find_auth_record_by_email(tenant, collection, user.email)
    is_new = record is None
    changes: list[tuple[str, Collection, Row]] = []
    try:
        with write_transaction(tenant.conn):
            if record is None:
                record = _create(request, collection, login, changes)
            else:
                record, link = _update_found(request, collection, record, user, link)
            if link is None:
                records.save_record(tenant, links, {"collectionRef": collection.id, "recordRef": record["id"],
                                                    "provider": login.provider, "providerId": user.id}, None,
                                    manage=True, superuser=True)
    except records.RecordValidationError as err:
        raise ApiError(400, "Failed to authenticate.", err.data) from err
    for action, changed, row in changes:
        record_changed(tenant, action, changed, row)
    auth_response(request, collection, record, auth_method=OAUTH2_METHOD, body=login.body, meta=user.meta(is_new))


def _link_of(request: TenantRequest, links: Collection, collection: Collection, provider: str,
             provider_id: str) -> str | None:
    """The id of the record the provider's user is linked to, None without a link."""
    found = request.tenant.conn.execute(
        f"SELECT recordRef FROM {quote(links.name)} WHERE collectionRef = ? AND provider = ? AND providerId = ? "
        "LIMIT 1", (collection.id, provider, provider_id))
    row = next(iter(found), None)
    return None if row is None else str(row[0] or "")


def _create(request: TenantRequest, collection: Collection, login: OAuth2Login,
            changes: list[tuple[str, Collection, Row]]) -> Row:
    if collection.name == SUPERUSERS:
        raise ApiError(400, "Failed to authenticate.")  # superusers never sign up with OAuth2
    user, mapped = login.user, collection.auth.oauth2.mapped_fields
    payload = dict(login.create_data or {})
    email = payload.get("email")
    if not isinstance(email, str) or not email:
        payload["email"] = user.email
    if mapped.get("id") and mapped["id"] not in payload:
        payload[mapped["id"]] = user.id
    if mapped.get("name") and mapped["name"] not in payload:
        payload[mapped["name"]] = user.name
    if mapped.get("username") and mapped["username"] not in payload and \
            _can_assign_username(request, collection, mapped["username"], user.username):
        payload[mapped["username"]] = user.username
    avatar = mapped.get("avatarURL") or ""
    files: dict[str, list[UploadedFile]] = {}
    if avatar and avatar not in payload and user.avatar_url:
        if not isinstance(collection.field(avatar), FileField):
            payload[avatar] = user.avatar_url
        elif not login.avatar_fetched:
            raise OffTurnFirst(fetch_avatar)  # nothing written yet: the transaction rolls back
        elif login.avatar is not None:
            files[avatar] = [login.avatar]
    created = _create_through_api(request, collection, payload, changes, files)
    if created.get("email") == user.email and not created.get("verified"):
        created = records.save_record(request.tenant, collection, {"verified": True}, created, manage=True,
                                      superuser=True)
    return created


def _create_through_api(request: TenantRequest, collection: Collection, payload: dict[str, Any],
                        changes: list[tuple[str, Collection, Row]], files: dict[str, list[UploadedFile]]) -> Row:
    """PocketBase's internal ``POST /api/collections/{name}/records`` as the requester, in context "oauth2"."""
    path = f"/api/collections/{collection.name}/records"
    scope = InternalScope("POST", path, "", {"content-type": "application/json"}, client=request.scope.client)
    inner, answer = internal_request(request, scope, {"collection": collection.name}, payload, "oauth2", changes)
    inner.bound_files = files
    records_api.create_record(inner)
    created_id = orjson.loads(answer.body).get("id") if answer.status == 200 else None
    row = records.load_row(request.tenant, collection, str(created_id or ""))
    if row is None:
        raise ApiError(400, "Failed to authenticate.")
    return row


def _can_assign_username(request: TenantRequest, collection: Collection, field_name: str, username: str) -> bool:
    """PocketBase's ``oldCanAssignUsername``: the field exists, a text field takes the value, and no other
    record has it when the field is unique."""
    field = collection.field(field_name)
    if field is None:
        return False
    if isinstance(field, TextField):
        try:
            field.prepare(username, is_new=True)
        except FieldError:
            return False
    index = single_column_unique_index(collection.indexes, field_name)
    if index is None:
        return True
    collate = " COLLATE NOCASE" if index.columns[0].collate.lower() == "nocase" else ""
    taken = request.tenant.conn.execute(
        f"SELECT 1 FROM {quote(collection.name)} WHERE {quote(field_name)} = ?{collate} LIMIT 1", (username,))
    return next(iter(taken), None) is None


def _update_found(request: TenantRequest, collection: Collection, record: Row, user: AuthUser,
                  link: str | None) -> tuple[Row, str | None]:
    """An existing record: PocketBase's guards for an unverified one, its email filled in when it has none."""
    tenant = request.tenant
    current = request.auth
    logged_in = current is not None and current.collection.id == collection.id and \
        current.record.get("id") == record["id"]
    verified = bool(record.get("verified"))
    change: dict[str, Any] = {}
    if not logged_in and not verified:
        password = auth.stable_random("password", lambda: random_string(30))  # the same when run again
        change |= {"password": password, "passwordConfirm": password}
    if not verified:
        tenant.conn.execute(f"DELETE FROM {quote(EXTERNAL_AUTHS)} WHERE collectionRef = ? AND recordRef = ?",
                            (collection.id, record["id"]))
        link = None  # made again below
    email = str(record.get("email") or "")
    if not email and user.email:
        email = change["email"] = user.email
    if not verified and (not email or email == user.email):
        change["verified"] = True
    if change:
        record = records.save_record(tenant, collection, change, record, manage=True, superuser=True)
    return record, link


