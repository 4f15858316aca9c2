"""A fake OAuth2 provider for the provider-specific logins (GitHub, Discord, Apple, ...): a real HTTP server on
loopback (stdlib ``http.server`` on a thread) that answers in each provider's JSON shape, reached through the
provider config's ``authURL``/``tokenURL``/``userInfoURL`` overrides (PocketBase takes them for every provider).

- ``GET /authorize?client_id&redirect_uri&state&code_challenge&login_hint``: the consent (302 to ``redirect_uri``
  with ``code`` and ``state``); ``login_hint`` names one of :attr:`FakeProvider.users`.
- ``POST /token``: the code exchanged (client authenticated by HTTP Basic or in the form, PKCE verifier checked
  when the link had a challenge); answers an access token plus the user's :attr:`FakeUser.token_extra` (an
  ``id_token``, VK's ``email``, a short ``expires_in``, ...); ``grant_type=refresh_token`` answers a fresh
  access token for the user's refresh token.
- ``GET`` or ``POST /user`` with ``Authorization: Bearer <access token>``: the user's :attr:`FakeUser.profile`
  (any JSON value, or raw bytes) with :attr:`FakeUser.profile_status`.
- ``GET /user/emails``: :attr:`FakeUser.emails` with :attr:`FakeUser.emails_status` (404 when not set).
- ``GET /jwks``: the public key the tests' id_tokens are signed with (:func:`signed_id_token`).
Every request is logged in :attr:`FakeProvider.requests` with its headers and body.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from oidc_provider import _id_token as signed_id_token  # noqa: F401 - re-exported for the tests
from oidc_provider import _jwks, serve_on_loopback

CLIENT_ID, CLIENT_SECRET = "fake-client", "fake-secret"
REDIRECT = "https://app.example.com/cb"


@dataclass
class FakeUser:
    profile: Any
    emails: Any = None
    emails_status: int = 200
    token_extra: dict[str, Any] = field(default_factory=dict)
    profile_status: int = 200


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeProvider:
    url: str = ""
    users: dict[str, FakeUser] = field(default_factory=dict)
    grants: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # code -> user, challenge, redirect
    access: dict[str, str] = field(default_factory=dict)  # access token -> user
    refresh: dict[str, str] = field(default_factory=dict)  # refresh token -> user
    requests: list[Seen] = field(default_factory=list)

    def config(self, name: str, **extra: Any) -> dict[str, Any]:
        """An auth collection's provider entry for ``name`` pointing here (``extra``: its extra options)."""
        entry: dict[str, Any] = {"name": name, "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
                                 "authURL": f"{self.url}/authorize", "tokenURL": f"{self.url}/token",
                                 "userInfoURL": f"{self.url}/user"}
        if extra:
            entry["extra"] = extra
        return entry

    def consent(self, auth_url: str, user: str) -> str:
        """The code the provider gives after ``user`` approved the login link ``auth_url``."""
        import httpx  # the tests' client

        response = httpx.get(f"{auth_url}{REDIRECT}&login_hint={user}", follow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        return dict(parse_qsl(urlsplit(response.headers["location"]).query))["code"]

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]


def _handler(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            pass

        def _send(self, status: int, payload: Any) -> None:
            body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _user(self) -> FakeUser | None:
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            name = provider.access.get(token)
            return None if name is None else provider.users[name]

        def _log(self, body: bytes = b"") -> str:
            path = urlsplit(self.path).path
            provider.requests.append(Seen(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body))
            return path

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self._log()
            query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            if path == "/authorize":
                user = query.get("login_hint", "")
                if query.get("client_id") != CLIENT_ID or user not in provider.users:
                    self._send(400, {"error": "invalid_request"})
                    return
                code = secrets.token_urlsafe(16)
                provider.grants[code] = (user, query.get("code_challenge", ""), query.get("redirect_uri", ""))
                self.send_response(302)
                self.send_header("Location", query["redirect_uri"] + "?" + urlencode(
                    {"code": code, "state": query.get("state", "")}))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/jwks":
                self._send(200, _jwks())
            elif path == "/user":
                self._profile()
            elif path == "/user/emails":
                user = self._user()
                if user is None:
                    self._send(401, {"message": "Bad credentials"})
                elif user.emails is None:
                    self._send(404, {"message": "Not Found"})
                else:
                    self._send(user.emails_status, user.emails)
            else:
                self._send(404, {"error": "not_found"})

        def _profile(self) -> None:
            user = self._user()
            if user is None:
                self._send(401, {"error": "invalid_token"})
            else:
                self._send(user.profile_status, user.profile)

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self._log(body)
            if path == "/user":  # GraphQL providers (Linear, monday.com) ask with a POST
                self._profile()
                return
            if path != "/token":
                self._send(404, {"error": "not_found"})
                return
            form = dict(parse_qsl(body.decode()))
            basic = self.headers.get("Authorization") or ""
            credentials = (form.get("client_id"), form.get("client_secret"))
            if basic.startswith("Basic "):
                credentials = tuple(base64.b64decode(basic[6:]).decode().split(":", 1))  # type: ignore[assignment]
            if credentials != (CLIENT_ID, CLIENT_SECRET):
                self._send(401, {"error": "invalid_client"})
                return
            if form.get("grant_type") == "refresh_token":
                user = provider.refresh.get(form.get("refresh_token", ""))
                if user is None:
                    self._send(400, {"error": "invalid_grant"})
                    return
                access = secrets.token_urlsafe(24)
                provider.access[access] = user
                self._send(200, {"access_token": access, "token_type": "bearer", "expires_in": 3600})
                return
            grant = provider.grants.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if grant is None or (grant[1] and challenge != grant[1]) or form.get("redirect_uri", "") != grant[2]:
                self._send(400, {"error": "invalid_grant"})
                return
            access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
            provider.access[access] = provider.refresh[refresh] = grant[0]
            self._send(200, {"access_token": access, "token_type": "bearer", "expires_in": 3600,
                             "refresh_token": refresh, **provider.users[grant[0]].token_extra})

    return Handler


@contextmanager
def fake_provider(users: dict[str, FakeUser]) -> Iterator[FakeProvider]:
    provider = FakeProvider(users=users)
    with serve_on_loopback(_handler(provider), "fake-oauth2-provider") as url:
        provider.url = url
        yield provider
