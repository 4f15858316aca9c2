"""Email change (PocketBase's ``apis/record_auth_email_change_request.go`` and
``record_auth_email_change_confirm.go``).

``request-email-change`` (the record itself, logged in) mails an ``emailChange`` token carrying the new
address to that address, and waits for the mail: a failed send is the answer (400). ``confirm-email-change``
takes the token and the record's current password, sets the new email (which renews ``tokenKey``, ending
the record's earlier tokens) and marks it verified.
"""

from __future__ import annotations

from typing import Any, Final

from pbfast.http import ApiError
from pbfast.pocketbase import app_settings, auth, mails, record_tokens, records
from pbfast.pocketbase.apis.record_auth import auth_collection
from pbfast.pocketbase.apis.record_auth_forms import (VALIDATION_FAILED, email_errors, error, length_error,
                                                      required_error, string_form)
from pbfast.pocketbase.apis.request import MISSING_OR_INVALID_COLLECTION, NO_AUTH, SUPERUSERS, TenantRequest, collection_of
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.record_tokens import TokenOwner

__all__ = ["confirm_email_change", "request_email_change"]

SUPERUSERS_DIRECTLY: Final = "All superusers can change their emails directly."


def request_email_change(request: TenantRequest) -> None:
    path_collection = collection_of(request, MISSING_OR_INVALID_COLLECTION)
    current = request.auth
    if current is None:  # PocketBase's RequireSameCollectionContextAuth, before the handler
        raise ApiError(401, NO_AUTH)
    if current.collection.id != path_collection.id:
        raise ApiError(403, f"The request requires auth record from {current.collection.name} collection.")
    collection = auth_collection(request)
    if collection.name == SUPERUSERS:
        raise ApiError(400, SUPERUSERS_DIRECTLY)
    record = current.record
    new_email = string_form(request, ("newEmail",))[0]["newEmail"]
    problem = email_errors(new_email)
    if problem is None and new_email == record.get("email"):
        problem = error("validation_not_in_invalid", "Must not be in list.")
    if problem is None:
        found = records.find_auth_record_by_email(request.tenant, collection, new_email)
        if found is not None and found["id"] != record["id"]:
            problem = error("validation_invalid_new_email", "Invalid new email address.")
    if problem:
        raise ApiError(400, VALIDATION_FAILED, {"newEmail": problem})
    settings = app_settings.load_settings(request.tenant.conn)
    try:
        mails.deliver(settings, mails.email_change_mail(settings, collection, record, new_email))
    except mails.MailError as err:
        raise ApiError(400, "Failed to request email change.") from err
    request.proto.response_empty(204, [])


def _parse_token(request: TenantRequest, collection: Collection, token: str) -> tuple[TokenOwner | None, str, Any]:
    """PocketBase's ``parseToken``: the record, its new email, or the token's error item."""
    new_email = auth.unverified_claims(token).get("newEmail")
    if not isinstance(new_email, str) or not new_email:
        return None, "", error("validation_invalid_token_payload", "Invalid token payload - newEmail must be set.")
    owner = record_tokens.find_auth_record_by_token(request.tenant, token, record_tokens.EMAIL_CHANGE)
    if owner is None:
        return None, "", error("validation_invalid_token", "Invalid or expired token.")
    if owner.collection.id != collection.id:
        return None, "", error("validation_token_collection_mismatch",
                               "The provided token is for different auth collection.")
    if records.find_auth_record_by_email(request.tenant, collection, new_email) is not None:
        return None, "", error("validation_invalid_token_email", "The new email address is invalid.")
    return owner, new_email, None


def confirm_email_change(request: TenantRequest) -> None:
    collection = auth_collection(request)
    if collection.name == SUPERUSERS:
        raise ApiError(400, SUPERUSERS_DIRECTLY)
    form = string_form(request, ("token", "password"))[0]
    token, password = form["token"], form["password"]
    owner, new_email, token_problem = _parse_token(request, collection, token)
    errors: dict[str, Any] = {}
    if not token:
        errors["token"] = required_error()
    elif token_problem:
        errors["token"] = token_problem
    if not password:
        errors["password"] = required_error()
    elif len(password) > 100:
        errors["password"] = length_error(1, 100)
    elif owner is None or not auth.verify_password(password, str(owner.record.get("password") or "")):
        errors["password"] = error("validation_invalid_password", "Missing or invalid auth record password.")
    if errors or owner is None:
        raise ApiError(400, VALIDATION_FAILED, errors)
    try:
        records.save_record(request.tenant, collection, {"email": new_email, "verified": True}, owner.record,
                            manage=True, superuser=True)
    except records.RecordValidationError as err:
        raise ApiError(400, "Failed to confirm email change.", err.data) from err
    request.proto.response_empty(204, [])
