"""Helpers that start real control-plane members and tenant nodes as processes on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from helpers import PbfastProcess, free_port

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
CLUSTER_TOKEN = "cluster-token-for-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLUSTER = {"Authorization": f"Bearer {CLUSTER_TOKEN}"}

Start = Callable[..., PbfastProcess]


@dataclass
class Member:
    name: str
    http_port: int
    raft_port: int
    data_dir: Path
    process: PbfastProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def raft(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    def health(self) -> dict[str, Any] | None:
        try:
            response = httpx.get(self.url + "/api/health", timeout=0.5)
        except httpx.TransportError:
            return None
        return response.json()["data"]["raft"] if response.status_code == 200 else None


def make_members(tmp_path: Path, count: int) -> list[Member]:
    return [Member(f"cp{i + 1}", free_port(), free_port(), tmp_path / f"cp{i + 1}") for i in range(count)]


def start_member(start: Start, member: Member, members: list[Member], node_timeout: float = 5.0,
                 extra: tuple[str, ...] = ()) -> PbfastProcess:
    peers = ",".join(m.raft for m in members if m is not member)
    args = ["serve", "--mode=control-plane", f"--node-id={member.name}", f"--http-addr=127.0.0.1:{member.http_port}",
            f"--raft-bind-addr={member.raft}", f"--data-dir={member.data_dir}", f"--admin-token={ADMIN_TOKEN}",
            f"--cluster-token={CLUSTER_TOKEN}", f"--node-timeout={node_timeout}"]
    if peers:
        args.append(f"--raft-peers={peers}")
    member.process = start(args + list(extra))
    return member.process


def start_cluster(start: Start, tmp_path: Path, count: int, node_timeout: float = 5.0) -> list[Member]:
    members = make_members(tmp_path, count)
    for member in members:
        start_member(start, member, members, node_timeout)
    for member in members:
        assert member.process is not None
        member.process.wait_healthy([member.url])
    wait_for_leader(members)
    return members


def wait_for_leader(members: list[Member], timeout: float = 10.0) -> Member:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for member in members:
            raft = member.health()
            if raft and raft["role"] == "leader":
                return member
        time.sleep(0.02)
    raise AssertionError("no leader elected")


def start_node(start: Start, node_id: str, cp_urls: list[str], data_dir: Path, max_tenants: int = 100,
               port: int | None = None) -> tuple[PbfastProcess, str]:
    port = port or free_port()
    cps = ",".join(url.removeprefix("http://") for url in cp_urls)
    process = start(["serve", "--mode=tenant-node", f"--node-id={node_id}", f"--http-addr=127.0.0.1:{port}",
                     f"--control-plane-addrs={cps}", f"--cluster-token={CLUSTER_TOKEN}",
                     f"--max-tenants={max_tenants}", f"--data-dir={data_dir / node_id}"])
    url = f"http://127.0.0.1:{port}"
    process.wait_healthy([url])
    return process, url


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
