"""Every OAuth2 provider of PocketBase 0.40 logs in on a tenant as on stock PocketBase 0.40.6: each provider's
config points at a fake provider on loopback (``tests/fake_oauth2_provider.py``) through its
``authURL``/``tokenURL``/``userInfoURL`` overrides, which answers in that provider's JSON shape; the same
login runs against both servers and the answers are compared (status, message, ``meta``: id, name, username,
avatar, the trusted email, ``rawUser``). Cases cover each provider's special logic (GitHub's and Gitea's
``/emails``, Discord's avatar URL, Twitch's and Notion's headers, account-status refusals, Microsoft's
``idTokenEmailClaim``, numeric ids, Go's strict JSON) and one login per simple provider. Apple is checked on
pbfast only (stock PocketBase always fetches Apple's real key set): signature, issuer and expiry of the
id_token, and the name Apple posts once to the redirect URL. The login links of ``auth-methods`` (display
names, scopes, default URLs, PKCE) are compared for every provider with its defaults.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from fake_oauth2_provider import CLIENT_ID, REDIRECT, FakeProvider, FakeUser, fake_provider, signed_id_token
from helpers import PbfastProcess
from pbharness import Backend, copy_fixture, create_tenant, start_all_in_one, stock_pocketbase_server
from sseclient import RawRealtimeClient

APPLE_ISSUER = "https://appleid.apple.com"
_EMAILS = [{"email": "other@example.com", "verified": True, "primary": False},
           {"email": "octo@example.com", "verified": True, "primary": True}]


def _id_token(*, forged: bool = False, **claims: Any) -> str:
    now = int(time.time())
    return signed_id_token({"aud": CLIENT_ID, "iat": now, "exp": now + 600, **claims}, forged=forged)


@dataclass(frozen=True)
class Case:
    label: str
    provider: str
    user: FakeUser
    collection: str = "logins"  # "logins_ms": Microsoft with idTokenEmailClaim "any_verified"


CASES: list[Case] = [
    # GitHub: the email from /emails (primary and verified), numeric id
    Case("github-private-email", "github", FakeUser(
        {"id": 1001, "login": "octo", "name": "Octo Cat", "avatar_url": "https://img.example.com/o.png",
         "email": None}, _EMAILS)),
    Case("github-unverified-primary", "github", FakeUser(
        {"id": 1002, "login": "octo2"}, [{"email": "octo2@example.com", "verified": False, "primary": True}])),
    Case("github-emails-forbidden", "github", FakeUser({"id": 1003, "login": "octo3"}, {"message": "no"}, 403)),
    Case("github-emails-unreadable", "github", FakeUser({"id": 1004, "login": "octo4"}, {"emails": []})),
    Case("github-id-as-text", "github", FakeUser({"id": "1005", "login": "octo5"}, [])),
    Case("github-duplicate-names", "github", FakeUser(b'{"id": 1006, "login": "a", "login": "b"}', [])),
    Case("github-names-case-sensitive", "github", FakeUser({"ID": 1007, "Login": "octo7"}, _EMAILS)),
    # x/oauth2 refreshes a token that expires within 10 s before each request (none without a refresh token)
    Case("github-token-refreshed", "github", FakeUser({"id": 1008, "login": "octo8"}, _EMAILS,
                                                      token_extra={"expires_in": 5})),
    Case("github-token-expiring", "github", FakeUser({"id": 1009, "login": "octo9"}, _EMAILS,
                                                     token_extra={"expires_in": 5, "refresh_token": ""})),
    Case("github-profile-refused", "github", FakeUser({"message": "Bad credentials"}, profile_status=401)),
    # Gitea: /emails too, and inactive accounts refused
    Case("gitea", "gitea", FakeUser({"id": 7, "login": "tea", "full_name": "Tea Pot", "avatar_url": "a",
                                     "active": True}, _EMAILS)),
    Case("gitea-inactive", "gitea", FakeUser({"id": 8, "login": "tea8", "active": False}, _EMAILS)),
    # Gitee: the profile's email when it is one, else gitee.com's emails (unreachable here: both fail)
    Case("gitee", "gitee", FakeUser({"id": 9, "login": "gt", "name": "Gi Tee", "email": "gitee@example.com"})),
    Case("gitee-no-email", "gitee", FakeUser({"id": 10, "login": "gt10", "email": "not an email"})),
    # Bitbucket: /emails as {"values": [...]}, inactive refused, a failing /emails is no email
    Case("bitbucket", "bitbucket", FakeUser(
        {"uuid": "{b-1}", "username": "bb", "display_name": "Bit Bucket", "account_status": "active",
         "links": {"avatar": {"href": "https://img.example.com/bb.png"}}},
        {"values": [{"email": "bb-old@example.com", "is_primary": False, "is_confirmed": True},
                    {"email": "bb@example.com", "is_primary": True, "is_confirmed": True}]})),
    Case("bitbucket-inactive", "bitbucket", FakeUser({"uuid": "{b-2}", "account_status": "closed"}, {"values": []})),
    Case("bitbucket-emails-failing", "bitbucket", FakeUser({"uuid": "{b-3}", "account_status": "active"},
                                                           {"error": "x"}, 500)),
    # Discord: the CDN avatar, the name from global_name or username#discriminator, verified email only
    Case("discord", "discord", FakeUser({"id": "80351110224678912", "username": "nelly", "global_name": None,
                                         "discriminator": "1337", "avatar": "8342729096ea3675442027381ff50dfe",
                                         "email": "nelly@example.com", "verified": True})),
    Case("discord-unverified", "discord", FakeUser({"id": "2", "username": "dd", "global_name": "Dee",
                                                    "discriminator": "0", "email": "dd@example.com",
                                                    "verified": False})),
    # Twitch (Client-Id header, the first of "data"), Notion (its version header), Trakt (its API headers)
    Case("twitch", "twitch", FakeUser({"data": [{"id": "141981764", "login": "twitchdev",
                                                 "display_name": "TwitchDev", "email": "tw@example.com",
                                                 "profile_image_url": "https://img.example.com/t.png"}]})),
    Case("twitch-no-user", "twitch", FakeUser({"data": []})),
    Case("notion", "notion", FakeUser({"object": "user", "id": "bot-1", "type": "bot", "bot": {
        "owner": {"type": "user", "user": {"id": "n-1", "name": "No Tion", "avatar_url": "https://img.example.com/n",
                                           "person": {"email": "notion@example.com"}}},
        "workspace_name": "WS"}})),
    Case("trakt", "trakt", FakeUser({"user": {"username": "tk", "name": "Trak T", "ids": {"slug": "tk", "uuid": "u-1"},
                                              "images": {"avatar": {"full": "https://img.example.com/tk"}}}})),
    # GraphQL providers (POST) and their account flags
    Case("linear", "linear", FakeUser({"data": {"viewer": {"id": "l-1", "displayName": "lin", "name": "Lin Ear",
                                                           "email": "linear@example.com", "avatarUrl": "a",
                                                           "active": True}}})),
    Case("linear-inactive", "linear", FakeUser({"data": {"viewer": {"id": "l-2", "active": False}}})),
    Case("monday", "monday", FakeUser({"data": {"me": {"id": "m-1", "enabled": True, "name": "Mon Day",
                                                       "email": "monday@example.com", "is_verified": True,
                                                       "photo_small": "p"}}})),
    Case("monday-disabled", "monday", FakeUser({"data": {"me": {"id": "m-2", "enabled": False}}})),
    Case("box", "box", FakeUser({"id": "box-1", "name": "Bo X", "login": "box@example.com", "avatar_url": "a",
                                 "status": "active"})),
    Case("box-inactive", "box", FakeUser({"id": "box-2", "login": "box2@example.com", "status": "inactive"})),
    Case("mailcow", "mailcow", FakeUser({"id": "mc-1", "username": "cow@mail.example.com", "email": "cow@example.com",
                                         "full_name": "Mail Cow", "active": 1})),
    Case("mailcow-inactive", "mailcow", FakeUser({"id": "mc-2", "username": "cow2", "active": 0})),
    # Microsoft: Graph's "mail", or with idTokenEmailClaim a claim of the token answer's id_token
    Case("microsoft", "microsoft", FakeUser({"id": "ms-1", "displayName": "Micro Soft", "mail": "ms@example.com"})),
    Case("microsoft-id-token-email", "microsoft", FakeUser(
        {"id": "ms-2", "displayName": "MS Two", "mail": "graph@example.com"},
        token_extra={"id_token": _id_token(sub="ms-2", email="edov@example.com", xms_edov=True)}), "logins_ms"),
    Case("microsoft-id-token-unverified", "microsoft", FakeUser(
        {"id": "ms-3", "mail": "graph3@example.com"},
        token_extra={"id_token": _id_token(sub="ms-3", email="ms3@example.com", xms_edov=False)}), "logins_ms"),
    # one login each for the providers that map field by field
    Case("google", "google", FakeUser({"sub": "g-1", "name": "Goo Gle", "picture": "p", "email": "google@example.com",
                                       "email_verified": True})),
    Case("gitlab", "gitlab", FakeUser({"id": 42, "name": "Git Lab", "username": "gl", "avatar_url": "a",
                                       "email": "gitlab@example.com", "confirmed_at": "2024-01-02T03:04:05.123Z"})),
    Case("gitlab-time-with-space", "gitlab", FakeUser({"id": 43, "email": "gl43@example.com",
                                                       "confirmed_at": "2024-01-02 03:04:05Z"})),
    Case("gitlab-zero-time", "gitlab", FakeUser({"id": 44, "email": "gl44@example.com",
                                                 "confirmed_at": "0001-01-01T00:00:00Z"})),
    Case("gitlab-lowercase-time", "gitlab", FakeUser({"id": 45, "email": "gl45@example.com",
                                                      "confirmed_at": "2024-01-02t03:04:05+02:00"})),
    Case("google-verified-as-text", "google", FakeUser({"sub": "g-2", "email": "g2@example.com",
                                                        "email_verified": "true"})),
    Case("vk-no-entry", "vk", FakeUser({"response": []})),
    Case("facebook", "facebook", FakeUser({"id": "fb-1", "name": "Face Book", "email": "fb@example.com",
                                           "picture": {"data": {"url": "https://img.example.com/fb"}}})),
    Case("twitter", "twitter", FakeUser({"data": {"id": "x-1", "name": "Ex", "username": "xx",
                                                  "confirmed_email": "x@example.com", "profile_image_url": "p"}})),
    Case("spotify", "spotify", FakeUser({"id": "sp-1", "display_name": "Spot", "email": "sp@example.com",
                                         "images": [{"url": "https://img.example.com/s1"}, {"url": "s2"}]})),
    Case("kakao", "kakao", FakeUser({"id": 123456789, "properties": {"nickname": "kk", "profile_image": "p"},
                                     "kakao_account": {"email": "kakao@example.com", "is_email_verified": True,
                                                       "is_email_valid": True}})),
    Case("lark", "lark", FakeUser({"code": 0, "data": {"union_id": "on_1", "name": "Lark", "avatar_url": "a",
                                                       "email": "lark@example.com"}})),
    Case("livechat", "livechat", FakeUser({"account_id": "lc-1", "name": "Live Chat", "email": "lc@example.com",
                                           "email_verified": True, "avatar_url": "a"})),
    Case("patreon", "patreon", FakeUser({"data": {"id": "pa-1", "attributes": {
        "email": "patreon@example.com", "full_name": "Pat Reon", "vanity": "pat", "image_url": "i",
        "is_email_verified": True}}})),
    Case("planningcenter", "planningcenter", FakeUser({"data": {"id": "pc-1", "attributes": {
        "status": "active", "name": "Plan", "avatar": "a"}}})),
    Case("planningcenter-go-spelling", "planningcenter", FakeUser({"data": {"id": "pc-2", "Attributes": {
        "status": "active", "name": "Plan Two", "avatar": "a"}}})),
    Case("strava", "strava", FakeUser({"id": 1234567890987654321, "firstname": "Stra", "lastname": "Va",
                                       "username": "strava", "profile": "p"})),
    Case("vk", "vk", FakeUser({"response": [{"id": 210700286, "first_name": "Lin", "last_name": "Dan ",
                                             "screen_name": "lindan", "photo_max": "p"}]},
                              token_extra={"email": "vk@example.com"})),
    Case("wakatime", "wakatime", FakeUser({"data": {"id": "w-1", "display_name": "Waka", "username": "wk",
                                                    "email": "waka@example.com", "photo": "p", "photo_public": False,
                                                    "is_email_confirmed": True}})),
    Case("yandex", "yandex", FakeUser({"id": "y-1", "real_name": "Yan Dex", "login": "yd",
                                       "default_email": "yandex@example.com", "is_avatar_empty": False,
                                       "default_avatar_id": "131652443"})),
    Case("instagram", "instagram2", FakeUser({"id": "ig-1", "user_id": "ig-user-1", "username": "insta",
                                              "name": "Insta Gram", "profile_picture_url": "p"},
                                             token_extra={"permissions": ["instagram_business_basic"]})),
]
REFUSED = {"github-token-expiring", "github-emails-unreadable", "github-id-as-text", "github-duplicate-names", "github-profile-refused",
           "gitea-inactive", "gitee-no-email", "bitbucket-inactive", "twitch-no-user", "linear-inactive",
           "monday-disabled", "box-inactive", "mailcow-inactive", "google-verified-as-text", "vk-no-entry",
           "planningcenter"}  # sic: 0.40 reads Planning Center's "Attributes" (capital A)
_PROVIDERS = sorted({case.provider for case in CASES if case.collection == "logins"})
DEEP_USER = FakeUser(b'{"id": 1, "login": "deep", "x": ' + b"[" * 300 + b"]" * 300 + b"}", [])
APPLE_USERS: dict[str, FakeUser] = {
    "apple": FakeUser({}, token_extra={"id_token": _id_token(sub="apple-1", iss=APPLE_ISSUER, email="ap@example.com",
                                                             email_verified="true")}),
    "apple-forged": FakeUser({}, token_extra={"id_token": _id_token(sub="apple-2", iss=APPLE_ISSUER, forged=True)}),
    "apple-other-issuer": FakeUser({}, token_extra={"id_token": _id_token(sub="apple-3", iss="https://evil.example")}),
    "apple-no-expiry": FakeUser({}, token_extra={"id_token": signed_id_token(
        {"aud": CLIENT_ID, "iss": APPLE_ISSUER, "sub": "apple-4", "iat": int(time.time())})}),
}


def _collection(name: str, providers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "type": "auth", "createRule": "", "oauth2": {
        "enabled": True, "providers": providers,
        "mappedFields": {"name": "name", "username": "username", "avatarURL": "avatar"}},
        "fields": [{"name": "password", "type": "password", "cost": 4, "min": 8, "hidden": True, "system": True},
                   {"name": "name", "type": "text"}, {"name": "username", "type": "text"},
                   {"name": "avatar", "type": "text", "max": 2000}]}


def _set_up(backend: Backend, provider: FakeProvider) -> None:
    collections = [
        _collection("logins", [provider.config(name) for name in _PROVIDERS]),
        _collection("logins_ms", [provider.config("microsoft", idTokenEmailClaim="any_verified")]),
        _collection("logins_apple", [provider.config("apple", jwksURL=f"{provider.url}/jwks")]),
        # every provider with its defaults, for auth-methods
        _collection("defaults", [{"name": name, "clientId": "cid", "clientSecret": "secret"}
                                 for name in (*_PROVIDERS, "apple", "oidc", "oidc2", "oidc3")]),
        _collection("defaults_ms", [{"name": "microsoft", "clientId": "cid", "clientSecret": "secret",
                                     "extra": {"idTokenEmailClaim": "email"}}])]
    for body in collections:
        response = httpx.post(f"{backend.url}/api/collections", json=body, timeout=30,
                              headers={"Authorization": backend.superuser_token})
        assert response.status_code == 200, response.text
    for collection in _OWNERS:  # the records the logins link to (no new record and its bcrypt hash each)
        for index in range(_OWNERS[collection]):
            owner = {"email": f"owner{index}@example.com", "password": "owner-password", "verified": True}
            response = httpx.post(f"{backend.url}/api/collections/{collection}/records", timeout=30,
                                  headers={"Authorization": backend.superuser_token},
                                  json=owner | {"passwordConfirm": owner["password"]})
            assert response.status_code == 200, response.text
            response = httpx.post(f"{backend.url}/api/collections/{collection}/impersonate/{response.json()['id']}",
                                  timeout=30, headers={"Authorization": backend.superuser_token}, json={})
            assert response.status_code == 200, response.text
            _OWNER_TOKENS[(backend.url, collection, index)] = response.json()["token"]


# A record has one link per provider: the n-th user of a provider links to the n-th owner.
_OWNER_OF: dict[str, int] = {}
for _case in CASES:
    _OWNER_OF[_case.label] = sum(1 for c in CASES[:CASES.index(_case)]
                                 if (c.provider, c.collection) == (_case.provider, _case.collection))
_OWNER_OF["deep"] = 1 + max(_OWNER_OF.values())
_OWNERS = {"logins": 1 + _OWNER_OF["deep"],
           "logins_ms": 1 + max(n for label, n in _OWNER_OF.items() if label.startswith("microsoft-id-token"))}
_OWNER_TOKENS: dict[tuple[str, str, int], str] = {}
_LINKS: dict[tuple[str, str, str], dict[str, Any]] = {}


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with fake_provider({case.label: case.user for case in CASES} | APPLE_USERS | {"deep": DEEP_USER}) as running:
        yield running


@pytest.fixture(scope="module")
def backends(provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Backend, Backend]]:
    """Stock PocketBase and a pbfast tenant (on a node that may reach loopback), both set up alike."""
    root = tmp_path_factory.mktemp("oauth2-providers")
    processes: list[PbfastProcess] = []

    def start(args: list[str]) -> PbfastProcess:
        process = PbfastProcess(args, root / f"pbfast-{len(processes)}.log", {"PBFAST_ALLOW_LOOPBACK_EGRESS": "1"})
        processes.append(process.start())
        return process

    with stock_pocketbase_server(copy_fixture(root / "stock"), root / "pocketbase.log") as url:
        try:
            copy_fixture(root / "pbfast" / "tenants" / "fixture")
            _, cp, gw = start_all_in_one(start, root / "pbfast")
            create_tenant(cp, gw, "fixture")
            stock, fast = Backend("pocketbase", url), Backend("pbfast", f"{gw}/t/fixture")
            for backend in (stock, fast):
                backend.login()
                _set_up(backend, provider)
            yield stock, fast
        finally:
            for process in processes:
                process.stop()


def _normalised(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _normalised(v, k) for k, v in value.items()
                if k not in ("created", "updated", "id" if key == "record" else "", "collectionId", "token")}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    if key in ("accessToken", "refreshToken", "expiry") and isinstance(value, str):
        return "<set>" if value else ""
    return value


def _login(backend: Backend, provider: FakeProvider, collection: str, name: str, user: str) -> tuple[int, Any]:
    """The login of ``user`` with provider ``name`` from the link ``auth-methods`` gives, by the owner of one
    of the collection's records (so that the provider's user is linked to it; a new record would cost a
    bcrypt hash on both servers for every case)."""
    key = (backend.url, collection, name)
    if key not in _LINKS:  # one link per provider: its PKCE pair serves every consent
        methods = httpx.get(f"{backend.url}/api/collections/{collection}/auth-methods", timeout=30).json()
        _LINKS[key] = next(p for p in methods["oauth2"]["providers"] if p["name"] == name)
    link = _LINKS[key]
    code = provider.consent(link["authURL"], user)
    body = {"provider": name, "code": code, "codeVerifier": link["codeVerifier"], "redirectURL": REDIRECT}
    token = _OWNER_TOKENS.get((backend.url, collection, _OWNER_OF.get(user, 0)))
    response = httpx.post(f"{backend.url}/api/collections/{collection}/auth-with-oauth2", json=body, timeout=60,
                          headers={"Authorization": token} if token else {})
    answer = response.json()
    return response.status_code, _normalised(answer)


@pytest.mark.parametrize("case", CASES, ids=[case.label for case in CASES])
def test_provider_login_as_pocketbase(case: Case, backends: tuple[Backend, Backend], provider: FakeProvider) -> None:
    stock, fast = backends
    expected = _login(stock, provider, case.collection, case.provider, case.label)
    got = _login(fast, provider, case.collection, case.provider, case.label)
    assert got == expected, f"\npbfast: {got}\nstock:  {expected}"
    if case.label in REFUSED:
        assert got == (400, {"data": {}, "message": "Failed to fetch OAuth2 user.", "status": 400})
    else:
        assert got[0] == 200 and got[1]["meta"]["isNew"] is False, got


def _meta(backends: tuple[Backend, Backend], provider: FakeProvider, label: str) -> dict[str, Any]:
    """The pbfast login's meta (the comparison with stock is the parametrised test's)."""
    case = next(c for c in CASES if c.label == label)
    status, answer = _login(backends[1], provider, case.collection, case.provider, f"{label}")
    assert status == 200, answer
    return answer["meta"]  # type: ignore[no-any-return]


def test_special_providers_read_what_pocketbase_reads(backends: tuple[Backend, Backend],
                                                      provider: FakeProvider) -> None:
    """What the comparison proves, spelled out for the providers with special logic (on pbfast; the same
    logins again, which are linked by now)."""
    github = _meta(backends, provider, "github-private-email")
    assert (github["id"], github["username"], github["email"]) == ("1001", "octo", "octo@example.com")
    assert [r.path for r in provider.requests[-2:]] == ["/user", "/user/emails"]
    _meta(backends, provider, "github-token-refreshed")
    assert [(r.path, b"refresh_token" in r.body) for r in provider.requests[-4:]] == \
        [("/token", True), ("/user", False), ("/token", True), ("/user/emails", False)]
    discord = _meta(backends, provider, "discord")
    assert discord["avatarURL"] == \
        "https://cdn.discordapp.com/avatars/80351110224678912/8342729096ea3675442027381ff50dfe.png"
    assert (discord["name"], discord["email"]) == ("nelly#1337", "nelly@example.com")
    _meta(backends, provider, "twitch")
    assert provider.requests[-1].headers["client-id"] == CLIENT_ID
    _meta(backends, provider, "notion")
    assert provider.requests[-1].headers["notion-version"] == "2022-06-28"
    _meta(backends, provider, "linear")
    assert provider.requests[-1].method == "POST" and b"viewer" in provider.requests[-1].body
    edov = _meta(backends, provider, "microsoft-id-token-email")
    assert edov["email"] == "edov@example.com"  # not Graph's "mail"
    assert _meta(backends, provider, "vk")["email"] == "vk@example.com"  # from the token answer
    assert _meta(backends, provider, "strava")["id"] == "1234567890987654321"
    refused = (400, {"data": {}, "message": "Failed to fetch OAuth2 user.", "status": 400})
    for backend in backends:
        assert _login(backend, provider, "logins", "bitbucket", "bitbucket-inactive") == refused
    # difference: an answer nested deeper than any provider's is refused (stock PocketBase takes 10000 levels),
    # never a server error
    assert _login(backends[1], provider, "logins", "github", "deep") == refused


def _links(backend: Backend, collection: str) -> dict[str, dict[str, Any]]:
    """``auth-methods``' providers with the random parts (state, PKCE pair) and logos left out."""
    methods = httpx.get(f"{backend.url}/api/collections/{collection}/auth-methods", timeout=30).json()
    links = {}
    for entry in methods["oauth2"]["providers"]:
        url = urlsplit(entry["authURL"])
        query = [(k, "<random>" if k in ("state", "code_challenge") else v)
                 for k, v in parse_qsl(url.query, keep_blank_values=True)]
        links[entry["name"]] = {"displayName": entry["displayName"], "base": url._replace(query="").geturl(),
                                "query": query, "pkce": entry["codeChallengeMethod"]}
    return links


