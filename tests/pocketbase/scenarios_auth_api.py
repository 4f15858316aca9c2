"""Differential scenarios ported from PocketBase's own auth API tests (``apis/record_auth_*_test.go``,
``health_test.go``): the cases the older scenario modules did not cover yet, with the requests, bodies and
tokens of those tests (the fixture's tokens last until 2050). What the Go tests arrange in code before a case
(an MFA session, a one-time password, an index collation, rate limit rules) is arranged here through the API,
as the superuser. Not here: ``/api/oauth2-redirect``'s cases (they need realtime clients:
``oauth2_redirects.py``), and the cases that need a real OAuth2 provider (``test_oauth2.py`` runs one). Run by ``test_differential_go_ports.py``, in order, on one pair of servers."""

from __future__ import annotations

from differential import Step
from fixture_data import CLIENT1, SUPERUSER1, USER1, USER1_STATIC, USER2
from scenarios_batch import MULTIPART, multipart
from test_differential_email import _token as email_token

G = None  # a guest step
USERS, CLIENTS, NOLOGIN = "/api/collections/users", "/api/collections/clients", "/api/collections/nologin"
TEST = {"identity": "test@example.com", "password": "1234567890"}
URLENCODED = {"content-type": "application/x-www-form-urlencoded"}
TEXT = {"content-type": "text/plain"}

# Tokens of PocketBase's auth API tests (signed with the fixture's keys).
VERIFY_EXPIRED = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MTY0MDk5MTY2MSwidHlwZSI6InZlcmlmaWNh"
    "dGlvbiIsImNvbGxlY3Rpb25JZCI6Il9wYl91c2Vyc19hdXRoXyIsImVtYWlsIjoidGVzdEBleGFtcGxlLmNvbSJ9.qqelNNL2Udl6K_TJ282sNHYCp"
    "ASgA6SIuSVKGfBHMZU")
VERIFY_USER1 = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6InZlcmlmaWNh"
    "dGlvbiIsImNvbGxlY3Rpb25JZCI6Il9wYl91c2Vyc19hdXRoXyIsImVtYWlsIjoidGVzdEBleGFtcGxlLmNvbSJ9.SetHpu2H-x-q4TIUz-xiQjwi7"
    "MNwLCLvSs4O0hUSp0E")
VERIFY_USER2 = (  # already verified
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6Im9hcDY0MGNvdDR5cnUycyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6InZlcmlmaWNh"
    "dGlvbiIsImNvbGxlY3Rpb25JZCI6Il9wYl91c2Vyc19hdXRoXyIsImVtYWlsIjoidGVzdDJAZXhhbXBsZS5jb20ifQ.QQmM3odNFVk6u4J4-5H8IBM"
    "3dfk9YCD7mPW-8PhBAI8")
VERIFY_NOLOGIN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6ImRjNDlrNmpnZWpuNDBoMyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6InZlcmlmaWNh"
    "dGlvbiIsImNvbGxlY3Rpb25JZCI6ImtwdjcwOXNrMmxxYnFrOCIsImVtYWlsIjoidGVzdEBleGFtcGxlLmNvbSJ9.5GmuZr4vmwk3Cb_3ZZWNxwbE7"
    "5KZC-j71xxIPR9AsVw")
RESET_EXPIRED = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MTY0MDk5MTY2MSwidHlwZSI6InBhc3N3b3Jk"
    "UmVzZXQiLCJjb2xsZWN0aW9uSWQiOiJfcGJfdXNlcnNfYXV0aF8iLCJlbWFpbCI6InRlc3RAZXhhbXBsZS5jb20ifQ.5Tm6_6amQqOlX3urAnXlEdm"
    "xwG5qQJfiTg6U0hHR1hk")
RESET_USER1 = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6InBhc3N3b3Jk"
    "UmVzZXQiLCJjb2xsZWN0aW9uSWQiOiJfcGJfdXNlcnNfYXV0aF8iLCJlbWFpbCI6InRlc3RAZXhhbXBsZS5jb20ifQ.xR-xq1oHDy0D8Q4NDOAEyYK"
    "GHWd_swzoiSoL8FLFBHY")
