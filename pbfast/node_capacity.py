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

__all__ = ["MAX_DEFAULT", "MEMORY_PER_OPEN_TENANT", "MEMORY_SHARE", "MIN_DEFAULT", "cgroup_limit_files",
           "default_max_tenants", "machine_memory_bytes", "max_tenants_within"]

MEMORY_PER_OPEN_TENANT: Final = 2 << 20  # bytes: twice what a small open tenant was measured to hold
MEMORY_SHARE: Final = 0.25  # of the machine's (or the container's) memory, for the open tenants
MIN_DEFAULT: Final = 100  # the former default's order of magnitude on small machines: below, say it
MAX_DEFAULT: Final = 10_000  # beyond, the node's per-open-tenant work (Litestream's monitor) dominates

_CGROUP_ROOT: Final = Path("/sys/fs/cgroup")


def cgroup_limit_files(membership: str) -> list[Path]:
    """The memory limit files of the process's cgroup and of each cgroup above it, from ``/proc/self/cgroup``'s
    text (v2: ``0::/path``, limit ``memory.max``; v1: ``N:memory:/path``, ``memory.limit_in_bytes``). Inside a
    cgroup namespace the path is ``/``; without one (systemd's ``MemoryMax=``, ``--cgroupns=host``) the limit
    is set on the process's own cgroup or a parent. "max" or a huge number (v1's unlimited) means no limit."""
    files: list[Path] = []
    for line in membership.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            base, name = _CGROUP_ROOT, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = _CGROUP_ROOT / "memory", "memory.limit_in_bytes"
        else:
            continue
        directory = Path(path)
        for level in (directory, *directory.parents):
            files.append(base / level.relative_to("/") / name)
    return files


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
    try:
        membership = Path("/proc/self/cgroup").read_text()
    except OSError:
        membership = "0::/"
    for path in cgroup_limit_files(membership):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)  # the lowest limit of the process's cgroup and the ones above it
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
