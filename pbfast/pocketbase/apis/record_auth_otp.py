"""One-time passwords (PocketBase's ``apis/record_auth_otp_request.go`` and ``record_auth_with_otp.go``):
``request-otp`` stores an ``_otps`` row (the code bcrypt-hashed) and mails the code with the collection's
OTP template; ``auth-with-otp`` exchanges the id and code for a login (or completes MFA, ``mfaId``).

As in PocketBase: an unknown email gets the same ``200 {"otpId"}`` as a known one (a random id that was
never stored), the mail is sent in the background, more than 9 unexpired codes of a record make the next
request reuse the latest (no new mail), and guessing is limited to 5 attempts per record and client IP
per 180 seconds (429). Every failure to use a code is the same ``400 "Invalid or expired OTP."``.

Differences: the address is written to the code's ``sentTo`` when the mail is handed to the sending
thread (PocketBase writes it once the server accepted the mail, and deletes the code when sending
fails); without SMTP configured no code is stored (PocketBase stores one, its sendmail fallback fails
on a host without sendmail and it deletes the code again).
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import apsw

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase import app_settings, auth, fields, gocompat, mailer, records
from pbfast.pocketbase.apis.record_auth import auth_collection, auth_response
from pbfast.pocketbase.apis.record_auth_forms import string_form
from pbfast.pocketbase.apis.request import TenantRequest, send_with_fields
from pbfast.pocketbase.apis.settings import client_ip
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.oauth2.providers import random_string
from pbfast.pocketbase.records import Row
from pbfast.pocketbase.tenant import Tenant
from pbfast.primitives import SharedRateLimiter

__all__ = ["OTP_COLLECTION", "OTP_METHOD", "auth_with_otp", "request_otp"]

log = component_logger("TenantNode")

OTP_COLLECTION: Final = "_otps"
OTP_METHOD: Final = "otp"  # PocketBase's core.MFAMethodOTP
NOT_ALLOWED: Final = "The collection is not configured to allow OTP authentication."
VALIDATION_FAILED: Final = "An error occurred while validating the submitted data."
INVALID_OTP: Final = "Invalid or expired OTP."
TOO_MANY_ATTEMPTS: Final = "Too many attempts, please try again later with a new OTP."
MAX_RECENT_CODES: Final = 9  # beyond this many unexpired codes the latest is reused
ATTEMPTS: Final = 5
ATTEMPTS_WINDOW: Final = 180.0  # seconds
_BLANK: Final = {"code": "validation_required", "message": "Cannot be blank."}


def _length(low: int, high: int) -> dict[str, Any]:
    return {"code": "validation_length_out_of_range", "message": f"The length must be between {low} and {high}.",
            "params": {"max": high, "min": low}}


def _form(request: TenantRequest, names: tuple[str, ...]) -> tuple[dict[str, str], dict[str, Any]]:
    """The string fields of the body (JSON or a form), as PocketBase binds its form (a value of another
    type: 400), and the whole body."""
    return string_form(request, names)


def _otp_collection(collection: Collection, request: TenantRequest) -> Collection:
    if not collection.auth.otp.enabled:
        raise ApiError(403, NOT_ALLOWED)
    otps = request.tenant.collection(OTP_COLLECTION)
    if otps is None:  # every tenant has it (system collection): a damaged database
        raise ApiError(500, "Failed to fetch previous record OTPs.")
    return otps


def request_otp(request: TenantRequest) -> None:
    collection = auth_collection(request)
    otps = _otp_collection(collection, request)
    email = _form(request, ("email",))[0]["email"]
    if not email:
        raise ApiError(400, VALIDATION_FAILED, {"email": dict(_BLANK)})
    if len(email) > 255:
        raise ApiError(400, VALIDATION_FAILED, {"email": _length(1, 255)})
    if not fields.is_email(email):
        raise ApiError(400, VALIDATION_FAILED, {"email": {"code": "validation_is_email",
                                                          "message": "Must be a valid email address."}})
    tenant = request.tenant
    record = records.find_by_identity(tenant, collection, "email", email)
    settings = app_settings.load_settings(tenant.conn)
    if record is None:
        send_with_fields(request, {"otpId": random_string(15).lower()})  # same answer: no email enumeration
        return
    options = collection.auth.otp
    reused = _reusable_code(tenant, otps, collection, record, options.duration)
    if reused is not None:  # sends nothing, so whether SMTP is configured does not matter (as in PocketBase)
        log.warning("tenant %s: too many OTP requests for %s - reusing the last issued", tenant.id, record["id"])
        send_with_fields(request, {"otpId": reused})
        return
    if not settings.smtp.enabled:
        log.warning("tenant %s: OTP for %s not sent: SMTP is not configured", tenant.id, collection.name)
        send_with_fields(request, {"otpId": random_string(15).lower()})  # PocketBase's mail fails: its code goes
        return
    # the code hashed off the turn is the one mailed (the turn runs again: auth.BcryptFirst)
    code = auth.stable_random("otp", lambda: "".join(secrets.choice("1234567890") for _ in range(options.length)))
    address = str(record.get("email") or "")
    stored = records.save_record(tenant, otps, {"collectionRef": collection.id, "recordRef": record["id"],
                                                "password": code, "sentTo": address}, None,
                                 manage=True, superuser=True)
    mail = mailer.render_record_mail(settings, collection, record, options.email_template,
                                     {"{OTP_ID}": str(stored["id"]), "{OTP}": code})
    mailer.send_in_background(tenant.id, settings.smtp, mail, "OTP")
    send_with_fields(request, {"otpId": stored["id"]})


def _reusable_code(tenant: Tenant, otps: Collection, collection: Collection, record: Row,
                   duration: int) -> str | None:
    """The latest code of the record when it already has more than :data:`MAX_RECENT_CODES` unexpired ones."""
    rows = list(tenant.conn.execute(
        f"SELECT id, created FROM {quote(otps.name)} WHERE collectionRef = ? AND recordRef = ? "
        "ORDER BY created DESC, rowid DESC", (collection.id, record["id"])))
    recent = sum(1 for _, created in rows if not _expired(created, duration))
    return str(rows[0][0]) if recent > MAX_RECENT_CODES else None


def _expired(created: object, duration: int, now: datetime | None = None) -> bool:
    moment = gocompat.parse_datetime(created)
    if moment is None:
        return True
    return (now or datetime.now(UTC)) - moment > timedelta(seconds=duration)


class _Attempts:
    """Fixed windows of allowed code checks per (tenant, record, client IP); small, pruned as it goes. On a
    node with worker processes they are counted in the node's shared memory (:attr:`shared`, set by the node):
    5 guesses in all, whichever process each reached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, str], tuple[float, int]] = {}
        self.shared: SharedRateLimiter | None = None

    def allow(self, key: tuple[str, str, str]) -> bool:
        if self.shared is not None:
            tenant_id, record_id, ip = key
            return self.shared.allow(f"{tenant_id}\0otp\0{record_id}\0{ip}", ATTEMPTS, int(ATTEMPTS_WINDOW),
                                     int(time.time()))
        now = time.monotonic()
        with self._lock:
            if len(self._windows) > 10_000:
                self._windows = {k: v for k, v in self._windows.items() if now - v[0] < ATTEMPTS_WINDOW}
            started, used = self._windows.get(key, (now, 0))
            if now - started >= ATTEMPTS_WINDOW:
                started, used = now, 0
            if used >= ATTEMPTS:
                return False
            self._windows[key] = (started, used + 1)
            return True


