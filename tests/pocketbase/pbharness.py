"""Helpers for the PocketBase-compatibility tests: the fixture data dir, backends, an all-in-one starter."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from helpers import PbfastProcess, free_port

from pbfast.pocketbase.collections import Collection

def _find_fixture() -> Path:
    """PocketBase's test data dir from the team's ``shared/`` folder: ``$PBFAST_POCKETBASE_FIXTURE``, else
    ``shared/fixtures/pocketbase-tests`` beside the checkout (or beside one of its parents)."""
    override = os.environ.get("PBFAST_POCKETBASE_FIXTURE")
    if override:
        return Path(override)
    repo = Path(__file__).resolve().parents[2]
    for base in (repo, *repo.parents):
        candidate = base / "shared" / "fixtures" / "pocketbase-tests"
        if candidate.exists():
            return candidate
    return repo.parent / "shared" / "fixtures" / "pocketbase-tests"


FIXTURE = _find_fixture()
SUPERUSER = {"identity": "test@example.com", "password": "1234567890"}
ADMIN_TOKEN = "admin-token-for-tests-0123456789"


def copy_fixture(target: Path) -> Path:
    """A private copy of PocketBase's test data dir (never open the shared one in place)."""
    if not FIXTURE.exists():
        raise AssertionError(f"PocketBase test fixture not found at {FIXTURE}")
    # shared/ is read-only (as CI lays it out): copy contents, not permission bits.
    shutil.copytree(FIXTURE, target, copy_function=shutil.copyfile)
    for path in (target, *target.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/health", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not become healthy")


@contextlib.contextmanager
def stock_pocketbase_server(data_dir: Path, log_path: Path | None = None) -> Iterator[str]:
    """``pocketbase serve`` 0.40.6 on ``data_dir`` (a free loopback port, migrations off); yields its URL
    once healthy and stops it afterwards."""
    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["pocketbase", "serve", "--dir", str(data_dir), "--http", f"127.0.0.1:{port}",
                             "--automigrate=false"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        if log_path:
            log.close()  # type: ignore[union-attr]


@dataclass
class Backend:
    """A PocketBase-compatible base URL plus a superuser token for it."""

    name: str
    url: str
    superuser_token: str = ""
    tenant_dir: Path | None = None  # pbfast: the tenant's directory on its node (data.db, storage/)
    replica_dir: Path | None = None  # pbfast: the tenant's directory in the node's embedded object store

    def login(self) -> None:
        response = httpx.post(f"{self.url}/api/collections/_superusers/auth-with-password", json=SUPERUSER,
                              timeout=30)  # bcrypt on a loaded machine
        assert response.status_code == 200, response.text
        self.superuser_token = response.json()["token"]


def start_all_in_one(start: object, data_dir: Path, *extra: str) -> tuple[PbfastProcess, str, str]:
    cp_port, gw_port = free_port(), free_port()
    process = start([  # type: ignore[operator]
        "serve", f"--data-dir={data_dir}", f"--http-addr=127.0.0.1:{cp_port}", f"--gateway-addr=127.0.0.1:{gw_port}",
        f"--raft-bind-addr=127.0.0.1:{free_port()}", f"--admin-token={ADMIN_TOKEN}", *extra,
    ])
    cp, gw = f"http://127.0.0.1:{cp_port}", f"http://127.0.0.1:{gw_port}"
    process.wait_healthy([cp, gw], timeout=30)
    return process, cp, gw


def create_tenant(cp: str, gw: str, tenant_id: str, body: dict | None = None) -> None:
    response = httpx.post(f"{cp}/api/cp/tenants", json={"id": tenant_id, **(body or {})},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30  # the gateway learns the route within a long-poll round trip
    while httpx.get(f"{gw}/t/{tenant_id}/api/health").status_code != 200:
        assert time.monotonic() < deadline, "route never reached the gateway"
        time.sleep(0.02)


def all_in_one_with_owner(start: object, data_dir: Path, tenant_id: str,
                          superuser: dict[str, str]) -> tuple[PbfastProcess, str, str, str]:
    """An all-in-one with tenant ``tenant_id`` created with its first superuser ``superuser``: the process, the
    control plane's and the gateway's URLs and the superuser's token."""
    process, cp, gw = start_all_in_one(start, data_dir)
    create_tenant(cp, gw, tenant_id, {"superuser": superuser})
    login = httpx.post(f"{gw}/t/{tenant_id}/api/collections/_superusers/auth-with-password", timeout=30,
                       json={"identity": superuser["email"], "password": superuser["password"]})
    assert login.status_code == 200, login.text
    return process, cp, gw, str(login.json()["token"])


def all_in_one_with_public_posts(start: object, data_dir: Path, tenant_id: str,
                                 superuser: dict[str, str]) -> tuple[PbfastProcess, str, str, str]:
    """An all-in-one with tenant ``tenant_id`` (its first superuser ``superuser``) holding a public ``posts``
    collection (one number field ``n``): the process, the control plane's and the gateway's URLs and the
    superuser's token (the realtime tests' and benchmarks' set-up)."""
    process, cp, gw, token = all_in_one_with_owner(start, data_dir, tenant_id, superuser)
    made = httpx.post(f"{gw}/t/{tenant_id}/api/collections", headers={"Authorization": token}, timeout=30, json={
        "name": "posts", "type": "base", "listRule": "", "viewRule": "", "fields": [{"name": "n", "type": "number"}]})
    assert made.status_code == 200, made.text
    assert process.proc is not None
    return process, cp, gw, str(token)


def collection_of(data: dict[str, Any]) -> Collection:
    """A collection from a test's short dict (``fields`` and ``indexes`` as lists), as it would be stored."""
    return Collection.from_row({**data, "fields": orjson.dumps(data.get("fields", [])),
                                "indexes": orjson.dumps(data.get("indexes", []))})


@contextlib.contextmanager
def fixture_backends(base: Path, patch: Callable[[Path], None] | None = None) -> Iterator[tuple[Backend, Backend]]:
    """Stock PocketBase and a pbfast all-in-one's tenant ``fixture``, each on its own copy of the fixture (its
    ``data.db`` changed by ``patch`` first, when given), both logged in as the superuser; stopped on exit."""
    started: list[PbfastProcess] = []

    def start(args: list[str]) -> PbfastProcess:
        process = PbfastProcess(args, base / f"pbfast-{len(started)}.log").start()
        started.append(process)
        return process

    with contextlib.ExitStack() as stack:
        stock_dir = copy_fixture(base / "stock")
        fast_dir = copy_fixture(base / "pbfast" / "tenants" / "fixture")  # opened on the tenant's first request
        if patch is not None:
            patch(stock_dir / "data.db")
            patch(fast_dir / "data.db")
        stock = Backend("pocketbase", stack.enter_context(stock_pocketbase_server(stock_dir, base / "pocketbase.log")))
        stock.login()
        stack.callback(lambda: [process.stop() for process in started])
        _, cp, gw = start_all_in_one(start, base / "pbfast")
        create_tenant(cp, gw, "fixture")
        fast = Backend("pbfast", f"{gw}/t/fixture")
        fast.login()
        yield stock, fast
