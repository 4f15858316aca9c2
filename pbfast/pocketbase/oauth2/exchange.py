"""The two provider calls of an OAuth2 login (PocketBase's ``BaseProvider.FetchToken`` through
``golang.org/x/oauth2`` and each provider's ``FetchAuthUser``): the authorization code (with its PKCE
verifier) exchanged at the token URL, then the user read by the provider's reader
(:mod:`pbfast.pocketbase.oauth2.readers`: the user info URL, the provider's further requests, its id_token).

The exchange sends the client credentials as HTTP Basic first and, when the provider refuses that, again
in the form (x/oauth2's auto-detection). Blocking: run it on a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pbfast.pocketbase import gocompat
from pbfast.pocketbase.gocompat.json_numbers import json_depth
from pbfast.pocketbase.oauth2.calls import ExchangeError, ProviderCalls, Token, request_token
from pbfast.pocketbase.oauth2.providers import Provider
from pbfast.pocketbase.oauth2.readers import READERS
from pbfast.pocketbase.oauth2.user_json import MAX_DEPTH

__all__ = ["AuthUser", "ExchangeError", "Token", "fetch_auth_user", "fetch_token"]


@dataclass(frozen=True, slots=True)
class AuthUser:
    """PocketBase's ``auth.AuthUser`` (``email`` only when the provider vouches for it)."""

    id: str
    name: str
    username: str
    email: str
    avatar_url: str
    raw_user: dict[str, Any]
    access_token: str
    refresh_token: str
    expiry: str  # PocketBase's DateTime text, "" when the token has none

    def meta(self, is_new: bool) -> dict[str, Any]:
        """The ``meta`` of the login answer (the user as JSON, with the legacy ``avatarUrl``, and ``isNew``)."""
        return {"accessToken": self.access_token, "avatarURL": self.avatar_url, "avatarUrl": self.avatar_url,
                "email": self.email, "expiry": self.expiry, "id": self.id, "isNew": is_new, "name": self.name,
                "rawUser": self.raw_user, "refreshToken": self.refresh_token, "username": self.username}


def fetch_token(provider: Provider, code: str, code_verifier: str, redirect_url: str, deadline: float) -> Token:
    form = {"grant_type": "authorization_code", "code": code}
    if redirect_url:
        form["redirect_uri"] = redirect_url
    if provider.pkce:
        form["code_verifier"] = code_verifier
    return request_token(provider, form, deadline)


def fetch_auth_user(provider: Provider, token: Token, deadline: float) -> AuthUser:
    """The provider's user (its reader in :data:`pbfast.pocketbase.oauth2.readers.READERS`)."""
    reader = READERS.get(provider.name)
    if reader is None:
        raise ExchangeError(f"logging in with {provider.name} is not supported")
    user = reader(ProviderCalls(provider, token, deadline))
    if json_depth(user.raw) > MAX_DEPTH:  # an id_token's claims or a token field can be as deep
        raise ExchangeError("the provider's user is nested too deeply")
    expiry = gocompat.format_datetime_value(token.expiry) if token.expiry else ""
    return AuthUser(user.id, user.name, user.username, user.email, user.avatar_url, _as_float64(user.raw),
                    token.access_token, token.refresh_token, expiry)


def _as_float64(value: Any) -> Any:
    """``rawUser`` as PocketBase decodes it (Go's ``map[string]any``): every number a float64."""
    if isinstance(value, dict):
        return {key: _as_float64(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_float64(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return gocompat.json_number(float(value))
    return value
