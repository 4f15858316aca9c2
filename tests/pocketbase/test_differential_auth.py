"""Differential tests of the auth and settings APIs of issue 17 (auth-methods, settings, OTP, impersonate):
the same requests to stock PocketBase 0.40.6 and to a pbfast tenant, both on copies of PocketBase's test
data dir (see ``test_differential.py`` and ``differential.py``)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import apsw
import httpx
import orjson
import pytest

from differential import Step, compare
from pbharness import SUPERUSER, Backend, stock_pocketbase_server
from test_differential import USER1, fixture_ids

G = None  # a guest step
# auth-methods' OAuth2 links hold a fresh state and PKCE pair: compare everything else.
_STABLE_PROVIDER_FIELDS = ",".join(f"oauth2.providers.{name}" for name in (
    "name", "displayName", "logo", "codeChallengeMethod")) + ",oauth2.enabled,password,mfa,otp,usernamePassword,emailPassword"

SCENARIOS: dict[str, list[Step]] = {
    "auth methods": [
        Step("missing collection", "GET", "/api/collections/missing/auth-methods", auth=G),
        Step("not an auth collection", "GET", "/api/collections/demo1/auth-methods", auth=G),
        Step("no method allowed", "GET", "/api/collections/nologin/auth-methods", auth=G),
        Step("password only", "GET", "/api/collections/clients/auth-methods", auth=G),
        Step("superusers", "GET", "/api/collections/_superusers/auth-methods", auth=G),
        Step("by id", "GET", "/api/collections/_pb_users_auth_/auth-methods?fields=password", auth=G),
        Step("all methods", "GET", f"/api/collections/users/auth-methods?fields={_STABLE_PROVIDER_FIELDS}",
             auth=G),
        Step("legacy providers", "GET", "/api/collections/users/auth-methods?fields=authProviders.name,"
             "authProviders.logo,authProviders.displayName", auth=G),
        Step("oidc provider configured", "PATCH", "/api/collections/clients?fields=oauth2.enabled", {
            "oauth2": {"enabled": True, "providers": [
                {"name": "oidc", "clientId": "c1", "clientSecret": "s1", "authURL": "https://id.example.com/auth",
                 "tokenURL": "https://id.example.com/token", "userInfoURL": "https://id.example.com/me",
                 "displayName": "Example ID", "pkce": False},
                {"name": "github", "clientId": "c2", "clientSecret": "s2"}]},
            "otp": {"enabled": True, "duration": 120}, "mfa": {"enabled": True, "duration": 60}}),
        Step("oidc listed", "GET", f"/api/collections/clients/auth-methods?fields={_STABLE_PROVIDER_FIELDS}",
             auth=G),
        Step("password off", "PATCH", "/api/collections/clients?fields=passwordAuth",
             {"passwordAuth": {"enabled": False}}),
        Step("password off listed", "GET", "/api/collections/clients/auth-methods?fields=password,emailPassword",
             auth=G),
        Step("method not allowed", "POST", "/api/collections/clients/auth-methods", auth=G),
        Step("provider list guest", "GET", "/api/collections/meta/oauth2-providers", auth=G),
        Step("provider list user", "GET", "/api/collections/meta/oauth2-providers", headers=USER1, auth=G),
        Step("provider list", "GET", "/api/collections/meta/oauth2-providers"),
        Step("provider list fields", "GET", "/api/collections/meta/oauth2-providers?fields=name,displayName"),
    ],
    "settings": [
        Step("guest", "GET", "/api/settings", auth=G),
        Step("user", "GET", "/api/settings", headers=USER1, auth=G),
        Step("superuser", "GET", "/api/settings"),
        Step("fields", "GET", "/api/settings?fields=meta.appName,batch"),
        Step("guest update", "PATCH", "/api/settings", {"meta": {"appName": "x"}}, auth=G),
        Step("user update", "PATCH", "/api/settings", {"meta": {"appName": "x"}}, headers=USER1, auth=G),
        Step("invalid meta", "PATCH", "/api/settings", {"meta": {
            "appName": "", "appURL": "notaurl", "senderName": "x" * 256, "senderAddress": "bad", "accentColor": "#12"}}),
        Step("invalid ips and logs", "PATCH", "/api/settings", {
            "meta": {"accentColor": "zzzzzzz"}, "superuserIPs": ["", "1.2.3.4/99", "abc", "10.0.0.0/8", "::1"],
            "logs": {"maxDays": -1, "maxDataSize": -5, "minLevel": -100}}),
        Step("smtp enabled blank", "PATCH", "/api/settings",
             {"smtp": {"enabled": True, "host": "", "port": 0, "authMethod": "x", "localName": "a b"}}),
        Step("smtp bad host", "PATCH", "/api/settings", {"smtp": {"host": "bad host", "port": -1}}),
        Step("trailing newlines", "PATCH", "/api/settings", {
            "smtp": {"host": "host\n", "localName": "x\n"}, "meta": {"accentColor": "#abcde\n"},
            "rateLimits": {"rules": [{"label": "/api/\n", "duration": 1, "maxRequests": 1}]},
            "backups": {"cron": "\u0663 * * * *", "cronMaxKeep": 1}}),
        Step("s3 and backups", "PATCH", "/api/settings", {
            "s3": {"enabled": True}, "backups": {"cron": "bad", "cronMaxKeep": 0, "s3": {"enabled": True, "endpoint": "x"}}}),
        *[Step(f"cron {cron!r}", "PATCH", "/api/settings?fields=backups", {"backups": {"cron": cron, "cronMaxKeep": 2}})
          for cron in ("61 * * * *", "*/0 * * * *", "5/2 * * * *", "1-2-3 * * * *", "3-1 * * * *", "x * * * *",
                       "*/5 1-3 * * 1,2", "@daily", "0 0 32 * *", "0 24 * * *", "a/b * * * *", "", "@yearly",
                       "@annually", "@monthly", "@weekly", "@midnight", "@hourly", "@every 5m", "0 0 30 2 *",
                       "* * * * 7", "+5 * * * *", "1,2,5,40-50/2 */3 1-31/7 */4 0-6/2")],
        Step("cron without keep", "PATCH", "/api/settings", {"backups": {"cron": "* * * * *", "cronMaxKeep": 0}}),
        Step("keep below one", "PATCH", "/api/settings", {"backups": {"cron": "@daily", "cronMaxKeep": -1}}),
        Step("batch invalid", "PATCH", "/api/settings",
             {"batch": {"enabled": True, "maxRequests": 0, "timeout": -1, "maxBodySize": -1}}),
        Step("rate limits without rules", "PATCH", "/api/settings", {"rateLimits": {"enabled": True, "rules": []}}),
        Step("rate limit rules invalid", "PATCH", "/api/settings", {"rateLimits": {"enabled": True, "rules": [
            {"label": "", "maxRequests": 0, "duration": 0, "audience": "x"}, {"label": "a b c"},
            {"label": "/api/", "duration": 1, "maxRequests": 1}, {"label": "/api/", "duration": 1, "maxRequests": 1}],
            "excludedIPs": ["", "x"]}}),
        Step("rate limit rules conflict", "PATCH", "/api/settings", {"rateLimits": {"rules": [
            {"label": "/api/", "duration": 1, "maxRequests": 1},
            {"label": "/api/", "audience": "@guest", "duration": 1, "maxRequests": 1},
            {"label": "/api", "duration": 1, "maxRequests": 1}]}}),
        *[Step(f"body {raw!r}", "PATCH", "/api/settings", raw=raw) for raw in (
            b'{"meta":{"appName":5}}', b"[]", b"nul", b'{"batch":{"timeout":1.5}}', b'{"batch":{"timeout":"5"}}',
            b'{"batch":{"enabled":1}}', b'{"superuserIPs":"x"}', b'{"rateLimits":{"rules":{}}}')],
        Step("meta null", "PATCH", "/api/settings", {"meta": None}),
        Step("appName null", "PATCH", "/api/settings", {"meta": {"appName": None}}),
        Step("unchanged after failures", "GET", "/api/settings"),
        Step("update", "PATCH", "/api/settings", {
            "meta": {"appName": "renamed", "appURL": "https://example.com", "senderAddress": "no-reply@example.com",
                     "hideControls": True, "accentColor": "#abcdef"},
            "smtp": {"enabled": True, "host": "127.0.0.1", "port": 2525, "username": "u", "password": "secret-pw",
                     "authMethod": "LOGIN", "tls": False, "localName": "mail.example.com"},
            "s3": {"enabled": True, "bucket": "b", "region": "r", "endpoint": "https://s3.example.com",
                   "accessKey": "ak", "secret": "s3-secret", "forcePathStyle": True},
            "backups": {"cron": "0 3 * * *", "cronMaxKeep": 2, "s3": {"secret": "backup-secret"}},
            "batch": {"enabled": True, "maxRequests": 10, "timeout": 2, "maxBodySize": 1024},
            "rateLimits": {"enabled": True, "excludedIPs": ["127.0.0.1", "10.0.0.0/8"], "rules": [
                {"label": "users:auth", "audience": "@guest", "duration": 60, "maxRequests": 5},
                {"label": "POST /api/collections/", "duration": 1, "maxRequests": 10}]},
            "trustedProxy": {"headers": ["X-Real-IP"], "useLeftmostIP": True},
            "logs": {"maxDays": 7, "minLevel": -4, "logIP": True, "logAuthId": True, "maxDataSize": 100},
            "superuserIPs": ["127.0.0.1", "::1", "10.0.0.0/8"], "unknown": {"x": 1}}),
        Step("secrets kept by a partial update", "PATCH", "/api/settings?fields=smtp,s3,backups",
             {"smtp": {"port": 2526}, "s3": {"enabled": False}}),
        Step("secret required when enabled", "PATCH", "/api/settings?fields=s3",
             {"s3": {"enabled": True, "secret": ""}}),
        Step("after update", "GET", "/api/settings"),
        Step("case-insensitive keys", "PATCH", "/api/settings?fields=meta", {"META": {"APPNAME": "upper"}}),
        # A body of `null` makes PocketBase 0.40.6 answer 500 (its settings become nil); pbfast changes nothing.
        Step("empty body", "PATCH", "/api/settings?fields=meta.appName", raw=b""),
    ],
    "otp without smtp": [
        Step("request missing collection", "POST", "/api/collections/missing/request-otp", {"email": "a@b.co"},
             auth=G),
        Step("request not auth", "POST", "/api/collections/demo1/request-otp", {"email": "a@b.co"}, auth=G),
        Step("request otp off", "POST", "/api/collections/nologin/request-otp", {"email": "test@example.com"},
             auth=G),
        Step("request superusers otp off", "POST", "/api/collections/_superusers/request-otp",
             {"email": "test@example.com"}, auth=G),
        Step("request blank", "POST", "/api/collections/users/request-otp", {}, auth=G),
        Step("request not an email", "POST", "/api/collections/users/request-otp", {"email": "bad"}, auth=G),
        Step("request email too long", "POST", "/api/collections/users/request-otp",
             {"email": "a" * 250 + "@example.com"}, auth=G),
        Step("request email not a string", "POST", "/api/collections/users/request-otp", {"email": 5}, auth=G),
        Step("request body not an object", "POST", "/api/collections/users/request-otp", raw=b"[]", auth=G),
        Step("request unknown email", "POST", "/api/collections/users/request-otp", {"email": "nobody@example.com"},
             auth=G),
        Step("auth missing collection", "POST", "/api/collections/missing/auth-with-otp",
             {"otpId": "x", "password": "1"}, auth=G),
        Step("auth otp off", "POST", "/api/collections/nologin/auth-with-otp", {"otpId": "x", "password": "1"},
             auth=G),
        Step("auth blank", "POST", "/api/collections/users/auth-with-otp", {}, auth=G),
        Step("auth too long", "POST", "/api/collections/users/auth-with-otp",
             {"otpId": "x" * 256, "password": "1" * 72}, auth=G),
        Step("auth not strings", "POST", "/api/collections/users/auth-with-otp", {"otpId": 1, "password": "1"},
             auth=G),
        Step("auth unknown id", "POST", "/api/collections/users/auth-with-otp", {"otpId": "nope", "password": "1"},
             auth=G),
        Step("auth with the decoy id", "POST", "/api/collections/users/auth-with-otp",
             {"otpId": "<new-1>", "password": "12345678"}, auth=G),
        Step("otp on for clients", "PATCH", "/api/collections/clients?fields=otp.enabled", {"otp": {"enabled": True}}),
        Step("auth with another collection's id", "POST", "/api/collections/clients/auth-with-otp",
             {"otpId": "<new-1>", "password": "12345678"}, auth=G),
    ],
    "impersonate": [
        Step("guest", "POST", "/api/collections/users/impersonate/4q1xlclmfloku33", {}, auth=G),
        Step("auth record", "POST", "/api/collections/users/impersonate/4q1xlclmfloku33", {}, headers=USER1, auth=G),
        Step("auth record, missing collection", "POST", "/api/collections/missing/impersonate/x", {},
             headers=USER1, auth=G),
        Step("missing collection", "POST", "/api/collections/missing/impersonate/x", {}),
        Step("not an auth collection", "POST", "/api/collections/demo1/impersonate/x", {}),
        Step("missing record", "POST", "/api/collections/users/impersonate/nope", {}),
        Step("negative duration", "POST", "/api/collections/users/impersonate/4q1xlclmfloku33", {"duration": -1}),
        *[Step(f"body {raw!r}", "POST", "/api/collections/users/impersonate/4q1xlclmfloku33", raw=raw)
          for raw in (b'{"duration":"x"}', b'{"duration":1.5}', b"[]", b'{"duration":true}')],
        Step("user with mfa", "POST", "/api/collections/users/impersonate/4q1xlclmfloku33", {"duration": 100}),
        Step("default duration", "POST", "/api/collections/users/impersonate/oap640cot4yru2s?fields=record.email,token",
             raw=b""),
        Step("nologin", "POST", "/api/collections/nologin/impersonate/dc49k6jgejn40h3", {"duration": 1000}),
        Step("superuser", "POST", "/api/collections/_superusers/impersonate/sywbhecnh46rhm0?fields=record.email",
             {"duration": 50}),
        Step("refresh keeps the token", "POST", "/api/collections/users/auth-refresh?fields=token,record.id",
             auth="as:user with mfa"),
        Step("acts as the user", "GET", "/api/collections/users/records/4q1xlclmfloku33?fields=id,email",
             auth="as:user with mfa"),
        Step("user cannot impersonate", "POST", "/api/collections/users/impersonate/oap640cot4yru2s", {},
             auth="as:user with mfa"),
    ],
    "superuser ips": [
        Step("allowed list with this address", "PATCH", "/api/settings?fields=superuserIPs",
             {"superuserIPs": ["10.0.0.1", "127.0.0.0/8"]}),
        Step("still a superuser", "GET", "/api/collections/demo1/records?fields=id&perPage=1"),
        Step("allowed list without it", "PATCH", "/api/settings?fields=superuserIPs", {"superuserIPs": ["10.0.0.1"]}),
        Step("settings refused", "GET", "/api/settings"),
        Step("records refused", "GET", "/api/collections/demo1/records?fields=id&perPage=1"),
        Step("a forwarded address does not help", "GET", "/api/settings", headers={"X-Forwarded-For": "10.0.0.1"}),
        Step("superuser login refused", "POST", "/api/collections/_superusers/auth-with-password",
             {"identity": "test@example.com", "password": "1234567890"}, auth=G),
        Step("superuser impersonation refused", "POST", "/api/collections/_superusers/impersonate/sywbhecnh46rhm0",
             {}),
        Step("guests unaffected", "GET", "/api/collections/demo1/records?fields=id&perPage=1", auth=G),
        Step("users unaffected", "GET", "/api/collections/users/records/4q1xlclmfloku33?fields=id", headers=USER1,
             auth=G),
    ],
    "settings test s3": [
        Step("guest", "POST", "/api/settings/test/s3", {"filesystem": "storage"}, auth=G),
        Step("user", "POST", "/api/settings/test/s3", {"filesystem": "storage"}, headers=USER1, auth=G),
        Step("blank", "POST", "/api/settings/test/s3", {}),
        Step("unknown filesystem", "POST", "/api/settings/test/s3", {"filesystem": "x"}),
        Step("not a string", "POST", "/api/settings/test/s3", {"filesystem": 5}),
        Step("not an object", "POST", "/api/settings/test/s3", raw=b"[]"),
        Step("storage off", "POST", "/api/settings/test/s3", {"filesystem": "storage"}),
        Step("backups off", "POST", "/api/settings/test/s3", {"filesystem": "backups"}),
    ],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_answers_as_pocketbase(scenario: str, stock_pocketbase: Backend, pbfast_fixture_tenant: Backend,
                                    tmp_path: Path) -> None:
    steps = SCENARIOS[scenario]
    differences = compare(stock_pocketbase, pbfast_fixture_tenant, steps, fixture_ids())
    report = tmp_path.parent / "differential-report.txt"
    with open(report, "a") as out:
        out.write(f"{scenario}: {len(steps) - len(differences)}/{len(steps)} equal\n")
    assert not differences, "\n".join(differences)


def _login_links(backend: Backend, collection: str) -> list[dict[str, object]]:
    """The collection's OAuth2 providers with their random parts checked and then blanked."""
    body = httpx.get(f"{backend.url}/api/collections/{collection}/auth-methods", timeout=30).json()
    links = []
    for provider in body["oauth2"]["providers"]:
        url = urlsplit(provider["authURL"])
        query = parse_qs(url.query, keep_blank_values=True)
        assert provider["authUrl"] == provider["authURL"]
        assert query["state"] == [provider["state"]] and len(provider["state"]) == 30
        assert provider["authURL"].endswith("&redirect_uri=")
        if provider["codeVerifier"]:
            digest = hashlib.sha256(provider["codeVerifier"].encode()).digest()
            assert provider["codeChallenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            assert query["code_challenge"] == [provider["codeChallenge"]]
        randomised = {provider["state"], provider["codeChallenge"]} - {""}
        normalised = provider["authURL"]
        for value in randomised:
            normalised = normalised.replace(value, "<random>")
        links.append({"name": provider["name"], "authURL": normalised, "pkce": bool(provider["codeVerifier"])})
    assert [p["name"] for p in body["authProviders"]] == [p["name"] for p in links]
    return links


def test_oauth2_login_links_match_pocketbase(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend) -> None:
    """The auth URLs carry the same parameters in the same order, with a state and PKCE pair of their own."""
    config = {"oauth2": {"enabled": True, "providers": [
        {"name": "oidc2", "clientId": "c 1", "clientSecret": "s", "authURL": "https://id.example.com/auth?tenant=a", "pkce": False},
        {"name": "google", "clientId": "g1", "clientSecret": "s", "displayName": "Mine"},
        *({"name": name, "clientId": "c", "clientSecret": "s"} for name in (
            "apple", "discord", "gitea", "gitee", "instagram2", "linear", "planningcenter", "github", "oidc"))]}}
    for backend in (stock_pocketbase, pbfast_fixture_tenant):
        response = httpx.patch(f"{backend.url}/api/collections/clients", json=config,
                               headers={"Authorization": backend.superuser_token}, timeout=30)
        assert response.status_code == 200, response.text
    for collection in ("users", "clients"):
        assert _login_links(pbfast_fixture_tenant, collection) == _login_links(stock_pocketbase, collection)


def _stored_settings(data_db: Path) -> tuple[str, bytes]:
    connection = apsw.Connection(str(data_db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        kind, value = connection.execute("SELECT typeof(value), value FROM _params WHERE id = 'settings'").fetchone()
    finally:
        connection.close()
    return kind, value


def test_settings_stored_as_pocketbase_stores_them(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend,
                                                   tmp_path: Path) -> None:
    """The same update leaves the same ``_params`` row (secrets included) in both data dirs, and the row
    pbfast wrote opens in stock PocketBase with the same settings."""
    update = {"smtp": {"enabled": True, "host": "127.0.0.1", "port": 2525, "password": "pw"},
              "s3": {"secret": "s3-secret"}, "backups": {"s3": {"secret": ""}}, "batch": {"maxBodySize": 7}}
    answers = []
    for backend in (stock_pocketbase, pbfast_fixture_tenant):
        response = httpx.patch(f"{backend.url}/api/settings", json=update,
                               headers={"Authorization": backend.superuser_token}, timeout=30)
        assert response.status_code == 200, response.text
        assert "password" not in response.json()["smtp"] and "secret" not in response.json()["s3"]
        answers.append(response.json())
    assert answers[0] == answers[1]
    stock_row = _stored_settings(tmp_path / "stock" / "data.db")
    pbfast_row = _stored_settings(pbfast_fixture_tenant.tenant_dir / "data.db")
    assert pbfast_row == stock_row
    assert orjson.loads(pbfast_row[1])["smtp"]["password"] == "pw"

    exported = tmp_path / "exported"
    shutil.copytree(pbfast_fixture_tenant.tenant_dir, exported)
    with stock_pocketbase_server(exported) as url:
        token = httpx.post(f"{url}/api/collections/_superusers/auth-with-password", json=SUPERUSER,
                           timeout=30).json()["token"]
        assert httpx.get(f"{url}/api/settings", headers={"Authorization": token}).json() == answers[1]


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def test_impersonation_token_lasts_the_requested_duration(stock_pocketbase: Backend,
                                                          pbfast_fixture_tenant: Backend) -> None:
    for duration, expected in ((100, 100), (0, 1209600)):  # 0: the users collection's authToken duration
        claims = []
        for backend in (stock_pocketbase, pbfast_fixture_tenant):
            before = int(time.time())
            response = httpx.post(f"{backend.url}/api/collections/users/impersonate/4q1xlclmfloku33",
                                  json={"duration": duration}, headers={"Authorization": backend.superuser_token},
                                  timeout=30)
            assert response.status_code == 200, response.text
            token_claims = _claims(response.json()["token"])
            assert before + expected <= int(token_claims.pop("exp")) <= int(time.time()) + expected  # type: ignore[call-overload]
            claims.append(token_claims)
        assert claims[0] == claims[1] == {"collectionId": "_pb_users_auth_", "id": "4q1xlclmfloku33",
                                          "refreshable": False, "type": "auth"}
