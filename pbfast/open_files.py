"""The process's limit on open files, raised at start to what the system allows (as Go's runtime does for
PocketBase since Go 1.19).

A node holds several descriptors per open tenant (its database with its WAL and shared-memory files, the
request log's database; Litestream, a child that inherits the limit, its own), a gateway two per proxied
event stream, and every server one per connection. The default soft limit of many systems (1,024) would
refuse tenant opens and new connections long before the machine runs short of anything else, with errors
far from their cause; the hard limit is what the administrator allows, so the soft one is set to it.
(granian's extension happens to do the same when it is imported; this does not depend on that.)
"""

from __future__ import annotations

import resource
from typing import Final

from pbfast.logs import component_logger

__all__ = ["DESCRIPTORS_PER_OPEN_TENANT", "RESERVED_DESCRIPTORS", "raise_open_file_limit", "reachable_open_file_limit",
           "tenants_within"]

log = component_logger("Server")

DESCRIPTORS_PER_OPEN_TENANT: Final = 8  # measured on a node: database, -wal, -shm (and its mapping: auth_records), the log's three, slack
RESERVED_DESCRIPTORS: Final = 1024  # connections, listeners, the process's own files
_CEILING: Final = 1 << 20  # when the hard limit is unlimited: Linux's default fs.nr_open


def reachable_open_file_limit(soft: int, hard: int) -> int:
    """The soft limit :func:`raise_open_file_limit` sets from ``(soft, hard)`` when the system lets it."""
    if soft == resource.RLIM_INFINITY:
        return _CEILING
    return max(soft, _CEILING if hard == resource.RLIM_INFINITY else hard)


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one; the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as err:  # a container may cap it below the hard limit it reports
            log.warning("the open-file limit stays at %d (raising it to %d failed: %s)", soft, wanted, err)
    return _CEILING if soft == resource.RLIM_INFINITY else soft


def tenants_within(open_files: int) -> int:
    """How many tenants a node can keep open under ``open_files`` descriptors."""
    return max(0, (open_files - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_OPEN_TENANT)
