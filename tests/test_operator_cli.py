"""``pbfast tenant ...`` and ``pbfast node list`` against a running control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpcluster import ADMIN_TOKEN, Member, Start, start_cluster


@pytest.fixture
def cp(pbfast_process: Start, tmp_path: Path) -> Member:
    return start_cluster(pbfast_process, tmp_path, 1)[0]


def pbfast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbfast", *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PBFAST_ADMIN_TOKEN": "", **(env or {})})


def test_tenant_lifecycle_from_the_cli(cp: Member, tmp_path: Path) -> None:
    addr = f"--control-plane-addrs=127.0.0.1:1,{cp.url.removeprefix('http://')}"  # fails over past a dead one
    token = f"--admin-token={ADMIN_TOKEN}"
    created = pbfast("tenant", "create", "acme", "--storage-quota-mb=100", addr, token, "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["storageQuotaMB"] == 100

    listed = pbfast("tenant", "list", addr, token)
    assert listed.returncode == 0
    header, row = listed.stdout.strip().splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "NODEID"] and row.split()[:2] == ["acme", "active"]

    updated = pbfast("tenant", "update", "acme", "--status=suspended", "--api-requests-quota=unlimited", addr,
                     "--json", env={"PBFAST_ADMIN_TOKEN": ADMIN_TOKEN})
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["status"] == "suspended"
    assert json.loads(updated.stdout)["apiRequestsQuota"] is None

    (tmp_path / "tokdir").mkdir()
    (tmp_path / "tokdir" / "admin.token").write_text(ADMIN_TOKEN + "\n")
    got = pbfast("tenant", "get", "acme", addr, f"--data-dir={tmp_path / 'tokdir'}")
    assert got.returncode == 0 and "suspended" in got.stdout

    duplicate = pbfast("tenant", "create", "acme", addr, token)
    assert duplicate.returncode == 1 and duplicate.stderr.startswith("pbfast: error: 409")
    invalid = pbfast("tenant", "create", "Bad_Id", addr, token)
    assert invalid.returncode == 1 and "id: " in invalid.stderr and "validation_invalid_id" in invalid.stderr

    nodes = pbfast("node", "list", addr, token)
    assert nodes.returncode == 0 and nodes.stdout.split()[0] == "ID"
    moved = pbfast("tenant", "move", "acme", "nowhere", addr, token)
    assert moved.returncode == 1 and "400" in moved.stderr

    deleted = pbfast("tenant", "delete", "acme", addr, token)
    assert deleted.returncode == 0 and deleted.stdout.strip() == "deleted tenant acme"
    assert pbfast("tenant", "get", "acme", addr, token).returncode == 1


def test_cli_errors(cp: Member, tmp_path: Path) -> None:
    no_token = pbfast("tenant", "list", f"--data-dir={tmp_path / 'empty'}")
    assert no_token.returncode == 2 and "no admin token" in no_token.stderr
    wrong = pbfast("tenant", "list", f"--control-plane-addrs={cp.url.removeprefix('http://')}",
                   "--admin-token=" + "w" * 20)
    assert wrong.returncode == 1 and "401" in wrong.stderr
    down = pbfast("tenant", "list", "--control-plane-addrs=127.0.0.1:1", f"--admin-token={ADMIN_TOKEN}")
    assert down.returncode == 1 and "no control plane member answered" in down.stderr
