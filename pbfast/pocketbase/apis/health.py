"""``GET /api/health`` (PocketBase's ``apis/health.go``)."""

from __future__ import annotations

from pbfast.http import HEALTH_BODY, JSON_HEADERS
from pbfast.pocketbase.apis.request import TenantRequest

__all__ = ["health"]


def health(request: TenantRequest) -> None:
    request.proto.response_bytes(200, JSON_HEADERS, HEALTH_BODY)
