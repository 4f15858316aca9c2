"""Call one native primitive in a tight loop (for callgrind / perf / py-spy).

Usage: python3 profiling/primitives_loop.py {resolve,resolve-host,quota,cache,breaker} [iterations]
"""

from __future__ import annotations

import sys

from pbfast.primitives import CircuitBreakers, QuotaCounters, RoutingTable, TenantCache


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "resolve"
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    ids = [f"tenant-{i}" for i in range(10_000)]
    if what.startswith("resolve"):
        table = RoutingTable("pb.example.com")
        table.replace([(tid, "http://10.0.0.1:8070", 1, True) for tid in ids], 1)
        if what == "resolve":
            paths = [f"/t/{tid}/api/collections/posts/records" for tid in ids[:1024]]
            for i in range(iterations):
                table.resolve(paths[i & 1023], "127.0.0.1:8080")
        else:
            hosts = [f"{tid}.pb.example.com:8080" for tid in ids[:1024]]
            for i in range(iterations):
                table.resolve("/api/collections/posts/records", hosts[i & 1023])
    elif what == "quota":
        quotas = QuotaCounters()
        for i in range(iterations):
            quotas.try_acquire(ids[i & 1023])
    elif what == "cache":
        cache = TenantCache(1000)
        for i in range(iterations):
            tid = ids[i % 1200]
            cache.acquire(tid)
            cache.release(tid)
    elif what == "breaker":
        breakers = CircuitBreakers()
        for i in range(iterations):
            node = ids[i & 7]
            if breakers.allow(node):
                breakers.record_success(node)
    else:
        raise SystemExit(f"unknown primitive {what!r}")


if __name__ == "__main__":
    main()
