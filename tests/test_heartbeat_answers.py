"""A node reads each heartbeat answer's assignments against the previous answer's: an entry whose JSON did not
change is the assignment already read (every answer repeats all of them each second), any change is read and
checked again, and an entry the control plane stopped sending is forgotten."""

from __future__ import annotations

import json
from typing import Any

from pbfast.cluster.heartbeat import HeartbeatAnswer, LastRead, TenantAssignment


def _answer(tenants: dict[str, Any]) -> object:
    """As the node receives it: decoded from the wire, new objects every time."""
    return json.loads(json.dumps({"nodeId": "n1", "tenants": tenants, "deleted": [], "routesVersion": 1,
                                  "nodeTimeoutSeconds": 10}))


def _entry(epoch: int, **changes: object) -> dict[str, Any]:
    return {**TenantAssignment(epoch=epoch, placed_since=1, incarnation="i1").to_json(), **changes}


def test_an_unchanged_entry_is_the_assignment_already_read() -> None:
    last_read = LastRead()
    first = HeartbeatAnswer.from_json(_answer({"a": _entry(3), "b": _entry(4)}), last_read)
    second = HeartbeatAnswer.from_json(_answer({"a": _entry(3), "b": _entry(5)}), last_read)
    assert second.assignments.tenants["a"] is first.assignments.tenants["a"]
    assert second.assignments.tenants["b"].epoch == 5  # a new epoch (a fence, a move) is read
    assert second == HeartbeatAnswer.from_json(_answer({"a": _entry(3), "b": _entry(5)}))  # as if read afresh


def test_a_changed_entry_is_checked_again() -> None:
    last_read = LastRead()
    HeartbeatAnswer.from_json(_answer({"a": _entry(3), "b": _entry(3)}), last_read)
    answer = HeartbeatAnswer.from_json(_answer({"a": _entry(3, incarnation="../x"), "b": _entry(3)}), last_read)
    assert "a" not in answer.assignments.tenants and "unusable incarnation" in answer.assignments.unusable["a"]
    answer = HeartbeatAnswer.from_json(_answer({"a": _entry(3, status="suspended")}), last_read)
    assert answer.assignments.tenants["a"].status == "suspended"
    assert set(last_read.entries) == {"a"}  # b is no longer assigned: forgotten
