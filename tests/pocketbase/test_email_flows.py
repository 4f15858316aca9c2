"""Verification, password reset, email change, login alert and test mails on PocketBase's test data, with the mails
delivered to a real SMTP server on loopback (aiosmtpd): the token read from each mail is followed to the end.
The same flow runs against stock PocketBase 0.40.6 and a pbfast tenant, and their answers, the mails'
visible parts and the tokens' claims must be the same."""

from __future__ import annotations

import base64
import re
import time
from email.message import EmailMessage

import httpx
import orjson

from pbharness import Backend
from test_otp import Inbox, inbox  # noqa: F401 - the fixture, by name

CLIENTS = "/api/collections/clients"
NEW_PASSWORD = "new-password-1"
_LINK = re.compile(r"/_/#/auth/(confirm-[a-z-]+)/([A-Za-z0-9_.-]+)")


def _post(backend: Backend, path: str, body: dict[str, object], token: str = "") -> httpx.Response:
    headers = {"Authorization": token} if token else {}
    return httpx.post(backend.url + path, json=body, headers=headers, timeout=30)


def _link(message: EmailMessage) -> tuple[str, str]:
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    found = _LINK.search(html)
    assert found, html
    return found.group(1), found.group(2)


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    lasts = int(claims.pop("exp")) - int(time.time())  # type: ignore[call-overload]
    claims["lasts"] = round(lasts, -2)  # the collection's duration, to the issuing moment's second
    claims.pop("id", None)
    return claims


class Flow:
    """Requests of one backend and what they answered, random parts blanked."""

    def __init__(self, backend: Backend, mails: Inbox) -> None:
        self.backend, self.mails, self.seen = backend, mails, len(mails.messages)
        self.outcomes: list[object] = []

    def call(self, path: str, body: dict[str, object], token: str = "") -> httpx.Response:
        response = _post(self.backend, path, body, token)
        shown: object = None
        if response.content:
            shown = response.json()
            if isinstance(shown, dict):
                shown = {k: ("<random>" if k == "token" else v) for k, v in shown.items()}
                if isinstance(shown.get("record"), dict):
                    shown["record"] = {k: v for k, v in shown["record"].items() if k != "updated"}
        self.outcomes.append((path.rsplit("/", 1)[-1], response.status_code, shown))
        return response

    def mail(self, to: str, subject_start: str) -> EmailMessage:
        """The next mail to ``to`` with that subject (login alerts may come in between)."""
        deadline = time.monotonic() + 20
        while True:
            for message in self.mails.messages[self.seen:]:
                if message["To"] == to and str(message["Subject"]).startswith(subject_start):
                    self.seen = self.mails.messages.index(message) + 1
                    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
                    found = _LINK.search(html)
                    self.outcomes.append(("mail", message["From"], message["To"], message["Subject"],
                                          found.group(1) if found else ""))
                    return message
            assert time.monotonic() < deadline, f"no mail to {to} ({subject_start})"
            time.sleep(0.05)

    def no_new_mail(self, to: str) -> None:
        time.sleep(0.3)  # a mail would have been handed over by now (the server is on loopback)
        self.outcomes.append(("mails to", to, sum(1 for m in self.mails.messages[self.seen:] if m["To"] == to)))


