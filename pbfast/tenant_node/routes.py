"""The tenant node's HTTP routes (RSGI).

``GET /api/health`` (public); ``GET /metrics`` (cluster token, see :mod:`pbfast.tenant_node.metrics`);
``/api/node/...`` for the control plane (cluster token); tenants' PocketBase APIs are reached through the
gateway: over HTTP at ``/t/{id}/...`` with the cluster token in ``X-Pbfast-Cluster-Token`` and
``X-Pbfast-Epoch`` (:mod:`pbfast.cluster.wire`), or in-process through
:meth:`pbfast.tenant_node.serving.Serving.serve_tenant` in all-in-one. Anything else, including another
spelling of a route (``//api/node/...``), needs the cluster token too and then is a 404: the node
authenticates and routes on one parse of the path (:class:`pbfast.http.Router`).

Thread-safety: event loop only.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

from pbfast.cluster.wire import CLUSTER_TOKEN_HEADER, EPOCH_HEADER
from pbfast.http import (
    PUBLIC,
    ApiError,
    Guard,
    Handler,
    HTTPProtocol,
    Request,
    Router,
    Scope,
    bearer_token_matches,
    declares_no_body,
    discard_unread_body,
    forwarded_target,
    send_error,
    send_json,
)
from pbfast.logs import component_logger
from pbfast.primitives import is_valid_tenant_id
from pbfast.prometheus import METRICS_HEADERS
from pbfast.tenant_node.data_archive import ARCHIVE_TYPE
from pbfast.tenant_node.handover import Handover
from pbfast.tenant_node.metrics import NodeMetrics
from pbfast.tenant_node.restore import Restorer
from pbfast.tenant_node.serving import Serving
from pbfast.tenant_node.status import NodeStatus
from pbfast.tenant_node.transfer import Transfer

__all__ = ["NodeRoutes"]

log = component_logger("TenantNode")


class NodeRoutes:
    def __init__(self, cluster_token: str, metrics_tokens: list[str], serving: Serving, handover: Handover,
                 transfer: Transfer, restorer: Restorer, status: NodeStatus, metrics: NodeMetrics) -> None:
        self._cluster_token = cluster_token
        self.metrics_tokens = metrics_tokens  # the cluster token; all-in-one adds the admin token
        self.serving = serving
        self.handover = handover
        self.transfer = transfer
        self.restorer = restorer
        self.status = status
        self.metrics = metrics
        # Deny by default: every route but the health check needs the cluster token, and so does any path
        # that is no route (whatever its spelling: see pbfast.http.path_segments).
        self.router: Router[Handler] = Router(Guard(self._bearer_is_cluster_token,
                                                    "The request requires the cluster token."))
        self.router.add("GET", "/api/health", self._health, guard=PUBLIC)
        self.router.add("GET", "/metrics", self._metrics_handler,
                        guard=Guard(self._bearer_may_read_metrics, "The request requires the cluster token."))
        self.router.add("POST", "/api/node/tenants/{id}/release", self._release_handler)
        self.router.add("PUT", "/api/node/tenants/{id}/superuser", self._superuser_handler)
        self.router.add("PUT", "/api/node/tenants/{id}/data", self._import_handler)
        self.router.add("GET", "/api/node/tenants/{id}/data", self._export_handler)
        self.router.add("POST", "/api/node/tenants/{id}/restore-check", self._restore_check_handler)
        # The gateway's forwarded tenant requests: the client's own Authorization header goes through, so the
        # cluster token comes in X-Pbfast-Cluster-Token, which counts for these requests only.
        self.router.mount("/t/{id}", self._serve_forwarded,
                          guard=Guard(self._forwarded_by_gateway, "The request requires the cluster token."))

    async def dispatch(self, scope: Scope, proto: HTTPProtocol) -> None:
        forwarded = forwarded_target(scope.path)
        if forwarded is None:
            await self.router.dispatch(scope, proto, on_error=self._log_error)
            return
        # The mount /t/{id} is the only route such a path can match: taken without the router's generic
        # match and Request (one tenant request's path through the node is the hot path), answered as it would.
        if not self._forwarded_by_gateway(scope):
            send_error(proto, 401, "The request requires the cluster token.")
            return
        try:
            # _serve_forwarded_to's body, here: one coroutine less on every tenant request
            tenant_id, path = forwarded
            epoch_text = scope.headers.get(EPOCH_HEADER) or ""
            if not is_valid_tenant_id(tenant_id) or not epoch_text.isdigit():
                raise ApiError(400, "Invalid forwarded tenant request.")
            if not await self.serving.serve_tenant(tenant_id, int(epoch_text), path, scope, proto) \
                    and not declares_no_body(scope):
                await discard_unread_body(proto)  # answered early: let a gateway still sending the body finish
        except ApiError as err:
            send_json(proto, err.status, err.body(), err.headers)
        except Exception as err:  # noqa: BLE001 - the server must answer, and stay up
            self._log_error(err)
            send_error(proto, 500)

    # ---- who may call -------------------------------------------------------------------------------

    def _bearer_is_cluster_token(self, scope: Scope) -> bool:
        return bearer_token_matches(scope.headers.get("authorization"), self._cluster_token)

    def _bearer_may_read_metrics(self, scope: Scope) -> bool:
        authorization = scope.headers.get("authorization")
        return any(bearer_token_matches(authorization, token) for token in self.metrics_tokens)

    def _forwarded_by_gateway(self, scope: Scope) -> bool:
        return hmac.compare_digest((scope.headers.get(CLUSTER_TOKEN_HEADER) or "").encode(),
                                   self._cluster_token.encode())

    # ---- health and metrics -------------------------------------------------------------------------

    async def _health(self, request: Request) -> None:
        """PocketBase's health body, plus the state of this node's replication under ``data.replication``
        (``lagSeconds``: see :meth:`NodeStatus.replication_lag`). The lease is in the metrics."""
        replication = self.status.replication()
        if self.status.replicator is not None:
            replication["lagSeconds"] = await self.status.replication_lag()
        request.send_json(200, {"message": "API is healthy.", "code": 200, "data": {"replication": replication}})

    async def _metrics_handler(self, request: Request) -> None:
        await self.serve_metrics(request.scope, request.proto)

    async def serve_metrics(self, scope: Scope, proto: HTTPProtocol) -> None:
        """``GET /metrics``: Prometheus text (``Authorization: Bearer`` with the cluster token, or the admin
        token where the node knows it)."""
        authorization = scope.headers.get("authorization")
        if not any(bearer_token_matches(authorization, token) for token in self.metrics_tokens):
            send_error(proto, 401, "The request requires the cluster token.")
            return
        if scope.method not in ("GET", "HEAD"):
            send_error(proto, 405, "Method not allowed.")
            return
        proto.response_bytes(200, METRICS_HEADERS, self.metrics.render(await self.status.gauges()))

    # ---- the gateway's forwarded requests -----------------------------------------------------------

    async def _serve_forwarded(self, request: Request) -> None:
        await self._serve_forwarded_to(request.params["id"], request.path, request.scope, request.proto)

    async def _serve_forwarded_to(self, tenant_id: str, path: str, scope: Scope, proto: HTTPProtocol) -> None:
        """A gateway's forwarded request: ``/t/{id}/rest`` with the cluster token and the route's epoch. The
        tenant's API matches the rest only in its canonical spelling."""
        epoch_text = scope.headers.get(EPOCH_HEADER) or ""
        if not is_valid_tenant_id(tenant_id) or not epoch_text.isdigit():
            raise ApiError(400, "Invalid forwarded tenant request.")
        body_read = await self.serving.serve_tenant(tenant_id, int(epoch_text), path, scope, proto)
        if not body_read and not declares_no_body(scope):
            await discard_unread_body(proto)  # answered early: let a gateway still sending the body finish

    # ---- the control plane's calls ------------------------------------------------------------------

    async def _release_handler(self, request: Request) -> None:
        body = await request.json_object()
        epoch = body.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ApiError(400, "Failed to validate the submitted data.",
                           {"epoch": {"code": "validation_invalid_type", "message": "Must be a whole number."}})
        await self.handover.release(request.params["id"], epoch)
        request.send_json(200, {"tenantId": request.params["id"], "releasedEpoch": epoch})

    async def _restore_check_handler(self, request: Request) -> None:
        """``POST /api/node/tenants/{id}/restore-check`` ``{"incarnation", "at"}``: see
        :meth:`Restorer.restore_check`. 200 ``{"bytes"}``; 400 when the replica holds no usable state then;
        503 when storage fails."""
        body = await request.json_object()
        tenant_id, incarnation, at = request.params["id"], body.get("incarnation"), body.get("at")
        size = await self.restorer.restore_check(tenant_id, incarnation, at)
        request.send_json(200, {"tenantId": tenant_id, "incarnation": incarnation, "at": at, "bytes": size})

    async def _superuser_handler(self, request: Request) -> None:
        body = await request.json_object()
        email, password_hash = body.get("email"), body.get("passwordHash")
        if not isinstance(email, str) or not isinstance(password_hash, str) or not password_hash.startswith("$2"):
            raise ApiError(400, "Failed to validate the submitted data.")
        await self.transfer.upsert_tenant_superuser(request.params["id"], email, password_hash)
        request.send_json(200, {"email": email})

    async def _import_handler(self, request: Request) -> None:
        tenant_id = request.params["id"]
        if not is_valid_tenant_id(tenant_id):
            raise ApiError(400, "Invalid tenant id.")

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in request.proto:
                yield chunk

        await self.transfer.import_data(tenant_id, chunks())
        request.send_json(200, {"tenantId": tenant_id})

    async def _export_handler(self, request: Request) -> None:
        tenant_id = request.params["id"]
        if not is_valid_tenant_id(tenant_id):
            raise ApiError(400, "Invalid tenant id.")
        with_files = request.query("files") == "1"  # a tar of data.db and storage/
        stream = request.proto.response_stream(  # type: ignore[attr-defined]
            200, [("content-type", ARCHIVE_TYPE if with_files else "application/vnd.sqlite3")])
        async for chunk in self.transfer.export_chunks(tenant_id, with_files):
            await stream.send_bytes(chunk)

    @staticmethod
    def _log_error(err: BaseException) -> None:
        log.error("request failed: %r", err, exc_info=err)
