"""Fixtures for the PocketBase-compatibility tests: the stock binary and a pbfast tenant, both serving
copies of PocketBase's own test data dir (``../shared/fixtures/pocketbase-tests``).

Stock PocketBase serves one data dir per process, so each test starts its own (~0.2 s). pbfast serves many
tenants per process, so each test process keeps one all-in-one (two: one with loopback egress allowed for the
tests' SMTP, S3 and OAuth2 servers) and each test gets a fresh tenant on it with its own copy of the fixture:
what a test does to its tenant is invisible to the next (tenant isolation is what pbfast promises), and the
suite does not pay an all-in-one's start (~1-2 s of CPU) per test."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import PbfastProcess, pbfast_process  # noqa: F401 - fixture re-export
from pbharness import Backend, copy_fixture, create_tenant, start_all_in_one, stock_pocketbase_server


@dataclass
class SharedAllInOne:
    """One ``pbfast serve`` of this test process; :meth:`fixture_tenant` adds a tenant per test."""

    data_dir: Path
    cp: str
    gw: str
    process: PbfastProcess
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def fixture_tenant(self, patch: Callable[[Path], None] | None = None) -> Backend:
        """A new tenant holding a copy of the fixture (its ``data.db`` changed by ``patch`` first), logged in."""
        tenant_id = f"fixture-{next(self._numbers)}"
        tenant_dir = copy_fixture(self.data_dir / "tenants" / tenant_id)  # opened on the tenant's first request
        if patch is not None:
            patch(tenant_dir / "data.db")
        create_tenant(self.cp, self.gw, tenant_id)
        backend = Backend("pbfast", f"{self.gw}/t/{tenant_id}", tenant_dir=tenant_dir,
                          replica_dir=self.data_dir / "replica" / "tenants" / tenant_id)
        backend.login()
        return backend


def _shared(base: Path, env: dict[str, str]) -> Iterator[SharedAllInOne]:
    process = PbfastProcess([], base / "pbfast.log", env)

    def start(args: list[str]) -> PbfastProcess:
        process.args = args
        return process.start()

    try:
        _, cp, gw = start_all_in_one(start, base / "pbfast")
        yield SharedAllInOne(base / "pbfast", cp, gw, process)
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.stop()


@pytest.fixture(scope="session")
def shared_all_in_one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedAllInOne]:
    """This test process's all-in-one for fixture tenants."""
    yield from _shared(tmp_path_factory.mktemp("aio"), {})


@pytest.fixture(scope="session")
def shared_egress_all_in_one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedAllInOne]:
    """This test process's all-in-one whose tenants may reach loopback servers from their settings (the tests'
    SMTP, S3 and OAuth2 servers; ``PBFAST_ALLOW_LOOPBACK_EGRESS=1``)."""
    yield from _shared(tmp_path_factory.mktemp("aio-egress"), {"PBFAST_ALLOW_LOOPBACK_EGRESS": "1"})


@pytest.fixture
def stock_pocketbase(tmp_path: Path) -> Iterator[Backend]:
    """``pocketbase serve`` 0.40.6 on a copy of the fixture."""
    data = copy_fixture(tmp_path / "stock")
    with stock_pocketbase_server(data, tmp_path / "pocketbase.log") as url:
        backend = Backend("pocketbase", url)
        backend.login()
        yield backend


@pytest.fixture
def pbfast_fixture_tenant(shared_all_in_one: SharedAllInOne) -> Backend:
    """A fresh tenant holding a copy of PocketBase's test data dir, on this test process's all-in-one."""
    return shared_all_in_one.fixture_tenant()


@pytest.fixture
def egress_tenant(shared_egress_all_in_one: SharedAllInOne) -> Backend:
    """``pbfast_fixture_tenant`` on the all-in-one whose tenants may reach loopback servers."""
    return shared_egress_all_in_one.fixture_tenant()


DataPatch = Callable[[Path], None]
"""Changes a copy of the fixture's data.db before a server opens it."""


@pytest.fixture
def patched_backends(shared_all_in_one: SharedAllInOne,
                     tmp_path: Path) -> Iterator[Callable[[DataPatch], tuple[Backend, Backend]]]:
    """Factory: stock PocketBase and a pbfast tenant, both on copies of the fixture changed by ``patch``
    first (settings PocketBase only reads at start, say); stopped at teardown."""
    with contextlib.ExitStack() as stack:
        def start(patch: DataPatch) -> tuple[Backend, Backend]:
            stock_dir = copy_fixture(tmp_path / "stock")
            patch(stock_dir / "data.db")
            url = stack.enter_context(stock_pocketbase_server(stock_dir, tmp_path / "pocketbase.log"))
            stock = Backend("pocketbase", url)
            stock.login()
            return stock, shared_all_in_one.fixture_tenant(patch)

        yield start
