"""``pbfast serve`` raises its soft limit on open files to the hard one before anything starts (a node keeps
several descriptors per open tenant; the common default of 1,024 would stop it at about a hundred), and says
so when even the hard limit cannot hold ``--max-tenants`` open tenants."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

from helpers import free_port
from pbfast.node_capacity import default_max_tenants
from pbfast.open_files import tenants_within


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


def _serve_with_soft_limit(tmp_path: Path, soft: int, *extra: str) -> tuple[int, str]:
    """Start an all-in-one whose soft limit starts at ``soft``; its soft limit once it started, and its log."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pbfast", "serve", f"--data-dir={tmp_path / 'data'}",
             f"--http-addr=127.0.0.1:{free_port()}", f"--gateway-addr=127.0.0.1:{free_port()}",
             f"--raft-bind-addr=127.0.0.1:{free_port()}", *extra],
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=lambda: resource.setrlimit(  # noqa: PLW1509
                resource.RLIMIT_NOFILE, (soft, hard)))
        try:
            deadline = time.monotonic() + 20
            while b"starting all-in-one" not in log.read_bytes():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            return _soft_limit(process.pid), log.read_text()
        finally:
            process.terminate()
            process.wait(10)


def test_serve_raises_the_soft_limit_to_the_hard_one(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft, log = _serve_with_soft_limit(tmp_path, 256)
    assert soft == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    # the default --max-tenants is what the limit holds (node_capacity): no warning unless the floor is above it
    assert ("the open-file limit" in log) == (tenants_within(soft) < default_max_tenants()), log


def test_a_limit_too_low_for_the_open_tenants_is_reported(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    too_many = tenants_within(hard if hard != resource.RLIM_INFINITY else 1 << 20) + 1
    _, log = _serve_with_soft_limit(tmp_path, 256, f"--max-tenants={too_many}")
    assert f"fewer than --max-tenants={too_many}" in log, log
