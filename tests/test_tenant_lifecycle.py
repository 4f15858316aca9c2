"""A tenant from the outside: created through the control plane, used with the Python ``pocketbase`` SDK
through the gateway, imported from and exported to stock PocketBase 0.40.6, deleted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pocketbase import PocketBase
from pocketbase.errors import ClientResponseError

sys.path.insert(0, str(Path(__file__).parent / "pocketbase"))
from pbharness import ADMIN_TOKEN, copy_fixture, create_tenant, start_all_in_one, stock_pocketbase_server  # noqa: E402

from helpers import PbfastProcess  # noqa: E402

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def cluster(pbfast_process: object, tmp_path: Path) -> tuple[PbfastProcess, str, str, Path]:
    data_dir = tmp_path / "pbfast"
    process, cp, gw = start_all_in_one(pbfast_process, data_dir)
    return process, cp, gw, data_dir


def pbfast_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbfast", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PBFAST_ADMIN_TOKEN": ADMIN_TOKEN})


def test_sdk_end_to_end(cluster: tuple[PbfastProcess, str, str, Path]) -> None:
    _, cp, gw, _ = cluster
    create_tenant(cp, gw, "acme", {"superuser": {"email": "owner@acme.test", "password": "s3cret-pass"}})
    pb = PocketBase(f"{gw}/t/acme")
    auth = pb.collection("_superusers").auth_with_password("owner@acme.test", "s3cret-pass")
    assert auth.token and pb.auth_store.token == auth.token
    with pytest.raises(ClientResponseError) as failed:
        PocketBase(f"{gw}/t/acme").collection("_superusers").auth_with_password("owner@acme.test", "wrong")
    assert failed.value.status == 400

    collection = pb.collections.create({
        "name": "posts", "type": "base", "listRule": "", "viewRule": "",
        "fields": [{"name": "title", "type": "text", "required": True, "max": 100},
                   {"name": "views", "type": "number", "onlyInt": True},
                   {"name": "published", "type": "bool"},
                   {"name": "created", "type": "autodate", "onCreate": True},
                   {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True}],
    })
    assert collection.name == "posts"
    posts = pb.collection("posts")
    created = [posts.create({"title": f"post {i}", "views": i * 10, "published": i % 2 == 0}) for i in range(25)]
    assert created[3].title == "post 3" and created[3].views == 30 and created[3].published is False
    page = posts.get_list(2, 10, {"filter": "views >= 100", "sort": "-views"})
    assert page.total_items == 15 and page.total_pages == 2 and [r.views for r in page.items] == [140, 130, 120,
                                                                                                  110, 100]
    assert len(posts.get_full_list()) == 25
    first = posts.get_first_list_item('title = "post 7"')
    assert first.id == created[7].id
    updated = posts.update(first.id, {"title": "seven"})
    assert updated.title == "seven" and posts.get_one(first.id).title == "seven"
    posts.delete(first.id)
    with pytest.raises(ClientResponseError) as missing:
        posts.get_one(first.id)
    assert missing.value.status == 404
    with pytest.raises(ClientResponseError) as invalid:
        posts.create({"title": ""})
    assert invalid.value.status == 400 and "title" in invalid.value.data["data"]

    # A guest sees posts (empty list/view rules) but cannot create them (null create rule).
    guest = PocketBase(f"{gw}/t/acme").collection("posts")
    assert guest.get_list(1, 5).total_items == 24
    with pytest.raises(ClientResponseError) as denied:
        guest.create({"title": "nope"})
    assert denied.value.status == 403

    refreshed = pb.collection("_superusers").auth_refresh()
    assert refreshed.token


def test_tenants_do_not_see_each_other(cluster: tuple[PbfastProcess, str, str, Path]) -> None:
    _, cp, gw, _ = cluster
    for tenant in ("alpha", "beta"):
        create_tenant(cp, gw, tenant, {"superuser": {"email": f"root@{tenant}.test", "password": "password-123"}})
    alpha = PocketBase(f"{gw}/t/alpha")
    alpha.collection("_superusers").auth_with_password("root@alpha.test", "password-123")
    alpha.collections.create({"name": "secrets", "type": "base", "fields": [{"name": "v", "type": "text"}]})
    alpha.collection("secrets").create({"v": "alpha-only"})
    # alpha's token means nothing to beta, and beta has no such collection.
    response = httpx.get(f"{gw}/t/beta/api/collections/secrets/records",
                         headers={"Authorization": alpha.auth_store.token})
    assert response.status_code == 404
    assert httpx.get(f"{gw}/t/beta/api/collections", headers={"Authorization": alpha.auth_store.token}
                     ).status_code == 401
    beta_login = httpx.post(f"{gw}/t/beta/api/collections/_superusers/auth-with-password",
                            json={"identity": "root@alpha.test", "password": "password-123"})
    assert beta_login.status_code == 400
    # Path tricks stay inside the named tenant.
    raw = httpx.get(f"{gw}/t/beta/api/collections/secrets/records", headers={"X-Pbfast-Tenant": "alpha"})
    assert raw.status_code == 404


def test_import_from_and_export_to_stock_pocketbase(cluster: tuple[PbfastProcess, str, str, Path],
                                                    tmp_path: Path) -> None:
    _, cp, gw, data_dir = cluster
    source = copy_fixture(tmp_path / "source" / "pb_data")
    addr = f"--control-plane-addrs={cp.removeprefix('http://')}"
    imported = pbfast_cli("tenant", "import", "imported", str(source), addr, "--json")
    assert imported.returncode == 0, imported.stderr
    deadline = time.monotonic() + 10
    while httpx.get(f"{gw}/t/imported/api/health").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    login = httpx.post(f"{gw}/t/imported/api/collections/_superusers/auth-with-password",
                       json={"identity": "test@example.com", "password": "1234567890"})
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    demo2 = httpx.get(f"{gw}/t/imported/api/collections/demo2/records?sort=id", headers={"Authorization": token})
    assert demo2.json()["totalItems"] == 3
    created = httpx.post(f"{gw}/t/imported/api/collections/demo2/records", headers={"Authorization": token},
                         json={"title": "written by pbfast"})
    assert created.status_code == 200, created.text
    # the data dir's files came along (storage/), and a file uploaded here goes back out with the export
    avatar = httpx.get(f"{gw}/t/imported/api/files/_pb_users_auth_/4q1xlclmfloku33/300_1SEi6Q6U72.png")
    assert avatar.status_code == 200 and avatar.content == (source / "storage" / "_pb_users_auth_" /
                                                            "4q1xlclmfloku33" / "300_1SEi6Q6U72.png").read_bytes()
    uploaded = httpx.post(f"{gw}/t/imported/api/collections/demo3/records", headers={"Authorization": token},
                          data={"title": "with a file"}, files={"files": ("note.txt", b"from pbfast", "text/plain")})
    assert uploaded.status_code == 200, uploaded.text

    again = pbfast_cli("tenant", "import", "imported", str(source), addr)
    assert again.returncode == 1 and "409" in again.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "data.db").write_bytes(b"not a database at all" * 100)
    rejected = pbfast_cli("tenant", "import", "broken", str(broken), addr)
    assert rejected.returncode == 1
    assert httpx.get(f"{cp}/api/cp/tenants/broken", headers=ADMIN).status_code == 404  # nothing half-made

    out_dir = tmp_path / "exported" / "pb_data"
    exported = pbfast_cli("tenant", "export", "imported", str(out_dir), addr)
    assert exported.returncode == 0, exported.stderr
    with stock_pocketbase_server(out_dir) as stock_url:
        stock_login = httpx.post(f"{stock_url}/api/collections/_superusers/auth-with-password",
                                 json={"identity": "test@example.com", "password": "1234567890"})
        assert stock_login.status_code == 200
        # A token issued by pbfast for the same data verifies in stock PocketBase too.
        listed = httpx.get(f"{stock_url}/api/collections/demo2/records?filter=title='written by pbfast'",
                           headers={"Authorization": token})
        assert listed.status_code == 200 and listed.json()["totalItems"] == 1
        record = uploaded.json()
        served = httpx.get(f"{stock_url}/api/files/demo3/{record['id']}/{record['files'][0]}")
        assert served.status_code == 200 and served.content == b"from pbfast"
        assert httpx.get(f"{stock_url}/api/files/_pb_users_auth_/4q1xlclmfloku33/300_1SEi6Q6U72.png").content == \
            avatar.content


def test_new_tenant_database_opens_in_stock_pocketbase(cluster: tuple[PbfastProcess, str, str, Path],
                                                       tmp_path: Path) -> None:
    _, cp, gw, _ = cluster
    create_tenant(cp, gw, "fresh", {"superuser": {"email": "admin@fresh.test", "password": "password-123"}})
    pb = PocketBase(f"{gw}/t/fresh")
    pb.collection("_superusers").auth_with_password("admin@fresh.test", "password-123")
    pb.collections.create({"name": "notes", "type": "base", "fields": [
        {"name": "body", "type": "editor"}, {"name": "tags", "type": "select", "values": ["a", "b"], "maxSelect": 2},
        {"name": "meta", "type": "json"}, {"name": "when", "type": "date"}, {"name": "site", "type": "url"}]})
    note = pb.collection("notes").create({"body": "<p>hi</p>", "tags": ["a", "b"], "meta": {"k": 1},
                                          "when": "2025-01-02 03:04:05.000Z", "site": "https://example.com"})
    upsert = pbfast_cli("tenant", "superuser", "upsert", "fresh", "second@fresh.test", "another-pass-1",
                        f"--control-plane-addrs={cp.removeprefix('http://')}")
    assert upsert.returncode == 0, upsert.stderr
    out_dir = tmp_path / "fresh-export" / "pb_data"
    assert pbfast_cli("tenant", "export", "fresh", str(out_dir),
                      f"--control-plane-addrs={cp.removeprefix('http://')}").returncode == 0
    with stock_pocketbase_server(out_dir) as stock_url:
        stock_pb = PocketBase(stock_url)
        stock_pb.collection("_superusers").auth_with_password("second@fresh.test", "another-pass-1")
        same = stock_pb.collection("notes").get_one(note.id)
        assert same.tags == ["a", "b"] and same.meta == {"k": 1} and same.body == "<p>hi</p>"


def test_deleting_a_tenant_removes_its_data(cluster: tuple[PbfastProcess, str, str, Path]) -> None:
    _, cp, gw, data_dir = cluster
    create_tenant(cp, gw, "doomed")
    tenant_dir = data_dir / "tenants" / "doomed"
    assert (tenant_dir / "data.db").exists()
    assert httpx.delete(f"{cp}/api/cp/tenants/doomed", headers=ADMIN).status_code == 204
    deadline = time.monotonic() + 5
    while tenant_dir.exists():
        assert time.monotonic() < deadline, "the node kept the deleted tenant's files"
        time.sleep(0.05)
    assert httpx.get(f"{gw}/t/doomed/api/health").status_code == 404
