"""Tokens of auth records other than the login token (PocketBase's ``core/record_tokens.go`` and its
``FindAuthRecordByToken``): verification, password reset and email change.

Each is an HS256 JWT signed with the record's ``tokenKey`` followed by the secret of the collection's
token config of that type, lasting that config's ``duration``; so changing the password or the email (which
renews ``tokenKey``) ends every token issued before, and a token made by stock PocketBase for the same data
verifies here and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pbfast.pocketbase import auth
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.records import Row, load_row
from pbfast.pocketbase.tenant import Tenant

__all__ = ["EMAIL_CHANGE", "PASSWORD_RESET", "VERIFICATION", "TokenOwner", "find_auth_record_by_token",
           "new_email_change_token", "new_password_reset_token", "new_verification_token"]

AUTH: Final = "auth"
FILE: Final = "file"
VERIFICATION: Final = "verification"
PASSWORD_RESET: Final = "passwordReset"
EMAIL_CHANGE: Final = "emailChange"
# the collection's token config that signs each type
_CONFIG_OF_TYPE: Final = {AUTH: "authToken", FILE: "fileToken", VERIFICATION: "verificationToken",
                          PASSWORD_RESET: "passwordResetToken", EMAIL_CHANGE: "emailChangeToken"}


@dataclass(frozen=True, slots=True)
class TokenOwner:
    collection: Collection
    record: Row


def _issue(collection: Collection, record: Row, token_type: str, extra: dict[str, str]) -> str:
    config = collection.auth.tokens[_CONFIG_OF_TYPE[token_type]]
    claims = {"type": token_type, "id": str(record.get("id") or ""), "collectionId": collection.id, **extra}
    return auth.issue_token(claims, str(record.get("tokenKey") or "") + config.secret, config.duration)


def new_verification_token(collection: Collection, record: Row) -> str:
    return _issue(collection, record, VERIFICATION, {"email": str(record.get("email") or "")})


def new_password_reset_token(collection: Collection, record: Row) -> str:
    return _issue(collection, record, PASSWORD_RESET, {"email": str(record.get("email") or "")})


def new_email_change_token(collection: Collection, record: Row, new_email: str) -> str:
    return _issue(collection, record, EMAIL_CHANGE, {"email": str(record.get("email") or ""),
                                                     "newEmail": new_email})


def find_auth_record_by_token(tenant: Tenant, token: str, token_type: str) -> TokenOwner | None:
    """The auth record a valid, unexpired token of ``token_type`` was issued for, None otherwise."""
    try:
        claims = auth.peek_token_claims(token)
    except auth.TokenError:
        return None
    if claims.get("type") != token_type or not claims["id"] or not claims["collectionId"]:
        return None
    collection = tenant.collection_by_id(claims["collectionId"]) or tenant.collection(claims["collectionId"])
    if collection is None or collection.type != "auth":
        return None
    record = load_row(tenant, collection, claims["id"])
    if record is None:
        return None
    secret = collection.auth.tokens[_CONFIG_OF_TYPE[token_type]].secret
    token_key = str(record.get("tokenKey") or "")
    if not token_key + secret or not auth.verify_token_signature(token, token_key, secret):
        return None
    return TokenOwner(collection, record)
