"""The control plane's HTTP API under ``/api/cp/`` (see ``openapi.py`` for the reference document).

Writes become Raft commands (:meth:`RaftMember.submit`); pysyncobj forwards a follower's command to the
leader, and the answer is sent only once the command is committed and applied on this member, so a
client that got 200 can read its write back from this member. Reads are served from this member's copy.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import bcrypt

from pbfast.cluster.heartbeat import Assignments, FirstSuperuser, Heartbeat, HeartbeatAnswer, WireError
from pbfast.cluster.tenant_record import TenantRecord, new_tenant
from pbfast.control_plane.node_client import (
    RELEASE_TIMEOUT_SECONDS,
    RESTORE_CHECK_TIMEOUT_SECONDS,
    NodeClient,
    NodeError,
)
from pbfast.control_plane.placement import assigned_counts, place
from pbfast.control_plane.raft import COMMAND_TIMEOUT_SECONDS, CommandFailed, RaftMember
from pbfast.control_plane.registry import NODE_UP
from pbfast.control_plane.routes import RouteFeed
from pbfast.control_plane.validation import (
    parse_move,
    parse_node_registration,
    parse_restore,
    parse_superuser,
    parse_tenant_create,
    parse_tenant_update,
)
from pbfast.http import ApiError, Request
from pbfast.incarnations import Life, life_at
from pbfast.logs import component_logger
from pbfast.primitives import is_valid_tenant_id
from pbfast.timefmt import format_datetime, format_rfc3339

__all__ = ["RESTORE_WORST_CASE_SECONDS", "ControlPlaneApi", "tenant_json"]

log = component_logger("ControlPlane")

BCRYPT_COST = 10  # PocketBase's default password cost
MAX_PER_PAGE = 1000
MOVE_RELEASE_TIMEOUT_SECONDS = RELEASE_TIMEOUT_SECONDS  # a node's release: final sync (30 s) plus unregister
PLACEMENT_WAIT_SECONDS = 5.0
# The trial restore(s) of an in-place restore, all together: the incarnation's replica, then maybe its seed's.
RESTORE_TRIAL_TIMEOUT_SECONDS = RESTORE_CHECK_TIMEOUT_SECONDS + 5
# The longest an in-place restore request can take here: the wait for the tenant's node, the release, the
# trial, and at most six Raft commands (mark, commit, barrier, and putting the tenant back: assign twice,
# clear). Clients must wait longer (pbfast.operator_cli.RESTORE_REQUEST_TIMEOUT_SECONDS).
RESTORE_WORST_CASE_SECONDS = (PLACEMENT_WAIT_SECONDS + MOVE_RELEASE_TIMEOUT_SECONDS + RESTORE_TRIAL_TIMEOUT_SECONDS
                              + 6 * COMMAND_TIMEOUT_SECONDS)
NO_REPLICA = "validation_no_replica"  # the node's restore-check: nothing of that incarnation was ever replicated

_HTTP_ERRORS = {"not_found": 404, "conflict": 409, "invalid": 400}

T = TypeVar("T")


def tenant_json(tenant: TenantRecord) -> dict[str, Any]:
    """The public JSON form of a tenant record (never its superuser's password hash)."""
    return tenant.to_json()


def node_json(node: dict[str, Any], assigned: int) -> dict[str, Any]:
    return {
        "id": node["id"],
        "address": node["address"],
        "status": node["status"],
        "maxTenants": node["maxTenants"],
        "assignedTenants": assigned,
        "openTenants": node["openTenants"],
        "load": round(assigned / max(1, node["maxTenants"]), 4),
        "registeredAt": format_datetime(node["registeredAt"]),
        "lastHeartbeatAt": format_datetime(node["lastHeartbeatAt"]),
    }


def new_incarnation(now: float) -> str:
    """A fresh incarnation id (the replica path of one life of a tenant): time-ordered, then random."""
    return f"{int(now * 1000):x}-{secrets.token_hex(4)}"


def _window_start(now: float) -> int:
    day = 86400
    return int(now) - int(now) % day


class ControlPlaneApi:
    """Handlers of ``/api/cp/...``. Thread-safety: event loop only; reads the registry's replicated state."""

    def __init__(self, member: RaftMember, feed: RouteFeed, nodes: NodeClient, node_timeout: float = 5.0) -> None:
        self.member = member
        self.node_timeout = node_timeout  # sent with every heartbeat answer: the node's lease depends on it
        self.registry = member.registry
        self.feed = feed
        self.nodes = nodes

    async def _commit(self, command: Any, *args: Any) -> Any:
        try:
            outcome, value = await self.member.submit(command, *args)
        except CommandFailed as err:
            raise ApiError(503, f"The change was not committed: {err}. Retry the request.") from err
        if outcome != "ok":
            raise ApiError(_HTTP_ERRORS.get(outcome, 400), value)
        return value

    def _tenant(self, tenant_id: str) -> TenantRecord:
        tenant = self.registry.tenant_record(tenant_id) if is_valid_tenant_id(tenant_id) else None
        if tenant is None:
            raise ApiError(404, "Tenant not found.")
        return tenant

    async def _commit_tenant(self, command: Any, *args: Any) -> TenantRecord:
        """:meth:`_commit` of a command whose value is a tenant record (stored form)."""
        return TenantRecord.from_stored(await self._commit(command, *args))

    # ---- tenants --------------------------------------------------------------------------------

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
        tenant = await self._commit_tenant(self.registry.create_tenant, record)
        log.info("created tenant %s on node %s", tenant.id, tenant.node_id or "(none yet)")
        if superuser is not None and tenant.node_id:
            # Best effort now; otherwise the node applies it when it creates the tenant's database.
            try:
                await self._node_superuser(tenant, superuser.email, superuser.password_hash)
            except ApiError as err:
                log.warning("tenant %s: superuser not set yet (%s); the node sets it on first use",
                            tenant.id, err.message)
        request.send_json(200, tenant_json(tenant))

    async def _node_address(self, tenant: TenantRecord, wait: float = PLACEMENT_WAIT_SECONDS) -> str:
        """The address of the tenant's live node, waiting a little for a placement in progress."""
        deadline = time.monotonic() + wait
        while True:
            current = self.registry.tenant_record(tenant.id) or tenant
            node = self.registry.node(current.node_id or "")
            if node is not None and node["status"] == NODE_UP and not current.moving:
                return str(node["address"])
            if time.monotonic() >= deadline:
                raise ApiError(503, "The tenant's node is not available; retry shortly.",
                               headers=[("retry-after", "2")])
            await asyncio.sleep(0.05)

    async def _node_superuser(self, tenant: TenantRecord, email: str, password_hash: str) -> None:
        try:
            address = await self._node_address(tenant)
            await self.nodes.upsert_superuser(address, tenant.id, email, password_hash)
        except NodeError as err:
            raise ApiError(err.status if err.status < 500 else 503, f"The tenant's node refused: {err}") from err

    async def upsert_superuser(self, request: Request) -> None:
        tenant = self._tenant(request.params["id"])
        superuser = parse_superuser(await request.json_object())
        hashed = await asyncio.to_thread(bcrypt.hashpw, superuser["password"].encode(), bcrypt.gensalt(BCRYPT_COST))
        await self._node_superuser(tenant, superuser["email"], hashed.decode())
        log.info("tenant %s: superuser %s upserted", tenant.id, superuser["email"])
        request.send_json(200, {"tenantId": tenant.id, "email": superuser["email"]})

    async def import_data(self, request: Request) -> None:
        """Stream an uploaded PocketBase data.db to the tenant's node (a tenant without data only)."""
        tenant = self._tenant(request.params["id"])
        address = await self._node_address(tenant)
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
        request.send_json(200, tenant_json(self._tenant(tenant.id)))

    async def export_data(self, request: Request) -> None:
        """A consistent snapshot of the tenant's data.db, streamed from its node."""
        tenant = self._tenant(request.params["id"])
        chunks = self.nodes.export_chunks(await self._node_address(tenant), tenant.id)
        try:
            first = await anext(chunks, b"")
        except NodeError as err:
            raise ApiError(err.status if err.status < 500 else 503, f"Export failed: {err}") from err
        stream = request.proto.response_stream(  # type: ignore[attr-defined]
            200, [("content-type", "application/vnd.sqlite3"),
                  ("content-disposition", f'attachment; filename="{tenant.id}-data.db"')])
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
        request.send_json(200, tenant_json(self._tenant(request.params["id"])))

    async def update_tenant(self, request: Request) -> None:
        tenant_id = request.params["id"]
        self._tenant(tenant_id)
        changes = parse_tenant_update(await request.json_object())
        tenant = await self._commit_tenant(self.registry.update_tenant, tenant_id, changes, time.time())
        log.info("updated tenant %s: %s", tenant_id, ", ".join(sorted(changes)) or "nothing")
        request.send_json(200, tenant_json(tenant))

    async def delete_tenant(self, request: Request) -> None:
        tenant_id = request.params["id"]
        self._tenant(tenant_id)
        await self._commit(self.registry.delete_tenant, tenant_id, time.time())
        log.info("deleted tenant %s", tenant_id)
        request.proto.response_empty(204, [])

    async def move_tenant(self, request: Request) -> None:
        tenant_id = request.params["id"]
        tenant = self._tenant(tenant_id)
        target_id = parse_move(await request.json_object())
        target = self.registry.node(target_id)
        if target is None:
            raise ApiError(400, "Failed to validate the submitted data.",
                           {"nodeId": {"code": "validation_unknown_node", "message": "Unknown node."}})
        if target["status"] != NODE_UP:
            raise ApiError(409, f"Node {target_id!r} is down.")
        if tenant.node_id == target_id:
            request.send_json(200, tenant_json(tenant))
            return
        if tenant.moving:
            raise ApiError(409, "The tenant is already moving.")
        epoch, source_id = tenant.epoch, tenant.node_id
        since = time.time()
        await self._mark_moving(tenant_id, target_id, epoch, since)
        released = False  # True also when the node may have released it (it did not answer)
        try:
            source = self.registry.node(source_id or "")
            if source is not None and source["status"] == NODE_UP:
                released = True
                try:
                    await asyncio.wait_for(self.nodes.release(source["address"], tenant_id, epoch),
                                           MOVE_RELEASE_TIMEOUT_SECONDS)
                except (NodeError, TimeoutError) as err:
                    # Moving anyway would let the next node restore a replica without the source's last
                    # acknowledged writes (and two nodes write one replica path): the move is not made.
                    released = not (isinstance(err, NodeError) and err.answered)
                    log.warning("node %s did not release tenant %s: %s; the move is not made",
                                source["id"], tenant_id, err)
                    raise ApiError(503, f"Node {source['id']!r} could not hand the tenant over ({err or 'timed out'}); "
                                        "the move was not made. Retry later.") from err
            moved: list[str] = await self._commit_settled(
                tenant_id, lambda t: [tenant_id] if t.node_id == target_id and t.epoch == epoch + 1 else None,
                list, self.registry.assign, [(tenant_id, target_id, epoch)], time.time())
        except BaseException:
            if released:
                await self._serve_again(tenant_id, source_id, epoch, since)
            else:
                await self._clear_moving(tenant_id, epoch, since)
            raise
        if tenant_id not in moved:
            if released:
                await self._serve_again(tenant_id, source_id, epoch, since)
            else:
                await self._clear_moving(tenant_id, epoch, since)
            raise ApiError(409, "The tenant or the target node changed meanwhile; try again.")
        log.info("moved tenant %s from %s to %s", tenant_id, source_id, target_id)
        request.send_json(200, tenant_json(self._tenant(tenant_id)))

    async def restore_tenant(self, request: Request) -> None:
        """Roll the tenant back, in place, to its state at ``at``: a new incarnation seeded from the one
        live at that time, on the same node, under a new epoch (see docs/architecture.md).

        Mark the tenant moving, have its node release it (the old incarnation's replica is frozen from then
        on: nothing writes, compacts or prunes it), try the restore on the node, commit. The tenant is not
        served from the release on; if the trial or the commit fails it is put back as it was."""
        tenant_id = request.params["id"]
        tenant = self._tenant(tenant_id)
        at, moment = parse_restore(await request.json_object(), tenant.created_at, time.time())
        if tenant.moving:
            raise ApiError(409, "The tenant is moving; restore it once the move is over.")
        address = await self._node_address(tenant)
        tenant = self._tenant(tenant_id)  # as it is now: the wait for a node may have taken a while
        if tenant.moving:
            raise ApiError(409, "The tenant is moving; restore it once the move is over.")
        node_id, epoch = tenant.node_id, tenant.epoch
        node = self.registry.node(node_id or "")  # the node of this very record (a move may have come between)
        if node is None or node["status"] != NODE_UP:
            raise ApiError(503, "The tenant's node is not available; retry shortly.", headers=[("retry-after", "2")])
        address = str(node["address"])
        lives = tenant.lives
        life = life_at(lives, moment)
        if life is None:
            raise ApiError(400, "Failed to validate the submitted data.", {"at": {
                "code": "validation_min_date_constraint",
                "message": f"No incarnation of the tenant kept in its history was live at {at} (the oldest "
                           f"kept began at {format_rfc3339(lives[0]['startedAt'])})."}})
        since = time.time()
        await self._mark_moving(tenant_id, node_id, epoch, since)
        try:
            await asyncio.wait_for(self.nodes.release(address, tenant_id, epoch), MOVE_RELEASE_TIMEOUT_SECONDS)
        except BaseException as err:
            if isinstance(err, NodeError) and err.answered:  # the node refused: it serves the tenant as before
                await self._clear_moving(tenant_id, epoch, since)
            else:  # no answer: it may have released the tenant, so only a new epoch has it served again
                await self._serve_again(tenant_id, node_id, epoch, since)
            if isinstance(err, (NodeError, TimeoutError)):
                # The node keeps writing the current incarnation: starting the new one now would let both
                # exist at once, and lose the node's last acknowledged writes from the ended one.
                log.warning("node %s did not release tenant %s for a restore: %s; the restore is not made",
                            node_id, tenant_id, err)
                raise ApiError(503, f"Node {node_id!r} could not hand the tenant over ({err or 'timed out'}); "
                                    "the restore was not made. Retry later.") from err
            raise
        # Released: nothing writes, compacts or prunes the old incarnation's replica any more, so the trial
        # sees exactly the state the new incarnation will start from. Any failure now puts the tenant back.
        incarnation = new_incarnation(time.time())
        try:
            seed = await self._trial_restore(address, tenant_id, life, at)
            restored = await self._commit_settled(
                tenant_id, lambda t: t if t.incarnation == incarnation else None, TenantRecord.from_stored,
                self.registry.update_tenant_with_new_incarnation, tenant_id, epoch, incarnation, seed, time.time())
        except BaseException:
            await self._serve_again(tenant_id, node_id, epoch, since)
            raise
        log.info("restored tenant %s in place to %s: incarnation %s (seeded from %s at %s) on node %s, epoch %d",
                 tenant_id, at, restored.incarnation, seed["incarnation"], seed["at"], node_id, restored.epoch)
        request.send_json(200, tenant_json(restored))

    async def _trial_restore(self, address: str, tenant_id: str, life: Life, at: str) -> dict[str, str]:
        """Have the node restore ``life``'s replica at ``at`` as a trial and return the seed for the new
        incarnation. Only when nothing of ``life`` was ever replicated (the node says
        ``validation_no_replica``: it was never written before it ended, or it has just begun) is its
        state at any time its seed's, and that seed is tried instead. A replica that holds no restorable
        state at ``at`` (pruned, or before its first file) refuses the restore (400 on ``at``); any other
        answer of the node is its problem, not the operator's (503). All trials together take at most
        :data:`RESTORE_TRIAL_TIMEOUT_SECONDS`."""
        candidates = [{"incarnation": life["incarnation"], "at": at}]
        if life["seed"] is not None:
            candidates.append({"incarnation": life["seed"]["incarnation"], "at": life["seed"]["at"]})
        deadline = time.monotonic() + RESTORE_TRIAL_TIMEOUT_SECONDS
        for index, seed in enumerate(candidates):
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                size = await asyncio.wait_for(
                    self.nodes.restore_check(address, tenant_id, seed["incarnation"], seed["at"], timeout=remaining),
                    remaining)
            except TimeoutError as err:
                raise ApiError(503, f"The trial restore of tenant {tenant_id!r} at {at} timed out; the restore "
                                    "was not made. Retry later.", headers=[("retry-after", "5")]) from err
            except NodeError as err:
                refusal = self._trial_refused(tenant_id, at, seed, err, index + 1 < len(candidates))
                if refusal is not None:
                    raise refusal from err
                log.info("tenant %s: nothing of incarnation %s was ever replicated; its state at %s is its seed's, "
                         "%s at %s", tenant_id, seed["incarnation"], at, candidates[index + 1]["incarnation"],
                         candidates[index + 1]["at"])
                continue
            log.info("tenant %s: trial restore of incarnation %s at %s passed (%d bytes)", tenant_id,
                     seed["incarnation"], seed["at"], size)
            return seed
        raise AssertionError("unreachable: the last candidate returns or raises")

    @staticmethod
    def _trial_refused(tenant_id: str, at: str, seed: dict[str, str], err: NodeError,
                       seed_next: bool) -> ApiError | None:
        """What a refused trial of ``seed`` means: None (no replica of it at all, and a seed to try next), a
        400 on ``at`` (no restorable state then), or a 503 (the node's trouble)."""
        if err.status == 400 and err.field_code("incarnation") == NO_REPLICA:
            if seed_next:
                return None
            return ApiError(400, f"The tenant cannot be restored to {at}: nothing of incarnation "
                                 f"{seed['incarnation']} was ever replicated.", {"at": {
                                     "code": "validation_restore_unavailable",
                                     "message": f"Not restorable: there is no replica of incarnation "
                                                f"{seed['incarnation']} ({err})."}})
        if err.status == 400 and err.field_code("at") is not None:
            return ApiError(400, f"The tenant cannot be restored to {at}: {err}", {"at": {
                "code": "validation_restore_unavailable",
                "message": f"Not restorable: the replica of incarnation {seed['incarnation']} holds no "
                           f"restorable state at {seed['at']} (any more) ({err})."}})
        return ApiError(503, f"The trial restore of tenant {tenant_id!r} at {at} failed: the node answered "
                             f"{err.status} ({err}); the restore was not made. Retry later.",
                        headers=[("retry-after", "5")])

    async def _mark_moving(self, tenant_id: str, target_id: str | None, epoch: int, since: float) -> None:
        """Set the tenant's move marker (409 when another move or restore holds it). A command whose outcome
        is unknown may still apply: the marker is then cleared again (or, failing that, by the leader)."""
        try:
            outcome, value = await self.member.submit(self.registry.set_moving, tenant_id, target_id, epoch, since)
        except CommandFailed as err:
            await self._clear_moving(tenant_id, epoch, since)
            raise ApiError(503, f"The change was not committed: {err}. Retry the request.") from err
        if outcome != "ok":
            raise ApiError(_HTTP_ERRORS.get(outcome, 400), value)

    async def _commit_settled(self, tenant_id: str, settled: Callable[[TenantRecord], T | None],
                              value_of: Callable[[Any], T], command: Any, *args: Any) -> T:
        """:meth:`_commit` for the last step of a move or restore, whose value is ``value_of`` the command's. A
        command whose outcome is unknown (``CommandFailed``: a leader change, say) may have committed anyway:
        after a barrier (everything committed before it is applied here), the tenant is read back and given
        to ``settled``, which returns the value if the step was made, else None."""
        try:
            outcome, value = await self.member.submit(command, *args)
        except CommandFailed as err:
            try:
                await self.member.submit(self.registry.barrier)
            except CommandFailed as again:
                raise ApiError(503, f"The change may or may not have been committed ({err}; then {again}); "
                                    "read the tenant to see.") from err
            current = self.registry.tenant_record(tenant_id)
            made = settled(current) if current is not None else None
            if made is not None:
                log.info("tenant %s: the change did commit after all (%s)", tenant_id, err)
                return made
            raise ApiError(503, f"The change was not committed: {err}. Retry the request.") from err
        if outcome != "ok":
            raise ApiError(_HTTP_ERRORS.get(outcome, 400), value)
        return value_of(value)

    async def _serve_again(self, tenant_id: str, node_id: str | None, epoch: int, since: float) -> None:
        """After the node released the tenant but the move or restore was not made: place it on the same
        node under a new epoch (the node never serves an epoch it released), incarnation unchanged. Only
        while our marker is on it; tried twice. If it cannot be done, the marker stays and the leader puts
        the tenant back once the marker is stale (:data:`pbfast.control_plane.reconciler.STALE_MOVE_SECONDS`)."""
        for attempt in (1, 2):
            try:
                outcome, moved = await self.member.submit(self.registry.assign, [(tenant_id, node_id, epoch)],
                                                          time.time(), False, True, since)
            except CommandFailed as err:
                log.warning("tenant %s: released for a move or restore that was not made, and not placed "
                            "again (attempt %d): %s", tenant_id, attempt, err)
                continue
            if outcome != "ok" or tenant_id not in moved:
                # Changed meanwhile (whoever changed it placed it), or the node is down now: without the
                # marker the leader places it like any tenant of a down node.
                await self._clear_moving(tenant_id, epoch, since)
            else:
                log.info("tenant %s: placed on node %s again under epoch %d", tenant_id, node_id, epoch + 1)
            return
        log.warning("tenant %s stays marked moving; the leader puts it back once the marker is stale", tenant_id)

    async def _clear_moving(self, tenant_id: str, epoch: int, since: float | None) -> None:
        try:
            outcome, value = await self.member.submit(self.registry.set_moving, tenant_id, None, epoch, since)
        except CommandFailed as err:
            log.warning("could not clear the move marker of tenant %s: %s", tenant_id, err)
            return
        if outcome != "ok" and outcome != "not_found":
            log.info("tenant %s: move marker not cleared: %s", tenant_id, value)

    # ---- nodes ----------------------------------------------------------------------------------

    async def list_nodes(self, request: Request) -> None:
        counts = assigned_counts(self.registry.tenant_records())
        nodes = sorted(self.registry.nodes_snapshot().values(), key=lambda n: n["id"])
        request.send_json(200, {"items": [node_json(n, counts.get(n["id"], 0)) for n in nodes]})

    async def register_node(self, request: Request) -> None:
        node_id = request.params["id"]
        if not is_valid_tenant_id(node_id):
            raise ApiError(400, "Invalid node id: it must be a DNS label.")
        address, max_tenants, instance = parse_node_registration(await request.json_object())
        node = await self._commit(self.registry.register_node, node_id, address, max_tenants, time.time(), instance,
                                  self.node_timeout)
        log.info("node %s registered at %s (max %d open tenants)", node_id, address, max_tenants)
        request.send_json(200, node_json(node, assigned_counts(self.registry.tenant_records()).get(node_id, 0)))

    async def heartbeat(self, request: Request) -> None:
        node_id = request.params["id"]
        if self.registry.node(node_id) is None:
            raise ApiError(404, "Unknown node; register first.")
        try:
            heartbeat = Heartbeat.from_json(await request.json_object(limit=64 << 20))
        except WireError as err:
            raise ApiError(400, "Failed to validate the submitted data.",
                           {err.field: {"code": err.code, "message": str(err)}}) from None
        usage = {tenant_id: entry.counters() for tenant_id, entry in heartbeat.usage.items()}
        await self._commit(self.registry.heartbeat, node_id, time.time(), heartbeat.open_tenants, usage,
                           heartbeat.instance_id)
        for tenant_id in heartbeat.superusers_applied:  # the node has the first superuser now: forget its hash
            tenant = self.registry.tenant_record(tenant_id)
            if tenant is not None and tenant.superuser and tenant.node_id == node_id:
                await self._commit(self.registry.update_tenant, tenant_id, {"superuser": None}, time.time())
        request.send_json(200, self.assignments_of(node_id).to_json())

    async def push_pending_superuser(self, tenant_id: str) -> None:
        """After a placement: hand the tenant's first superuser to its node now rather than at the next
        heartbeat, so the owner can log in as soon as the tenant answers."""
        tenant = self.registry.tenant_record(tenant_id)
        if tenant is None or tenant.superuser is None or not tenant.node_id:
            return
        try:
            await self._node_superuser(tenant, tenant.superuser.email, tenant.superuser.password_hash)
        except ApiError as err:
            log.warning("tenant %s: first superuser not handed over yet: %s", tenant_id, err.message)

    def assignments_of(self, node_id: str) -> HeartbeatAnswer:
        """What a node must serve: its tenants with epoch, status and quotas, and tenants it must drop."""
        tenants = {t.id: t.assignment for t in self.registry.tenant_records(node_id)}
        deleted = sorted(tid for tid, stone in self.registry.tombstones_snapshot().items() if stone["nodeId"] == node_id)
        return HeartbeatAnswer(node_id, Assignments(tenants, deleted), self.registry.routes_version,
                               self.node_timeout)

    async def remove_node(self, request: Request) -> None:
        node_id = request.params["id"]
        node = self.registry.node(node_id)
        if node is None:
            raise ApiError(404, "Unknown node.")
        if node["status"] == NODE_UP:
            raise ApiError(409, "The node is up; stop it first (its tenants are re-placed once it is down).")
        if assigned_counts(self.registry.tenant_records()).get(node_id):
            raise ApiError(409, "Tenants are still assigned to the node; wait until they are re-placed.")
        await self._commit(self.registry.remove_node, node_id)
        request.proto.response_empty(204, [])

    # ---- routes ---------------------------------------------------------------------------------

    async def routes(self, request: Request) -> None:
        since = request.query_int("since", -1, -1, 2**62)
        timeout = request.query_int("timeout", 25, 0, 60)
        if since >= 0:
            await self.feed.wait_newer_than(since, timeout)
        request.send_json(200, self.feed.table())
