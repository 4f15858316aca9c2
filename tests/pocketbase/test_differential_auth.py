"""Differential tests of the auth and settings APIs of issue 17 (auth-methods, settings, OTP, impersonate):
the same requests to stock PocketBase 0.40.6 and to a pbfast tenant, both on copies of PocketBase's test
data dir (see ``test_differential.py`` and ``differential.py``)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from differential import Step, compare
from pbharness import Backend
from test_differential import fixture_ids

G = None  # a guest step
# auth-methods' OAuth2 links hold a fresh state and PKCE pair: compare everything else.
_STABLE_PROVIDER_FIELDS = ",".join(f"oauth2.providers.{name}" for name in (
    "name", "displayName", "codeChallengeMethod")) + ",oauth2.enabled,password,mfa,otp,usernamePassword,emailPassword"

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
        {"name": "google", "clientId": "g1", "clientSecret": "s", "displayName": "Mine"}]}}
    for backend in (stock_pocketbase, pbfast_fixture_tenant):
        response = httpx.patch(f"{backend.url}/api/collections/clients", json=config,
                               headers={"Authorization": backend.superuser_token}, timeout=30)
        assert response.status_code == 200, response.text
    for collection in ("users", "clients"):
        assert _login_links(pbfast_fixture_tenant, collection) == _login_links(stock_pocketbase, collection)
