"""``POST /api/collections/{collection}/impersonate/{id}`` (PocketBase's ``apis/record_auth_impersonate.go``):
a superuser obtains a non-refreshable auth token of any auth record, valid ``duration`` seconds (0 or none:
the collection's ``authToken`` duration). The record's ``authRule`` and MFA do not apply."""

from __future__ import annotations

from typing import Final

from pbfast.http import ApiError
from pbfast.pocketbase import auth, records
from pbfast.pocketbase.apis.record_auth import auth_response
from pbfast.pocketbase.apis.form_body import struct_body
from pbfast.pocketbase.apis.request import LOAD_FAILED, NOT_FOUND, TenantRequest, require_superuser

__all__ = ["impersonate"]

VALIDATION_FAILED: Final = "An error occurred while validating the submitted data."
_MAX_DURATION: Final = (2**63 - 1) // 1_000_000_000  # seconds a Go time.Duration holds


def impersonate(request: TenantRequest) -> None:
    require_superuser(request)
    collection = request.tenant.collection(request.params["collection"])
    if collection is None or collection.type != "auth":
        raise ApiError(404, "Missing or invalid auth collection context.")
    record = records.load_row(request.tenant, collection, request.params["id"])
    if record is None:
        raise ApiError(404, NOT_FOUND)
    body, sent_as_form = struct_body(request)
    duration = body.get("duration", 0)
    if duration is None:
        duration = 0
    if sent_as_form and isinstance(duration, str):  # a form's text, as Go's form binder reads an int
        try:
            duration = int(duration) if duration else 0
        except ValueError as err:
            raise ApiError(400, LOAD_FAILED) from err
    if isinstance(duration, bool) or not isinstance(duration, int) or not -(2**63) <= duration < 2**63:
        raise ApiError(400, LOAD_FAILED)
    if duration < 0:
        raise ApiError(400, VALIDATION_FAILED, {"duration": {
            "code": "validation_min_greater_equal_than_required", "message": "Must be no less than 0.",
            "params": {"threshold": 0}}})
    token_config = collection.auth.auth_token
    seconds = min(duration, _MAX_DURATION) or token_config.duration
    token = auth.issue_auth_token(record["id"], str(record.get("tokenKey", "")), collection.id, token_config.secret,
                                  seconds, refreshable=False)
    auth_response(request, collection, record, token)