CHANGE_EXPIRED = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImNvbGxlY3Rpb25JZCI6Il9wYl91c2Vyc19hdXRoXyIs"
    "InR5cGUiOiJlbWFpbENoYW5nZSIsImVtYWlsIjoidGVzdEBleGFtcGxlLmNvbSIsIm5ld0VtYWlsIjoiY2hhbmdlQGV4YW1wbGUuY29tIiwiZXhwIj"
    "oxNjQwOTkxNjYxfQ.dff842MO0mgRTHY8dktp0dqG9-7LGQOgRuiAbQpYBls")
# PocketBase's tests change test@example.com's email and reset its password, each on a fresh copy of the
# fixture; here the verification of that record voids its tokens first, so these flows complete for others
# (tokens signed with the fixture's keys as PocketBase signs them).
CHANGE_USER2 = email_token("users", "oap640cot4yru2s", "emailChange", email="test2@example.com",
                           newEmail="change@example.com")
RESET_USER3 = email_token("users", "bgs820n361vj1qd", "passwordReset", email="test3@example.com")
MFA_ID = "a" * 15  # the id of the MFA session PocketBase's test opens for users' test@example.com


def _clients_identity_indexes(username_collate: str, email_collate: str) -> list[str]:
    """The clients collection's indexes with the identity fields' unique indexes in the given collations."""
    def collate(value: str) -> str:
        return f" COLLATE {value}" if value else ""
    return [f"CREATE UNIQUE INDEX `_v851q4r790rhknl_username_idx` ON `clients` (`username`{collate(username_collate)})",
            f"CREATE UNIQUE INDEX `_v851q4r790rhknl_email_idx` ON `clients` (`email`{collate(email_collate)}) "
            "WHERE email != ''",
            "CREATE UNIQUE INDEX `_v851q4r790rhknl_tokenKey_idx` ON `clients` (tokenKey)",
            "CREATE INDEX `_v851q4r790rhknl_created_idx` ON `clients` (`created`)"]


