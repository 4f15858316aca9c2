"""Email verification (PocketBase's ``apis/record_auth_verification_request.go`` and
``record_auth_verification_confirm.go``).

``request-verification`` answers 204 whether the address is known or not (no enumeration); the mail, with a
``verification`` token, is sent in the background, and another request for the same record within 2
minutes sends none. ``confirm-verification`` marks the record verified (and, when the collection has no
password auth, replaces its password with a random one, PocketBase's guard against pre-registered
accounts).
"""

from __future__ import annotations

from typing import Final

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase import app_settings, auth, mails, record_tokens, records
from pbfast.pocketbase.apis.record_auth import auth_collection
from pbfast.pocketbase.apis.record_auth_forms import (VALIDATION_FAILED, ResendMarks, answer_email_request, error,
                                                      required_error, string_form)
from pbfast.pocketbase.apis.request import SUPERUSERS, TenantRequest
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.oauth2.providers import random_string
from pbfast.pocketbase.records import Row

__all__ = ["confirm_verification", "request_verification"]

log = component_logger("TenantNode")

ALL_VERIFIED: Final = "All superusers are verified by default."
resend_marks: Final = ResendMarks(120.0)


def _resend_key(collection: Collection, record: Row) -> str:
    return "@limitVerificationEmail_" + collection.id + str(record["id"])


def request_verification(request: TenantRequest) -> None:
    collection = auth_collection(request)
    if collection.name == SUPERUSERS:
        raise ApiError(400, ALL_VERIFIED)
    record = answer_email_request(request, collection)
    tenant = request.tenant
    if record is None or record.get("verified"):
        return
    key = _resend_key(collection, record)
    if resend_marks.has(tenant.id, key):
        log.info("tenant %s: verification mail for %s already requested - not sent again", tenant.id, record["id"])
        return
    settings = app_settings.load_settings(tenant.conn)
    mail = mails.verification_mail(settings, collection, record)
    # PocketBase marks the record whether or not the mail went out
    mails.send_in_background(tenant.id, settings, mail, "verification",
                             lambda _delivered: resend_marks.set(tenant.id, key))


def confirm_verification(request: TenantRequest) -> None:
    collection = auth_collection(request)
    if collection.name == SUPERUSERS:
        raise ApiError(400, ALL_VERIFIED)
    token = string_form(request, ("token",))[0]["token"]
    if not token:
        raise ApiError(400, VALIDATION_FAILED, {"token": required_error()})
    tenant = request.tenant
    claimed_email = auth.unverified_claims(token).get("email")
    owner = record_tokens.find_auth_record_by_token(tenant, token, record_tokens.VERIFICATION)
    problem = None
    if not isinstance(claimed_email, str) or not claimed_email:
        problem = error("validation_invalid_token_claims", "Missing email token claim.")
    elif owner is None:
        problem = error("validation_invalid_token", "Invalid or expired token.")
    elif owner.collection.id != collection.id:
        problem = error("validation_token_collection_mismatch", "The provided token is for different auth collection.")
    elif owner.record.get("email") != claimed_email:
        problem = error("validation_token_email_mismatch",
                        "The record email doesn't match with the requested token claims.")
    if problem or owner is None:
        raise ApiError(400, VALIDATION_FAILED, {"token": problem})
    record = owner.record
    if not record.get("verified"):
        change: dict[str, object] = {"verified": True}
        if not collection.auth.password_auth.enabled:
            password = auth.stable_random("password", lambda: random_string(30))  # the same when run again
            change |= {"password": password, "passwordConfirm": password}
        try:
            records.save_record(tenant, collection, change, record, manage=True, superuser=True)
        except records.RecordValidationError as err:
            raise ApiError(400, "An error occurred while saving the verified state.", err.data) from err
    resend_marks.remove(tenant.id, _resend_key(collection, record))
    request.proto.response_empty(204, [])
