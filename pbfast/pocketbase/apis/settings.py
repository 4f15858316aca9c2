"""``GET/PATCH /api/settings`` (PocketBase's ``apis/settings.go``): the tenant's application settings, for
superusers only, stored and validated as PocketBase does (:mod:`pbfast.pocketbase.app_settings`)."""

from __future__ import annotations

import ipaddress
from typing import Any, Final

from pbfast.cluster.wire import CLUSTER_TOKEN_HEADER
from pbfast.http import ApiError, Scope
from pbfast.pocketbase import app_settings
from pbfast.pocketbase.apis.batch_form import JSON_PAYLOAD, Unreadable, strict_json
from pbfast.pocketbase.apis.form_body import FORM_TYPES, FormError, read_form_values
from pbfast.pocketbase.apis.request import LOAD_FAILED, TenantRequest, read_body, require_superuser, send_with_fields

__all__ = ["FORBIDDEN", "check_superuser_ip", "client_ip", "real_ip", "settings_list", "settings_update",
           "superuser_ip_allowed"]

FORBIDDEN: Final = "You are not allowed to perform this request."

SAVE_FAILED: Final = "An error occurred while saving the new settings."


def client_ip(request: TenantRequest) -> str:
    """The client's address. A request a gateway forwarded over the network (it carries the cluster token,
    which the node checked before the tenant's API runs) names it as the last ``x-forwarded-for`` entry,
    which that gateway appended; otherwise (a gateway in the same process, a direct request) the peer is
    the client and ``x-forwarded-for`` is only what the client claims."""
    return scope_client_ip(request.scope)


def scope_client_ip(scope: Scope) -> str:
    """:func:`client_ip` of a request's scope."""
    headers = scope.headers  # (read directly: a rate limit check runs this on every request)
    if headers.get(CLUSTER_TOKEN_HEADER):
        forwarded = headers.get("x-forwarded-for")
        if forwarded:
            return str(forwarded).rsplit(",", 1)[-1].strip()
    peer = scope.client  # host:port
    return peer.rpartition(":")[0].strip("[]") or peer


def real_ip(request: TenantRequest, settings: app_settings.Settings, remote: str | None = None) -> str:
    """PocketBase's ``RealIP``: the client named by the first of the tenant's ``trustedProxy.headers`` that is
    present (its last value; the rightmost valid address in it, or the leftmost with ``useLeftmostIP``),
    else ``remote`` (:func:`client_ip` when not given)."""
    return scope_real_ip(request.scope, settings, remote)


def scope_real_ip(scope: Scope, settings: app_settings.Settings, remote: str | None = None) -> str:
    """:func:`real_ip` of a request's scope."""
    for name in settings.trusted_proxy_headers:
        found = scope.headers.get(name.lower())
        values = None if found is None else str(found)
        if not values:
            continue
        candidates = [part.strip() for part in values.split(",")]
        for candidate in (candidates if settings.use_leftmost_ip else reversed(candidates)):
            try:
                address = ipaddress.ip_address(candidate)
            except ValueError:
                continue
            return address.exploded  # Go's StringExpanded
    return scope_client_ip(scope) if remote is None else remote


def check_superuser_ip(request: TenantRequest, *, superuser: bool | None = None) -> None:
    """PocketBase's ``superuserIPs`` whitelist: a superuser (``superuser``: the request's auth, or a superuser
    logging in) acting from an address outside a non-empty list gets 403."""
    if not (request.superuser if superuser is None else superuser):
        return
    if not superuser_ip_allowed(request):
        raise ApiError(403, FORBIDDEN)


def superuser_ip_allowed(request: TenantRequest) -> bool:
    """The request's client (as the tenant's ``trustedProxy`` headers name it) may act as a superuser."""
    settings = app_settings.load_settings(request.tenant.conn)
    return not settings.superuser_ips or settings.superuser_ip_allowed(real_ip(request, settings))


def settings_list(request: TenantRequest) -> None:
    require_superuser(request)
    send_with_fields(request, app_settings.public_json(app_settings.load_document(request.tenant.conn)),
                     sort_keys=False)


def settings_update(request: TenantRequest) -> None:
    require_superuser(request)
    conn = request.tenant.conn
    try:
        document = _patched(request, app_settings.load_document(conn))
    except app_settings.LoadError as err:
        raise ApiError(400, LOAD_FAILED) from err
    errors = app_settings.validate(document)
    if errors:
        raise ApiError(400, SAVE_FAILED, errors)
    app_settings.save_document(conn, document)
    app_settings.notify_saved(request.tenant, app_settings.Settings.of(document))
    send_with_fields(request, app_settings.public_json(document), sort_keys=False)


def _patched(request: TenantRequest, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the request's body bound over it as PocketBase binds it: JSON, or a form (its dotted
    names, then each ``@jsonPayload`` decoded over them). Raises :class:`app_settings.LoadError`."""
    content_type = request.header("content-type") or ""
    raw = request.raw_body
    if raw is None:
        raise ApiError(413, "Request entity too large.")
    if raw and content_type.startswith(FORM_TYPES):
        try:
            values, _ = read_form_values(raw, content_type, request.scope.query_string)
        except FormError as err:
            raise app_settings.LoadError("form") from err
        document = app_settings.merge_patch(document, app_settings.form_patch(values))
        for payload in values.get(JSON_PAYLOAD, []):
            try:
                decoded = strict_json(payload.encode("utf-8", errors="surrogateescape"), whole=True)
            except (Unreadable, UnicodeDecodeError) as err:
                raise app_settings.LoadError(JSON_PAYLOAD) from err
            if decoded is not None:
                document = app_settings.merge_patch(document, decoded)
        return document
    try:
        return app_settings.merge_patch(document, read_body(request, invalid=LOAD_FAILED))
    except ApiError as err:
        if err.status == 400:
            raise app_settings.LoadError("body") from err
        raise
