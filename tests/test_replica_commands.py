"""The node runs ``litestream`` commands (restore, ``ltx`` listings: every first open of a tenant whose local copy
has no marker, every cold open) without stopping its event loop: uvloop's own spawn forks the node on the loop
and waits there until the child has exec'd, which at a node's size took 0.2-0.5 s per command; a few first
opens at once then kept heartbeats from being acknowledged, and the node fenced itself
(benchmarks/RESULTS.md, "1,000 tenants")."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import uvloop

from pbfast.tenant_node.replica import Replicas, ReplicaStore

NODE_SIZE_MIB = 300  # resident memory of a node serving some hundred tenants (what a fork has to copy)
COMMANDS = 8
LONGEST_STALL_SECONDS = 0.5  # what a loaded machine adds to an idle loop stays below; the old spawn: 1.6-2.8 s


async def _longest_stall_while(work: asyncio.Future[object]) -> float:
    longest = 0.0
    while not work.done():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        longest = max(longest, time.perf_counter() - started)
    await work
    return longest


@pytest.mark.exclusive  # a loop stall is measured in wall-clock time
def test_litestream_commands_do_not_stop_the_event_loop(tmp_path: Path) -> None:
    resident = [bytearray(1 << 20) for _ in range(NODE_SIZE_MIB)]
    for block in resident:
        block[0] = 1  # touched: resident, as a node's heap is
    replicas = Replicas(ReplicaStore("unused", None, tmp_path / "replica"))

    async def run() -> tuple[float, list[bool]]:
        listings = asyncio.gather(*(replicas.has_replica(f"t{i}", "inc") for i in range(COMMANDS)))
        stall = await _longest_stall_while(listings)
        return stall, listings.result()

    stall, found = uvloop.run(run())
    assert found == [False] * COMMANDS  # the commands ran (no replica there)
    assert stall < LONGEST_STALL_SECONDS, f"the event loop stood still for {stall * 1000:.0f} ms"
    del resident
