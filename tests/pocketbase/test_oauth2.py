"""OAuth2 login against a real OIDC provider on loopback (``tests/oidc_provider.py``), the same flow on stock
PocketBase 0.40.6 and on a pbfast tenant, answers compared: login links from ``auth-methods`` followed
through the provider's consent, the code exchanged with its PKCE verifier, the user read from the user
info endpoint (``oidc``) or from the id_token (``oidc2``); sign-up with ``createData``, the ``_externalAuths``
link used again, linking by verified email and to the logged-in record, the guards for unverified
records, MFA, and the failures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import httpx
import pytest

from fixture_data import CLIENT1
from oidc_provider import AVATAR_PNG, OidcProvider, oidc_provider
from pbharness import Backend
from sseclient import RawRealtimeClient
from test_differential import fixture_ids
from test_email_flows import _link
from test_otp import Inbox, inbox  # noqa: F401 - the fixture, by name

CLIENTS, USERS = "/api/collections/clients", "/api/collections/users"
REDIRECT = "https://app.example.com/cb"
PROVIDER_USERS: dict[str, dict[str, Any]] = {
    "alice": {"sub": "alice-1", "email": "alice@example.com", "email_verified": True, "name": "Alice A",
              "preferred_username": "alice_a", "picture": "https://img.example.com/a.png", "locale": "en"},
    "known": {"sub": "known-1", "email": "test@example.com", "email_verified": True, "name": "Known"},
    "unverified": {"sub": "t2-1", "email": "test2@example.com", "email_verified": "true", "name": "T2"},
    "private": {"sub": "private-1", "email": "hidden@example.com", "email_verified": False, "name": "Private"},
    "linker": {"sub": "linker-1", "email": "linker@example.com", "email_verified": True},
    "broken": {"sub": "broken-1"},
    "numeric": {"sub": 12345, "email": "n@example.com", "email_verified": True},
    "newbie": {"sub": "newbie-1", "email": "newbie@example.com", "email_verified": True},
    "second": {"sub": "second-1", "email": "test2@example.com", "email_verified": True},
    "signed": {"sub": "signed-1", "email": "signed@example.com", "email_verified": True, "name": "Signed"},
    "forged": {"sub": "forged-1", "email": "forged@example.com", "email_verified": True},
    "noemail": {"sub": "noemail-1", "name": "No Email"},
    "pictured": {"sub": "pictured-1", "email": "pictured@example.com", "email_verified": True},  # picture: set below
    "metadata": {"sub": "metadata-1", "email": "metadata@example.com", "email_verified": True,
                 "picture": "http://169.254.169.254/latest/avatar.png"},
    "private-net": {"sub": "private-1", "email": "private-net@example.com", "email_verified": True,
                    "picture": "http://10.255.255.1/avatar.png"},
}
_GENERATED_USERNAME = re.compile(r"^users\d{5,6}$")  # the fixture's autogenerate pattern
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with oidc_provider(PROVIDER_USERS) as running:
        yield running


class Flow:
    def __init__(self, backend: Backend, provider: OidcProvider) -> None:
        self.backend, self.provider = backend, provider
        self.outcomes: list[tuple[str, int, Any]] = []
        self.known_ids = fixture_ids()
        self.new_ids: dict[str, str] = {}
        self.codes: list[str] = []

    def superuser(self, method: str, path: str, body: dict[str, Any]) -> None:
        response = httpx.request(method, self.backend.url + path, json=body, timeout=30,
                                 headers={"Authorization": self.backend.superuser_token})
        assert response.status_code == 200, response.text

    def code(self, collection: str, provider: str, user: str) -> tuple[str, str]:
        """A code for ``user`` from the login link ``auth-methods`` gives, and that link's PKCE verifier."""
        methods = httpx.get(f"{self.backend.url}{collection}/auth-methods", timeout=30).json()
        link = next(p for p in methods["oauth2"]["providers"] if p["name"] == provider)
        code = self.provider.consent(link["authURL"], user, REDIRECT)
        self.codes.append(code)
        return code, link["codeVerifier"]

    def login(self, name: str, collection: str, provider: str, user: str, *, verifier: str | None = None,
              create_data: Any = None, token: str = "", code: str = "") -> dict[str, Any]:
        fresh, link_verifier = self.code(collection, provider, user) if not code else (code, "")
        body: dict[str, Any] = {"provider": provider, "code": fresh, "redirectURL": REDIRECT,
                                "codeVerifier": link_verifier if verifier is None else verifier}
        if create_data is not None:
            body["createData"] = create_data
        return self.call(name, f"{collection}/auth-with-oauth2", body, token)

    def call(self, name: str, path: str, body: Any, token: str = "") -> dict[str, Any]:
        response = httpx.post(self.backend.url + path, json=body, timeout=60,
                              headers={"Authorization": token} if token else {})
        answer = response.json()
        self.outcomes.append((name, response.status_code, self._normalised(answer)))
        return answer  # type: ignore[no-any-return]

    def _normalised(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self._normalised(v, k) for k, v in value.items()
                    if k not in ("created", "updated", "iat", "exp")}
        if isinstance(value, list):
            return [self._normalised(v) for v in value]
        if key in ("token", "mfaId", "accessToken", "refreshToken") and isinstance(value, str):
            return "<random>" if value else ""
        if key == "expiry" and isinstance(value, str):
            return "<date>" if _DATE.match(value) else value
        if key in ("id", "recordRef") and isinstance(value, str) and value not in self.known_ids:
            return self.new_ids.setdefault(value, f"<new-{len(self.new_ids) + 1}>")
        if key == "username" and isinstance(value, str) and _GENERATED_USERNAME.match(value):
            return "<generated>"
        if key == "iss":
            return "<provider>"
        return value


