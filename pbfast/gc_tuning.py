"""How a long-running pbfast process runs Python's cyclic garbage collector (the server's main process and
a tenant node's worker processes alike)."""

from __future__ import annotations

import asyncio
import gc

__all__ = ["collect_when_idle", "tune_for_serving"]

GC_GEN0_THRESHOLD = 50_000
# An idle process allocates too little to reach GC_GEN0_THRESHOLD for many minutes, while every HTTP call
# it makes (heartbeats, route long-polls, Litestream's socket: httpx responses are reference cycles) leaves
# cyclic garbage holding its bodies: measured +3 MB/min of RSS on a node with 60 idle tenants. So when no
# collection has run for this long, the young generations are collected (cheap: idle means few objects).
GC_IDLE_COLLECT_SECONDS = 10.0
GC_IDLE_FULL_EVERY = 30  # the startup objects are frozen, so a full collection is cheap too


def tune_for_serving() -> None:
    """Start-up objects live for the whole run: keep them out of the collector's scans, and collect young
    objects less often (measured on the gateway: p99 14.5 -> 5.3 ms, ~10% more requests/s)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)


def _collections() -> int:
    return sum(generation["collections"] for generation in gc.get_stats())


async def collect_when_idle(interval: float = GC_IDLE_COLLECT_SECONDS) -> None:
    """Collect generations 0 and 1 whenever the collector has not run by itself for ``interval`` seconds, and
    every :data:`GC_IDLE_FULL_EVERY`-th time all of them (what such a collection found still in use, e.g. a
    request in flight, is garbage later too). A busy process reaches the thresholds first and is left alone."""
    seen, idle_rounds = _collections(), 0
    while True:
        await asyncio.sleep(interval)
        if _collections() == seen:
            idle_rounds += 1
            gc.collect(2 if idle_rounds % GC_IDLE_FULL_EVERY == 0 else 1)
        seen = _collections()
