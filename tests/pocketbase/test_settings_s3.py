"""``POST /api/settings/test/s3`` against a real S3 protocol server (moto) on loopback."""

from __future__ import annotations

import boto3
import httpx

from helpers import moto_s3_server
from pbharness import Backend

BUCKET = "tenant-files"


def _patch(backend: Backend, body: dict[str, object]) -> None:
    response = httpx.patch(f"{backend.url}/api/settings", json=body,
                           headers={"Authorization": backend.superuser_token}, timeout=30)
    assert response.status_code == 200, response.text


def _test(backend: Backend, filesystem: str) -> httpx.Response:
    return httpx.post(f"{backend.url}/api/settings/test/s3", json={"filesystem": filesystem},
                      headers={"Authorization": backend.superuser_token}, timeout=60)


def _s3(endpoint: str, bucket: str) -> dict[str, object]:
    return {"enabled": True, "bucket": bucket, "region": "us-east-1", "endpoint": endpoint, "accessKey": "testing",
            "secret": "testing", "forcePathStyle": True}


def test_s3_settings_are_tried_and_cleaned_up(egress_tenant: Backend) -> None:
    with moto_s3_server(BUCKET) as endpoint:
        _patch(egress_tenant, {"s3": _s3(endpoint, BUCKET), "backups": {"s3": _s3(endpoint, "missing-bucket")}})
        answer = _test(egress_tenant, "storage")
        assert answer.status_code == 204, answer.text
        listed = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing").list_objects_v2(Bucket=BUCKET)
        assert listed.get("KeyCount") == 0  # the test file's prefix was deleted again
        failed = _test(egress_tenant, "backups")
        assert failed.status_code == 400
        assert failed.json()["message"].startswith(
            "Failed to test the S3 filesystem. Raw error: \nfailed to upload a test file: ")


def test_s3_endpoint_on_the_node_is_refused(pbfast_fixture_tenant: Backend) -> None:
    """Without PBFAST_ALLOW_LOOPBACK_EGRESS a tenant cannot make the node call its own loopback services."""
    with moto_s3_server(BUCKET) as endpoint:
        _patch(pbfast_fixture_tenant, {"s3": _s3(endpoint, BUCKET)})
        answer = _test(pbfast_fixture_tenant, "storage")
        assert answer.status_code == 400
        assert answer.json()["message"].startswith(
            "Failed to test the S3 filesystem. Raw error: \nfailed to initialize the S3 filesystem: 127.0.0.1")
        assert "refused" in answer.json()["message"]
