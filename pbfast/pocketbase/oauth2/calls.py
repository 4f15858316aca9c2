"""The provider's token URL (:func:`request_token`, as ``golang.org/x/oauth2`` asks it) and what a provider's
user reader may ask of the provider after the token exchange (PocketBase's ``BaseProvider`` and the token's
helpers): the user info request (:meth:`ProviderCalls.user_info`, with a provider's extra
headers or its GraphQL query), further authorized requests (GitHub's ``/emails``), the token answer's extra
fields as ``golang.org/x/oauth2``'s ``Token.Extra`` gives them, and the checked claims of its ``id_token``
(:meth:`ProviderCalls.id_token_claims`: ``aud``, ``iss``, ``iat``/``exp``/``nbf`` within 5 minutes' leeway,
the signature against a key set when one is named: :mod:`pbfast.pocketbase.oauth2.jwks`). As x/oauth2's
client does, a token that expires within 10 s is refreshed (``grant_type=refresh_token``) before a request.

Blocking (network): run it on a thread.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qsl, quote_plus, urlencode

import orjson

from pbfast.pocketbase import auth
from pbfast.pocketbase.oauth2.http_client import HttpAnswer, ProviderUnreachable, request
from pbfast.pocketbase.oauth2.jwks import SignatureError, verify_signature
from pbfast.pocketbase.oauth2.providers import Provider

__all__ = ["ExchangeError", "IdTokenCheck", "ProviderCalls", "Token", "request_token"]

ID_TOKEN_LEEWAY: Final = 300  # seconds, PocketBase's idTokenLeeway
EXPIRY_DELTA: Final = timedelta(seconds=10)  # x/oauth2: a token expiring this soon is refreshed before use


class ExchangeError(Exception):
    """The provider refused, or answered something unusable."""


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    token_type: str
    refresh_token: str
    expiry: datetime | None
    extra: dict[str, Any] = field(default_factory=dict)
    form_encoded: bool = False  # the token answer was a form, not JSON (changes what extra_value gives)

    def expiring(self) -> bool:
        """x/oauth2's ``Token.expired``: it expires within :data:`EXPIRY_DELTA` (never without an expiry)."""
        return self.expiry is not None and self.expiry - EXPIRY_DELTA < datetime.now(UTC)

    def extra_value(self, key: str) -> Any:
        """x/oauth2's ``Token.Extra``: a JSON answer's value as decoded (None when absent); from a form answer
        the value as text ("" when absent), or as a number when it reads as one."""
        if not self.form_encoded:
            return self.extra.get(key)
        text = str(self.extra.get(key, ""))
        stripped = text.strip()
        try:
            if "." not in stripped:
                return int(stripped, 10) if stripped.lstrip("+-").isdigit() else text
            if stripped.count(".") == 1:
                return float(stripped)
        except ValueError:
            pass
        return text


@dataclass(frozen=True, slots=True)
class IdTokenCheck:
    """How a provider checks its id_token (golang-jwt's validator options)."""

    audience: bool = True  # the client id must be among ``aud``
    issuers: tuple[str, ...] = ()  # ``iss`` must be one of them (none: not checked)
    expiry_required: bool = False
    jwks_url: str = ""  # the signature is checked against this key set (empty: not checked)


