"""Validation of control-plane API bodies, with PocketBase-style per-field errors.

Each ``parse_*`` function returns clean values or raises :class:`~pbfast.http.ApiError` 400 whose ``data``
maps every bad field to ``{"code", "message"}`` (unknown fields included), so nothing half-valid is stored.
"""

from __future__ import annotations

import re
from typing import Any

from pbfast.cluster.tenant_record import NewTenant, TenantChanges
from pbfast.control_plane.registry import DURABILITY_MODES, TENANT_STATUSES
from pbfast.http import ApiError
from pbfast.primitives import is_valid_tenant_id
from pbfast.timefmt import format_datetime, format_rfc3339, parse_rfc3339

__all__ = [
    "MAX_API_REQUESTS_QUOTA",
    "MAX_STORAGE_QUOTA_MB",
    "parse_move",
    "parse_node_registration",
    "parse_restore",
    "parse_superuser",
    "parse_tenant_create",
    "parse_tenant_update",
]

MAX_STORAGE_QUOTA_MB = 10**9
MAX_API_REQUESTS_QUOTA = 10**12
MAX_TENANTS_PER_NODE = 10**6
MAX_REQUEST_TIME_LIMIT_MS = 3_600_000
PASSWORD_MIN, PASSWORD_MAX = 8, 71  # PocketBase's superuser password bounds (bcrypt reads 72 bytes)
_EMAIL = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NODE_ADDRESS = re.compile(r"(?:https?://[A-Za-z0-9.\-\[\]:]+(?::\d{1,5})?/?|local://[a-z0-9-]{1,63})")

ID_RULE = "Must be a DNS label: 1-63 lowercase letters, digits or '-', not starting or ending with '-'."


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


class _Fields:
    """Collects per-field errors while reading a JSON object."""

    def __init__(self, body: dict[str, Any], allowed: set[str]) -> None:
        self.body = body
        self.errors: dict[str, Any] = {}
        for name in body:
            if name not in allowed:
                self.errors[name] = _error("validation_unknown_field", "Unknown field.")

    def fail_if_any(self) -> None:
        if self.errors:
            raise ApiError(400, "Failed to validate the submitted data.", self.errors)

    def integer(self, name: str, maximum: int, nullable: bool = True) -> int | None:
        value = self.body.get(name)
        if value is None:
            if not nullable:
                self.errors[name] = _error("validation_required", "Cannot be blank.")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors[name] = _error("validation_invalid_type", "Must be a whole number or null.")
            return None
        if not 0 <= value <= maximum:
            self.errors[name] = _error("validation_out_of_range", f"Must be between 0 and {maximum}.")
            return None
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or value not in choices:
            self.errors[name] = _error("validation_not_in_set", f"Must be one of {', '.join(choices)}.")
            return None
        return value

    def tenant_id(self, name: str) -> str | None:
        value = self.body.get(name)
        if value is None or value == "":
            self.errors[name] = _error("validation_required", "Cannot be blank.")
            return None
        if not isinstance(value, str) or not is_valid_tenant_id(value):
            self.errors[name] = _error("validation_invalid_id", ID_RULE)
            return None
        return value


def _superuser(fields: _Fields) -> dict[str, str] | None:
    value = fields.body.get("superuser")
    if value is None:
        return None
    if not isinstance(value, dict):
        fields.errors["superuser"] = _error("validation_invalid_type", "Must be an object with email and password.")
        return None
    errors: dict[str, Any] = {}
    for name in value:
        if name not in ("email", "password"):
            errors[name] = _error("validation_unknown_field", "Unknown field.")
    email, password = value.get("email"), value.get("password")
    if not isinstance(email, str) or not email:
        errors["email"] = _error("validation_required", "Cannot be blank.")
    elif len(email) > 255 or _EMAIL.fullmatch(email) is None:
        errors["email"] = _error("validation_is_email", "Must be a valid email address.")
    if not isinstance(password, str) or not password:
        errors["password"] = _error("validation_required", "Cannot be blank.")
    elif not PASSWORD_MIN <= len(password.encode()) <= PASSWORD_MAX:
        errors["password"] = _error("validation_length_out_of_range",
                                    f"The length must be between {PASSWORD_MIN} and {PASSWORD_MAX}.")
    if errors or not isinstance(email, str) or not isinstance(password, str):
        fields.errors["superuser"] = errors
        return None
    return {"email": email.lower(), "password": password}


def parse_tenant_create(body: dict[str, Any]) -> tuple[NewTenant, dict[str, str] | None]:
    """``{"id", "storageQuotaMB"?, "apiRequestsQuota"?, "requestTimeLimitMs"?, "durability"?,
    "superuser"?: {"email","password"}}``: the tenant, and its first superuser's login if given."""
    fields = _Fields(body, {"id", "storageQuotaMB", "apiRequestsQuota", "requestTimeLimitMs", "durability",
                            "superuser"})
    tenant_id = fields.tenant_id("id")
    storage_quota_mb = fields.integer("storageQuotaMB", MAX_STORAGE_QUOTA_MB)
    api_requests_quota = fields.integer("apiRequestsQuota", MAX_API_REQUESTS_QUOTA)
    time_limit = _time_limit(fields)
    durability = fields.choice("durability", DURABILITY_MODES) or "async"
    superuser = _superuser(fields)
    fields.fail_if_any()
    assert tenant_id is not None
    return NewTenant(tenant_id, storage_quota_mb, api_requests_quota, time_limit, durability), superuser


