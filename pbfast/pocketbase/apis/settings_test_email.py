"""``POST /api/settings/test/email`` (PocketBase's ``forms/test_email_send.go``): a superuser sends one of
the auth mails (``template``: verification, password-reset, email-change, otp, login-alert) of an auth
collection (default ``_superusers``) to ``email``, for a made-up record whose visible fields read
``__pb_test_<field>__``. Waits for the mail; a failure is PocketBase's 400 with the raw error (without SMTP
configured: its message for a host without ``sendmail``, see :mod:`pbfast.pocketbase.mails`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from pbfast.http import ApiError
from pbfast.pocketbase import app_settings, auth, fields, gocompat, mails
from pbfast.pocketbase.apis.record_auth_forms import email_errors, error, length_error, string_form
from pbfast.pocketbase.apis.request import SUPERUSERS, TenantRequest, require_superuser
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.mailer import Mail
from pbfast.pocketbase.records import Row

__all__ = ["settings_test_email"]

FAILED: Final = "Failed to send the test email."
TEMPLATES: Final = ("verification", "password-reset", "email-change", "otp", "login-alert")


def settings_test_email(request: TenantRequest) -> None:
    require_superuser(request)
    form = string_form(request, ("email", "template", "collection"), first_api_error=False)[0]
    tenant = request.tenant
    errors: dict[str, Any] = {}
    collection = None
    if form["collection"]:
        collection = tenant.collection(form["collection"])
        if len(form["collection"]) > 255:
            errors["collection"] = length_error(1, 255)
        elif collection is None or collection.type != "auth":
            errors["collection"] = error("validation_invalid_auth_collection",
                                         "Must be a valid auth collection id or name.")
    problem = email_errors(form["email"])
    if problem:
        errors["email"] = problem
    if not form["template"]:
        errors["template"] = error("validation_required", "Cannot be blank.")
    elif form["template"] not in TEMPLATES:
        errors["template"] = error("validation_in_invalid", "Must be a valid value.")
    if errors:
        raise ApiError(400, FAILED, errors)
    collection = collection or tenant.collection(SUPERUSERS)
    if collection is None:
        raise ApiError(400, FAILED + " Raw error: \nmissing auth collection")
    settings = app_settings.load_settings(tenant.conn)
    record = _test_record(collection, form["email"])
    try:
        mails.deliver(settings, _mail(settings, collection, record, form["template"], form["email"]))
    except mails.MailError as err:
        message = f"{FAILED} Raw error: \n{err}".rstrip()
        # PocketBase's errors end as sentences
        raise ApiError(400, message if message.endswith((".", "!", "?")) else message + ".") from err
    request.proto.response_empty(204, [])


def _test_record(collection: Collection, email: str) -> Row:
    """PocketBase's test record: each visible field set to ``__pb_test_<name>__`` (as the field reads
    that text), a fresh ``tokenKey`` and the given email."""
    record: Row = {}
    for field in collection.fields:
        if field.hidden:
            continue
        try:
            record[field.name] = field.cast(f"__pb_test_{field.name}__", is_new=True)
        except fields.FieldError:
            record[field.name] = ""
    record["tokenKey"] = auth.new_token_key()
    record["email"] = email
    return record


def _mail(settings: app_settings.Settings, collection: Collection, record: Row, template: str, email: str) -> Mail:
    if template == "verification":
        return mails.verification_mail(settings, collection, record)
    if template == "password-reset":
        return mails.password_reset_mail(settings, collection, record)
    if template == "email-change":
        return mails.email_change_mail(settings, collection, record, email)
    if template == "otp":
        return mails.otp_mail(settings, collection, record, "_PB_TEST_OTP_ID_", "123456")
    now = gocompat.format_datetime_value(datetime.now(UTC))
    return mails.auth_alert_mail(settings, collection, record, f"{now} - TEST_IP TEST_USER_AGENT")