def _flow(backend: Backend, provider: OidcProvider) -> list[tuple[str, int, Any]]:
    flow = Flow(backend, provider)
    flow.superuser("PATCH", CLIENTS, {"createRule": "", "oauth2": {
        "enabled": True, "mappedFields": {"name": "name", "username": "username"},
        "providers": [provider.provider_config("oidc"), provider.provider_config("oidc2", user_info=False),
                      provider.provider_config("oidc3", user_info=False, jwks=True)]}})
    flow.superuser("PATCH", USERS, {"oauth2": {"providers": [provider.provider_config("oidc")]}})

    alice = flow.login("sign-up", CLIENTS, "oidc", "alice", create_data={"emailVisibility": True})
    flow.login("linked again", CLIENTS, "oidc", "alice")
    flow.login("verified email links", CLIENTS, "oidc", "known")
    flow.login("unverified record", CLIENTS, "oidc", "unverified")
    flow.call("its old password", f"{CLIENTS}/auth-with-password",
              {"identity": "test2@example.com", "password": "1234567890"})
    flow.login("id_token, unverified email", CLIENTS, "oidc2", "private",
               create_data={"email": "typed@example.com", "password": "12345678", "passwordConfirm": "12345678"})
    flow.login("linked to the logged-in record", CLIENTS, "oidc2", "linker", token=CLIENT1["Authorization"])
    flow.login("that link logs in", CLIENTS, "oidc2", "linker")
    flow.login("another provider: a new record", CLIENTS, "oidc", "linker")
    flow.login("id_token signed with the published key", CLIENTS, "oidc3", "signed")
    flow.login("link by fallback user (user without email)", CLIENTS, "oidc3", "noemail", token=CLIENT1["Authorization"])
    flow.login("id_token with a bad signature", CLIENTS, "oidc3", "forged")
    flow.login("numeric sub", CLIENTS, "oidc", "numeric")
    flow.login("invalid createData", CLIENTS, "oidc", "newbie", create_data={"email": "bad", "name": 5})
    flow.login("user info refused", CLIENTS, "oidc", "broken")
    flow.login("wrong verifier", CLIENTS, "oidc", "alice", verifier="x" * 43)
    flow.login("used code", CLIENTS, "oidc", "alice", code=flow.codes[0])
    flow.login("mfa first factor", USERS, "oidc", "alice")
    first = flow.call("mfa: password first", f"{USERS}/auth-with-password",
                      {"identity": "test2@example.com", "password": "1234567890"})
    code, verifier = flow.code(USERS, "oidc", "second")
    flow.call("mfa: oauth2 completes it", f"{USERS}/auth-with-oauth2?mfaId={first.get('mfaId')}",
              {"provider": "oidc", "code": code, "codeVerifier": verifier, "redirectURL": REDIRECT})
    for name, path, body in (
            ("blank", f"{CLIENTS}/auth-with-oauth2", {}),
            ("unknown provider", f"{CLIENTS}/auth-with-oauth2", {"provider": "github", "code": "x"}),
            ("long provider", f"{CLIENTS}/auth-with-oauth2", {"provider": "x" * 101, "code": "x"}),
            ("createData not an object", f"{CLIENTS}/auth-with-oauth2",
             {"provider": "oidc", "code": "x", "createData": [1]}),
            ("code not a string", f"{CLIENTS}/auth-with-oauth2", {"provider": "oidc", "code": 1}),
            ("oauth2 off", "/api/collections/nologin/auth-with-oauth2", {"provider": "gitlab", "code": "x"}),
            ("not an auth collection", "/api/collections/demo1/auth-with-oauth2", {"provider": "oidc", "code": "x"}),
            ("missing collection", "/api/collections/missing/auth-with-oauth2", {"provider": "oidc", "code": "x"})):
        flow.call(name, path, body)
    assert alice.get("record", {}).get("email") == "alice@example.com", alice
    _redirect_flow(flow)
    return flow.outcomes


