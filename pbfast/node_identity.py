"""Who a pbfast process is: its node id and its instance id, both kept in its data dir, which it locks.

Two tenant nodes must never act on the same assignments, yet the guide starts several without ``--node-id``.
So a node's default id is not a constant: the first start writes one to ``<data-dir>/node.id`` (derived from
the host name, plus a random suffix, since several nodes may run on one host), and later starts read it back,
so a node keeps its tenants across restarts. A data dir that already holds state from before ``node.id``
existed keeps the old default, ``node-1``, so its tenants stay where they are.

The instance id (``<data-dir>/node.instance``, random, made on first start) tells two processes that claim
the same node id from different data dirs apart: the control plane refuses to register an instance while
another instance of that id is live (see ``Registry.register_node``), and refuses the heartbeats of an
instance that is no longer the registered one, so it stops serving when its lease runs out. A restart on the
same data dir is the same instance, so it is welcome back at once. Two processes on one data dir are stopped
earlier: the first holds an exclusive lock on ``<data-dir>/pbfast.lock`` (:func:`lock_data_dir`).
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import socket
from pathlib import Path
from typing import IO

from pbfast.durable import write_atomically
from pbfast.primitives import is_valid_tenant_id

__all__ = ["LEGACY_NODE_ID", "NODE_ID_FILE", "NodeIdError", "load_or_create_instance_id", "load_or_create_node_id",
           "lock_data_dir"]

NODE_ID_FILE = "node.id"
INSTANCE_ID_FILE = "node.instance"
LOCK_FILE = "pbfast.lock"
LEGACY_NODE_ID = "node-1"  # the fixed default before node ids were kept in the data dir
# What a data dir holds once a node or control plane has run in it (then it predates node.id, or is ours).
_STATE = ("tenants", "raft", "litestream", "replica", "admin.token", "cluster.token", "retired")


class NodeIdError(ValueError):
    """``node.id`` is unreadable or not a DNS label; its message is one line for the operator."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold ``<data-dir>/pbfast.lock`` exclusively for as long as the returned file stays open (the process's
    life). Raises :class:`NodeIdError` naming the process that holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held open by the caller
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise NodeIdError(f"another pbfast process (pid {holder}) uses the data dir {data_dir}; "
                          "give each process its own --data-dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def load_or_create_instance_id(data_dir: Path) -> str:
    """The instance id kept in ``data_dir`` (random, made on first use). Raises :class:`NodeIdError` or
    OSError."""
    path = data_dir / INSTANCE_ID_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = secrets.token_hex(8)
        _write_atomically(path, text)
        return text
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise NodeIdError(f"{path} does not hold an instance id: {text[:80]!r}; remove it")
    return text


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (text + "\n").encode())


def _host_label() -> str:
    """The host name as a DNS label prefix (lowercase letters, digits, '-'), or ``node``."""
    label = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")[:50].strip("-")
    return label or "node"


def load_or_create_node_id(data_dir: Path) -> str:
    """The node id kept in ``data_dir`` (created on first use: ``<host>-<4 hex>``, or ``node-1`` for a data
    dir that already holds state from before ids were kept). Raises :class:`NodeIdError` or OSError."""
    path = data_dir / NODE_ID_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    else:
        if not is_valid_tenant_id(text):
            raise NodeIdError(f"{path} does not hold a node id (a DNS label): {text[:80]!r}; fix or remove it, "
                              "or give --node-id")
        return text
    legacy = data_dir.is_dir() and any((data_dir / name).exists() for name in _STATE)
    node_id = LEGACY_NODE_ID if legacy else f"{_host_label()}-{secrets.token_hex(2)}"
    _write_atomically(path, node_id)
    return node_id
