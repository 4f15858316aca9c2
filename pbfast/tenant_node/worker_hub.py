"""The main process's answers to its workers (``--workers`` > 1), on a Unix socket in a private directory,
with the cluster token (:class:`~pbfast.tenant_node.worker_link.WorkerLink` is the other end):

- ``POST /tenants/{id}/ensure {"epoch", "counted"}``: admit a request the worker could not decide from the
  shared table (:meth:`Ownership.admit`, counting it against the quota unless the worker did) and open its
  tenant, exactly as a single-process node does before it runs a request; 200 ``{}`` once the tenant is
  served (the table says so too), else the answer for the client;
- ``POST /tenants/{id}/sync``: a durable write of the tenant was made: 200 once its state is confirmed in the
  replica, else 503.

Thread-safety: event loop only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbfast.http import ApiError, Guard, Handler, HTTPProtocol, Request, Router, Scope, bearer_token_matches
from pbfast.logs import component_logger
from pbfast.pocketbase.tenant import DATA_DB
from pbfast.tenant_node.ownership import moved
from pbfast.tenant_node.replica import ReplicationError

if TYPE_CHECKING:
    from pbfast.tenant_node.app import TenantNodeApp

__all__ = ["WorkerHub"]

log = component_logger("TenantNode")


class WorkerHub:
    def __init__(self, node: TenantNodeApp, cluster_token: str) -> None:
        self.node = node
        self._cluster_token = cluster_token
        self.router: Router[Handler] = Router(Guard(self._from_worker, "The request requires the cluster token."))
        self.router.add("POST", "/tenants/{id}/ensure", self._ensure)
        self.router.add("POST", "/tenants/{id}/sync", self._sync)

    def _from_worker(self, scope: Scope) -> bool:
        return bearer_token_matches(scope.headers.get("authorization"), self._cluster_token)

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto == "http":
            await self.router.dispatch(scope, proto, on_error=self._log_error)

    async def _ensure(self, request: Request) -> None:
        body = await request.json_object()
        epoch, counted = body.get("epoch"), body.get("counted")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0 or not isinstance(counted, bool):
            raise ApiError(400, "Invalid request.")
        await self.ensure(request.params["id"], epoch, counted)
        request.send_json(200, {})

    async def ensure(self, tenant_id: str, epoch: int, counted: bool) -> None:
        """Admit a request and open its tenant (as :meth:`Serving.serve_tenant` does before it runs one), or
        raise ApiError with the answer."""
        node = self.node
        if counted:
            node.ownership.check_lease()
            slot = node.slots[tenant_id]
        else:
            slot = node.ownership.admit(tenant_id, epoch)
        if slot.importing:
            raise ApiError(503, "The tenant is being imported; retry shortly.", headers=[("retry-after", "1")])
        pool = node.pool
        if node.shared is not None:
            pool.close_evicted(node.shared.sync_recency(pool.cache))
        _, evicted = pool.cache.acquire(tenant_id)
        pool.close_evicted(evicted)
        try:
            try:
                if slot.tenant is None or slot.superseded:
                    await pool.open_within(tenant_id, pool.open_wait_seconds)
            except ApiError:
                raise
            except Exception as err:  # noqa: BLE001 - answer clearly, keep the node up
                log.error("cannot open tenant %s: %r", tenant_id, err, exc_info=err)
                raise ApiError(503, "The tenant cannot be opened right now; retry.",
                               headers=[("retry-after", "1")]) from err
            if node.ownership.serves(slot, epoch) is None:
                raise moved()
        finally:
            try:
                pool.close_evicted(pool.cache.release(tenant_id))
            except KeyError:
                pass  # dropped (moved or deleted) meanwhile

    async def _sync(self, request: Request) -> None:
        tenant_id = request.params["id"]
        replicator = self.node.replicator
        if replicator is not None:
            try:
                await replicator.sync(self.node.copies.directory(tenant_id) / DATA_DB, wait=True)
            except ReplicationError as err:
                log.warning("tenant %s: durable write not confirmed by the replica: %s", tenant_id, err)
                raise ApiError(503, "The replica did not confirm the change.", headers=[("retry-after", "2")]) from err
        request.send_json(200, {})

    @staticmethod
    def _log_error(err: BaseException) -> None:
        log.error("a worker's request failed: %r", err, exc_info=err)