def _redirect_flow(flow: Flow) -> None:
    """The SDKs' all-in-one login: a realtime client subscribed to ``@oauth2`` whose id is the OAuth2 state;
    the provider sends the browser to ``/api/oauth2-redirect``, which hands the code to that client."""
    backend = flow.backend
    realtime = RawRealtimeClient(backend.url).connect()
    try:
        flow.outcomes.append(("subscribe", realtime.subscribe(["@oauth2"]).status_code, None))
        methods = httpx.get(f"{backend.url}{CLIENTS}/auth-methods", timeout=30).json()
        link = next(p for p in methods["oauth2"]["providers"] if p["name"] == "oidc")
        redirect = f"{backend.url}/api/oauth2-redirect"
        url = urlsplit(link["authURL"] + redirect)
        query = dict(parse_qsl(url.query)) | {"state": realtime.client_id, "login_hint": "alice"}
        consent = httpx.get(url._replace(query=urlencode(query)).geturl(), timeout=10)
        assert consent.status_code == 302, consent.text
        landed = httpx.get(consent.headers["location"], timeout=30)  # the browser, back at the server
        # both redirect to the dashboard's page (a tenant's /_/ serves the pages its users land on)
        location = landed.headers.get("location", "")
        page = httpx.get(urljoin(str(landed.url), location), timeout=30)
        flow.outcomes.append(("redirect", landed.status_code, location))
        flow.outcomes.append(("its page", page.status_code, page.headers.get("content-type")))
        events = realtime.wait_events(1)
        assert events and events[0].name == "@oauth2", events
        message = events[0].data
        flow.outcomes.append(("@oauth2", 0, sorted(message) + [message["state"] == realtime.client_id]))
        flow.call("login with the redirected code", f"{CLIENTS}/auth-with-oauth2",
                  {"provider": "oidc", "code": message["code"], "codeVerifier": link["codeVerifier"],
                   "redirectURL": redirect})
        again = httpx.get(f"{redirect}?state={realtime.client_id}&code=x", timeout=30, follow_redirects=False)
        flow.outcomes.append(("redirect again: unsubscribed", again.status_code, again.headers.get("location")))
    finally:
        realtime.close()