def _time_limit(fields: _Fields) -> int | None:
    """``requestTimeLimitMs``: milliseconds of database work one request of the tenant may take (null: the
    node's ``--request-time-limit``)."""
    value = fields.integer("requestTimeLimitMs", MAX_REQUEST_TIME_LIMIT_MS)
    if value == 0:
        fields.errors["requestTimeLimitMs"] = _error("validation_out_of_range", "Must be at least 1 (or null).")
    return value


def parse_superuser(body: dict[str, Any]) -> dict[str, str]:
    """``{"email", "password"}`` of a tenant superuser."""
    fields = _Fields({"superuser": body}, {"superuser"})
    superuser = _superuser(fields)
    if fields.errors:
        raise ApiError(400, "Failed to validate the submitted data.", fields.errors["superuser"])
    assert superuser is not None
    return superuser


def parse_tenant_update(body: dict[str, Any]) -> TenantChanges:
    """Any of ``storageQuotaMB``, ``apiRequestsQuota`` (null = unlimited), ``requestTimeLimitMs`` (null = the
    node's), ``status``, ``durability``."""
    fields = _Fields(body, {"storageQuotaMB", "apiRequestsQuota", "requestTimeLimitMs", "status", "durability"})
    changes: TenantChanges = {}
    for name, maximum in (("storageQuotaMB", MAX_STORAGE_QUOTA_MB), ("apiRequestsQuota", MAX_API_REQUESTS_QUOTA)):
        if name in body:
            changes[name] = fields.integer(name, maximum)
    if "requestTimeLimitMs" in body:
        changes["requestTimeLimitMs"] = _time_limit(fields)
    for name, choices in (("status", TENANT_STATUSES), ("durability", DURABILITY_MODES)):
        if name in body:
            changes[name] = fields.choice(name, choices)
            if body[name] is None:
                fields.errors[name] = _error("validation_required", "Cannot be blank.")
    fields.fail_if_any()
    return changes


def parse_move(body: dict[str, Any]) -> str:
    fields = _Fields(body, {"nodeId"})
    node_id = fields.tenant_id("nodeId")
    fields.fail_if_any()
    assert node_id is not None
    return node_id


def parse_node_registration(body: dict[str, Any]) -> tuple[str, int, str | None]:
    """``{"address": "http://host:port" | "local://<node-id>", "maxTenants": int >= 1, "instanceId"?: str}``
    (the instance: this process; a node that does not send one is not told apart from others)."""
    fields = _Fields(body, {"address", "maxTenants", "instanceId"})
    instance = body.get("instanceId")
    if instance is not None and not (isinstance(instance, str) and _INSTANCE_ID.fullmatch(instance)):
        fields.errors["instanceId"] = _error("validation_invalid_instance", "Must be 1-64 letters, digits, '-' or '_'.")
    address = body.get("address")
    if not isinstance(address, str) or _NODE_ADDRESS.fullmatch(address) is None:
        fields.errors["address"] = _error("validation_invalid_address", "Must be an http(s)://host:port URL.")
    max_tenants = fields.integer("maxTenants", MAX_TENANTS_PER_NODE, nullable=False)
    if max_tenants == 0:
        fields.errors["maxTenants"] = _error("validation_out_of_range", "Must be at least 1.")
    fields.fail_if_any()
    assert isinstance(address, str) and max_tenants is not None
    return address.rstrip("/"), max_tenants, instance


def parse_restore(body: dict[str, Any], created_at: float, now: float) -> tuple[str, float]:
    """``{"at": RFC 3339}`` of an in-place restore: the point in time, normalised to UTC
    ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``, and as Unix seconds. It must lie between the tenant's creation
    (``created_at``) and ``now``."""
    fields = _Fields(body, {"at"})
    value = body.get("at")
    moment = None
    if value is None or value == "":
        fields.errors["at"] = _error("validation_required", "Cannot be blank.")
    elif not isinstance(value, str):
        fields.errors["at"] = _error("validation_invalid_type", "Must be an RFC 3339 timestamp string.")
    else:
        try:
            moment = parse_rfc3339(value)
        except ValueError:
            fields.errors["at"] = _error("validation_invalid_datetime",
                                         "Must be an RFC 3339 timestamp, e.g. 2026-11-28T12:00:00Z.")
    if moment is not None:
        seconds = moment.timestamp()
        if seconds > now:
            fields.errors["at"] = _error("validation_max_date_constraint",
                                         f"Must not be in the future (now is {format_datetime(now)}).")
        elif seconds < created_at:
            fields.errors["at"] = _error("validation_min_date_constraint",
                                         f"Must not be before the tenant was created ({format_datetime(created_at)}).")
    fields.fail_if_any()
    assert moment is not None
    return format_rfc3339(moment), moment.timestamp()
