"""PocketBase-compatible auth tokens and password hashes.

Tokens are HS256 JWTs with PocketBase's claims (``id``, ``type``, ``collectionId``, ``refreshable``, ``exp``)
signed with the record's ``tokenKey`` followed by the collection's ``authToken.secret``, exactly as PocketBase
0.23+ signs them, so a token issued by stock PocketBase for an imported data.db verifies here and back.
Passwords are bcrypt hashes (``$2a$``/``$2b$`` both verify).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import time
from typing import Any

import bcrypt
import orjson

__all__ = [
    "TokenError",
    "hash_password",
    "issue_auth_token",
    "issue_token",
    "new_token_key",
    "peek_token_claims",
    "unverified_claims",
    "verify_password",
    "verify_token_signature",
]

BCRYPT_COST = 10  # PocketBase's default cost for new hashes
TOKEN_KEY_LENGTH = 50
_TOKEN_KEY_ALPHABET = string.ascii_letters + string.digits + "_"
_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


class TokenError(ValueError):
    """The token is malformed, expired, or its signature does not verify."""


def _b64encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64decode(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (ValueError, TypeError) as err:
        raise TokenError("malformed token") from err


def new_token_key() -> str:
    """A fresh per-record token key (50 random ``[a-zA-Z0-9_]`` characters, as PocketBase makes them)."""
    return "".join(secrets.choice(_TOKEN_KEY_ALPHABET) for _ in range(TOKEN_KEY_LENGTH))


def hash_password(password: str, cost: int = BCRYPT_COST) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


def verify_password(password: str, hashed: str) -> bool:
    """Check ``password`` against a bcrypt hash; False (never an exception) for a malformed hash."""
    if not hashed:
        return False
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


def issue_token(claims: dict[str, Any], signing_key: str, duration: int, now: float | None = None) -> str:
    """An HS256 JWT of ``claims`` plus ``exp`` (``duration`` seconds from now), keys sorted as Go marshals
    PocketBase's claim maps."""
    payload = {**claims, "exp": int((time.time() if now is None else now) + duration)}
    signing_input = _HEADER + b"." + _b64encode(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
    signature = hmac.new(signing_key.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64encode(signature)).decode()


def issue_auth_token(record_id: str, token_key: str, collection_id: str, secret: str, duration: int,
                     refreshable: bool = True, now: float | None = None) -> str:
    """A PocketBase auth token for one record, valid ``duration`` seconds."""
    claims = {"collectionId": collection_id, "id": record_id, "refreshable": refreshable, "type": "auth"}
    return issue_token(claims, token_key + secret, duration, now)


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT as it reads, expired or not, signature unchecked ({} when it is not one);
    PocketBase reads claims such as ``email`` this way before it verifies the token."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = orjson.loads(_b64decode(parts[1]))
    except (orjson.JSONDecodeError, TokenError):
        return {}
    return claims if isinstance(claims, dict) else {}


def issue_file_token(record_id: str, token_key: str, collection_id: str, secret: str, duration: int,
                     now: float | None = None) -> str:
    """A PocketBase file token (type ``file``) for one auth record, valid ``duration`` seconds."""
    claims = {"collectionId": collection_id, "exp": int((time.time() if now is None else now) + duration),
              "id": record_id, "type": "file"}
    signing_input = _HEADER + b"." + _b64encode(orjson.dumps(claims))
    signature = hmac.new((token_key + secret).encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64encode(signature)).decode()


def peek_token_claims(token: str) -> dict[str, Any]:
    """The claims of a well-formed, unexpired HS256 token, WITHOUT checking its signature.

    Use them only to find the record and collection whose keys verify it (:func:`verify_token_signature`).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token")
    try:
        header = orjson.loads(_b64decode(parts[0]))
        claims = orjson.loads(_b64decode(parts[1]))
    except orjson.JSONDecodeError as err:
        raise TokenError("malformed token") from err
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise TokenError("unsupported token")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= time.time():
        raise TokenError("expired token")
    for name in ("id", "collectionId", "type"):
        if not isinstance(claims.get(name), str):
            raise TokenError(f"token without {name}")
    return claims


def verify_token_signature(token: str, token_key: str, secret: str) -> bool:
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new((token_key + secret).encode(), signing_input.encode(), hashlib.sha256).digest()
    try:
        return hmac.compare_digest(expected, _b64decode(signature))
    except TokenError:
        return False
