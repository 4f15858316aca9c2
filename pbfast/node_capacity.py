"""The default of ``--max-tenants``: how many tenants a node keeps open at once, from the machine's memory and
the open-file limit instead of a fixed number.

A node whose working set is larger than ``--max-tenants`` closes a tenant for nearly every request (a waited
final sync, Litestream's unregister and register, a checkpoint, the marker's durable writes): with 1,000
tenants served uniformly and the former fixed default of 500 a node answered 122 requests a second against
857 with all of them open, at 9x the CPU per request (benchmarks/RESULTS.md, "Many tenants"). An open tenant
costs little: ~1.0-1.2 MiB of the node's and Litestream's memory for the benchmark's small tenants (1,184 MiB
with 1,000 open, the process's own ~150 MiB included) and :data:`~pbfast.open_files.DESCRIPTORS_PER_OPEN_TENANT`
descriptors. So the default keeps as many open as a quarter of the memory allows at
:data:`MEMORY_PER_OPEN_TENANT` each (room for page caches of busier tenants) and the open-file limit holds,
within [:data:`MIN_DEFAULT`, :data:`MAX_DEFAULT`]. An administrator who knows the tenants sets it.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Final

from pbfast.open_files import reachable_open_file_limit, tenants_within

__all__ = ["MAX_DEFAULT", "MEMORY_PER_OPEN_TENANT", "MEMORY_SHARE", "MIN_DEFAULT", "default_max_tenants",
           "machine_memory_bytes", "max_tenants_within"]

MEMORY_PER_OPEN_TENANT: Final = 2 << 20  # bytes: twice what a small open tenant was measured to hold
MEMORY_SHARE: Final = 0.25  # of the machine's (or the container's) memory, for the open tenants
MIN_DEFAULT: Final = 100  # the former default's order of magnitude on small machines: below, say it
MAX_DEFAULT: Final = 10_000  # beyond, the node's per-open-tenant work (Litestream's monitor) dominates

# cgroup v2 and v1 limits; "max" or a huge number (v1's unlimited, ~2**63) means no limit
_CGROUP_LIMITS: Final = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def machine_memory_bytes() -> int | None:
    """The memory the node may use: the container's limit when it has one below the machine's, else the
    machine's (``MemTotal``); None when neither can be read."""
    total: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError):
        pass
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            return int(text)
    return total


def max_tenants_within(memory_bytes: int | None, open_files: int) -> int:
    """The default ``--max-tenants`` for a node with ``memory_bytes`` of memory (None: unknown, the memory is
    not a bound) and ``open_files`` descriptors."""
    bound = tenants_within(open_files)
    if memory_bytes is not None:
        bound = min(bound, int(memory_bytes * MEMORY_SHARE) // MEMORY_PER_OPEN_TENANT)
    return max(MIN_DEFAULT, min(MAX_DEFAULT, bound))


def default_max_tenants() -> int:
    """:func:`max_tenants_within` this machine's memory and the open-file limit the server will raise its own
    to (:func:`pbfast.open_files.raise_open_file_limit`; it warns when that fails and the limit is lower)."""
    return max_tenants_within(machine_memory_bytes(), reachable_open_file_limit(*resource.getrlimit(
        resource.RLIMIT_NOFILE)))
