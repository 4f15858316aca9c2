"""Handing a tenant over between nodes, or to a new life on its own node: ``/api/cp/tenants/{id}/move`` and
the in-place point-in-time restore ``/api/cp/tenants/{id}/restore`` (see docs/architecture.md).

Both follow one protocol: mark the tenant moving (one move or restore at a time), have its node release it
(a final sync; from then on nothing writes its replica), commit the new placement or incarnation; when a step
fails, the tenant is put back as it was (or, when that cannot be known, under a new epoch on the same node).

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pbfast.cluster.tenant_record import TenantRecord
from pbfast.control_plane.api_context import HTTP_ERRORS, PLACEMENT_WAIT_SECONDS, ApiContext
from pbfast.control_plane.node_client import RELEASE_TIMEOUT_SECONDS, RESTORE_CHECK_TIMEOUT_SECONDS, NodeError
from pbfast.control_plane.raft import COMMAND_TIMEOUT_SECONDS, CommandFailed
from pbfast.control_plane.tenants_api import new_incarnation, tenant_json
from pbfast.control_plane.validation import parse_move, parse_restore
from pbfast.http import ApiError, Request
from pbfast.incarnations import Life, life_at
from pbfast.logs import component_logger
from pbfast.timefmt import format_rfc3339

__all__ = ["MOVE_RELEASE_TIMEOUT_SECONDS", "RESTORE_TRIAL_TIMEOUT_SECONDS", "RESTORE_WORST_CASE_SECONDS",
           "HandoverApi"]

log = component_logger("ControlPlane")

MOVE_RELEASE_TIMEOUT_SECONDS = RELEASE_TIMEOUT_SECONDS  # a node's release: final sync (30 s) plus unregister
# The trial restore(s) of an in-place restore, all together: the incarnation's replica, then maybe its seed's.
RESTORE_TRIAL_TIMEOUT_SECONDS = RESTORE_CHECK_TIMEOUT_SECONDS + 5
# The longest an in-place restore request can take here: the wait for the tenant's node, the release, the
# trial, and at most six Raft commands (mark, commit, barrier, and putting the tenant back: assign twice,
# clear). Clients must wait longer (pbfast.operator_cli.RESTORE_REQUEST_TIMEOUT_SECONDS).
RESTORE_WORST_CASE_SECONDS = (PLACEMENT_WAIT_SECONDS + MOVE_RELEASE_TIMEOUT_SECONDS + RESTORE_TRIAL_TIMEOUT_SECONDS
                              + 6 * COMMAND_TIMEOUT_SECONDS)
NO_REPLICA = "validation_no_replica"  # the node's restore-check: nothing of that incarnation was ever replicated

T = TypeVar("T")


class HandoverApi:
    """Handlers of moves and in-place restores."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.registry = context.registry
        self.nodes = context.nodes
        self.member = context.member

    async def move_tenant(self, request: Request) -> None:
        tenant_id = request.params["id"]
        tenant = self.context.tenant(tenant_id)
        target_id = parse_move(await request.json_object())
        target = self.registry.node(target_id)
        if target is None:
            raise ApiError(400, "Failed to validate the submitted data.",
                           {"nodeId": {"code": "validation_unknown_node", "message": "Unknown node."}})
        if not target.up:
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
            if source is not None and source.up:
                released = True
                try:
                    await asyncio.wait_for(self.nodes.release(source.address, tenant_id, epoch),
                                           MOVE_RELEASE_TIMEOUT_SECONDS)
                except (NodeError, TimeoutError) as err:
                    # Moving anyway would let the next node restore a replica without the source's last
                    # acknowledged writes (and two nodes write one replica path): the move is not made.
                    released = not (isinstance(err, NodeError) and err.answered)
                    log.warning("node %s did not release tenant %s: %s; the move is not made",
                                source.id, tenant_id, err)
                    raise ApiError(503, f"Node {source.id!r} could not hand the tenant over ({err or 'timed out'}); "
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
        request.send_json(200, tenant_json(self.context.tenant(tenant_id)))

    async def restore_tenant(self, request: Request) -> None:
        """Roll the tenant back, in place, to its state at ``at``: a new incarnation seeded from the one
        live at that time, on the same node, under a new epoch (see docs/architecture.md).

        Mark the tenant moving, have its node release it (the old incarnation's replica is frozen from then
        on: nothing writes, compacts or prunes it), try the restore on the node, commit. The tenant is not
        served from the release on; if the trial or the commit fails it is put back as it was."""
        tenant_id = request.params["id"]
        tenant = self.context.tenant(tenant_id)
        at, moment = parse_restore(await request.json_object(), tenant.created_at, time.time())
        if tenant.moving:
            raise ApiError(409, "The tenant is moving; restore it once the move is over.")
        address = await self.context.node_address(tenant)
        tenant = self.context.tenant(tenant_id)  # as it is now: the wait for a node may have taken a while
        if tenant.moving:
            raise ApiError(409, "The tenant is moving; restore it once the move is over.")
        node_id, epoch = tenant.node_id, tenant.epoch
        node = self.registry.node(node_id or "")  # the node of this very record (a move may have come between)
        if node is None or not node.up:
            raise ApiError(503, "The tenant's node is not available; retry shortly.", headers=[("retry-after", "2")])
        address = node.address
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
            raise ApiError(HTTP_ERRORS.get(outcome, 400), value)

    async def _commit_settled(self, tenant_id: str, settled: Callable[[TenantRecord], T | None],
                              value_of: Callable[[Any], T], command: Any, *args: Any) -> T:
        """:meth:`ApiContext.commit` for the last step of a move or restore, whose value is ``value_of`` the command's. A
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
            raise ApiError(HTTP_ERRORS.get(outcome, 400), value)
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