attempts: Final = _Attempts()


def auth_with_otp(request: TenantRequest) -> None:
    collection = auth_collection(request)
    otps = _otp_collection(collection, request)
    form, body = _form(request, ("otpId", "password"))
    errors: dict[str, Any] = {}
    for name, most in (("otpId", 255), ("password", 71)):
        if not form[name]:
            errors[name] = dict(_BLANK)
        elif len(form[name]) > most:
            errors[name] = _length(1, most)
    if errors:
        raise ApiError(400, VALIDATION_FAILED, errors)
    tenant = request.tenant
    otp = records.load_row(tenant, otps, form["otpId"])
    if otp is None or otp.get("collectionRef") != collection.id or \
            _expired(otp.get("created"), collection.auth.otp.duration):
        raise ApiError(400, INVALID_OTP)
    record = records.load_row(tenant, collection, str(otp.get("recordRef") or ""))
    if record is None:
        raise ApiError(400, INVALID_OTP)
    allowed = request.remembered.get("otp attempt")
    if allowed is None:  # counted once, when the turn runs again after the code's check (auth.BcryptFirst)
        allowed = request.remembered["otp attempt"] = attempts.allow((tenant.id, str(record["id"]), client_ip(request)))
    if not allowed:
        raise ApiError(429, TOO_MANY_ATTEMPTS)
    if not auth.verify_password(form["password"], str(otp.get("password") or "")):
        raise ApiError(400, INVALID_OTP)
    _delete_code(tenant, otps, form["otpId"])
    sent_to = str(otp.get("sentTo") or "")
    if not record.get("verified") and sent_to and record.get("email") == sent_to:
        record = _verify(tenant, collection, record)
    auth_response(request, collection, record, auth_method=OTP_METHOD, body=body)


def _delete_code(tenant: Tenant, otps: Collection, otp_id: str) -> None:
    try:
        with write_transaction(tenant.conn):
            tenant.conn.execute(f"DELETE FROM {quote(otps.name)} WHERE id = ?", (otp_id,))
    except apsw.Error as err:  # PocketBase only logs a failed delete of a used code
        log.warning("tenant %s: deleting used OTP %s failed: %s", tenant.id, otp_id, err)


def _verify(tenant: Tenant, collection: Collection, record: Row) -> Row:
    """A code mailed to the record's own address proves it: the record becomes verified, and without MFA
    its password is replaced by a random one (PocketBase's guard against pre-registered accounts)."""
    change: dict[str, Any] = {"verified": True}
    if not collection.auth.mfa.enabled:
        password = random_string(30)
        change |= {"password": password, "passwordConfirm": password}
    try:
        with auth.bcrypt_in_turn():  # the code is deleted already: a run again would not find it
            return records.save_record(tenant, collection, change, record, manage=True, superuser=True)
    except (records.RecordValidationError, apsw.Error) as err:
        log.error("tenant %s: marking %s verified after its OTP failed: %s", tenant.id, record["id"], err)
        return {**record, "verified": True}
