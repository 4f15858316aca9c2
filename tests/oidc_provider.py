"""A small OAuth2/OIDC provider for tests: a real HTTP server on loopback (stdlib ``http.server`` on a thread).

- ``GET /authorize?client_id&redirect_uri&state&code_challenge&code_challenge_method&login_hint``: the user's
  consent, answered as a browser would see it (302 to ``redirect_uri`` with ``code`` and ``state``);
  ``login_hint`` names one of :attr:`OidcProvider.users`.
- ``POST /token``: the code exchanged, the client authenticated (HTTP Basic or form) and the PKCE verifier
  checked against the challenge; answers an access token, a refresh token and an ``id_token`` with the user's
  claims, signed RS256 with the key published at ``GET /jwks`` (the user named ``forged`` gets a bad signature).
- ``GET /userinfo`` with ``Authorization: Bearer <access token>``: the user's claims (401 for the user
  named ``broken``).
Every request is logged in :attr:`OidcProvider.requests`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

AVATAR_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")
CLIENT_ID, CLIENT_SECRET = "test-client", "test-secret"
KEY_ID = "test-key"
_SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Grant:
    user: str
    challenge: str
    redirect_uri: str


@dataclass
class OidcProvider:
    url: str = ""
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    access: dict[str, str] = field(default_factory=dict)  # access token -> user
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, path, form/query

    def provider_config(self, name: str = "oidc", *, user_info: bool = True, jwks: bool = False) -> dict[str, Any]:
        """An auth collection's provider entry pointing here (``jwks``: id_tokens checked with the keys here)."""
        config: dict[str, Any] = {
            "name": name, "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "authURL": f"{self.url}/authorize",
            "tokenURL": f"{self.url}/token", "userInfoURL": f"{self.url}/userinfo" if user_info else "",
            "displayName": "Test ID"}
        if jwks:
            config["extra"] = {"jwksURL": f"{self.url}/jwks", "issuers": [self.url]}
        return config

    def consent(self, auth_url: str, user: str, redirect_uri: str = "https://app.example.com/cb") -> str:
        """The code the provider gives after ``user`` approved the login link ``auth_url``."""
        import httpx  # the tests' client

        response = httpx.get(f"{auth_url}{redirect_uri}&login_hint={user}", follow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        return dict(parse_qsl(urlsplit(response.headers["location"]).query))["code"]


def _claims(provider: OidcProvider, user: str) -> dict[str, Any]:
    now = int(time.time())
    return {**provider.users[user], "aud": CLIENT_ID, "iss": provider.url, "iat": now, "exp": now + 600}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _id_token(claims: dict[str, Any], *, forged: bool = False) -> str:
    header = _b64(orjson.dumps({"alg": "RS256", "kid": KEY_ID, "typ": "JWT"}))
    signed = f"{header}.{_b64(orjson.dumps(claims))}"
    signature = _SIGNING_KEY.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signed}.{_b64(signature[::-1] if forged else signature)}"


def _jwks() -> dict[str, Any]:
    numbers = _SIGNING_KEY.public_key().public_numbers()
    return {"keys": [{"kty": "RSA", "kid": KEY_ID, "use": "sig", "alg": "RS256",
                      "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                      "e": _b64(numbers.e.to_bytes(3, "big"))}]}


def _handler(provider: OidcProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            pass

        def _json(self, status: int, payload: object) -> None:
            body = orjson.dumps(payload)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            url = urlsplit(self.path)
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            provider.requests.append(("GET", url.path, query))
            if url.path == "/authorize":
                user = query.get("login_hint", "")
                if query.get("client_id") != CLIENT_ID or user not in provider.users:
                    self._json(400, {"error": "invalid_request"})
                    return
                code = secrets.token_urlsafe(16)
                provider.grants[code] = Grant(user, query.get("code_challenge", ""), query.get("redirect_uri", ""))
                self.send_response(302)
                location = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query.get("state", "")})
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif url.path == "/jwks":
                self._json(200, _jwks())
            elif url.path == "/avatar.png":  # a picture for the users whose "picture" names it
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(AVATAR_PNG)))
                self.end_headers()
                self.wfile.write(AVATAR_PNG)
            elif url.path == "/userinfo":
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                user = provider.access.get(token)
                if user is None or user == "broken":
                    self._json(401, {"error": "invalid_token"})
                    return
                self._json(200, provider.users[user])
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(parse_qsl(self.rfile.read(length).decode()))
            provider.requests.append(("POST", self.path, form))
            if self.path != "/token":
                self._json(404, {"error": "not_found"})
                return
            basic = self.headers.get("Authorization") or ""
            credentials = (form.get("client_id"), form.get("client_secret"))
            if basic.startswith("Basic "):
                credentials = tuple(base64.b64decode(basic[6:]).decode().split(":", 1))  # type: ignore[assignment]
            if credentials != (CLIENT_ID, CLIENT_SECRET):
                self._json(401, {"error": "invalid_client"})
                return
            grant = provider.grants.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if grant is None or form.get("grant_type") != "authorization_code" or challenge != grant.challenge \
                    or form.get("redirect_uri", "") != grant.redirect_uri:
                self._json(400, {"error": "invalid_grant"})
                return
            access = secrets.token_urlsafe(24)
            provider.access[access] = grant.user
            self._json(200, {"access_token": access, "token_type": "bearer", "expires_in": 3600,
                             "refresh_token": secrets.token_urlsafe(24),
                             "id_token": _id_token(_claims(provider, grant.user), forged=grant.user == "forged")})

    return Handler


@contextmanager
def serve_on_loopback(handler: type[BaseHTTPRequestHandler], name: str) -> Iterator[str]:
    """``handler`` served on a free loopback port by a thread named ``name``; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def oidc_provider(users: dict[str, dict[str, Any]]) -> Iterator[OidcProvider]:
    provider = OidcProvider(users=users)
    with serve_on_loopback(_handler(provider), "oidc-provider") as url:
        provider.url = url
        yield provider
