"""Fixtures for the PocketBase-compatibility tests: the stock binary and a pbfast tenant, both serving
copies of PocketBase's own test data dir (``../shared/fixtures/pocketbase-tests``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import pbfast_process  # noqa: F401 - fixture re-export
from pbharness import Backend, copy_fixture, create_tenant, start_all_in_one, stock_pocketbase_server


@pytest.fixture
def stock_pocketbase(tmp_path: Path) -> Iterator[Backend]:
    """``pocketbase serve`` 0.40.6 on a copy of the fixture."""
    data = copy_fixture(tmp_path / "stock")
    with stock_pocketbase_server(data, tmp_path / "pocketbase.log") as url:
        backend = Backend("pocketbase", url)
        backend.login()
        yield backend


@pytest.fixture
def pbfast_fixture_tenant(pbfast_process: object, tmp_path: Path) -> Backend:  # noqa: F811 - the fixture, by name
    """A pbfast all-in-one whose tenant ``fixture`` holds a copy of PocketBase's test data dir."""
    data_dir = tmp_path / "pbfast"
    copy_fixture(data_dir / "tenants" / "fixture")  # the node opens it on the tenant's first request
    _, cp, gw = start_all_in_one(pbfast_process, data_dir)
    create_tenant(cp, gw, "fixture")
    backend = Backend("pbfast", f"{gw}/t/fixture")
    backend.login()
    return backend


DataPatch = Callable[[Path], None]
"""Changes a copy of the fixture's data.db before a server opens it."""


@pytest.fixture
def patched_backends(pbfast_process: object,  # noqa: F811 - the fixture, by name
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
            data_dir = tmp_path / "pbfast"
            patch(copy_fixture(data_dir / "tenants" / "fixture") / "data.db")
            _, cp, gw = start_all_in_one(pbfast_process, data_dir)
            create_tenant(cp, gw, "fixture")
            fast = Backend("pbfast", f"{gw}/t/fixture")
            fast.login()
            return stock, fast

        yield start


@pytest.fixture
def egress_tenant(pbfast_process: object, tmp_path: Path) -> Backend:  # noqa: F811 - the fixture, by name
    """``pbfast_fixture_tenant`` on a node whose tenants may reach loopback servers from their settings
    (the tests' SMTP and S3 servers; ``PBFAST_ALLOW_LOOPBACK_EGRESS=1``)."""
    data_dir = tmp_path / "pbfast"
    copy_fixture(data_dir / "tenants" / "fixture")

    def start(args: list[str]) -> object:
        return pbfast_process(args, env={"PBFAST_ALLOW_LOOPBACK_EGRESS": "1"})  # type: ignore[operator]

    _, cp, gw = start_all_in_one(start, data_dir)
    create_tenant(cp, gw, "fixture")
    backend = Backend("pbfast", f"{gw}/t/fixture")
    backend.login()
    return backend
