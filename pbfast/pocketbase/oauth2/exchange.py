"""The two provider calls of an OAuth2 login (PocketBase's ``BaseProvider.FetchToken`` through
``golang.org/x/oauth2`` and each provider's ``FetchAuthUser``): the authorization code (with its PKCE
verifier) exchanged at the token URL, then the user read from the user info URL, or for OIDC without one,
from the token answer's ``id_token`` (claims checked: ``aud`` holds the client id, ``iat``/``exp`` within 5
minutes' leeway, ``iss`` among the ``issuers`` extra option when set, the signature against the keys at the
``jwksURL`` extra option when set: :mod:`pbfast.pocketbase.oauth2.jwks`).

The exchange sends the client credentials as HTTP Basic first and, when the provider refuses that, again
in the form (x/oauth2's auto-detection). Blocking: run it on a thread.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qsl, quote_plus, urlencode

import orjson

from pbfast.pocketbase import auth, gocompat
from pbfast.pocketbase.oauth2.http_client import ProviderUnreachable, request
from pbfast.pocketbase.oauth2.jwks import SignatureError, verify_signature
from pbfast.pocketbase.oauth2.providers import Provider, UserMapping

__all__ = ["AuthUser", "ExchangeError", "Token", "fetch_auth_user", "fetch_token"]

ID_TOKEN_LEEWAY: Final = 300  # seconds, PocketBase's default


class ExchangeError(Exception):
    """The provider refused, or answered something unusable."""


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    token_type: str
    refresh_token: str
    expiry: datetime | None
    extra: dict[str, Any] = field(default_factory=dict)


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
    credentials = f"{quote_plus(provider.client_id)}:{quote_plus(provider.client_secret)}"
    basic = {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
    try:
        answer = _post_form(provider.token_url, form, basic, deadline)
        if not 200 <= answer[0] < 300:  # the provider wants the credentials in the form
            form |= {"client_id": provider.client_id, "client_secret": provider.client_secret}
            answer = _post_form(provider.token_url, form, {}, deadline)
    except ProviderUnreachable as err:
        raise ExchangeError(str(err)) from err
    status, values = answer
    if not 200 <= status < 300:
        raise ExchangeError(f"oauth2: cannot fetch token: {status}")
    access_token = values.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise ExchangeError("oauth2: server response missing access_token")
    expires_in = _seconds(values.get("expires_in"))
    expiry = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in > 0 else None
    return Token(access_token, _text(values.get("token_type")), _text(values.get("refresh_token")), expiry, values)


def _seconds(value: object) -> int:
    """``expires_in`` as x/oauth2 reads it: a JSON number, or a number in text (some providers send one)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _post_form(url: str, form: dict[str, str], headers: dict[str, str], deadline: float) -> tuple[int, dict[str, Any]]:
    answer = request("POST", url, {"Content-Type": "application/x-www-form-urlencoded", **headers},
                     urlencode(form).encode(), deadline)
    media_type = answer.content_type.split(";", 1)[0].strip().lower()
    if media_type in ("application/x-www-form-urlencoded", "text/plain"):
        return answer.status, dict(parse_qsl(answer.body.decode(errors="replace")))
    try:
        values = orjson.loads(answer.body) if answer.body else {}
    except orjson.JSONDecodeError:
        values = {}
    return answer.status, values if isinstance(values, dict) else {}


def fetch_auth_user(provider: Provider, token: Token, deadline: float) -> AuthUser:
    mapping = provider.defaults.user
    if mapping is None:
        raise ExchangeError(f"logging in with {provider.name} is not supported")
    if provider.user_info_url or not provider.defaults.id_token_user:
        raw = _user_info(provider, token, deadline)
    else:
        raw = _id_token_claims(provider, token, deadline)
    return _auth_user(mapping, raw, token)


def _user_info(provider: Provider, token: Token, deadline: float) -> dict[str, Any]:
    kind = token.token_type
    # x/oauth2's Token.Type(): the usual casings of the common types, Bearer when none
    kind = {"bearer": "Bearer", "mac": "MAC", "basic": "Basic", "": "Bearer"}.get(kind.lower(), kind)
    try:
        answer = request("GET", provider.user_info_url, {"Authorization": f"{kind} {token.access_token}"}, None,
                         deadline)
    except ProviderUnreachable as err:
        raise ExchangeError(str(err)) from err
    if answer.status >= 400:
        raise ExchangeError(f"failed to fetch OAuth2 user profile via {provider.user_info_url} ({answer.status})")
    try:
        raw = orjson.loads(answer.body)
    except orjson.JSONDecodeError as err:
        raise ExchangeError("the user info is not JSON") from err
    if not isinstance(raw, dict):
        raise ExchangeError("the user info is not a JSON object")
    return raw


def _id_token_claims(provider: Provider, token: Token, deadline: float) -> dict[str, Any]:
    id_token = token.extra.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise ExchangeError("empty id_token")
    if id_token.count(".") != 2:
        raise ExchangeError("malformed id_token")
    claims = auth.unverified_claims(id_token)
    now = time.time()
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if provider.client_id not in audiences:
        raise ExchangeError("token has invalid audience")
    for name, must_be_past in (("iat", True), ("exp", False), ("nbf", True)):
        value = claims.get(name)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ExchangeError(f"invalid {name}")
        if (must_be_past and value > now + ID_TOKEN_LEEWAY) or (not must_be_past and value < now - ID_TOKEN_LEEWAY):
            raise ExchangeError(f"token {name} is out of range")
    issuers = provider.extra.get("issuers")
    if isinstance(issuers, list) and issuers and claims.get("iss") not in [str(i) for i in issuers]:
        raise ExchangeError(f"iss must be one of {issuers}")
    jwks_url = provider.extra.get("jwksURL")
    if isinstance(jwks_url, str) and jwks_url:
        try:
            verify_signature(id_token, jwks_url, deadline)
        except SignatureError as err:
            raise ExchangeError(f"id_token validation failed: {err}") from err
    return claims


def _string(raw: dict[str, Any], key: str) -> str:
    """A JSON string field as Go decodes it into a string (absent or null: "", another type: an error)."""
    if not key:
        return ""
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ExchangeError(f"json: cannot unmarshal {key} into a string")
    return value


def _auth_user(mapping: UserMapping, raw: dict[str, Any], token: Token) -> AuthUser:
    if mapping.numeric_id:
        value = raw.get(mapping.id)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ExchangeError(f"json: cannot unmarshal {mapping.id} into an int64")
        user_id = str(value or 0)
    else:
        user_id = _string(raw, mapping.id)
    email = _string(raw, mapping.email)
    if mapping.email_flag:
        flag = raw.get(mapping.email_flag)
        if mapping.strict_flag and flag is not None and not isinstance(flag, bool):
            raise ExchangeError(f"json: cannot unmarshal {mapping.email_flag} into a bool")
        vouched = flag is True if mapping.strict_flag else gocompat.cast_to_bool(flag)
    else:
        vouched = gocompat.parse_datetime(_string(raw, mapping.email_confirmed_at)) is not None
    expiry = gocompat.format_datetime_value(token.expiry) if token.expiry else ""
    return AuthUser(user_id, _string(raw, mapping.name), _string(raw, mapping.username), email if vouched else "",
                    _string(raw, mapping.avatar_url), raw, token.access_token, token.refresh_token, expiry)
