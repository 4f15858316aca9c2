"""Tenants' files live in the object store next to the replica (issue 15, item 4): through moto's S3, a
file uploaded to a tenant is still served after kill -9 of the node and the loss of its tenants' directory
(the database comes back from the replica, the file was never on the node's disk alone); files count toward
the tenant's storage quota; the bucket holds
it under ``tenants/{id}/storage/{collectionId}/{recordId}/``; a record delete notes it for deletion once
the restore window is over (``tenants/{id}/deleted/``; the sweep itself: ``test_file_retention.py``)."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent / "pocketbase"))
from pbharness import create_tenant  # noqa: E402

from helpers import free_port, moto_s3_server  # noqa: E402
from test_replication import OWNER, S3_ENV, login, start  # noqa: E402

BUCKET = "pbfast-files"


@pytest.fixture
def moto_s3() -> Iterator[str]:
    with moto_s3_server(BUCKET) as endpoint:
        yield endpoint


def _bucket_keys(endpoint: str, part: str = "/storage/") -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET, Prefix="tenants/").get("Contents", [])
            if part in item["Key"]]


def test_a_file_survives_kill_and_disk_loss_through_s3(pbfast_process: object, tmp_path: Path, moto_s3: str) -> None:
    extra = [f"--s3-endpoint={moto_s3}", f"--s3-bucket={BUCKET}"]
    data_dir = tmp_path / "node"
    ports = (free_port(), free_port(), free_port())
    cp, gw = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    process = start(pbfast_process, data_dir, ports, extra, S3_ENV)
    create_tenant(cp, gw, "files", {"superuser": OWNER, "storageQuotaMB": 1})
    token = login(gw, "files")
    headers = {"Authorization": token}
    created = httpx.post(f"{gw}/t/files/api/collections", headers=headers, json={
        "name": "docs", "type": "base", "listRule": "", "viewRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "attachment", "type": "file", "maxSelect": 1}]})
    assert created.status_code == 200, created.text
    collection_id = created.json()["id"]
    record = httpx.post(f"{gw}/t/files/api/collections/docs/records", headers=headers, data={"title": "kept"},
                        files={"attachment": ("report.txt", b"the report", "text/plain")}).json()
    name, record_id = record["attachment"], record["id"]
    assert _bucket_keys(moto_s3) == [f"tenants/files/storage/{collection_id}/{record_id}/{name}"]
    # files count toward the storage quota (1 MiB here): an upload beyond what is left is refused, nothing stored
    too_big = httpx.post(f"{gw}/t/files/api/collections/docs/records", headers=headers, data={"title": "big"},
                         files={"attachment": ("big.bin", b"\1" * (1 << 20), "application/octet-stream")})
    assert too_big.status_code == 403 and too_big.json()["message"] == "The tenant's storage quota is used up."
    assert len(_bucket_keys(moto_s3)) == 1

    time.sleep(1.5)  # > the replica's RPO: the record's row is in the bucket too
    process.stop(signal.SIGKILL)
    shutil.rmtree(data_dir / "tenants")
    shutil.rmtree(data_dir / "file-cache", ignore_errors=True)
    process = start(pbfast_process, data_dir, ports, extra, S3_ENV)
    login(gw, "files")
    served = httpx.get(f"{gw}/t/files/api/files/docs/{record_id}/{name}", timeout=30)
    assert served.status_code == 200 and served.content == b"the report", served.text
    assert "restored tenant files from its replica" in process.output()

    deleted = httpx.delete(f"{gw}/t/files/api/collections/docs/records/{record_id}", headers=headers)
    assert deleted.status_code == 204, deleted.text
    deadline = time.monotonic() + 10
    while not _bucket_keys(moto_s3, "/deleted/") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [key.rsplit("/", 1)[0] for key in _bucket_keys(moto_s3, "/deleted/")] == ["tenants/files/deleted"]
    assert len(_bucket_keys(moto_s3)) == 1, "kept for a point-in-time restore within the window"
