"""An id_token's signature checked against the provider's published keys (PocketBase's
``tools/auth/internal/jwk``), for an OIDC provider configured with the ``jwksURL`` extra option: the key whose
``kid`` is the token's (and that names its ``alg``) is fetched from that URL, the token must be signed with
that algorithm, and the signature must verify. RSA keys (RS256/384/512, PS256/384/512) and Ed25519 (EdDSA).
Blocking (one HTTP request): run it on a thread.
"""

from __future__ import annotations

import base64
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from pbfast.pocketbase.oauth2.http_client import ProviderUnreachable, request

__all__ = ["SignatureError", "verify_signature"]

_HASHES: Final[dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


class SignatureError(Exception):
    """The token's signature cannot be checked, or does not verify."""


def _b64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (ValueError, TypeError) as err:
        raise SignatureError("malformed base64") from err


def _key(jwks_url: str, kid: str, deadline: float) -> dict[str, Any]:
    try:
        answer = request("GET", jwks_url, {}, None, deadline)
    except ProviderUnreachable as err:
        raise SignatureError(str(err)) from err
    if answer.status >= 400:
        raise SignatureError(f"{jwks_url} answered {answer.status}")
    try:
        keys = orjson.loads(answer.body).get("keys")
    except (orjson.JSONDecodeError, AttributeError) as err:
        raise SignatureError("the key set is not JSON") from err
    for key in keys if isinstance(keys, list) else []:
        if isinstance(key, dict) and key.get("kid") == kid and key.get("alg"):
            return key
    raise SignatureError(f"missing JWK with kid {kid!r} and non-empty alg")


def verify_signature(token: str, jwks_url: str, deadline: float) -> None:
    """Raises :class:`SignatureError` unless ``token`` is signed by the provider's key its ``kid`` names."""
    parts = token.split(".")
    if len(parts) != 3:
        raise SignatureError("malformed token")
    try:
        header = orjson.loads(_b64(parts[0]))
    except orjson.JSONDecodeError as err:
        raise SignatureError("malformed token header") from err
    kid = header.get("kid") if isinstance(header, dict) else None
    if not isinstance(kid, str) or not kid:
        raise SignatureError("missing kid header value")
    key = _key(jwks_url, kid, deadline)
    alg = str(key["alg"])
    if header.get("alg") != alg:
        raise SignatureError(f"the token is not signed with {alg}")
    signed, signature = f"{parts[0]}.{parts[1]}".encode(), _b64(parts[2])
    try:
        if key.get("kty") == "RSA" and alg[:2] in ("RS", "PS") and alg[2:] in _HASHES:
            public = rsa.RSAPublicNumbers(int.from_bytes(_b64(str(key.get("e", ""))), "big"),
                                          int.from_bytes(_b64(str(key.get("n", ""))), "big")).public_key()
            digest = _HASHES[alg[2:]]()
            scheme = padding.PKCS1v15() if alg.startswith("RS") else \
                padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.AUTO)
            public.verify(signature, signed, scheme, digest)
        elif key.get("kty") == "OKP" and key.get("crv") == "Ed25519" and alg == "EdDSA":
            ed25519.Ed25519PublicKey.from_public_bytes(_b64(str(key.get("x", "")))).verify(signature, signed)
        else:
            raise SignatureError(f"unsupported key {key.get('kty')!r} / {alg!r}")
    except (InvalidSignature, ValueError) as err:
        raise SignatureError("the signature does not verify") from err
