"""Differential tests of the email flows without SMTP configured (verification, password reset, email change,
test mail): every validation branch of PocketBase 0.40.6's forms, with tokens signed by the fixture's own
keys (both servers hold copies of the same data, so they judge the same token), and what each flow leaves
behind (verified, new password, new email). Mails cannot go out (PocketBase falls back to a ``sendmail``
this host does not have); the flows that follow mailed tokens are in ``test_email_flows.py``."""

from __future__ import annotations

import time
from pathlib import Path

import apsw
import pytest

from differential import Step, compare
from fixture_data import CLIENT1, CLIENT2, USER1
from pbharness import FIXTURE, Backend
from test_differential import fixture_ids

from pbfast.pocketbase import auth

G = None  # a guest step
_TOKEN_CONFIG = {"verification": "verificationToken", "passwordReset": "passwordResetToken",
                 "emailChange": "emailChangeToken"}


def _token(collection: str, record_id: str, token_type: str, *, lasts: int = 3600, **claims: str) -> str:
    """A token of the fixture's record signed as PocketBase signs that type (its tokenKey + the secret)."""
    connection = apsw.Connection(str(FIXTURE / "data.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        collection_id, secret = connection.execute(
            "SELECT id, json_extract(options, ?) FROM _collections WHERE name = ?",
            (f"$.{_TOKEN_CONFIG[token_type]}.secret", collection)).fetchone()
        token_key = connection.execute(f'SELECT tokenKey FROM "{collection}" WHERE id = ?', (record_id,)).fetchone()[0]
    finally:
        connection.close()
    return auth.issue_token({"type": token_type, "id": record_id, "collectionId": collection_id, **claims},
                            token_key + secret, lasts, now=time.time())


USERS_TEST = ("users", "4q1xlclmfloku33")
CLIENTS_TEST = ("clients", "gk390qegs4y47wn")
CLIENTS_TEST2 = ("clients", "o1y0dd0spd786md")  # unverified
NOLOGIN_TEST = ("nologin", "dc49k6jgejn40h3")
TEST_EMAIL = "test@example.com"


def _scenario() -> list[Step]:
    verify = _token(*USERS_TEST, "verification", email=TEST_EMAIL)
    reset_clients = _token(*CLIENTS_TEST2, "passwordReset", email="test2@example.com")
    change = _token(*CLIENTS_TEST, "emailChange", email=TEST_EMAIL, newEmail="new@example.com")
    users, clients = "/api/collections/users", "/api/collections/clients"
    return [
        Step("verify: missing collection", "POST", "/api/collections/missing/request-verification",
             {"email": TEST_EMAIL}, auth=G),
        Step("verify: not auth", "POST", "/api/collections/demo1/request-verification", {"email": TEST_EMAIL}, auth=G),
        Step("verify: superusers", "POST", "/api/collections/_superusers/request-verification", {"email": TEST_EMAIL},
             auth=G),
        Step("verify: blank", "POST", f"{users}/request-verification", {}, auth=G),
        Step("verify: not an email", "POST", f"{users}/request-verification", {"email": "x"}, auth=G),
        Step("verify: not a string", "POST", f"{users}/request-verification", {"email": 1}, auth=G),
        Step("verify: body not an object", "POST", f"{users}/request-verification", raw=b"[1]", auth=G),
        Step("verify: unknown", "POST", f"{users}/request-verification", {"email": "nobody@example.com"}, auth=G),
        Step("verify: already verified", "POST", f"{users}/request-verification", {"email": "test2@example.com"},
             auth=G),
        Step("verify: unverified", "POST", f"{users}/request-verification", {"email": TEST_EMAIL}, auth=G),
        Step("confirm verify: superusers", "POST", "/api/collections/_superusers/confirm-verification",
             {"token": verify}, auth=G),
        Step("confirm verify: blank", "POST", f"{users}/confirm-verification", {}, auth=G),
        Step("confirm verify: malformed", "POST", f"{users}/confirm-verification", {"token": "abc"}, auth=G),
        Step("confirm verify: expired", "POST", f"{users}/confirm-verification",
             {"token": _token(*USERS_TEST, "verification", lasts=-60, email=TEST_EMAIL)}, auth=G),
        Step("confirm verify: another type", "POST", f"{users}/confirm-verification",
             {"token": _token(*USERS_TEST, "passwordReset", email=TEST_EMAIL)}, auth=G),
        Step("confirm verify: no email claim", "POST", f"{users}/confirm-verification",
             {"token": _token(*USERS_TEST, "verification")}, auth=G),
        Step("confirm verify: another email", "POST", f"{users}/confirm-verification",
             {"token": _token(*USERS_TEST, "verification", email="other@example.com")}, auth=G),
        Step("confirm verify: another collection", "POST", f"{clients}/confirm-verification", {"token": verify},
             auth=G),
        Step("confirm verify", "POST", f"{users}/confirm-verification", {"token": verify}, auth=G),
        Step("confirm verify: verified", "GET", f"{users}/records/4q1xlclmfloku33?fields=verified"),
        Step("confirm verify: again", "POST", f"{users}/confirm-verification", {"token": verify}, auth=G),
        Step("confirm verify: no password auth", "POST", "/api/collections/nologin/confirm-verification",
             {"token": _token(*NOLOGIN_TEST, "verification", email=TEST_EMAIL)}, auth=G),
        Step("reset: password auth off", "POST", "/api/collections/nologin/request-password-reset",
             {"email": TEST_EMAIL}, auth=G),
        Step("reset: blank", "POST", f"{clients}/request-password-reset", {"email": ""}, auth=G),
        Step("reset: too long", "POST", f"{clients}/request-password-reset", {"email": "a" * 250 + "@example.com"},
             auth=G),
        Step("reset: unknown", "POST", f"{clients}/request-password-reset", {"email": "nobody@example.com"}, auth=G),
        Step("reset: known", "POST", f"{clients}/request-password-reset", {"email": TEST_EMAIL}, auth=G),
        Step("confirm reset: blank", "POST", f"{clients}/confirm-password-reset", {}, auth=G),
        Step("confirm reset: not strings", "POST", f"{clients}/confirm-password-reset", {"token": 5}, auth=G),
        Step("confirm reset: another type", "POST", f"{clients}/confirm-password-reset",
             {"token": _token(*CLIENTS_TEST, "verification", email=TEST_EMAIL), "password": "12345678",
              "passwordConfirm": "12345678"}, auth=G),
        Step("confirm reset: another collection", "POST", f"{users}/confirm-password-reset",
             {"token": reset_clients, "password": "12345678", "passwordConfirm": "12345678"}, auth=G),
        Step("confirm reset: short and mismatched", "POST", f"{clients}/confirm-password-reset",
             {"token": reset_clients, "password": "1", "passwordConfirm": "2"}, auth=G),
        Step("confirm reset: too long", "POST", f"{clients}/confirm-password-reset",
             {"token": reset_clients, "password": "x" * 256, "passwordConfirm": "x" * 256}, auth=G),
        Step("confirm reset", "POST", f"{clients}/confirm-password-reset",
             {"token": reset_clients, "password": "changed-pw", "passwordConfirm": "changed-pw"}, auth=G),
        Step("confirm reset: used token", "POST", f"{clients}/confirm-password-reset",
             {"token": reset_clients, "password": "changed-pw", "passwordConfirm": "changed-pw"}, auth=G),
        Step("confirm reset: old auth token", "GET", f"{clients}/records/o1y0dd0spd786md?fields=id", headers=CLIENT2,
             auth=G),
        Step("confirm reset: new password", "POST",
             f"{clients}/auth-with-password?fields=record.email,record.verified,token",
             {"identity": "test2@example.com", "password": "changed-pw"}, auth=G),
        Step("change: guest", "POST", f"{clients}/request-email-change", {"newEmail": "a@example.com"}, auth=G),
        Step("change: other collection's record", "POST", f"{clients}/request-email-change",
             {"newEmail": "a@example.com"}, headers=USER1, auth=G),
        Step("change: missing collection", "POST", "/api/collections/missing/request-email-change",
             {"newEmail": "a@example.com"}, headers=USER1, auth=G),
        Step("change: superuser", "POST", "/api/collections/_superusers/request-email-change",
             {"newEmail": "a@example.com"}),
        Step("change: blank", "POST", f"{clients}/request-email-change", {}, auth="as:confirm reset: new password"),
        Step("change: same email", "POST", f"{clients}/request-email-change", {"newEmail": "test2@example.com"},
             auth="as:confirm reset: new password"),
        Step("change: taken", "POST", f"{clients}/request-email-change", {"newEmail": TEST_EMAIL},
             auth="as:confirm reset: new password"),
        Step("change: no sendmail", "POST", f"{clients}/request-email-change", {"newEmail": "fresh@example.com"},
             auth="as:confirm reset: new password"),
        Step("confirm change: superusers", "POST", "/api/collections/_superusers/confirm-email-change",
             {"token": change, "password": "x"}, auth=G),
        Step("confirm change: blank", "POST", f"{clients}/confirm-email-change", {}, auth=G),
        Step("confirm change: no new email", "POST", f"{clients}/confirm-email-change",
             {"token": _token(*CLIENTS_TEST, "emailChange", email=TEST_EMAIL), "password": "1234567890"}, auth=G),
        Step("confirm change: taken", "POST", f"{clients}/confirm-email-change",
             {"token": _token(*CLIENTS_TEST, "emailChange", email=TEST_EMAIL, newEmail="test2@example.com"),
              "password": "1234567890"}, auth=G),
        Step("confirm change: another collection", "POST", f"{users}/confirm-email-change",
             {"token": change, "password": "1234567890"}, auth=G),
        Step("confirm change: password too long", "POST", f"{clients}/confirm-email-change",
             {"token": change, "password": "x" * 101}, auth=G),
        Step("confirm change: wrong password", "POST", f"{clients}/confirm-email-change",
             {"token": change, "password": "nope"}, auth=G),
        Step("confirm change", "POST", f"{clients}/confirm-email-change", {"token": change, "password": "1234567890"},
             auth=G),
        Step("confirm change: old auth token", "GET", f"{clients}/records/gk390qegs4y47wn?fields=id", headers=CLIENT1,
             auth=G),
        Step("confirm change: new email logs in", "POST",
             f"{clients}/auth-with-password?fields=record.email,record.verified",
             {"identity": "new@example.com", "password": "1234567890"}, auth=G),
        Step("confirm change: used token", "POST", f"{clients}/confirm-email-change",
             {"token": change, "password": "1234567890"}, auth=G),
        Step("test email: guest", "POST", "/api/settings/test/email", {"email": TEST_EMAIL, "template": "otp"},
             auth=G),
        Step("test email: user", "POST", "/api/settings/test/email", {"email": TEST_EMAIL, "template": "otp"},
             headers=USER1, auth=G),
        Step("test email: blank", "POST", "/api/settings/test/email", {}),
        Step("test email: invalid", "POST", "/api/settings/test/email",
             {"email": "x", "template": "nope", "collection": "demo1"}),
        Step("test email: unknown collection", "POST", "/api/settings/test/email",
             {"email": TEST_EMAIL, "template": "otp", "collection": "missing"}),
        Step("test email: not strings", "POST", "/api/settings/test/email", {"email": 1}),
        *[Step(f"test email: {template}", "POST", "/api/settings/test/email",
               {"email": TEST_EMAIL, "template": template, "collection": "users"})
          for template in ("verification", "password-reset", "email-change", "otp", "login-alert")],
    ]


SCENARIOS = {"email flows without smtp": _scenario}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_answers_as_pocketbase(scenario: str, stock_pocketbase: Backend, pbfast_fixture_tenant: Backend,
                                    tmp_path: Path) -> None:
    steps = SCENARIOS[scenario]()
    differences = compare(stock_pocketbase, pbfast_fixture_tenant, steps, fixture_ids())
    report = tmp_path.parent / "differential-report.txt"
    with open(report, "a") as out:
        out.write(f"{scenario}: {len(steps) - len(differences)}/{len(steps)} equal\n")
    assert not differences, "\n".join(differences)