def test_oauth2_login_as_pocketbase(stock_pocketbase: Backend, egress_tenant: Backend, provider: OidcProvider,
                                    inbox: tuple[Inbox, int]) -> None:  # noqa: F811 - the fixture
    expected = _flow(stock_pocketbase, provider)
    requests_of_stock = len(provider.requests)
    got = _flow(egress_tenant, provider)
    for a, b in zip(got, expected, strict=True):
        assert a == b, f"\npbfast: {a}\nstock:  {b}"
    outcome = {name: (status, body) for name, status, body in got}
    meta = outcome["sign-up"][1]["meta"]
    assert meta["isNew"] is True and meta["rawUser"]["locale"] == "en" and meta["expiry"] == "<date>"
    assert outcome["sign-up"][1]["record"]["verified"] is True
    assert outcome["linked again"][1]["meta"]["isNew"] is False
    assert outcome["its old password"][0] == 400
    assert outcome["mfa first factor"][0] == 401 and outcome["mfa: oauth2 completes it"][0] == 200
    assert outcome["invalid createData"][1]["message"] == "Failed to create record."
    assert outcome["id_token signed with the published key"][0] == 200
    fallback = outcome["link by fallback user (user without email)"]
    assert fallback[0] == 200 and fallback[1]["record"]["id"] == "gk390qegs4y47wn", fallback
    assert outcome["id_token with a bad signature"][1]["message"] == "Failed to fetch OAuth2 user."
    assert outcome["redirect"] == (307, "../_/#/auth/oauth2-redirect-success")
    assert outcome["its page"] == (200, "text/html; charset=utf-8")
    assert outcome["login with the redirected code"][0] == 200
    assert outcome["redirect again: unsubscribed"] == (307, "../_/#/auth/oauth2-redirect-failure")
    # pbfast sent the provider what stock PocketBase sent (the same token requests, PKCE verifiers included)
    sent = [(m, p, sorted(f)) for m, p, f in provider.requests[requests_of_stock:] if p == "/token"]
    assert sent == [(m, p, sorted(f)) for m, p, f in provider.requests[:requests_of_stock] if p == "/token"]
    _python_sdk_flow(egress_tenant, provider, inbox)


def _python_sdk_flow(egress_tenant: Backend, provider: OidcProvider, smtp: tuple[Inbox, int]) -> None:
    """The Python ``pocketbase`` SDK through the gateway: an OAuth2 code login (the SDK sends the legacy
    ``redirectUrl``), then a password reset followed from the mail to a login with the new password."""
    from pocketbase import PocketBase  # the SDK under test

    mails, port = smtp
    flow = Flow(egress_tenant, provider)
    flow.superuser("PATCH", CLIENTS, {"createRule": "", "oauth2": {"enabled": True,
                                                                   "providers": [provider.provider_config("oidc")]}})
    flow.superuser("PATCH", "/api/settings", {"smtp": {"enabled": True, "host": "127.0.0.1", "port": port}})
    sdk = PocketBase(egress_tenant.url)
    code, verifier = flow.code(CLIENTS, "oidc", "newbie")
    login = sdk.collection("clients").auth_with_oauth2("oidc", code, verifier, REDIRECT, {"name": "via sdk"})
    assert login.record.email == "newbie@example.com" and login.meta["isNew"] is True  # type: ignore[attr-defined]
    assert sdk.auth_store.token == login.token

    assert sdk.collection("clients").request_password_reset("newbie@example.com") is True
    token = _link(mails.wait(1))[1]
    assert sdk.collection("clients").confirm_password_reset(token, "sdk-password-1", "sdk-password-1") is True
    again = sdk.collection("clients").auth_with_password("newbie@example.com", "sdk-password-1")
    assert again.record.id == login.record.id


