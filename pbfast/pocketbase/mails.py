"""The mails of the auth flows (PocketBase's ``mails/record.go``): each renders the collection's template
for the record with the flow's placeholders (``{TOKEN}``, ``{OTP}``, ``{ALERT_INFO}``) and goes out through
the tenant's SMTP settings (:mod:`pbfast.pocketbase.mailer`).

Without SMTP enabled PocketBase hands the mail to the host's ``sendmail``. A tenant has no host of its own
and a node has no ``sendmail``, so a send fails as it fails for PocketBase on a host without one
(:data:`NO_SENDMAIL`, its message): the flows that wait for the mail (email change, test email) answer
with it, the others answer as usual and only log it.
"""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from pbfast.logs import component_logger
from pbfast.pocketbase import mailer, record_tokens
from pbfast.pocketbase.app_settings import Settings
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.mailer import Mail
from pbfast.pocketbase.records import Row

__all__ = ["NO_SENDMAIL", "MailError", "auth_alert_mail", "deliver", "email_change_mail", "otp_mail",
           "password_reset_mail", "send_in_background", "system_alert_mail", "verification_mail"]

log = component_logger("Mailer")

NO_SENDMAIL: Final = "failed to locate a sendmail executable path"


class MailError(Exception):
    """The mail could not be delivered (the message is what PocketBase would say)."""


def verification_mail(settings: Settings, collection: Collection, record: Row) -> Mail:
    token = record_tokens.new_verification_token(collection, record)
    return mailer.render_record_mail(settings, collection, record, collection.auth.templates["verificationTemplate"],
                                     {"{TOKEN}": token})


def password_reset_mail(settings: Settings, collection: Collection, record: Row) -> Mail:
    token = record_tokens.new_password_reset_token(collection, record)
    return mailer.render_record_mail(settings, collection, record, collection.auth.templates["resetPasswordTemplate"],
                                     {"{TOKEN}": token})


def email_change_mail(settings: Settings, collection: Collection, record: Row, new_email: str) -> Mail:
    """Sent to the new address, which the token carries."""
    token = record_tokens.new_email_change_token(collection, record, new_email)
    mail = mailer.render_record_mail(settings, collection, record,
                                     collection.auth.templates["confirmEmailChangeTemplate"], {"{TOKEN}": token})
    return replace(mail, to=new_email)


def otp_mail(settings: Settings, collection: Collection, record: Row, otp_id: str, code: str) -> Mail:
    return mailer.render_record_mail(settings, collection, record, collection.auth.otp.email_template,
                                     {"{OTP_ID}": otp_id, "{OTP}": code})


def auth_alert_mail(settings: Settings, collection: Collection, record: Row, info: str) -> Mail:
    return mailer.render_record_mail(settings, collection, record, collection.auth.auth_alert_template,
                                     {"{ALERT_INFO}": mailer.escape_html(info)})


def system_alert_mail(settings: Settings, to: str, subject: str, details: str) -> Mail:
    """PocketBase's system alert to a superuser (e.g. a failed scheduled backup): its subject and wording."""
    app_name = settings.meta.app_name
    page = (f"<!DOCTYPE html>\n<html>\n<body>\n<p>{mailer.escape_html(app_name)} system alert occurred:</p>\n"
            f'<p style="white-space: pre-wrap"><strong>{mailer.escape_html(details)}</strong></p>\n'
            "<p>For more information you could explore the logs in the dashboard of your application.</p>\n"
            "</body>\n</html>")
    return Mail(settings.meta.sender_name, settings.meta.sender_address, to,
                f"[{app_name} system alert] {mailer.escape_html(subject)}", page)


def deliver(settings: Settings, mail: Mail) -> None:
    """Send now; :class:`MailError` when it fails (or when there is no SMTP to send with)."""
    if not settings.smtp.enabled:
        raise MailError(NO_SENDMAIL)
    try:
        mailer.send(settings.smtp, mail)
    except (smtplib.SMTPException, OSError) as err:
        raise MailError(str(err) or type(err).__name__) from err


def send_in_background(tenant_id: str, settings: Settings, mail: Mail, what: str,
                       done: Callable[[bool], None] | None = None) -> None:
    """Send on a daemon thread (the answer does not wait, so its timing tells nothing about the address);
    ``done`` is called there with whether it was delivered."""

    def run() -> None:
        try:
            deliver(settings, mail)
            delivered = True
        except MailError as err:
            log.warning("tenant %s: sending the %s mail failed: %s", tenant_id, what, err)
            delivered = False
        if done is not None:
            done(delivered)

    threading.Thread(target=run, name=f"mail-{tenant_id}", daemon=True).start()
