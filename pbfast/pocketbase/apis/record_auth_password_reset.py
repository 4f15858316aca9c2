"""Password reset (PocketBase's ``apis/record_auth_password_reset_request.go`` and
``record_auth_password_reset_confirm.go``).

``request-password-reset`` answers 204 whether the address is known or not; the mail, with a
``passwordReset`` token, is sent in the background, and once one was delivered another request for the
same record within 2 minutes sends none. ``confirm-password-reset`` sets the new password, which renews the
record's ``tokenKey``: every token issued before (auth, reset, verification) stops working, and the record
becomes verified when the token's email is still its email.
"""

from __future__ import annotations

from typing import Any, Final

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase import app_settings, auth, mails, record_tokens, records
from pbfast.pocketbase.apis.record_auth import auth_collection
from pbfast.pocketbase.apis.record_auth_forms import (VALIDATION_FAILED, ResendMarks, answer_email_request, error,
                                                      length_error, required_error, string_form)
from pbfast.pocketbase.apis.request import TenantRequest
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.fields import PasswordField
from pbfast.pocketbase.records import Row

__all__ = ["confirm_password_reset", "request_password_reset"]

log = component_logger("TenantNode")

resend_marks: Final = ResendMarks(120.0)


def _resend_key(collection: Collection, record: Row) -> str:
    return "@limitPasswordResetEmail_" + collection.id + str(record["id"])


def request_password_reset(request: TenantRequest) -> None:
    collection = auth_collection(request)
    if not collection.auth.password_auth.enabled:
        raise ApiError(400, "The collection is not configured to allow password authentication.")
    record = answer_email_request(request, collection)
    tenant = request.tenant
    if record is None:
        return
    key = _resend_key(collection, record)
    if resend_marks.has(tenant.id, key):
        log.info("tenant %s: password reset mail for %s already sent - not sent again", tenant.id, record["id"])
        return
    settings = app_settings.load_settings(tenant.conn)
    mail = mails.password_reset_mail(settings, collection, record)

    def sent(delivered: bool) -> None:
        if delivered:  # PocketBase marks the record only once the mail went out
            resend_marks.set(tenant.id, key)

    mails.send_in_background(tenant.id, settings, mail, "password reset", sent)


def _min_password_length(collection: Collection) -> int:
    field = collection.field("password")
    return field.min if isinstance(field, PasswordField) and field.min > 0 else 1


def confirm_password_reset(request: TenantRequest) -> None:
    collection = auth_collection(request)
    form = string_form(request, ("token", "password", "passwordConfirm"), first_api_error=False)[0]
    tenant = request.tenant
    token, password = form["token"], form["password"]
    owner = record_tokens.find_auth_record_by_token(tenant, token, record_tokens.PASSWORD_RESET) if token else None
    errors: dict[str, Any] = {}
    if not token:
        errors["token"] = required_error()
    elif owner is None:
        errors["token"] = error("validation_invalid_token", "Invalid or expired token.")
    elif owner.collection.id != collection.id:
        errors["token"] = error("validation_token_collection_mismatch",
                                "The provided token is for different auth collection.")
    shortest = _min_password_length(collection)
    if not password:
        errors["password"] = required_error()
    elif not shortest <= len(password) <= 255:
        errors["password"] = length_error(shortest, 255)
    if not form["passwordConfirm"]:
        errors["passwordConfirm"] = required_error()
    elif form["passwordConfirm"] != password:
        errors["passwordConfirm"] = error("validation_values_mismatch", "Values don't match.")
    if errors or owner is None:
        raise ApiError(400, VALIDATION_FAILED, errors)
    record = owner.record
    change: dict[str, object] = {"password": password, "passwordConfirm": password}
    if not record.get("verified") and auth.unverified_claims(token).get("email") == record.get("email"):
        change["verified"] = True  # the mail reached the address the record still has
    try:
        records.save_record(tenant, collection, change, record, manage=True, superuser=True)
    except records.RecordValidationError as err:
        raise ApiError(400, "Failed to set new password.", err.data) from err
    resend_marks.remove(tenant.id, _resend_key(collection, record))
    request.proto.response_empty(204, [])