def test_provider_defaults_as_pocketbase(backends: tuple[Backend, Backend]) -> None:
    stock, fast = backends
    for collection in ("defaults", "defaults_ms"):
        assert _links(fast, collection) == _links(stock, collection)
    assert ("scope", "User.Read openid") in _links(fast, "defaults_ms")["microsoft"]["query"]


def test_apple_id_token(backends: tuple[Backend, Backend], provider: FakeProvider) -> None:
    """Apple's user is its id_token, signed with the key set (``jwksURL`` here), issued by Apple for this
    client and not expired; the name Apple posts once to the redirect URL is the user's name."""
    fast = backends[1]
    failed = (400, {"data": {}, "message": "Failed to fetch OAuth2 user.", "status": 400})
    for user in ("apple-forged", "apple-other-issuer", "apple-no-expiry"):
        assert _login(fast, provider, "logins_apple", "apple", user) == failed, user
    realtime = RawRealtimeClient(fast.url).connect()
    try:
        assert realtime.subscribe(["@oauth2"]).status_code == 204
        methods = httpx.get(f"{fast.url}/api/collections/logins_apple/auth-methods", timeout=30).json()
        link = methods["oauth2"]["providers"][0]
        assert ("response_mode", "form_post") in parse_qsl(urlsplit(link["authURL"]).query)
        code = provider.consent(link["authURL"], "apple")
        posted = httpx.post(f"{fast.url}/api/oauth2-redirect", timeout=30, data={
            "state": realtime.client_id, "code": code,
            "user": '{"name": {"firstName": "Ann", "lastName": "Apple"}, "email": "ap@example.com"}'})
        assert posted.status_code == 303 and posted.headers["location"].endswith("success"), posted.text
        assert realtime.wait_events(1)[0].data["code"] == code
    finally:
        realtime.close()
    response = httpx.post(f"{fast.url}/api/collections/logins_apple/auth-with-oauth2", timeout=60, json={
        "provider": "apple", "code": code, "codeVerifier": link["codeVerifier"], "redirectURL": REDIRECT})
    assert response.status_code == 200, response.text
    login = response.json()
    assert (login["meta"]["id"], login["meta"]["name"], login["meta"]["email"]) == \
        ("apple-1", "Ann Apple", "ap@example.com")
    assert login["record"]["email"] == "ap@example.com" and login["record"]["verified"] is True
    assert provider.seen("/jwks")


def test_unknown_provider_name_refused(backends: tuple[Backend, Backend]) -> None:
    """A provider name PocketBase does not have is refused in the collection's options, as stock does."""
    answers = []
    for backend in backends:
        response = httpx.post(f"{backend.url}/api/collections", timeout=30,
                              headers={"Authorization": backend.superuser_token},
                              json=_collection("unknown_provider", [{"name": "myspace", "clientId": "a",
                                                                     "clientSecret": "b"}]))
        answers.append((response.status_code, response.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400

