"""``POST /api/settings/apple/generate-client-secret`` (PocketBase's ``forms.AppleClientSecretCreate``): the
client secret "Sign in with Apple" wants, an ES256 JWT signed with the developer's private key (the
dashboard calls it from the Apple provider's settings). Superusers only; nothing is stored."""

from __future__ import annotations

import base64
import re
import time
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pbfast.http import ApiError
from pbfast.pocketbase.apis.form_body import struct_body
from pbfast.pocketbase.apis.record_auth_forms import LOAD_FAILED, error, required_error
from pbfast.pocketbase.apis.request import TenantRequest, require_superuser, send_with_fields

__all__ = ["generate_apple_client_secret"]

MAX_DURATION: Final = 15777000  # seconds (about 6 months: Apple's limit)
_PRIVATE_KEY: Final = re.compile(r"(?m)-----BEGIN PRIVATE KEY----[\s\S]+-----END PRIVATE KEY-----")
_NOT_PEM: Final = "invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key"
_NOT_EC: Final = "key is not a valid ECDSA private key"


def generate_apple_client_secret(request: TenantRequest) -> None:
    require_superuser(request)
    client_id, team_id, key_id, private_key, duration = _form(request)
    errors: dict[str, Any] = {}
    if not client_id:
        errors["clientId"] = required_error()
    for name, value in (("teamId", team_id), ("keyId", key_id)):
        if not value:
            errors[name] = required_error()
        elif len(value) != 10:
            errors[name] = {**error("validation_length_invalid", "The length must be exactly 10."),
                            "params": {"max": 10, "min": 10}}
    if not private_key:
        errors["privateKey"] = required_error()
    elif not _PRIVATE_KEY.search(private_key):
        errors["privateKey"] = error("validation_match_invalid", "Must be in a valid format.")
    if duration == 0:
        errors["duration"] = required_error()
    elif duration < 1:
        errors["duration"] = {**error("validation_min_greater_equal_than_required", "Must be no less than 1."),
                              "params": {"threshold": 1}}
    elif duration > MAX_DURATION:
        errors["duration"] = {**error("validation_max_less_equal_than_required",
                                      f"Must be no greater than {MAX_DURATION}."), "params": {"threshold": MAX_DURATION}}
    if errors:
        raise ApiError(400, "Invalid client secret data.", errors)
    try:
        key = _signing_key(private_key.strip())
    except ValueError as err:
        raise ApiError(400, f"Failed to generate client secret. Raw error: \n{err}.") from err
    now = int(time.time())
    header = {"alg": "ES256", "kid": key_id, "typ": "JWT"}
    claims = {"iss": team_id, "sub": client_id, "aud": ["https://appleid.apple.com"], "exp": now + duration,
              "iat": now}
    signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    send_with_fields(request, {"secret": f"{signing_input}.{_b64(signature)}"})


def _form(request: TenantRequest) -> tuple[str, str, str, str, int]:
    """The form's fields as Go binds them into its struct: strings, and an integer duration."""
    body, sent_as_form = struct_body(request)
    texts = []
    for name in ("clientId", "teamId", "keyId", "privateKey"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, LOAD_FAILED)
        texts.append(value or "")
    duration = body.get("duration")
    if isinstance(duration, str) and sent_as_form:
        try:
            duration = int(duration or "0")
        except ValueError as err:
            raise ApiError(400, LOAD_FAILED) from err
    if duration is None:
        duration = 0
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise ApiError(400, LOAD_FAILED)
    return texts[0], texts[1], texts[2], texts[3], duration


def _signing_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The EC private key of a PEM block (PKCS #1 style SEC 1 or PKCS #8), as golang-jwt parses it."""
    if "-----BEGIN" not in pem:
        raise ValueError(_NOT_PEM)
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(_NOT_PEM) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(_NOT_EC)
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
