"""A tenant node as the control plane's registry knows it, typed.

The registry stores nodes as plain JSON-shaped dicts: that is what its Raft log and snapshots hold, and their
form must not change under a running cluster. Everything outside the registry's own commands reads them as
:class:`NodeRecord`.

Thread-safety: immutable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["NODE_DOWN", "NODE_UP", "NodeRecord"]

NODE_UP = "up"
NODE_DOWN = "down"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: str
    address: str  # http(s)://host:port where gateways and the control plane reach it
    max_tenants: int  # its --max-tenants: tenants it keeps open at once
    status: str  # NODE_UP or NODE_DOWN
    registered_at: float
    last_heartbeat_at: float
    open_tenants: int
    instance_id: str | None  # the process holding the id (None: registered before instances existed)

    @property
    def up(self) -> bool:
        return self.status == NODE_UP

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> NodeRecord:
        return cls(id=stored["id"], address=stored["address"], max_tenants=int(stored["maxTenants"]),
                   status=stored["status"], registered_at=float(stored["registeredAt"]),
                   last_heartbeat_at=float(stored["lastHeartbeatAt"]), open_tenants=int(stored["openTenants"]),
                   instance_id=stored.get("instanceId"))
