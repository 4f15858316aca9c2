"""``GET /api/health`` (PocketBase's ``apis/health.go``): to a superuser, also whether a backup may start, the
client's address as the tenant sees it, and a header that hints at a reverse proxy the ``trustedProxy``
settings do not name yet (the dashboard's reminder)."""

from __future__ import annotations

from typing import Final

from pbfast.http import HEALTH_BODY, JSON_HEADERS
from pbfast.pocketbase import app_settings
from pbfast.pocketbase.apis.request import TenantRequest, send_with_fields
from pbfast.pocketbase.apis.settings import real_ip

__all__ = ["health"]

# The common proxy headers PocketBase looks for after the configured ones. Its third, "X‑Forwarded-For", is
# spelled there with a non-breaking hyphen (U+2011) and so never matches a header: left out here.
_COMMON_PROXY_HEADERS: Final = ("CF-Connecting-IP", "Fly-Client-IP")


def health(request: TenantRequest, *, backup_running: bool) -> None:
    if not request.superuser:
        if request.query("fields"):
            send_with_fields(request, {"message": "API is healthy.", "code": 200, "data": {}}, sort_keys=False)
        else:
            request.proto.response_bytes(200, JSON_HEADERS, HEALTH_BODY)
        return
    settings = app_settings.load_settings(request.tenant.conn)
    proxy_header = next((name for name in (*settings.trusted_proxy_headers, *_COMMON_PROXY_HEADERS)
                         if request.header(name.lower())), "")
    send_with_fields(request, {"message": "API is healthy.", "code": 200, "data": {  # in PocketBase 0.40's order
        "canBackup": not backup_running, "realIP": real_ip(request, settings), "possibleProxyHeader": proxy_header}},
        sort_keys=False)
