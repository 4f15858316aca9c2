"""What a provider's user reader may ask of the provider after the token exchange (PocketBase's ``BaseProvider``
and the token's helpers): the user info request (:meth:`ProviderCalls.user_info`, with a provider's extra
headers or its GraphQL query), further authorized requests (GitHub's ``/emails``), the token answer's extra
fields as ``golang.org/x/oauth2``'s ``Token.Extra`` gives them, and the checked claims of its ``id_token``
(:meth:`ProviderCalls.id_token_claims`: ``aud``, ``iss``, ``iat``/``exp``/``nbf`` within 5 minutes' leeway,
the signature against a key set when one is named: :mod:`pbfast.pocketbase.oauth2.jwks`).

Blocking (network): run it on a thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pbfast.pocketbase import auth
from pbfast.pocketbase.oauth2.http_client import HttpAnswer, ProviderUnreachable, request
from pbfast.pocketbase.oauth2.jwks import SignatureError, verify_signature
from pbfast.pocketbase.oauth2.providers import Provider

__all__ = ["ExchangeError", "IdTokenCheck", "ProviderCalls", "Token"]

ID_TOKEN_LEEWAY: Final = 300  # seconds, PocketBase's idTokenLeeway


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
        kind = self.token.token_type
        # x/oauth2's Token.Type(): the usual casings of the common types, Bearer when none
        kind = {"bearer": "Bearer", "mac": "MAC", "basic": "Basic", "": "Bearer"}.get(kind.lower(), kind)
        return f"{kind} {self.token.access_token}"

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
