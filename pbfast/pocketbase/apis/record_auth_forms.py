"""What the email flows' handlers share: their text forms bound as PocketBase binds them, ozzo-validation's
error items, and the in-memory marks that suppress repeated mails (PocketBase's ``app.Store()`` keys such
as ``@limitVerificationEmail_``)."""

from __future__ import annotations

import threading
import time
from typing import Any, Final

from pbfast.http import ApiError
from pbfast.pocketbase import fields, records
from pbfast.pocketbase.apis.form_body import struct_body
from pbfast.pocketbase.apis.request import LOAD_FAILED, TenantRequest
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.records import Row

__all__ = ["LOAD_FAILED", "VALIDATION_FAILED", "ResendMarks", "answer_email_request", "email_errors", "error", "length_error",
           "required_error", "string_form"]

VALIDATION_FAILED: Final = "An error occurred while validating the submitted data."


def string_form(request: TenantRequest, names: tuple[str, ...], *,
                first_api_error: bool = True) -> tuple[dict[str, str], dict[str, Any]]:
    """The text fields ``names`` of a JSON or form body ('' when absent) and the whole body; a body that
    cannot be read, or a field of another type, is 400 :data:`LOAD_FAILED`, a body of another content type
    400 :data:`UNSUPPORTED_CONTENT_TYPE` where PocketBase's handler answers the binder's own error
    (``first_api_error``, its ``firstApiError``)."""
    body, _ = struct_body(request, first_api_error=first_api_error)
    form: dict[str, str] = {}
    for name in names:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, LOAD_FAILED)
        form[name] = value or ""
    return form, body


def answer_email_request(request: TenantRequest, collection: Collection) -> Row | None:
    """The first step of PocketBase's "request a mail" routes (verification, password reset): the ``email``
    form validated (400), then 204 whether or not it names a record, so that nobody learns which emails
    exist; the record it names, if any, for the mail to send after the answer."""
    email = string_form(request, ("email",))[0]["email"]
    problem = email_errors(email)
    if problem:
        raise ApiError(400, VALIDATION_FAILED, {"email": problem})
    record = records.find_auth_record_by_email(request.tenant, collection, email)
    request.proto.response_empty(204, [])
    return record


def error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def required_error() -> dict[str, Any]:
    return error("validation_required", "Cannot be blank.")


def length_error(low: int, high: int) -> dict[str, Any]:
    return {"code": "validation_length_out_of_range", "message": f"The length must be between {low} and {high}.",
            "params": {"max": high, "min": low}}


def email_errors(email: str) -> dict[str, Any] | None:
    """ozzo's ``Required, Length(1, 255), is.EmailFormat`` on an email field: its first failure."""
    if not email:
        return required_error()
    if len(email) > 255:
        return length_error(1, 255)
    if not fields.is_email(email):
        return error("validation_is_email", "Must be a valid email address.")
    return None


class ResendMarks:
    """Marks that expire after a while, per tenant (one node process; PocketBase keeps them in its app
    store the same way, lost on restart)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._until: dict[tuple[str, str], float] = {}

    def set(self, tenant_id: str, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._until) > 10_000:
                self._until = {k: v for k, v in self._until.items() if v > now}
            self._until[(tenant_id, key)] = now + self.seconds

    def has(self, tenant_id: str, key: str) -> bool:
        with self._lock:
            return self._until.get((tenant_id, key), 0.0) > time.monotonic()

    def remove(self, tenant_id: str, key: str) -> None:
        with self._lock:
            self._until.pop((tenant_id, key), None)
