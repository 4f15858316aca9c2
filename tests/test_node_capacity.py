"""The default ``--max-tenants`` follows the machine: what a quarter of its memory (at 2 MiB per open tenant)
and the open-file limit hold, so a node keeps its working set open on a big machine (closing a tenant for
nearly every request cost 9x the CPU with 1,000 tenants over the former fixed 500) and stays within a small one."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from helpers import free_port
from pbfast.node_capacity import MAX_DEFAULT, MIN_DEFAULT, cgroup_limit_files, default_max_tenants, max_tenants_within
from pbfast.open_files import DESCRIPTORS_PER_OPEN_TENANT, RESERVED_DESCRIPTORS

GIB = 1 << 30


def test_the_memory_limit_is_looked_for_on_the_processs_cgroup_and_those_above_it() -> None:
    """A limit set on the process's own cgroup without a cgroup namespace (systemd's MemoryMax=) counts too."""
    root = Path("/sys/fs/cgroup")
    assert cgroup_limit_files("0::/system.slice/pbfast.service\n") == [
        root / "system.slice/pbfast.service/memory.max", root / "system.slice/memory.max", root / "memory.max"]
    assert cgroup_limit_files("4:memory:/docker/abc\n1:cpu:/\n") == [
        root / "memory/docker/abc/memory.limit_in_bytes", root / "memory/docker/memory.limit_in_bytes",
        root / "memory/memory.limit_in_bytes"]
    assert cgroup_limit_files("0::/\n") == [root / "memory.max"]  # inside a namespace


def test_the_default_is_bounded_by_memory_and_by_descriptors() -> None:
    many_files = 1 << 20
    assert max_tenants_within(24 * GIB, many_files) == 3072  # a quarter of 24 GiB at 2 MiB each
    assert max_tenants_within(2 * GIB, many_files) == 256
    files_for_1000 = RESERVED_DESCRIPTORS + 1000 * DESCRIPTORS_PER_OPEN_TENANT
    assert max_tenants_within(24 * GIB, files_for_1000) == 1000
    assert max_tenants_within(None, files_for_1000) == 1000  # memory unknown: the descriptors decide
    assert max_tenants_within(256 << 20, many_files) == MIN_DEFAULT  # a tiny container: the floor
    assert max_tenants_within(1 << 50, many_files) == MAX_DEFAULT


def test_a_node_started_without_max_tenants_registers_the_machines_default(pbfast_process: object,
                                                                           tmp_path: Path) -> None:
    cp_port, token = free_port(), "t" * 40
    process = pbfast_process([  # type: ignore[operator]
        "serve", f"--data-dir={tmp_path / 'data'}", f"--http-addr=127.0.0.1:{cp_port}",
        f"--gateway-addr=127.0.0.1:{free_port()}", f"--raft-bind-addr=127.0.0.1:{free_port()}",
        f"--admin-token={token}"])
    cp = f"http://127.0.0.1:{cp_port}"
    process.wait_healthy([cp], timeout=30)
    deadline = time.monotonic() + 20
    while not (items := httpx.get(f"{cp}/api/cp/nodes", headers={"Authorization": f"Bearer {token}"}).json()["items"]):
        assert time.monotonic() < deadline, "the node did not register"
        time.sleep(0.05)
    assert [node["maxTenants"] for node in items] == [default_max_tenants()]
