"""PocketBase's realtime API for a tenant: SSE streams (``GET /api/realtime``), subscriptions (``POST
/api/realtime``) and the record events they carry. See docs/realtime.md.

- :mod:`~pbfast.pocketbase.realtime.subscriptions`: clients, topics and their options, SSE frames;
- :mod:`~pbfast.pocketbase.realtime.fanout`: who receives a record change, and what (rules per client);
- :mod:`~pbfast.pocketbase.realtime.hub`: the node's clients by tenant, the streams, limits, the bus.

Every writer of records calls :func:`record_changed` after its transaction committed, once per record, in
commit order; that is the only way events come about.
"""

from __future__ import annotations

from typing import Any

from pbfast.logs import component_logger
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.realtime.fanout import RecordChange
from pbfast.pocketbase.realtime.hub import RealtimeBus, RealtimeHub, RealtimeLimits
from pbfast.pocketbase.tenant import Tenant

__all__ = ["RealtimeBus", "RealtimeHub", "RealtimeLimits", "RecordChange", "record_changed"]

log = component_logger("Realtime")


def record_changed(tenant: Tenant, action: str, collection: Collection, row: dict[str, Any]) -> None:
    """The hook every record write calls once its transaction has committed (on the thread holding the
    tenant's connection, in its turn): ``action`` is ``create``, ``update`` or ``delete``, ``row`` the stored
    row (for a delete: as it was before). Never raises: a failed fan-out is logged, the write stands."""
    bus = tenant.realtime
    if bus is None:
        return
    try:
        bus.publish(tenant, RecordChange(action, collection.id, dict(row)))
    except Exception as err:  # noqa: BLE001 - the write is committed; its answer must not change
        log.error("tenant %s: realtime %s of %s/%s not published: %r", tenant.id, action, collection.name,
                  row.get("id"), err, exc_info=err)
