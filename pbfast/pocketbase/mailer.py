"""Mails of a tenant's auth flows, sent through the tenant's SMTP settings as PocketBase sends them
(``tools/mailer/smtp.go``, ``mails/record.go``).

- :func:`render_record_mail` fills an auth collection's email template (``{APP_NAME}``, ``{APP_URL}``,
  ``{RECORD:<field>}`` for the record's non-hidden fields, HTML-escaped but for dates, bools and numbers, plus the flow's own placeholders
  such as ``{OTP}``) and wraps the body in a small HTML document.
- :func:`send_in_background` sends on a daemon thread, as PocketBase does (the answer does not wait for
  the mail server, so its timing does not tell whether an address exists).

SMTP as PocketBase dials it: ``tls`` on means implicit TLS; otherwise STARTTLS when the server offers it;
AUTH PLAIN (or LOGIN) when a username is set; ``localName`` (default ``localhost``) in the EHLO.
Without SMTP enabled PocketBase falls back to the host's ``sendmail``; a tenant has no host of its own, so
pbfast sends nothing then (as PocketBase on a host without sendmail, where the send fails).

Unlike PocketBase (one app per host), a tenant's SMTP host may not be an address of the node itself
(loopback, link-local such as cloud metadata, unspecified): :mod:`pbfast.pocketbase.egress`.
"""

from __future__ import annotations

import html
import re
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any, Final

from pbfast.logs import component_logger
from pbfast.pocketbase import egress, gocompat
from pbfast.pocketbase.app_settings import Settings, SmtpSettings
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.collections.auth_options import EmailTemplate

__all__ = ["Mail", "escape_html", "render_record_mail", "send", "send_in_background"]

log = component_logger("Mailer")

SMTP_TIMEOUT: Final = 15.0  # seconds for the whole conversation's socket operations
# field types whose text cannot hold markup (PocketBase's nonescapeTypes); every other value is escaped
_NOT_ESCAPED: Final = ("autodate", "date", "bool", "number")
_TAGS: Final = re.compile(r"<[^>]+>")
_HTML_DOCUMENT: Final = ('<!DOCTYPE html>\n<html>\n<head>\n<meta http-equiv="Content-Type" content="text/html; '
                         'charset=UTF-8" />\n<meta name="viewport" content="width=device-width,initial-scale=1" />\n'
                         "</head>\n<body>\n{content}\n</body>\n</html>\n")


@dataclass(frozen=True, slots=True)
class Mail:
    sender_name: str
    sender_address: str
    to: str
    subject: str
    html: str

    def message(self) -> EmailMessage:
        message = EmailMessage()
        message["From"] = formataddr((self.sender_name, self.sender_address))
        message["To"] = self.to
        message["Subject"] = self.subject
        text = html.unescape(_TAGS.sub("", self.html)).strip()
        message.set_content(text)
        message.add_alternative(self.html, subtype="html")
        return message


_GO_HTML_ESCAPES: Final = str.maketrans({"&": "&amp;", "'": "&#39;", "<": "&lt;", ">": "&gt;", '"': "&#34;"})


def escape_html(text: str) -> str:
    """Go's ``html.EscapeString`` (its entities differ from Python's ``html.escape``)."""
    return text.translate(_GO_HTML_ESCAPES)


def render_record_mail(settings: Settings, collection: Collection, record: dict[str, Any], template: EmailTemplate,
                       placeholders: dict[str, str]) -> Mail:
    """The mail of ``template`` for an auth record, to its email address."""
    values = {"{APP_NAME}": settings.meta.app_name, "{APP_URL}": settings.meta.app_url, **placeholders}
    for field in collection.fields:
        key = "{RECORD:" + field.name + "}"
        if field.hidden or key in values:
            continue
        text = gocompat.cast_to_string(record.get(field.name))
        values[key] = text if field.TYPE in _NOT_ESCAPED else escape_html(text)
    subject, body = template.subject, template.body
    for key, value in values.items():
        subject, body = subject.replace(key, value), body.replace(key, value)
    return Mail(settings.meta.sender_name, settings.meta.sender_address, str(record.get("email") or ""), subject,
                _HTML_DOCUMENT.format(content=body))


class _PinnedSmtp(smtplib.SMTP):
    """SMTP to an address resolved beforehand (the host name still names the server, e.g. for STARTTLS)."""

    def __init__(self, address: str, **kwargs: Any) -> None:
        self._address = address
        super().__init__(**kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout, self.source_address)


class _PinnedSmtpTls(smtplib.SMTP_SSL):
    """Implicit TLS to an address resolved beforehand, verifying the certificate against the host name."""

    def __init__(self, address: str, **kwargs: Any) -> None:
        self._address = address
        super().__init__(**kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((self._address, port), timeout, self.source_address)
        return self.context.wrap_socket(raw, server_hostname=host)


def send(smtp: SmtpSettings, mail: Mail) -> None:
    """Deliver ``mail`` through ``smtp`` (raises ``smtplib.SMTPException``/``OSError`` on failure)."""
    local_name = smtp.local_name or "localhost"
    address = egress.checked_address(smtp.host, smtp.port)
    client: smtplib.SMTP
    if smtp.tls:
        client = _PinnedSmtpTls(address, local_hostname=local_name, timeout=SMTP_TIMEOUT,
                                context=ssl.create_default_context())
    else:
        client = _PinnedSmtp(address, local_hostname=local_name, timeout=SMTP_TIMEOUT)
    with client:
        client.connect(smtp.host, smtp.port)
        client.ehlo()
        if not smtp.tls and client.has_extn("starttls"):
            client.starttls(context=ssl.create_default_context())
            client.ehlo()
        if smtp.username:
            client.user, client.password = smtp.username, smtp.password
            mechanism = client.auth_login if smtp.auth_method == "LOGIN" else client.auth_plain
            client.auth(mechanism.__name__.removeprefix("auth_").upper(), mechanism)
        client.send_message(mail.message())


def send_in_background(tenant_id: str, smtp: SmtpSettings, mail: Mail, what: str) -> None:
    """Send on a daemon thread; a failure is logged (the answer has gone already)."""

    def deliver() -> None:
        try:
            send(smtp, mail)
        except (smtplib.SMTPException, OSError) as err:
            log.warning("tenant %s: sending the %s mail failed: %s", tenant_id, what, err)

    threading.Thread(target=deliver, name=f"mail-{tenant_id}", daemon=True).start()
