"""``POST /api/settings/test/s3`` (PocketBase's ``forms/test_s3_filesystem.go``): a superuser checks the
tenant's ``s3`` (``storage``) or ``backups.s3`` settings by uploading ``pb_settings_test_<random>/test.txt``
and deleting that prefix again; ``204`` when both work, else PocketBase's 400 with the raw error.

The endpoint may not be an address of the node itself (:mod:`pbfast.pocketbase.egress`); the S3 client
resolves the host again when it connects, so unlike the SMTP connection this one is not pinned to the
checked address. Runs on the tenant's database thread with short timeouts (one attempt, 5 s to connect,
10 s to read), as PocketBase runs it within the request.
"""

from __future__ import annotations

from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

from pbfast.http import ApiError
from pbfast.pocketbase import app_settings, egress
from pbfast.pocketbase.apis.form_body import struct_body
from pbfast.pocketbase.apis.request import LOAD_FAILED, TenantRequest, require_superuser
from pbfast.pocketbase.oauth2.providers import random_string

__all__ = ["settings_test_s3"]

FAILED: Final = "Failed to test the S3 filesystem."


def settings_test_s3(request: TenantRequest) -> None:
    require_superuser(request)
    body, _ = struct_body(request)
    filesystem = body.get("filesystem")
    if filesystem is not None and not isinstance(filesystem, str):
        raise ApiError(400, LOAD_FAILED)
    if not filesystem:
        raise ApiError(400, FAILED, {"filesystem": {"code": "validation_required", "message": "Cannot be blank."}})
    if filesystem not in ("storage", "backups"):
        raise ApiError(400, FAILED, {"filesystem": {"code": "validation_in_invalid", "message": "Must be a valid value."}})
    document = app_settings.load_document(request.tenant.conn)
    config = document["backups"]["s3"] if filesystem == "backups" else document["s3"]
    if not config["enabled"]:
        _raw_error("S3 storage filesystem is not enabled")
    try:
        client = _client(config)
    except (ValueError, OSError) as err:
        _raw_error(f"failed to initialize the S3 filesystem: {err}")
    prefix = "pb_settings_test_" + random_string(5)
    try:
        client.put_object(Bucket=config["bucket"], Key=f"{prefix}/test.txt", Body=b"test")
    except Exception as err:  # noqa: BLE001 - botocore's errors: the client's 400, as PocketBase answers them
        _raw_error(f"failed to upload a test file: {err}")
    try:
        listed = client.list_objects_v2(Bucket=config["bucket"], Prefix=prefix + "/")
        keys = [{"Key": item["Key"]} for item in listed.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=config["bucket"], Delete={"Objects": keys})
    except Exception as err:  # noqa: BLE001 - as above
        _raw_error(f"failed to delete a test file: {err}")
    request.proto.response_empty(204, [])


def _raw_error(message: str) -> NoReturn:
    raise ApiError(400, f"{FAILED} Raw error: \n{message}.")


def _client(config: dict[str, Any]) -> Any:
    import boto3  # type: ignore[import-untyped]  # only for this rarely used route: kept out of the node's start
    from botocore.config import Config  # type: ignore[import-untyped]

    endpoint = config["endpoint"]
    parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
    if not parts.hostname:
        raise ValueError(f"invalid endpoint {endpoint!r}")
    egress.checked_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    return boto3.client(
        "s3", endpoint_url=parts.geturl(), region_name=config["region"], aws_access_key_id=config["accessKey"],
        aws_secret_access_key=config["secret"],
        config=Config(s3={"addressing_style": "path" if config["forcePathStyle"] else "virtual"},
                      connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 1}))
