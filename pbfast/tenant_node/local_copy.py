"""Which assignment a tenant's local copy belongs to, on disk, so the answer survives a node restart.

A node keeps a tenant's database under ``<data-dir>/tenants/<id>/`` after closing it. Whether that copy is
still the newest state of the tenant cannot be told from the copy itself: while this node was down or cut
off, the control plane may have re-placed the tenant on another node (with a higher fencing epoch) that
took writes and shipped them to the replica. Serving the old copy then would hide those writes, and
replicating it would overwrite them. So next to each copy the node keeps a marker,
``<data-dir>/tenants/<id>/pbfast-copy.json``:

- ``incarnation``: the tenant's life the copy belongs to (a deleted and re-created id has a new one),
- ``epoch``: the fencing epoch under which this node last opened (served and wrote) the copy,
- ``shipped``: the copy was closed with its final state confirmed in the replica and not written since.

The node writes it (temporary file, fsync, rename, fsync of the directory) when it opens a tenant, before
serving or replicating it, with ``shipped`` false; and again after a clean close whose final sync the
replica confirmed, with ``shipped`` true. :func:`judge` says what the node may do with a copy it is about
to open; :mod:`pbfast.tenant_node.restore` and :mod:`pbfast.tenant_node.pool` act on it.

The control plane bumps a tenant's epoch only when it places the tenant on a node (created without one,
re-placed from a node that is down, a planned move); a restart of the node, a new control plane leader,
suspend/resume or a quota change keep it. An epoch that differs from the marker's therefore means the
tenant was placed somewhere else in between (for all the node knows), and the copy may be stale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import orjson

from pbfast.durable import write_atomically

__all__ = ["MARKER_FILE", "CopyMarker", "Verdict", "judge", "read_marker", "write_marker"]

MARKER_FILE = "pbfast-copy.json"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class CopyMarker:
    incarnation: str
    epoch: int
    node_id: str = ""  # for the operator reading a retired copy
    shipped: bool = False


class Verdict(Enum):
    CURRENT = "current"  # serve it
    UNKNOWN = "unknown"  # may be stale: the replica wins if there is one, else it is the newest copy anywhere
    SUPERSEDED = "superseded"  # placed elsewhere since this node served it: the same as UNKNOWN
    FOREIGN = "foreign"  # an earlier life of the tenant id: never served


class MarkerError(ValueError):
    """The marker exists but cannot be read."""


def read_marker(directory: Path) -> CopyMarker | None:
    """The copy's marker; None when there is none (a copy written by pbfast before markers existed).
    Raises :class:`MarkerError` when it is unreadable."""
    try:
        raw = (directory / MARKER_FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise MarkerError(f"cannot read {directory / MARKER_FILE}: {err}") from err
    try:
        data = orjson.loads(raw)
        incarnation, epoch = data["incarnation"], data["epoch"]
        if not isinstance(incarnation, str) or isinstance(epoch, bool) or not isinstance(epoch, int):
            raise TypeError("incarnation or epoch of the wrong type")
        return CopyMarker(incarnation, epoch, str(data.get("node_id", "")), data.get("shipped") is True)
    except (ValueError, KeyError, TypeError) as err:
        raise MarkerError(f"unusable {directory / MARKER_FILE}: {err}") from err


def write_marker(directory: Path, marker: CopyMarker) -> None:
    """Replace the copy's marker atomically and durably (blocking: call it from a worker thread)."""
    write_atomically(directory / MARKER_FILE,
                     orjson.dumps({"format": FORMAT, **asdict(marker)}, option=orjson.OPT_APPEND_NEWLINE), 0o600)


def judge(marker: CopyMarker | None, readable: bool, incarnation: str, epoch: int,
          placed_since: int | None = None, node_id: str = "") -> tuple[Verdict, str]:
    """What a local copy with ``marker`` (``readable`` False: the marker exists but is unusable) is to a node
    asked to serve the tenant's ``incarnation`` under ``epoch``, and why, for the log.

    - same incarnation and epoch: **current** (this node served the tenant last, nobody else since);
    - another incarnation: **foreign** (an earlier life of the id), never served;
    - same incarnation, another epoch: **superseded**: the tenant was placed elsewhere since; unless this
      node (``node_id``) wrote it under an epoch from ``placed_since`` on, the first epoch of the tenant's
      uninterrupted stay on this node (the control plane put it back here under a new epoch, e.g. after a
      move or restore that did not go through): then nobody else can have written it, and it is **current**;
    - no marker (an older pbfast wrote the copy, or a crash came between installing a restored copy and
      writing its marker): **unknown**, whatever the epoch: even at epoch 1 the copy may belong to an
      earlier life of the id (deleted while this node was away) and nothing on disk tells.
      An unreadable marker is unknown as well.
    """
    if not readable:
        return Verdict.UNKNOWN, "its marker is unreadable"
    if marker is None:
        return Verdict.UNKNOWN, f"no marker (older pbfast, or an interrupted restore) at epoch {epoch}"
    if marker.incarnation != incarnation:
        return Verdict.FOREIGN, (f"it belongs to incarnation {marker.incarnation} of the id, the tenant is "
                                 f"incarnation {incarnation}")
    if marker.epoch != epoch and placed_since is not None and node_id and marker.node_id == node_id \
            and placed_since <= marker.epoch <= epoch:
        return Verdict.CURRENT, (f"last served here under epoch {marker.epoch}; the tenant has stayed on this node "
                                 f"since epoch {placed_since}")
    if marker.epoch != epoch:
        return Verdict.SUPERSEDED, (f"it was last served here under epoch {marker.epoch}, the tenant is at epoch "
                                    f"{epoch}: it was placed elsewhere since")
    return Verdict.CURRENT, f"last served here under epoch {epoch}"