AUTH_API_SCENARIOS: dict[str, list[Step]] = {
    "go auth: health": [
        Step("guest", "GET", "/api/health", auth=G),
        Step("regular user", "GET", "/api/health", headers=USER1, auth=G),
        Step("superuser", "GET", "/api/health", headers=SUPERUSER1, auth=G, random_data_order=True),
        Step("head", "HEAD", "/api/health", auth=G),
    ],
    "go auth: auth-with-password": [
        Step("invalid body format", "POST", f"{CLIENTS}/auth-with-password", raw=b'{"identity', auth=G),
        Step("already authenticated record of another collection", "POST",
             f"{CLIENTS}/auth-with-password?fields=record.id,record.email", TEST, headers=USER1, auth=G),
        Step("mfa session of another method", "POST", "/api/collections/_mfas/records?fields=id,method",
             {"id": MFA_ID, "collectionRef": "_pb_users_auth_", "recordRef": "4q1xlclmfloku33", "method": "test"}),
        Step("mfa second step", "POST", f"{USERS}/auth-with-password?fields=record.email,meta",
             {**TEST, "mfaId": MFA_ID}, auth=G),
        Step("mfa session used up", "GET", f"/api/collections/_mfas/records/{MFA_ID}?fields=id"),
        Step("mfa session of the same method", "POST", "/api/collections/_mfas/records?fields=id,method",
             {"id": "b" * 15, "collectionRef": "_pb_users_auth_", "recordRef": "4q1xlclmfloku33", "method": "password"}),
        Step("mfa second step with the same method", "POST", f"{USERS}/auth-with-password",
             {**TEST, "mfaId": "b" * 15}, auth=G),
        Step("username index nocase", "PATCH", f"{CLIENTS}?fields=indexes",
             {"indexes": _clients_identity_indexes("NOCASE", "")}),
        Step("explicit identityField, case-insensitive", "POST", f"{CLIENTS}/auth-with-password?fields=record.username",
             {"identityField": "username", "identity": "Clients57772", "password": "1234567890"}, auth=G),
        Step("no identityField, non-email field case-insensitive", "POST",
             f"{CLIENTS}/auth-with-password?fields=record.username",
             {"identity": "Clients57772", "password": "1234567890"}, auth=G),
        Step("email index nocase", "PATCH", f"{CLIENTS}?fields=indexes",
             {"indexes": _clients_identity_indexes("", "NOCASE")}),
        Step("no identityField, email field case-insensitive", "POST",
             f"{CLIENTS}/auth-with-password?fields=record.email", {"identity": "tESt@example.com",
                                                                    "password": "1234567890"}, auth=G),
    ],
    "go auth: auth-refresh": [
        Step("superuser token on another auth collection", "POST", f"{USERS}/auth-refresh", headers=SUPERUSER1,
             auth=G),
        Step("different auth collection, with expand", "POST", f"{CLIENTS}/auth-refresh?expand=rel,missing",
             headers=USER1, auth=G),
        Step("same auth collection, with expand", "POST", f"{USERS}/auth-refresh?expand=rel,missing", headers=USER1,
             auth=G),
        Step("static token, with fields", "POST", f"{USERS}/auth-refresh?fields=record.id,record.email",
             headers=USER1_STATIC, auth=G),
        Step("garbage body is ignored", "POST", f"{USERS}/auth-refresh?fields=record.id", raw=b'{"x',
             headers=USER1, auth=G),
        Step("file token is not an auth token", "POST", f"{USERS}/auth-refresh", auth=G, headers={"Authorization": (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6ImZp"
            "bGUiLCJjb2xsZWN0aW9uSWQiOiJfcGJfdXNlcnNfYXV0aF8ifQ.nSTLuCPcGpWn2K2l-BFkC3Vlzc-ZTDPByYq8dN1oPSo")}),
    ],
    "go auth: impersonate": [
        Step("authorized as a different user", "POST", f"{USERS}/impersonate/4q1xlclmfloku33", headers=USER2, auth=G),
        Step("authorized as the same user", "POST", f"{USERS}/impersonate/4q1xlclmfloku33", headers=USER1, auth=G),
        Step("superuser, default duration", "POST", f"{USERS}/impersonate/4q1xlclmfloku33?fields=record.email",
             headers=SUPERUSER1, auth=G),
        Step("superuser, custom valid duration", "POST", f"{USERS}/impersonate/4q1xlclmfloku33?fields=record.id",
             {"duration": 100}, headers=SUPERUSER1, auth=G),
        Step("superuser, expand", "POST", f"{USERS}/impersonate/4q1xlclmfloku33?expand=rel&fields=record.id,record.expand",
             {}, headers=SUPERUSER1, auth=G),
        Step("invalid body", "POST", f"{USERS}/impersonate/4q1xlclmfloku33", raw=b'{"duration', headers=SUPERUSER1,
             auth=G),
        Step("collection by id", "POST", "/api/collections/v851q4r790rhknl/impersonate/gk390qegs4y47wn?fields=record.id",
             headers=SUPERUSER1, auth=G),
        Step("record of another collection", "POST", f"{CLIENTS}/impersonate/4q1xlclmfloku33", headers=SUPERUSER1,
             auth=G),
    ],
    "go auth: verification": [
        Step("request: not an auth collection", "POST", "/api/collections/demo1/request-verification", raw=b"", auth=G),
        Step("request: empty data", "POST", f"{USERS}/request-verification", raw=b"", auth=G),
        Step("request: invalid data", "POST", f"{USERS}/request-verification", raw=b'{"email', auth=G),
        Step("request: missing auth record", "POST", f"{USERS}/request-verification", {"email": "missing@example.com"},
             auth=G),
        Step("request: nologin record", "POST", f"{NOLOGIN}/request-verification", {"email": "test2@example.com"},
             auth=G),
        Step("request: existing auth record", "POST", f"{USERS}/request-verification", {"email": "test@example.com"},
             auth=G),
        Step("request: existing auth record, after already sent", "POST", f"{USERS}/request-verification",
             {"email": "test@example.com"}, auth=G),
        Step("confirm: empty data", "POST", f"{USERS}/confirm-verification", raw=b"", auth=G),
        Step("confirm: invalid data format", "POST", f"{USERS}/confirm-verification", raw=b'{"password', auth=G),
        Step("confirm: expired token", "POST", f"{USERS}/confirm-verification", {"token": VERIFY_EXPIRED}, auth=G),
        Step("confirm: non-verification token", "POST", f"{USERS}/confirm-verification", {"token": RESET_USER1},
             auth=G),
        Step("confirm: non auth collection", "POST", "/api/collections/demo1/confirm-verification?expand=rel,missing",
             {"token": VERIFY_USER1}, auth=G),
        Step("confirm: different auth collection", "POST", f"{CLIENTS}/confirm-verification?expand=rel,missing",
             {"token": VERIFY_USER1}, auth=G),
        Step("confirm: missing collection", "POST", "/api/collections/missing/confirm-verification",
             {"token": VERIFY_USER1}, auth=G),
        Step("confirm: valid token", "POST", f"{USERS}/confirm-verification", {"token": VERIFY_USER1}, auth=G),
        Step("confirm: verified now", "GET", f"{USERS}/records/4q1xlclmfloku33?fields=verified"),
        Step("confirm: valid token again", "POST", f"{USERS}/confirm-verification", {"token": VERIFY_USER1}, auth=G),
        Step("confirm: already verified", "POST", f"{USERS}/confirm-verification", {"token": VERIFY_USER2}, auth=G),
        Step("confirm: collection without allowed login", "POST", f"{NOLOGIN}/confirm-verification",
             {"token": VERIFY_NOLOGIN}, auth=G),
        Step("confirm: nologin verified now", "GET", f"{NOLOGIN}/records/dc49k6jgejn40h3?fields=verified"),
        Step("confirm: token as query", "POST", f"{USERS}/confirm-verification?token={VERIFY_USER2}", {}, auth=G),
    ],
    "go auth: otp": [
        Step("request: not an auth collection", "POST", "/api/collections/demo1/request-otp",
             {"email": "test@example.com"}, auth=G),
        Step("request: empty body", "POST", f"{USERS}/request-otp", raw=b"", auth=G),
        Step("request: invalid body", "POST", f"{USERS}/request-otp", raw=b'{"email', auth=G),
        Step("request: invalid request data", "POST", f"{USERS}/request-otp", {"email": "invalid"}, auth=G),
        Step("auth: not an auth collection", "POST", "/api/collections/demo1/auth-with-otp",
             {"otpId": "test", "password": "123456"}, auth=G),
        Step("auth: invalid body", "POST", f"{USERS}/auth-with-otp", raw=b'{"email', auth=G),
        Step("auth: empty body", "POST", f"{USERS}/auth-with-otp", raw=b"", auth=G),
        Step("auth: invalid request data", "POST", f"{USERS}/auth-with-otp",
             {"otpId": "a" * 256, "password": "p" * 72}, auth=G),
        Step("auth: missing otp", "POST", f"{USERS}/auth-with-otp", {"otpId": "missing", "password": "123456"},
             auth=G),
        Step("request: existing auth record", "POST", f"{USERS}/request-otp", {"email": "test@example.com"},
             auth=G),
        Step("otp of users' test@example.com", "POST", "/api/collections/_otps/records?fields=id,sentTo",
             {"id": "otpusers0000001", "collectionRef": "_pb_users_auth_", "recordRef": "4q1xlclmfloku33",
              "password": "123456"}),
        Step("otp of clients' test@example.com", "POST", "/api/collections/_otps/records?fields=id",
             {"id": "otpclients00001", "collectionRef": "v851q4r790rhknl", "recordRef": "gk390qegs4y47wn",
              "password": "123456"}),
        Step("auth: otp for a different collection", "POST", f"{USERS}/auth-with-otp",
             {"otpId": "otpclients00001", "password": "123456"}, auth=G),
        Step("auth: otp with wrong password", "POST", f"{USERS}/auth-with-otp",
             {"otpId": "otpusers0000001", "password": "123457"}, auth=G),
        Step("auth: valid otp, mfa on", "POST", f"{USERS}/auth-with-otp",
             {"otpId": "otpusers0000001", "password": "123456"}, auth=G),
        Step("auth: otp used up", "POST", f"{USERS}/auth-with-otp", {"otpId": "otpusers0000001", "password": "123456"},
             auth=G),
        Step("auth: the password completes mfa", "POST", f"{USERS}/auth-with-password?fields=record.email,meta",
             {**TEST, "mfaId": "<new-2>"}, auth=G),
        Step("mfa off", "PATCH", f"{USERS}?fields=mfa.enabled,otp.enabled", {"mfa": {"enabled": False}}),
        Step("otp sent to the email", "POST", "/api/collections/_otps/records?fields=id,sentTo",
             {"id": "otpusers0000002", "collectionRef": "_pb_users_auth_", "recordRef": "oap640cot4yru2s",
              "password": "654321", "sentTo": "test2@example.com"}),
        Step("auth: valid otp, sentTo the email", "POST",
             f"{USERS}/auth-with-otp?fields=record.email,record.verified,meta",
             {"otpId": "otpusers0000002", "password": "654321"}, auth=G),
        Step("otp sent nowhere", "POST", "/api/collections/_otps/records?fields=id",
             {"id": "otpusers0000003", "collectionRef": "_pb_users_auth_", "recordRef": "4q1xlclmfloku33",
              "password": "111111"}),
        Step("auth: valid otp, empty sentTo", "POST", f"{USERS}/auth-with-otp?fields=record.email,record.verified",
             {"otpId": "otpusers0000003", "password": "111111"}, auth=G),
        *[Step(f"unexpired otp {n} of test3", "POST", "/api/collections/_otps/records?fields=id",
               {"id": f"otptest3{n:07d}", "collectionRef": "_pb_users_auth_", "recordRef": "bgs820n361vj1qd",
                "password": f"{n:06d}"}) for n in range(1, 11)],
        Step("request: more than 9 unexpired (the last reused)", "POST", f"{USERS}/request-otp",
             {"email": "test3@example.com"}, auth=G),
        Step("auth: the reused otp", "POST", f"{USERS}/auth-with-otp?fields=record.email",
             {"otpId": "<new-3>", "password": "000010"}, auth=G),
        Step("otp off", "PATCH", f"{USERS}?fields=otp.enabled", {"otp": {"enabled": False}}),
        Step("request: auth collection with disabled otp", "POST", f"{USERS}/request-otp",
             {"email": "test@example.com"}, auth=G),
        Step("auth: auth collection with disabled otp", "POST", f"{USERS}/auth-with-otp",
             {"otpId": "test", "password": "123456"}, auth=G),
    ],
    "go auth: oauth2 without a provider": [
        Step("disabled oauth2 auth", "POST", f"{NOLOGIN}/auth-with-oauth2", {
            "provider": "test", "code": "123", "codeVerifier": "456", "redirectURL": "https://example.com"}, auth=G),
        Step("invalid body", "POST", f"{USERS}/auth-with-oauth2", raw=b'{"provider"', auth=G),
        Step("missing provider", "POST", f"{USERS}/auth-with-oauth2", {"provider": "missing"}, auth=G),
        Step("existing but disabled provider", "POST", f"{USERS}/auth-with-oauth2", {"provider": "apple"}, auth=G),
        Step("not an auth collection", "POST", "/api/collections/demo1/auth-with-oauth2", {"provider": "google"},
             auth=G),
        Step("missing collection", "POST", "/api/collections/missing/auth-with-oauth2", {"provider": "google"},
             auth=G),
        Step("empty body", "POST", f"{USERS}/auth-with-oauth2", raw=b"", auth=G),
        Step("wrong types", "POST", f"{USERS}/auth-with-oauth2", {"provider": 1, "code": True}, auth=G),
    ],
    "auth: bodies of other content types": [  # the SDKs send JSON; HTML forms and curl send these
        Step("password auth, a text body", "POST", f"{CLIENTS}/auth-with-password", raw=b"x", headers=TEXT, auth=G),
        Step("refresh, an urlencoded body", "POST", f"{CLIENTS}/auth-refresh?fields=record.id", raw=b"a=1",
             headers={**CLIENT1, **URLENCODED}, auth=G),
        Step("refresh, a null body", "POST", f"{CLIENTS}/auth-refresh?fields=record.id", raw=b"null", headers=CLIENT1,
             auth=G),
        Step("refresh, an array body", "POST", f"{CLIENTS}/auth-refresh?fields=record.id", raw=b"[1]", headers=CLIENT1,
             auth=G),
        Step("otp request urlencoded", "POST", f"{USERS}/request-otp", raw=b"email=nobody%40example.com",
             headers=URLENCODED, auth=G),
        Step("otp request, a text body", "POST", f"{USERS}/request-otp", raw=b"x", headers=TEXT, auth=G),
        Step("otp auth multipart", "POST", f"{USERS}/auth-with-otp", raw=multipart([("otpId", "x"), ("password", "y")]),
             headers=MULTIPART, auth=G),
        Step("verification request urlencoded", "POST", f"{USERS}/request-verification",
             raw=b"email=nobody%40example.com", headers=URLENCODED, auth=G),
        Step("verification request, a text body", "POST", f"{USERS}/request-verification", raw=b"x", headers=TEXT,
             auth=G),
        Step("reset confirm multipart", "POST", f"{USERS}/confirm-password-reset", raw=multipart([
            ("token", "x"), ("password", "12345678"), ("passwordConfirm", "12345678")]), headers=MULTIPART, auth=G),
        Step("reset confirm, a text body", "POST", f"{USERS}/confirm-password-reset", raw=b"x", headers=TEXT, auth=G),
        Step("impersonate urlencoded", "POST", f"{USERS}/impersonate/4q1xlclmfloku33?fields=record.id",
             raw=b"duration=100", headers=URLENCODED),
        Step("impersonate, a duration that is no number", "POST", f"{USERS}/impersonate/4q1xlclmfloku33",
             raw=b"duration=x", headers=URLENCODED),
        Step("impersonate, a text body", "POST", f"{USERS}/impersonate/4q1xlclmfloku33", raw=b"x", headers=TEXT),
        Step("email change urlencoded", "POST", f"{CLIENTS}/request-email-change", raw=b"newEmail=bad",
             headers={**CLIENT1, **URLENCODED}, auth=G),
        Step("oauth2, a text body", "POST", f"{USERS}/auth-with-oauth2", raw=b"x", headers=TEXT, auth=G),
        Step("test email, a text body", "POST", "/api/settings/test/email", raw=b"x", headers=TEXT),
    ],
    "go auth: auth-methods": [
        Step("users with fields", "GET", f"{USERS}/auth-methods?fields=password,mfa,otp", auth=G),
        Step("nologin", "GET", f"{NOLOGIN}/auth-methods", headers=CLIENT1, auth=G),
        Step("head", "HEAD", f"{NOLOGIN}/auth-methods", auth=G),
    ],
    "go auth: email change": [
        Step("request: unauthorized", "POST", f"{USERS}/request-email-change", {"newEmail": "change@example.com"},
             auth=G),
        Step("request: not an auth collection", "POST", "/api/collections/demo1/request-email-change",
             {"newEmail": "change@example.com"}, auth=G),
        Step("request: another collection's record", "POST", f"{CLIENTS}/request-email-change",
             {"newEmail": "change@example.com"}, headers=USER2, auth=G),
        Step("request: superuser", "POST", f"{USERS}/request-email-change", {"newEmail": "change@example.com"},
             headers=SUPERUSER1, auth=G),
        Step("request: invalid data", "POST", f"{USERS}/request-email-change", raw=b'{"newEmail', headers=USER2,
             auth=G),
        Step("request: empty data", "POST", f"{USERS}/request-email-change", {}, headers=USER2, auth=G),
        Step("request: existing email", "POST", f"{USERS}/request-email-change", {"newEmail": "test@example.com"},
             headers=USER2, auth=G),
        Step("request: existing email, other case", "POST", f"{USERS}/request-email-change",
             {"newEmail": "TEST@example.com"}, headers=USER2, auth=G),
        Step("request: not an email", "POST", f"{USERS}/request-email-change", {"newEmail": "change"}, headers=USER2,
             auth=G),
        Step("request: new email", "POST", f"{USERS}/request-email-change", {"newEmail": "change@example.com"},
             headers=USER2, auth=G),
        Step("confirm: not an auth collection", "POST", "/api/collections/demo1/confirm-email-change", auth=G),
        Step("confirm: empty data", "POST", f"{USERS}/confirm-email-change", raw=b"", auth=G),
        Step("confirm: invalid data", "POST", f"{USERS}/confirm-email-change", raw=b'{"token', auth=G),
        Step("confirm: expired token", "POST", f"{USERS}/confirm-email-change",
             {"token": CHANGE_EXPIRED, "password": "1234567890"}, auth=G),
        Step("confirm: non-email change token", "POST", f"{USERS}/confirm-email-change",
             {"token": USER1["Authorization"], "password": "1234567890"}, auth=G),
        Step("confirm: incorrect password", "POST", f"{USERS}/confirm-email-change",
             {"token": CHANGE_USER2, "password": "123456"}, auth=G),
        Step("confirm: different auth collection", "POST", f"{CLIENTS}/confirm-email-change",
             {"token": CHANGE_USER2, "password": "1234567890"}, auth=G),
        Step("confirm: valid token and password", "POST", f"{USERS}/confirm-email-change",
             {"token": CHANGE_USER2, "password": "1234567890"}, auth=G),
        Step("confirm: changed", "GET", f"{USERS}/records/oap640cot4yru2s?fields=email,verified"),
        Step("confirm: token used up", "POST", f"{USERS}/confirm-email-change",
             {"token": CHANGE_USER2, "password": "1234567890"}, auth=G),
    ],
    "go auth: password reset": [
        Step("request: not an auth collection", "POST", "/api/collections/demo1/request-password-reset", raw=b"",
             auth=G),
        Step("request: empty data", "POST", f"{USERS}/request-password-reset", raw=b"", auth=G),
        Step("request: invalid data", "POST", f"{USERS}/request-password-reset", raw=b'{"email', auth=G),
        Step("request: disabled password login", "POST", f"{NOLOGIN}/request-password-reset",
             {"email": "test@example.com"}, auth=G),
        Step("request: missing auth record", "POST", f"{USERS}/request-password-reset", {"email": "missing@example.com"},
             auth=G),
        Step("request: existing auth record", "POST", f"{USERS}/request-password-reset",
             {"email": "test2@example.com"}, auth=G),
        Step("request: existing auth record, after already sent", "POST", f"{USERS}/request-password-reset",
             {"email": "test2@example.com"}, auth=G),
        Step("confirm: empty data", "POST", f"{USERS}/confirm-password-reset", raw=b"", auth=G),
        Step("confirm: invalid data format", "POST", f"{USERS}/confirm-password-reset", raw=b'{"password', auth=G),
        Step("confirm: expired token and invalid password", "POST", f"{USERS}/confirm-password-reset",
             {"token": RESET_EXPIRED, "password": "1234567", "passwordConfirm": "7654321"}, auth=G),
        Step("confirm: non-password reset token", "POST", f"{USERS}/confirm-password-reset",
             {"token": VERIFY_USER1, "password": "1234567!", "passwordConfirm": "1234567!"}, auth=G),
        Step("confirm: non auth collection", "POST", "/api/collections/demo1/confirm-password-reset?expand=rel,missing",
             {"token": RESET_USER1, "password": "12345678", "passwordConfirm": "12345678"}, auth=G),
        Step("confirm: different auth collection", "POST", f"{CLIENTS}/confirm-password-reset?expand=rel,missing",
             {"token": RESET_USER1, "password": "12345678", "passwordConfirm": "12345678"}, auth=G),
        Step("confirm: a token voided by the verification since", "POST", f"{USERS}/confirm-password-reset",
             {"token": RESET_USER1, "password": "1234567!", "passwordConfirm": "1234567!"}, auth=G),
        Step("confirm: valid token and data", "POST", f"{USERS}/confirm-password-reset",
             {"token": RESET_USER3, "password": "1234567!", "passwordConfirm": "1234567!"}, auth=G),
        Step("confirm: token used up", "POST", f"{USERS}/confirm-password-reset",
             {"token": RESET_USER3, "password": "1234567!", "passwordConfirm": "1234567!"}, auth=G),
    ],
}

