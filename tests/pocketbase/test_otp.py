"""OTP login on a pbfast tenant holding PocketBase's test data, with mails delivered to a real SMTP server
on loopback (aiosmtpd): the code read from the mail logs in, completes MFA either way round, verifies the
address, and guessing is cut off after 5 attempts."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage

import httpx
import pytest
from aiosmtpd.controller import Controller

from helpers import free_port
from pbharness import Backend

USERS = "/api/collections/users"
CLIENTS = "/api/collections/clients"


class Inbox:
    """An aiosmtpd handler keeping every delivered message."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[attr-defined,arg-type]
        return "250 OK"

    def wait(self, count: int, timeout: float = 20.0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{count} mail(s) expected, {len(self.messages)} arrived"
            time.sleep(0.05)
        return self.messages[count - 1]


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler, port = Inbox(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def _superuser(backend: Backend) -> dict[str, str]:
    return {"Authorization": backend.superuser_token}


def _use_smtp(backend: Backend, port: int) -> None:
    response = httpx.patch(f"{backend.url}/api/settings", headers=_superuser(backend), timeout=30,
                           json={"smtp": {"enabled": True, "host": "127.0.0.1", "port": port}})
    assert response.status_code == 200, response.text


def _code(message: EmailMessage) -> str:
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    found = re.search(r"<strong>(\d+)</strong>", html)
    assert found, html
    return found.group(1)


def _post(backend: Backend, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(backend.url + path, json=body, timeout=30)


def test_otp_mail_login_and_mfa(egress_tenant: Backend, inbox: tuple[Inbox, int]) -> None:
    backend, (mails, port) = egress_tenant, inbox
    _use_smtp(backend, port)
    otp_id = _post(backend, f"{USERS}/request-otp", {"email": "test@example.com"}).json()["otpId"]
    mail = mails.wait(1)
    assert mail["To"] == "test@example.com" and mail["Subject"] == "OTP for acme_test"
    assert mail["From"] == "Support <support@example.com>"
    code = _code(mail)
    assert len(code) == 8  # the collection's otp.length

    # users has MFA on: the code is a first factor, the password completes it
    assert _post(backend, f"{USERS}/auth-with-otp", {"otpId": otp_id, "password": "00000000"}).status_code == 400
    first = _post(backend, f"{USERS}/auth-with-otp", {"otpId": otp_id, "password": code})
    assert first.status_code == 401, first.text
    mfa_id = first.json()["mfaId"]
    reused = _post(backend, f"{USERS}/auth-with-otp", {"otpId": otp_id, "password": code})
    assert reused.json() == {"data": {}, "message": "Invalid or expired OTP.", "status": 400}
    done = _post(backend, f"{USERS}/auth-with-password",
                 {"identity": "test@example.com", "password": "1234567890", "mfaId": mfa_id})
    assert done.status_code == 200, done.text
    assert done.json()["record"]["email"] == "test@example.com" and done.json()["token"]

    # the other way round: password first, then the code with the mfaId
    mfa_id = _post(backend, f"{USERS}/auth-with-password",
                   {"identity": "test@example.com", "password": "1234567890"}).json()["mfaId"]
    otp_id = _post(backend, f"{USERS}/request-otp", {"email": "test@example.com"}).json()["otpId"]
    done = _post(backend, f"{USERS}/auth-with-otp?mfaId={mfa_id}", {"otpId": otp_id, "password": _code(mails.wait(2))})
    assert done.status_code == 200, done.text

    # unknown address: the same answer, no mail, an id that logs nobody in
    ghost = _post(backend, f"{USERS}/request-otp", {"email": "nobody@example.com"})
    assert ghost.status_code == 200 and len(ghost.json()["otpId"]) == 15
    assert _post(backend, f"{USERS}/auth-with-otp", {"otpId": ghost.json()["otpId"], "password": "1"}).status_code == 400
    time.sleep(0.3)
    assert len(mails.messages) == 2


def test_otp_guessing_is_limited(egress_tenant: Backend, inbox: tuple[Inbox, int]) -> None:
    backend, (mails, port) = egress_tenant, inbox
    _use_smtp(backend, port)
    otp_id = _post(backend, f"{USERS}/request-otp", {"email": "test2@example.com"}).json()["otpId"]
    code = _code(mails.wait(1))
    wrong = "0" * len(code) if code != "0" * len(code) else "1" * len(code)
    statuses = [_post(backend, f"{USERS}/auth-with-otp", {"otpId": otp_id, "password": wrong}).status_code
                for _ in range(5)]
    assert statuses == [400] * 5
    blocked = _post(backend, f"{USERS}/auth-with-otp", {"otpId": otp_id, "password": code})
    assert blocked.json() == {"data": {}, "message": "Too many attempts, please try again later with a new OTP.",
                              "status": 429}


def test_otp_verifies_the_address(egress_tenant: Backend, inbox: tuple[Inbox, int]) -> None:
    """clients (no MFA): the unverified test2 logs in with a mailed code, becomes verified, and its old
    password stops working (PocketBase resets it against pre-registered accounts)."""
    backend, (mails, port) = egress_tenant, inbox
    _use_smtp(backend, port)
    enabled = httpx.patch(f"{backend.url}{CLIENTS}", json={"otp": {"enabled": True}}, headers=_superuser(backend),
                          timeout=30)
    assert enabled.status_code == 200, enabled.text
    otp_id = _post(backend, f"{CLIENTS}/request-otp", {"email": "test2@example.com"}).json()["otpId"]
    login = _post(backend, f"{CLIENTS}/auth-with-otp", {"otpId": otp_id, "password": _code(mails.wait(1))})
    assert login.status_code == 200, login.text
    assert login.json()["record"]["verified"] is True
    refreshed = httpx.post(f"{backend.url}{CLIENTS}/auth-refresh", headers={"Authorization": login.json()["token"]},
                           timeout=30)
    assert refreshed.status_code == 200, refreshed.text
    old_password = _post(backend, f"{CLIENTS}/auth-with-password",
                         {"identity": "test2@example.com", "password": "1234567890"})
    assert old_password.status_code == 400


def test_otp_without_smtp_sends_nothing(pbfast_fixture_tenant: Backend) -> None:
    backend = pbfast_fixture_tenant
    answer = _post(backend, f"{USERS}/request-otp", {"email": "test@example.com"})
    assert answer.status_code == 200 and len(answer.json()["otpId"]) == 15
    stored = httpx.get(f"{backend.url}/api/collections/_otps/records", headers=_superuser(backend), timeout=30)
    assert stored.json()["totalItems"] == 0


def _otp_flow(backend: Backend, mails: Inbox, port: int) -> list[tuple[int, object]]:
    """OTP then password on users (MFA), then OTP alone on clients for the unverified test2; the answers
    with their random parts blanked, and the mails' visible parts."""
    _use_smtp(backend, port)
    outcomes: list[tuple[int, object]] = []

    def record(response: httpx.Response) -> dict[str, object]:
        body = response.json()
        shown = {k: ("<random>" if k in ("otpId", "mfaId", "token") else v) for k, v in body.items()}
        if isinstance(shown.get("record"), dict):
            shown["record"] = {k: v for k, v in shown["record"].items() if k not in ("updated",)}
        outcomes.append((response.status_code, shown))
        return body  # type: ignore[no-any-return]

    before = len(mails.messages)
    otp_id = record(_post(backend, f"{USERS}/request-otp", {"email": "test@example.com"}))["otpId"]
    mail = mails.wait(before + 1)
    outcomes.append((0, {"to": mail["To"], "from": mail["From"], "subject": mail["Subject"]}))
    sessions = httpx.get(f"{backend.url}/api/collections/_otps/records?fields=collectionRef,recordRef,sentTo",
                         headers=_superuser(backend), timeout=30)
    record(sessions)
    mfa_id = record(_post(backend, f"{USERS}/auth-with-otp", {"otpId": otp_id, "password": _code(mail)}))["mfaId"]
    record(_post(backend, f"{USERS}/auth-with-password",
                 {"identity": "test@example.com", "password": "1234567890", "mfaId": mfa_id}))
    enabled = httpx.patch(f"{backend.url}{CLIENTS}?fields=otp", json={"otp": {"enabled": True}},
                          headers=_superuser(backend), timeout=30)
    record(enabled)
    otp_id = record(_post(backend, f"{CLIENTS}/request-otp", {"email": "test2@example.com"}))["otpId"]
    record(_post(backend, f"{CLIENTS}/auth-with-otp", {"otpId": otp_id, "password": _code(mails.wait(before + 2))}))
    record(_post(backend, f"{CLIENTS}/auth-with-password", {"identity": "test2@example.com", "password": "1234567890"}))
    return outcomes


def test_otp_flow_answers_as_pocketbase(stock_pocketbase: Backend, egress_tenant: Backend,
                                        inbox: tuple[Inbox, int]) -> None:
    mails, port = inbox
    expected = _otp_flow(stock_pocketbase, mails, port)
    assert _otp_flow(egress_tenant, mails, port) == expected


def test_tenant_smtp_settings_cannot_reach_the_node_itself(pbfast_fixture_tenant: Backend,
                                                           inbox: tuple[Inbox, int]) -> None:
    """On a node without PBFAST_ALLOW_LOOPBACK_EGRESS a tenant's SMTP host on loopback is refused: the
    answer is PocketBase's, no connection is made (the loopback server receives nothing)."""
    backend, (mails, port) = pbfast_fixture_tenant, inbox
    _use_smtp(backend, port)
    answer = _post(backend, f"{USERS}/request-otp", {"email": "test@example.com"})
    assert answer.status_code == 200 and len(answer.json()["otpId"]) == 15
    time.sleep(1.5)
    assert mails.messages == []


def test_a_new_password_voids_unused_codes(egress_tenant: Backend, inbox: tuple[Inbox, int]) -> None:
    """A code mailed before the password changed (a new tokenKey) cannot log in afterwards, as in PocketBase
    (whoever read the old mailbox or reset the password must not keep a way in)."""
    backend, (mails, port) = egress_tenant, inbox
    _use_smtp(backend, port)
    enabled = httpx.patch(f"{backend.url}{CLIENTS}", json={"otp": {"enabled": True}}, headers=_superuser(backend),
                          timeout=30)
    assert enabled.status_code == 200, enabled.text
    otp_id = _post(backend, f"{CLIENTS}/request-otp", {"email": "test@example.com"}).json()["otpId"]
    code = _code(mails.wait(1))
    changed = httpx.patch(f"{backend.url}{CLIENTS}/records/gk390qegs4y47wn", headers=_superuser(backend), timeout=30,
                          json={"password": "another-password", "passwordConfirm": "another-password"})
    assert changed.status_code == 200, changed.text
    used = _post(backend, f"{CLIENTS}/auth-with-otp", {"otpId": otp_id, "password": code})
    assert used.json() == {"data": {}, "message": "Invalid or expired OTP.", "status": 400}