def _flow(backend: Backend, mails: Inbox, port: int) -> list[object]:
    settings = httpx.patch(f"{backend.url}/api/settings", headers={"Authorization": backend.superuser_token},
                           json={"smtp": {"enabled": True, "host": "127.0.0.1", "port": port}}, timeout=30)
    assert settings.status_code == 200, settings.text
    flow = Flow(backend, mails)

    # verification of the unverified test2, followed from its mail
    flow.call(f"{CLIENTS}/request-verification", {"email": "test2@example.com"})
    page, token = _link(flow.mail("test2@example.com", "Verify your"))
    assert page == "confirm-verification"
    flow.outcomes.append(("claims", _claims(token)))
    time.sleep(0.2)  # the mark against a second mail is set once the first went out
    flow.call(f"{CLIENTS}/request-verification", {"email": "test2@example.com"})
    flow.no_new_mail("test2@example.com")
    flow.call(f"{CLIENTS}/confirm-verification", {"token": token})
    flow.call(f"{CLIENTS}/confirm-verification", {"token": token})  # already verified: still 204
    login = flow.call(f"{CLIENTS}/auth-with-password", {"identity": "test2@example.com", "password": "1234567890"})
    old_auth = login.json()["token"]

    # password reset: the new password ends the tokens issued before
    flow.call(f"{CLIENTS}/request-password-reset", {"email": "test2@example.com"})
    page, token = _link(flow.mail("test2@example.com", "Reset your"))
    flow.outcomes.append(("claims", _claims(token)))
    time.sleep(0.2)
    flow.call(f"{CLIENTS}/request-password-reset", {"email": "test2@example.com"})
    flow.no_new_mail("test2@example.com")
    flow.call(f"{CLIENTS}/confirm-password-reset", {"token": token, "password": "short", "passwordConfirm": "x"})
    flow.call(f"{CLIENTS}/confirm-password-reset",
              {"token": token, "password": NEW_PASSWORD, "passwordConfirm": NEW_PASSWORD})
    flow.call(f"{CLIENTS}/confirm-password-reset",
              {"token": token, "password": NEW_PASSWORD, "passwordConfirm": NEW_PASSWORD})
    flow.call(f"{CLIENTS}/auth-refresh", {}, old_auth)
    flow.call(f"{CLIENTS}/auth-with-password", {"identity": "test2@example.com", "password": "1234567890"})
    login = flow.call(f"{CLIENTS}/auth-with-password", {"identity": "test2@example.com", "password": NEW_PASSWORD})
    current = login.json()["token"]

    # email change, confirmed with the token mailed to the new address
    flow.call(f"{CLIENTS}/request-email-change", {"newEmail": "test@example.com"}, current)
    flow.call(f"{CLIENTS}/request-email-change", {"newEmail": "changed@example.com"}, current)
    page, token = _link(flow.mail("changed@example.com", "Confirm your"))
    flow.outcomes.append(("claims", _claims(token)))
    flow.call(f"{CLIENTS}/confirm-email-change", {"token": token, "password": "1234567890"})
    flow.call(f"{CLIENTS}/confirm-email-change", {"token": token, "password": NEW_PASSWORD})
    flow.call(f"{CLIENTS}/auth-refresh", {}, current)
    flow.call(f"{CLIENTS}/auth-with-password", {"identity": "changed@example.com", "password": NEW_PASSWORD})

    # a login alert for test@example.com, whose record has logged in before from another place
    for agent in ("agent-x", "agent-x"):
        response = httpx.post(f"{backend.url}{CLIENTS}/auth-with-password", headers={"User-Agent": agent}, timeout=30,
                              json={"identity": "test@example.com", "password": "1234567890"})
        flow.outcomes.append(("login", agent, response.status_code))
    alert = flow.mail("test@example.com", "Login from a new location")
    text = alert.get_body(("html",)).get_content()  # type: ignore[union-attr]
    flow.outcomes.append(("alert names the origin", "127.0.0.1 agent-x" in text, "acme_test" in text))
    flow.no_new_mail("test@example.com")  # the second login came from a known origin

    # the test mails of every template
    for template, subject in (("verification", "Verify your"), ("password-reset", "Reset your"),
                              ("email-change", "Confirm your"), ("otp", "OTP for"),
                              ("login-alert", "Login from a new location")):
        response = httpx.post(f"{backend.url}/api/settings/test/email", timeout=30,
                              headers={"Authorization": backend.superuser_token},
                              json={"email": "probe@example.com", "template": template, "collection": "clients"})
        flow.outcomes.append((template, response.status_code))
        message = flow.mail("probe@example.com", subject)
        if template in ("otp", "login-alert"):
            body = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
            flow.outcomes.append(("has", "123456" in body, "TEST_IP TEST_USER_AGENT" in body))
    return flow.outcomes


def test_email_flows_answer_as_pocketbase(stock_pocketbase: Backend, egress_tenant: Backend,
                                          inbox: tuple[Inbox, int]) -> None:  # noqa: F811 - the fixture
    mails, port = inbox
    expected = _flow(stock_pocketbase, mails, port)
    got = _flow(egress_tenant, mails, port)
    assert got == expected
    statuses = [outcome[1] for outcome in got if isinstance(outcome, tuple) and outcome[0] == "auth-with-password"]
    assert statuses == [200, 400, 200, 200]
    assert ("alert names the origin", True, True) in got and ("mails to", "test@example.com", 0) in got  # the old password stops working, the new one and new email work