class ProviderCalls:
    """One login's calls to the provider, all by the login's ``deadline``."""

    __slots__ = ("deadline", "provider", "token")

    def __init__(self, provider: Provider, token: Token, deadline: float) -> None:
        self.provider, self.token, self.deadline = provider, token, deadline

    def _authorization(self) -> str:
        """The token's ``Authorization``; a token about to expire is refreshed first, for each request, as
        each of PocketBase's requests goes through a new x/oauth2 client made from the first token."""
        token = self.token
        if token.expiring():
            if not token.refresh_token:
                raise ExchangeError("oauth2: token expired and refresh token is not set")
            token = request_token(self.provider, {"grant_type": "refresh_token",
                                                  "refresh_token": token.refresh_token}, self.deadline)
        # x/oauth2's Token.Type(): the usual casings of the common types, Bearer when none
        kind = {"bearer": "Bearer", "mac": "MAC", "basic": "Basic", "": "Bearer"}.get(token.token_type.lower(),
                                                                                      token.token_type)
        return f"{kind} {token.access_token}"

    def get(self, url: str) -> HttpAnswer:
        """An authorized GET (the token's ``Authorization``), any status."""
        return self._send("GET", url, {}, None)

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> HttpAnswer:
        try:
            return request(method, url, {**headers, "Authorization": self._authorization()}, body, self.deadline)
        except ProviderUnreachable as err:
            raise ExchangeError(str(err)) from err

    def user_info(self, headers: dict[str, str] | None = None, graphql: bytes | None = None) -> bytes:
        """The user info URL's answer (``graphql``: POSTed as JSON); a status >= 400 is an error."""
        url = self.provider.user_info_url
        if graphql is None:
            answer = self._send("GET", url, headers or {}, None)
        else:
            answer = self._send("POST", url, {"Content-Type": "application/json", **(headers or {})}, graphql)
        if answer.status >= 400:
            raise ExchangeError(f"failed to fetch OAuth2 user profile via {url} ({answer.status})")
        return answer.body

    def id_token_claims(self, check: IdTokenCheck) -> dict[str, Any]:
        """The token answer's ``id_token`` claims, checked as ``check`` says; raises :class:`ExchangeError`."""
        id_token = self.token.extra_value("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise ExchangeError("empty id_token")
        if id_token.count(".") != 2:
            raise ExchangeError("malformed id_token")
        claims = auth.unverified_claims(id_token)
        now = time.time()
        if check.expiry_required and claims.get("exp") is None:
            raise ExchangeError("token is missing required claim: exp claim is required")
        for name, must_be_past in (("exp", False), ("iat", True), ("nbf", True)):
            value = claims.get(name)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ExchangeError(f"invalid {name}")
            if (must_be_past and value > now + ID_TOKEN_LEEWAY) or (not must_be_past and value < now - ID_TOKEN_LEEWAY):
                raise ExchangeError(f"token {name} is out of range")
        if check.audience:
            audience = claims.get("aud")
            audiences = audience if isinstance(audience, list) else [audience]
            if not all(isinstance(a, str) for a in audiences) or self.provider.client_id not in audiences:
                raise ExchangeError("token has invalid audience")
        if check.issuers and claims.get("iss") not in check.issuers:
            raise ExchangeError(f"iss must be one of {list(check.issuers)}")
        if check.jwks_url:
            try:
                verify_signature(id_token, check.jwks_url, self.deadline)
            except SignatureError as err:
                raise ExchangeError(f"id_token validation failed: {err}") from err
        return claims


def request_token(provider: Provider, form: dict[str, str], deadline: float) -> Token:
    """A token from the provider's token URL (x/oauth2's ``retrieveToken``: the client credentials as HTTP
    Basic, again in the form when the provider refuses that); raises :class:`ExchangeError`."""
    credentials = f"{quote_plus(provider.client_id)}:{quote_plus(provider.client_secret)}"
    basic = {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
    try:
        answer = _post_form(provider.token_url, form, basic, deadline)
        if not 200 <= answer.status < 300:  # the provider wants the credentials in the form
            form = form | {"client_id": provider.client_id, "client_secret": provider.client_secret}
            answer = _post_form(provider.token_url, form, {}, deadline)
    except ProviderUnreachable as err:
        raise ExchangeError(str(err)) from err
    values = answer.values
    if not 200 <= answer.status < 300:
        raise ExchangeError(f"oauth2: cannot fetch token: {answer.status}")
    access_token = values.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise ExchangeError("oauth2: server response missing access_token")
    expires_in = _seconds(values.get("expires_in"))
    expiry = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in > 0 else None
    return Token(access_token, _text(values.get("token_type")), _text(values.get("refresh_token")), expiry, values,
                 answer.form_encoded)


def _seconds(value: object) -> int:
    """``expires_in`` as x/oauth2 reads it: a JSON number, or a number in text (some providers send one)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class _TokenAnswer:
    status: int
    values: dict[str, Any]
    form_encoded: bool


def _post_form(url: str, form: dict[str, str], headers: dict[str, str], deadline: float) -> _TokenAnswer:
    answer = request("POST", url, {"Content-Type": "application/x-www-form-urlencoded", **headers},
                     urlencode(form).encode(), deadline)
    media_type = answer.content_type.split(";", 1)[0].strip().lower()
    if media_type in ("application/x-www-form-urlencoded", "text/plain"):
        return _TokenAnswer(answer.status, dict(parse_qsl(answer.body.decode(errors="replace"))), True)
    try:
        values = orjson.loads(answer.body) if answer.body else {}
    except orjson.JSONDecodeError:
        values = {}
    return _TokenAnswer(answer.status, values if isinstance(values, dict) else {}, False)
