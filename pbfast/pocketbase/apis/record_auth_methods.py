"""``GET /api/collections/{collection}/auth-methods`` (PocketBase's ``apis/record_auth_methods.go``): the
auth methods a login screen may offer for an auth collection, with fresh OAuth2 login links."""

from __future__ import annotations

from pbfast.pocketbase.apis.record_auth import auth_collection
from pbfast.pocketbase.apis.request import TenantRequest, send_with_fields
from pbfast.pocketbase.oauth2 import provider_info

__all__ = ["auth_methods"]


def auth_methods(request: TenantRequest) -> None:
    collection = auth_collection(request)
    options = collection.auth
    password = options.password_auth
    identity_fields = list(password.identity_fields) if password.enabled else []
    providers = []
    if options.oauth2.enabled:
        providers = [info for info in map(provider_info, options.oauth2.providers) if info is not None]
    # PocketBase answers its struct: fields in declaration order, then the pre-0.23 ("legacy") fields.
    request_json = {
        "password": {"identityFields": identity_fields, "enabled": password.enabled},
        "oauth2": {"providers": [p.to_json() for p in providers], "enabled": options.oauth2.enabled},
        "mfa": {"enabled": options.mfa.enabled, "duration": options.mfa.duration if options.mfa.enabled else 0},
        "otp": {"enabled": options.otp.enabled, "duration": options.otp.duration if options.otp.enabled else 0},
        "authProviders": [p.to_json(with_logo=False) for p in providers],
        "usernamePassword": password.enabled and "username" in identity_fields,
        "emailPassword": password.enabled and "email" in identity_fields,
    }
    send_with_fields(request, request_json, sort_keys=False)
