"""The control plane's HTTP application (RSGI).

``GET /api/health`` is public and reports this member's Raft role. Everything else needs a bearer token:
the admin token for operators, or the cluster token for tenant nodes and gateways; each route says which
(403 for the other one). A request without a valid token gets 401 whatever its path, unknown paths and
other spellings of a route (``//api/cp/...``) included, so they look the same to strangers; the router
decides this on the same parse of the path it routes on (:class:`pbfast.http.Router`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pbfast.control_plane.api import ControlPlaneApi
from pbfast.control_plane.openapi import openapi_document
from pbfast.http import (
    Handler,
    PUBLIC,
    ApiError,
    Guard,
    HTTPProtocol,
    Request,
    Router,
    Scope,
    bearer_token_matches,
)
from pbfast.logs import component_logger

__all__ = ["ControlPlaneApp"]

log = component_logger("ControlPlane")

READY_WAIT_SECONDS = 5.0  # a starting member answers once it has caught up, if that is quick
ADMIN = "admin"
CLUSTER = "cluster"


class ControlPlaneApp:
    """RSGI app of one control plane member. Thread-safety: event loop only."""

    def __init__(self, api: ControlPlaneApi, admin_token: str, cluster_token: str,
                 admin_token_hint: str = "") -> None:
        """``admin_token_hint``: where an operator finds the admin token (said in every 401)."""
        self.api = api
        self._tokens = {ADMIN: admin_token, CLUSTER: cluster_token}
        where = f" {admin_token_hint}" if admin_token_hint else ""
        self.router: Router[Handler] = Router(Guard(
            self._has_a_token, "The request requires the admin token (the cluster token for pbfast's own "
                               "processes): send it as 'Authorization: Bearer <token>'." + where))
        self.router.add("GET", "/api/health", self.health, guard=PUBLIC)
        guarded: list[tuple[str, str, frozenset[str], Callable[[Request], Awaitable[None]]]] = [
            ("POST", "/api/cp/tenants", frozenset({ADMIN}), api.create_tenant),
            ("GET", "/api/cp/tenants", frozenset({ADMIN}), api.list_tenants),
            ("GET", "/api/cp/tenants/{id}", frozenset({ADMIN}), api.get_tenant),
            ("PATCH", "/api/cp/tenants/{id}", frozenset({ADMIN}), api.update_tenant),
            ("DELETE", "/api/cp/tenants/{id}", frozenset({ADMIN}), api.delete_tenant),
            ("POST", "/api/cp/tenants/{id}/move", frozenset({ADMIN}), api.move_tenant),
            ("POST", "/api/cp/tenants/{id}/restore", frozenset({ADMIN}), api.restore_tenant),
            ("PUT", "/api/cp/tenants/{id}/superusers", frozenset({ADMIN}), api.upsert_superuser),
            ("PUT", "/api/cp/tenants/{id}/data", frozenset({ADMIN}), api.import_data),
            ("GET", "/api/cp/tenants/{id}/data", frozenset({ADMIN}), api.export_data),
            ("GET", "/api/cp/nodes", frozenset({ADMIN}), api.list_nodes),
            ("PUT", "/api/cp/nodes/{id}", frozenset({CLUSTER}), api.register_node),
            ("DELETE", "/api/cp/nodes/{id}", frozenset({ADMIN}), api.remove_node),
            ("POST", "/api/cp/nodes/{id}/heartbeat", frozenset({CLUSTER}), api.heartbeat),
            ("GET", "/api/cp/routes", frozenset({ADMIN, CLUSTER}), api.routes),
            ("GET", "/api/cp/openapi.json", frozenset({ADMIN, CLUSTER}), self.openapi),
        ]
        self.roles: dict[tuple[str, str], frozenset[str]] = {}
        for method, template, roles, handler in guarded:
            self.router.add(method, template, self._guard(roles, handler))
            self.roles[(method, template)] = roles

    def _has_a_token(self, scope: Scope) -> bool:
        return self._role_of(scope.headers.get("authorization")) is not None

    def _role_of(self, authorization: str | None) -> str | None:
        for role, token in self._tokens.items():
            if bearer_token_matches(authorization, token):
                return role
        return None

    def _guard(self, roles: frozenset[str], handler: Callable[[Request], Awaitable[None]]
               ) -> Callable[[Request], Awaitable[None]]:
        async def guarded(request: Request) -> None:
            if self._role_of(request.header("authorization")) not in roles:
                who = "the admin token" if roles == {ADMIN} else "the cluster token" if roles == {CLUSTER} else \
                    "the admin or cluster token"
                raise ApiError(403, f"This action requires {who}.")
            if not await self.api.member.wait_ready(READY_WAIT_SECONDS):
                raise ApiError(503, "The control plane is catching up after a start; retry shortly.",
                               headers=[("retry-after", "1")])
            await handler(request)

        return guarded

    async def health(self, request: Request) -> None:
        status = self.api.member.status()
        request.send_json(200, {"message": "API is healthy.", "code": 200, "data": {"raft": status.as_json()}})

    async def openapi(self, request: Request) -> None:
        request.send_json(200, openapi_document())

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        await self.router.dispatch(scope, proto, on_error=lambda err: log.error(
            "%s %s failed: %r", scope.method, scope.path, err, exc_info=err))