# Rate limit rules as PocketBase's tests set them (one request allowed, then 429), for the routes the older
# scenarios did not limit. Run last: the limits stay on.
_RATE_LIMITED = [
    ("users:authWithPassword", "POST", f"{USERS}/auth-with-password", {"identity": "missing@example.com", "password": "x"}),
    ("*:authRefresh", "POST", f"{CLIENTS}/auth-refresh", None),
    ("nologin:listAuthMethods", "GET", f"{NOLOGIN}/auth-methods", None),
    ("users:requestVerification", "POST", f"{USERS}/request-verification", {"email": "missing@example.com"}),
    ("*:confirmVerification", "POST", f"{NOLOGIN}/confirm-verification", {"token": "x"}),
    ("users:requestPasswordReset", "POST", f"{USERS}/request-password-reset", {"email": "missing@example.com"}),
    ("*:confirmPasswordReset", "POST", f"{USERS}/confirm-password-reset", {"token": "x"}),
    ("clients:requestEmailChange", "POST", f"{CLIENTS}/request-email-change", {}),
    ("*:confirmEmailChange", "POST", f"{USERS}/confirm-email-change", {"token": "x"}),
    ("users:requestOTP", "POST", f"{USERS}/request-otp", {"email": "missing@example.com"}),
    ("*:authWithOTP", "POST", f"{CLIENTS}/auth-with-otp", {"otpId": "x", "password": "y"}),
    ("users:authWithOAuth2", "POST", f"{USERS}/auth-with-oauth2", {"provider": "missing"}),
    ("nologin:auth", "POST", f"{NOLOGIN}/auth-with-oauth2", {"provider": "missing"}),
    ("*:authWithPassword", "POST", f"{CLIENTS}/auth-with-password", {"identity": "missing@example.com", "password": "x"}),
    ("users:auth", "POST", f"{USERS}/auth-with-otp", {"otpId": "x", "password": "y"}),
    ("*:auth", "POST", "/api/collections/_superusers/auth-with-oauth2", {"provider": "missing"}),
]
RATE_LIMIT_SCENARIOS: dict[str, list[Step]] = {"go auth: rate limits": [
    Step("rules", "PATCH", "/api/settings?fields=rateLimits", {"rateLimits": {"enabled": True, "rules": [
        {"label": label, "audience": "", "duration": 60, "maxRequests": 1} for label, *_ in _RATE_LIMITED]}}),
    *[step for label, method, path, body in _RATE_LIMITED for step in (
        Step(f"{label}: first", method, path, body, headers=CLIENT1 if "clients" in path else {}, auth=G),
        Step(f"{label}: second", method, path, body, headers=CLIENT1 if "clients" in path else {}, auth=G))],
    Step("superusers are not limited", "POST", f"{USERS}/request-verification", {"email": "missing@example.com"}),
]}
