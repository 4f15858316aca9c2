"""record_auth_with_oauth2_redirect_test.go's cases through real realtime clients (run by
``test_differential_go_ports.py`` on its patched pair of servers)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from pbharness import Backend
from sseclient import RawRealtimeClient



def _landed(backend: Backend, method: str, query: str = "", form: str = "", address: str = "") -> tuple[bool, bool]:
    """A browser landing on ``/api/oauth2-redirect``: whether it was answered as PocketBase answers (a redirect to
    its dashboard's page, 307, or 303 after a POST; a tenant has that page too) and whether it was told the login
    failed."""
    headers = {"X-Test-Ip": address} if address else {}
    if form:
        headers["content-type"] = "application/x-www-form-urlencoded"
    landed = httpx.request(method, f"{backend.url}/api/oauth2-redirect{query}", content=form or None, headers=headers,
                           timeout=30)
    answered = landed.status_code == (303 if method == "POST" else 307)
    return answered, "fail" in landed.headers.get("location", "")


def redirect_cases(backend: Backend) -> list[Any]:
    """record_auth_with_oauth2_redirect_test.go's cases, through real realtime clients: what the browser was
    answered, then the ``@oauth2`` messages the client got (its id as ``<state>``), and whether a second redirect
    found the subscription still there. "client with different IP": the address is named by a header the
    tenant's ``trustedProxy`` settings trust."""
    superuser = {"Authorization": backend.superuser_token}
    outcomes: list[Any] = [("no state", _landed(backend, "GET", "?code=123")),
                           ("missing client", _landed(backend, "GET", "?code=123&state=missing"))]
    apple_user = urlencode({"user": '{"name":{"firstName":"John","lastName":"Doe"}}'})
    cases = [("no code", ["@oauth2"], "GET", "?state={id}", ""),
             ("error", ["@oauth2"], "GET", "?error=example&code=123&state={id}", ""),
             ("without @oauth2", ["demo2"], "GET", "?code=123&state={id}", ""),
             ("with @oauth2", ["@oauth2"], "GET", "?code=123&state={id}", ""),
             ("POST with @oauth2", ["@oauth2"], "POST", "", "code=123&state={id}"),
             ("POST Apple name, nameKey error", ["@oauth2"], "POST", "", "code=123&state={id}&user=%7Binvalid"),
             ("POST Apple name", ["@oauth2"], "POST", "", "code=124&state={id}&" + apple_user),
             ("different IP", ["@oauth2"], "GET", "?code=123&state={id}", "127.0.0.2")]
    trusted = {"trustedProxy": {"headers": ["X-Test-Ip"], "useLeftmostIP": False}}
    try:
        for name, topics, method, query, form_or_address in cases:
            realtime = RawRealtimeClient(backend.url).connect()
            try:
                subscribed = realtime.subscribe(topics).status_code
                if name == "different IP":
                    assert httpx.patch(f"{backend.url}/api/settings", json=trusted, headers=superuser,
                                       timeout=30).status_code == 200
                form = form_or_address.format(id=realtime.client_id) if method == "POST" else ""
                address = form_or_address if method == "GET" else ""
                first = _landed(backend, method, query.format(id=realtime.client_id), form, address)
                again = _landed(backend, "GET", f"?code=1&state={realtime.client_id}")
                messages = [{k: "<state>" if v == realtime.client_id else v for k, v in e.data.items()}
                            for e in realtime.wait_events(1, timeout=0.5) if e.name == "@oauth2"]
                outcomes.append((name, subscribed, first, messages, again))
            finally:
                realtime.close()
    finally:
        put_back = {"trustedProxy": {"headers": [], "useLeftmostIP": False}}
        assert httpx.patch(f"{backend.url}/api/settings", json=put_back, headers=superuser, timeout=30).status_code == 200
    return outcomes

