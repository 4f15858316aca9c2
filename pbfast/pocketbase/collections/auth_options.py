"""An auth collection's options (``authRule``, ``passwordAuth``, ``mfa``, tokens, templates ...) in
PocketBase's stored shape, and what the collections API shows of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["AUTH_OPTION_KEYS", "TEMPLATE_KEYS", "TOKEN_KEYS", "auth_options_for_api", "normalize_auth_options"]

TOKEN_KEYS: Final = ("authToken", "passwordResetToken", "emailChangeToken", "verificationToken", "fileToken")
TEMPLATE_KEYS: Final = ("verificationTemplate", "resetPasswordTemplate", "confirmEmailChangeTemplate")
AUTH_OPTION_KEYS: Final = ("authRule", "manageRule", "authAlert", "oauth2", "passwordAuth", "mfa", "otp",
                           *TOKEN_KEYS, *TEMPLATE_KEYS)


def _template(value: Any) -> dict[str, str]:
    value = value if isinstance(value, Mapping) else {}
    return {"subject": str(value.get("subject") or ""), "body": str(value.get("body") or "")}


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value)
    return 0


def _provider(value: Any) -> dict[str, Any]:
    value = value if isinstance(value, Mapping) else {}
    result: dict[str, Any] = {"pkce": value.get("pkce") if isinstance(value.get("pkce"), bool) else None}
    for key in ("name", "clientId", "clientSecret", "authURL", "tokenURL", "userInfoURL", "displayName"):
        result[key] = str(value.get(key) or "")
    extra = value.get("extra")
    result["extra"] = dict(extra) if isinstance(extra, Mapping) else {}
    return result


def _obj(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``raw[key]`` when it is an object, else an empty one."""
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def normalize_auth_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Auth collection options in PocketBase's stored shape and key order (missing parts get Go's zero
    values, secrets included)."""
    oauth2 = _obj(raw, "oauth2")
    mapped = _obj(oauth2, "mappedFields")
    alert = _obj(raw, "authAlert")
    password = _obj(raw, "passwordAuth")
    mfa = _obj(raw, "mfa")
    otp = _obj(raw, "otp")
    options: dict[str, Any] = {
        "authRule": raw.get("authRule") if isinstance(raw.get("authRule"), str) else None,
        "manageRule": raw.get("manageRule") if isinstance(raw.get("manageRule"), str) else None,
        "authAlert": {"enabled": bool(alert.get("enabled")), "emailTemplate": _template(alert.get("emailTemplate"))},
        "oauth2": {
            "providers": [_provider(p) for p in (oauth2.get("providers") or [])],
            "mappedFields": {k: str(mapped.get(k) or "") for k in ("id", "name", "username", "avatarURL")},
            "enabled": bool(oauth2.get("enabled")),
        },
        "passwordAuth": {"enabled": bool(password.get("enabled")),
                         "identityFields": [str(v) for v in (password.get("identityFields") or [])]},
        "mfa": {"enabled": bool(mfa.get("enabled")), "duration": _int(mfa.get("duration")),
                "rule": str(mfa.get("rule") or "")},
        "otp": {"enabled": bool(otp.get("enabled")), "duration": _int(otp.get("duration")),
                "length": _int(otp.get("length")), "emailTemplate": _template(otp.get("emailTemplate"))},
    }
    for key in TOKEN_KEYS:
        token = _obj(raw, key)
        options[key] = {"secret": str(token.get("secret") or ""), "duration": _int(token.get("duration"))}
    for key in TEMPLATE_KEYS:
        options[key] = _template(raw.get(key))
    return options


def auth_options_for_api(options: Mapping[str, Any]) -> dict[str, Any]:
    """What the collections API shows of auth options: token secrets and OAuth2 client secrets omitted."""
    shown = normalize_auth_options(options)
    for key in TOKEN_KEYS:
        shown[key] = {"duration": shown[key]["duration"]}
    for provider in shown["oauth2"]["providers"]:
        provider.pop("clientSecret", None)
    return shown
