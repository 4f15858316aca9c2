"""The tenants of ``/api/cp/tenants``: create (placed at once), read, list, update, delete, their first
superuser, and their data imported and exported through their node.

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import bcrypt

from pbfast.cluster.heartbeat import FirstSuperuser
from pbfast.cluster.tenant_record import TenantRecord, new_tenant
from pbfast.control_plane.api_context import ApiContext
from pbfast.control_plane.node_client import NodeError
from pbfast.control_plane.placement import assigned_counts, place
from pbfast.control_plane.validation import parse_superuser, parse_tenant_create, parse_tenant_update
from pbfast.http import ApiError, Request
from pbfast.logs import component_logger

__all__ = ["BCRYPT_COST", "MAX_PER_PAGE", "TenantsApi", "new_incarnation", "tenant_json"]

log = component_logger("ControlPlane")

BCRYPT_COST = 10  # PocketBase's default password cost
MAX_PER_PAGE = 1000


def tenant_json(tenant: TenantRecord) -> dict[str, Any]:
    """The public JSON form of a tenant record (never its superuser's password hash)."""
    return tenant.to_json()


def new_incarnation(now: float) -> str:
    """A fresh incarnation id (the replica path of one life of a tenant): time-ordered, then random."""
    return f"{int(now * 1000):x}-{secrets.token_hex(4)}"


def _window_start(now: float) -> int:
    day = 86400
    return int(now) - int(now) % day


class TenantsApi:
    """Handlers of the tenants' own routes."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.registry = context.registry
        self.nodes = context.nodes
        self.member = context.member

    async def create_tenant(self, request: Request) -> None:
        wanted, login = parse_tenant_create(await request.json_object())
        now = time.time()
        superuser = None
        if login is not None:
            hashed = await asyncio.to_thread(bcrypt.hashpw, login["password"].encode(), bcrypt.gensalt(BCRYPT_COST))
            superuser = FirstSuperuser(login["email"], hashed.decode())
        plan = place([wanted.id], self.registry.nodes_snapshot(), assigned_counts(self.registry.tenant_records()))
        # the incarnation: the replica path of this tenant's life
        record = new_tenant(wanted, plan[0][1] if plan else None, new_incarnation(now), superuser,
                            _window_start(now), now)
        tenant = await self.context.commit_tenant(self.registry.create_tenant, record)
        log.info("created tenant %s on node %s", tenant.id, tenant.node_id or "(none yet)")
        if superuser is not None and tenant.node_id:
            # Best effort now; otherwise the node applies it when it creates the tenant's database.
            try:
                await self.context.node_superuser(tenant, superuser.email, superuser.password_hash)
            except ApiError as err:
                log.warning("tenant %s: superuser not set yet (%s); the node sets it on first use",
                            tenant.id, err.message)
        request.send_json(200, tenant_json(tenant))

    async def upsert_superuser(self, request: Request) -> None:
        tenant = self.context.tenant(request.params["id"])
        superuser = parse_superuser(await request.json_object())
        hashed = await asyncio.to_thread(bcrypt.hashpw, superuser["password"].encode(), bcrypt.gensalt(BCRYPT_COST))
        await self.context.node_superuser(tenant, superuser["email"], hashed.decode())
        log.info("tenant %s: superuser %s upserted", tenant.id, superuser["email"])
        request.send_json(200, {"tenantId": tenant.id, "email": superuser["email"]})

    async def import_data(self, request: Request) -> None:
        """Stream an uploaded PocketBase data.db to the tenant's node (a tenant without data only)."""
        tenant = self.context.tenant(request.params["id"])
        address = await self.context.node_address(tenant)
        limit = tenant.storage_quota_bytes

        async def chunks() -> AsyncIterator[bytes]:
            received = 0
            async for chunk in request.proto:
                received += len(chunk)
                if limit is not None and received > limit:
                    raise ApiError(413, "The database is larger than the tenant's storage quota.")
                yield chunk

        try:
            await self.nodes.import_data(address, tenant.id, chunks())
        except NodeError as err:
            raise ApiError(err.status if err.status < 500 else 503, f"Import failed: {err}") from err
        log.info("tenant %s: database imported", tenant.id)
        request.send_json(200, tenant_json(self.context.tenant(tenant.id)))

    async def export_data(self, request: Request) -> None:
        """A consistent snapshot of the tenant's data.db, streamed from its node (``files=1``: a tar of it and
        the tenant's ``storage/``)."""
        tenant = self.context.tenant(request.params["id"])
        with_files = request.query("files") == "1"
        chunks = self.nodes.export_chunks(await self.context.node_address(tenant), tenant.id, with_files)
        try:
            first = await anext(chunks, b"")
        except NodeError as err:
            raise ApiError(err.status if err.status < 500 else 503, f"Export failed: {err}") from err
        kind, name = ("application/x-tar", "pb_data.tar") if with_files else ("application/vnd.sqlite3", "data.db")
        stream = request.proto.response_stream(  # type: ignore[attr-defined]
            200, [("content-type", kind), ("content-disposition", f'attachment; filename="{tenant.id}-{name}"')])
        try:
            await stream.send_bytes(first)
            async for chunk in chunks:
                await stream.send_bytes(chunk)
        except NodeError as err:  # headers are gone: all we can do is cut the stream short and log
            log.error("tenant %s: export interrupted: %s", tenant.id, err)

    async def list_tenants(self, request: Request) -> None:
        page = request.query_int("page", 1, 1, 10**9)
        per_page = request.query_int("perPage", 30, 1, MAX_PER_PAGE)
        status, node_id = request.query("status"), request.query("nodeId")
        tenants = sorted(self.registry.tenant_records(), key=lambda t: (t.created_at, t.id))
        if status:
            tenants = [t for t in tenants if t.status == status]
        if node_id:
            tenants = [t for t in tenants if t.node_id == node_id]
        start = (page - 1) * per_page
        request.send_json(200, {
            "page": page,
            "perPage": per_page,
            "totalItems": len(tenants),
            "totalPages": math.ceil(len(tenants) / per_page),
            "items": [tenant_json(t) for t in tenants[start:start + per_page]],
        })

    async def get_tenant(self, request: Request) -> None:
        request.send_json(200, tenant_json(self.context.tenant(request.params["id"])))

    async def update_tenant(self, request: Request) -> None:
        tenant_id = request.params["id"]
        self.context.tenant(tenant_id)
        changes = parse_tenant_update(await request.json_object())
        tenant = await self.context.commit_tenant(self.registry.update_tenant, tenant_id, changes, time.time())
        log.info("updated tenant %s: %s", tenant_id, ", ".join(sorted(changes)) or "nothing")
        request.send_json(200, tenant_json(tenant))

    async def delete_tenant(self, request: Request) -> None:
        tenant_id = request.params["id"]
        self.context.tenant(tenant_id)
        await self.context.commit(self.registry.delete_tenant, tenant_id, time.time())
        log.info("deleted tenant %s", tenant_id)
        request.proto.response_empty(204, [])
