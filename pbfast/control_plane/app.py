"""The control plane's HTTP application (RSGI).

``GET /api/health`` is public; everything under ``/api/cp/`` needs ``Authorization: Bearer <admin token>``.
"""

from __future__ import annotations

from pbfast.http import HTTPProtocol, Router, Scope, bearer_token_matches, health, send_error
from pbfast.logs import component_logger

__all__ = ["ControlPlaneApp"]

log = component_logger("ControlPlane")

_CP_PREFIX = "/api/cp/"


class ControlPlaneApp:
    """RSGI app of the control plane. Thread-safety: used from the event loop thread only."""

    def __init__(self, admin_token: str) -> None:
        self._admin_token = admin_token
        self._public = Router()
        self._public.add("GET", "/api/health", health)
        self._admin = Router()

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        path = scope.path
        if path.startswith(_CP_PREFIX) or path == "/api/cp":
            if not bearer_token_matches(scope.headers.get("authorization"), self._admin_token):
                send_error(proto, 401, "The request requires a valid admin token.")
                return
            await self._admin.dispatch(scope, proto)
            return
        await self._public.dispatch(scope, proto)
