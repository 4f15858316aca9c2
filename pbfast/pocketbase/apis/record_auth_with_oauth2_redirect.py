"""``GET/POST /api/oauth2-redirect`` (PocketBase's ``apis/record_auth_with_oauth2_redirect.go``): the redirect
URL of the SDKs' all-in-one OAuth2 login (``authWithOAuth2({provider})``). The SDK opens a realtime
connection, subscribes to ``@oauth2`` and uses its client id as the OAuth2 ``state``; the provider sends the
browser here with ``state`` and ``code`` (or ``error``), and this hands them to that client as an ``@oauth2``
message (once: the subscription is removed), after which the SDK calls ``auth-with-oauth2``.

Answered on the event loop (no database work), as PocketBase with its bundled dashboard answers: a redirect
(307, 303 after a POST) to ``../_/#/auth/oauth2-redirect-success`` or ``-failure``, where the tenant's
``/_/`` page (:mod:`pbfast.pocketbase.apis.dashboard_pages`) tells the user to go back to the app.

A redirect from another address than the realtime stream's fails (and ends the subscription) as in PocketBase.
Apple's posted ``user`` name is kept for the login call (:mod:`pbfast.pocketbase.oauth2.apple_names`).
"""

from __future__ import annotations

from typing import Final

import orjson

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase.apis.form_body import FORM_TYPES
from pbfast.pocketbase.apis.realtime import same_address
from pbfast.pocketbase.apis.record_auth_forms import string_form
from pbfast.pocketbase.apis.request import TenantRequest
from pbfast.pocketbase.oauth2 import apple_names
from pbfast.pocketbase.realtime.hub import RealtimeHub
from pbfast.pocketbase.realtime.subscriptions import ClientState, sse_frame

__all__ = ["oauth2_redirect"]

log = component_logger("TenantNode")

TOPIC: Final = "@oauth2"
SUCCESS_PATH: Final = "../_/#/auth/oauth2-redirect-success"
FAILURE_PATH: Final = "../_/#/auth/oauth2-redirect-failure"


def oauth2_redirect(hub: RealtimeHub, request: TenantRequest) -> None:
    """Event loop only (it queues to a realtime client)."""
    if request.method == "POST":
        try:
            form, body = string_form(request, ("state", "code", "error"))
            user = body.get("user")  # Apple's user JSON: a form field (PocketBase ignores it in a JSON body)
            media_type = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
            form["user"] = user if isinstance(user, str) and media_type in FORM_TYPES else ""
        except ApiError:
            _answer(request, success=False)
            return
    else:
        form = {name: request.query(name) or "" for name in ("state", "code", "error")} | {"user": ""}
    broker = hub.broker(request.tenant.id)
    client = broker.client(form["state"]) if broker is not None and form["state"] else None
    if client is None or client.discarded or not any(s.topic == TOPIC for s in client.state.subscriptions):
        log.debug("tenant %s: OAuth2 redirect for a missing or unsubscribed realtime client", request.tenant.id)
        _answer(request, success=False)
        return
    state = client.state
    client.state = ClientState(state.auth, tuple(s for s in state.subscriptions if s.topic != TOPIC))  # used up
    if client.address is not None and not same_address(request, client.address):
        # PocketBase's guard against a login completed from elsewhere than the app that started it (XSRF).
        log.debug("tenant %s: OAuth2 redirect from another address than its realtime client's", request.tenant.id)
        _answer(request, success=False)
        return
    if form["user"] and not form["error"] and form["code"]:
        apple_names.remember(request.tenant.id, form["code"], form["user"])
    message = {"state": form["state"], "code": form["code"]}
    if form["error"]:
        message["error"] = form["error"]
    client.push(sse_frame(client.id, TOPIC, orjson.dumps(message)))
    _answer(request, success=not form["error"] and bool(form["code"]))


def _answer(request: TenantRequest, *, success: bool) -> None:
    status = 307 if request.method == "GET" else 303  # a POST's browser follows with a GET
    request.proto.response_bytes(status, [("location", SUCCESS_PATH if success else FAILURE_PATH)], b"")
