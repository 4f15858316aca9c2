"""The tenant node's HTTP application (RSGI) and its view of which tenants it serves.

Fencing: every tenant assignment carries an epoch from the control plane. The node serves a tenant only for
requests whose epoch (sent by the gateway) is at least the epoch it knows, and never for an epoch it has
released. A gateway with a newer epoch than the node's last heartbeat is believed (the epoch came from the
control plane), so a fresh assignment is served at once; a gateway with an older epoch is refused, so two
nodes never both accept writes for one tenant.

Routes: ``GET /api/health`` (public); ``/api/node/...`` for the control plane (cluster token); tenants'
PocketBase APIs are reached through the gateway: over HTTP at ``/t/{id}/...`` with the cluster token and
``X-Pbfast-Epoch``, or in-process through :meth:`TenantNodeApp.serve_tenant` in all-in-one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pbfast.http import ApiError, HTTPProtocol, Request, Router, Scope, bearer_token_matches, health, send_error
from pbfast.logs import component_logger
from pbfast.primitives import QuotaCounters, TenantCache, is_valid_tenant_id

__all__ = ["CLUSTER_TOKEN_HEADER", "EPOCH_HEADER", "Assignment", "TenantNodeApp"]

log = component_logger("TenantNode")

EPOCH_HEADER = "x-pbfast-epoch"
# Forwarded tenant requests carry the cluster token here: their Authorization header is the client's own.
CLUSTER_TOKEN_HEADER = "x-pbfast-cluster-token"


@dataclass(slots=True)
class Assignment:
    epoch: int
    status: str = "active"
    moving: str | None = None


class TenantNodeApp:
    """RSGI app of one tenant node. Thread-safety: event loop only (the native primitives it holds are
    themselves thread-safe)."""

    def __init__(self, node_id: str, max_tenants: int, cluster_token: str) -> None:
        self.node_id = node_id
        self.open_tenants = TenantCache(max_tenants)
        self.quotas = QuotaCounters()
        self.assignments: dict[str, Assignment] = {}
        self.released: dict[str, int] = {}  # tenant -> highest epoch given up
        self._cluster_token = cluster_token
        self._node_routes = Router()
        self._node_routes.add("GET", "/api/health", health)
        self._node_routes.add("POST", "/api/node/tenants/{id}/release", self._release_handler)
        self._tenant_routes = Router()
        self._tenant_routes.add("GET", "/api/health", health)

    # ---- assignments (from heartbeats and the gateway) ----------------------------------------------

    def apply_assignments(self, tenants: dict[str, dict[str, Any]], deleted: list[str]) -> None:
        """Adopt the control plane's view: serve exactly ``tenants``, drop the others."""
        for tenant_id in list(self.assignments):
            if tenant_id not in tenants:
                self._drop(tenant_id, self.assignments[tenant_id].epoch, "no longer assigned here")
        for tenant_id in deleted:
            self.quotas.remove(tenant_id)
        for tenant_id, spec in tenants.items():
            epoch = int(spec["epoch"])
            if epoch <= self.released.get(tenant_id, 0):
                continue
            current = self.assignments.get(tenant_id)
            if current is None or current.epoch <= epoch:
                self.assignments[tenant_id] = Assignment(epoch, spec.get("status", "active"), spec.get("moving"))
            storage_mb, requests = spec.get("storageQuotaMB"), spec.get("apiRequestsQuota")
            self.quotas.set_limits(tenant_id, -1 if requests is None else int(requests),
                                   -1 if storage_mb is None else int(storage_mb) << 20)

    def release(self, tenant_id: str, epoch: int) -> None:
        """Stop serving ``tenant_id`` for ``epoch`` and older (a move or a re-placement)."""
        self.released[tenant_id] = max(self.released.get(tenant_id, 0), epoch)
        self._drop(tenant_id, epoch, "released")

    def _drop(self, tenant_id: str, epoch: int, why: str) -> None:
        self.assignments.pop(tenant_id, None)
        if self.open_tenants.remove(tenant_id):
            log.info("closed tenant %s (epoch %d): %s", tenant_id, epoch, why)

    def _admit(self, tenant_id: str, epoch: int) -> None:
        if epoch <= self.released.get(tenant_id, 0):
            raise ApiError(503, "The tenant has moved; retry.", headers=[("retry-after", "1")])
        current = self.assignments.get(tenant_id)
        if current is None or current.epoch < epoch:
            self.assignments[tenant_id] = current = Assignment(epoch)
        elif current.epoch > epoch:
            raise ApiError(503, "The tenant has moved; retry.", headers=[("retry-after", "1")])
        if current.status == "suspended":
            raise ApiError(403, "The tenant is suspended.")
        allowed, _ = self.quotas.try_acquire(tenant_id)
        if not allowed:
            raise ApiError(429, "The tenant's daily API request quota is used up.")

    # ---- HTTP ---------------------------------------------------------------------------------------

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        path = scope.path
        if path.startswith(("/api/node/", "/t/")) and not bearer_token_matches(
                scope.headers.get("authorization" if path.startswith("/api/") else CLUSTER_TOKEN_HEADER),
                self._cluster_token):
            send_error(proto, 401, "The request requires the cluster token.")
            return
        if path.startswith("/t/"):
            await self._serve_forwarded(path, scope, proto)
            return
        await self._node_routes.dispatch(scope, proto, on_error=self._log_error)

    async def _serve_forwarded(self, path: str, scope: Scope, proto: HTTPProtocol) -> None:
        """A gateway's forwarded request: ``/t/{id}/rest`` with the cluster token and the route's epoch."""
        tenant_id, _, rest = path[3:].partition("/")
        epoch_text = scope.headers.get(EPOCH_HEADER) or ""
        if not is_valid_tenant_id(tenant_id) or not epoch_text.isdigit():
            send_error(proto, 400, "Invalid forwarded tenant request.")
            return
        await self.serve_tenant(tenant_id, int(epoch_text), "/" + rest, scope, proto)

    async def _release_handler(self, request: Request) -> None:
        body = await request.json_object()
        epoch = body.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ApiError(400, "Failed to validate the submitted data.",
                           {"epoch": {"code": "validation_invalid_type", "message": "Must be a whole number."}})
        self.release(request.params["id"], epoch)
        request.send_json(200, {"tenantId": request.params["id"], "releasedEpoch": epoch})

    async def serve_tenant(self, tenant_id: str, epoch: int, path: str, scope: Scope, proto: HTTPProtocol) -> None:
        """Serve one request of ``tenant_id`` (routed with fencing ``epoch``) at tenant-relative ``path``."""
        try:
            self._admit(tenant_id, epoch)
        except ApiError as err:
            send_error(proto, err.status, err.message, err.data, err.headers)
            return
        _, evicted = self.open_tenants.acquire(tenant_id)
        self._log_evicted(evicted)
        try:
            await self._tenant_routes.dispatch(scope, proto, path, on_error=self._log_error)
        finally:
            try:
                self._log_evicted(self.open_tenants.release(tenant_id))
            except KeyError:
                pass  # dropped (moved or deleted) while this request ran

    @staticmethod
    def _log_evicted(evicted: list[str]) -> None:
        for closed in evicted:
            log.debug("closed tenant %s (least recently used)", closed)

    @staticmethod
    def _log_error(err: BaseException) -> None:
        log.error("request failed: %r", err, exc_info=err)