def test_provider_on_loopback_refused_without_the_egress_permission(pbfast_fixture_tenant: Backend,
                                                                     provider: OidcProvider) -> None:
    """A tenant's provider URLs may not point at the node itself: nothing is sent, the login fails as an
    unreachable provider does."""
    flow = Flow(pbfast_fixture_tenant, provider)
    flow.superuser("PATCH", CLIENTS, {"oauth2": {"enabled": True, "providers": [provider.provider_config()]}})
    answer = flow.login("refused", CLIENTS, "oidc", "alice")
    assert answer == {"data": {}, "message": "Failed to fetch OAuth2 token.", "status": 400}
    assert [r for r in provider.requests if r[1] == "/token"] == []



def test_an_avatar_mapped_to_a_file_field_is_stored_from_public_addresses_only(egress_tenant: Backend,
                                                                               provider: OidcProvider) -> None:
    """record_auth_with_oauth2_test.go's "creating user (with mapped OAuth2 fields and avatarURL->file field)" and
    its safeHTTPClient case. Not differential: stock PocketBase refuses the provider's loopback address for the
    picture as it refuses every private one (the tenant here may reach loopback, as an operator's relay)."""
    provider.users["pictured"]["picture"] = f"{provider.url}/avatar.png"
    flow = Flow(egress_tenant, provider)
    made = httpx.post(f"{egress_tenant.url}/api/collections", timeout=30,
                      headers={"Authorization": egress_tenant.superuser_token}, json={
        "name": "pictured", "type": "auth", "createRule": "", "viewRule": "",
        "oauth2": {"enabled": True, "providers": [provider.provider_config("oidc")],
                   "mappedFields": {"avatarURL": "avatar"}},
        "fields": [{"name": "avatar", "type": "file", "maxSelect": 1, "maxSize": 1000}]})
    assert made.status_code == 200, made.text

    def fetches() -> int:
        return sum(1 for request in provider.requests if request[1] == "/avatar.png")

    signed_up = flow.login("sign-up", "/api/collections/pictured", "oidc", "pictured")
    avatar = signed_up["record"]["avatar"]
    assert re.fullmatch(r"avatar_[a-z0-9]{10}\.png", avatar), signed_up
    record_id = signed_up["record"]["id"]
    stored = httpx.get(f"{egress_tenant.url}/api/files/pictured/{record_id}/{avatar}", timeout=30)
    assert stored.status_code == 200 and stored.content == AVATAR_PNG
    assert fetches() == 1
    # PocketBase downloads the picture on sign-up only: a login through the link fetches nothing...
    again = flow.login("again", "/api/collections/pictured", "oidc", "pictured")
    assert again["record"]["id"] == record_id and again["meta"]["isNew"] is False, again
    assert again["record"]["avatar"] == avatar and fetches() == 1
    # ...nor does linking an existing record (found by the provider's verified email; its avatar stays empty)
    existing = httpx.post(f"{egress_tenant.url}/api/collections/pictured/records", timeout=30,
                          headers={"Authorization": egress_tenant.superuser_token},
                          json={"email": "existing@example.com", "password": "existing-pass-1",
                                "passwordConfirm": "existing-pass-1", "verified": True})
    assert existing.status_code == 200, existing.text
    provider.users["existing"] = {"sub": "existing-1", "email": "existing@example.com", "email_verified": True,
                                  "picture": f"{provider.url}/avatar.png"}
    linked = flow.login("link", "/api/collections/pictured", "oidc", "existing")
    assert linked["record"]["id"] == existing.json()["id"] and linked["meta"]["isNew"] is False, linked
    assert linked["record"]["avatar"] == "" and fetches() == 1
    # a picture on a link-local (cloud metadata) or private address is not fetched: the sign-up goes on without it
    for user in ("metadata", "private-net"):
        answer = flow.login(user, "/api/collections/pictured", "oidc", user)
        assert answer["record"]["avatar"] == "" and answer["meta"]["avatarURL"].endswith("/avatar.png"), answer
