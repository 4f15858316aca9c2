"""Ported scenarios that need more than the API can arrange: one-time passwords and MFA sessions written into
the data dir before the servers start with the dates PocketBase's tests give them (``record_auth_with_otp_test.go``'s
expired OTP; the MFA sessions ``record_auth_with_password_test.go`` checks, expired or of another record;
``record_auth_password_reset_confirm_test.go``'s unverified users, one of them with an email changed since its
token was signed and the same tokenKey), and
``backup_test.go``'s downloads and uploads, ending with the superuser IP allow-list (after it the suite's
superuser is refused). Run by ``test_differential_go_ports.py`` on a pair of servers of their own."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import apsw

from differential import Step
from fixture_data import CLIENT1, USER1
from scenarios_admin_api import SUPERUSER_FILE_TOKEN, USER_FILE_TOKEN, _zip_bytes
from scenarios_auth_api import CHANGE_USER2, RESET_USER1, RESET_USER3, VERIFY_USER1
from test_differential_email import _token as email_token
from scenarios_batch import MULTIPART, multipart

G = None  # a guest step
USERS = "/api/collections/users"
TEST = {"identity": "test@example.com", "password": "1234567890"}
_USERS_ID, _USER1_ID, _USER2_ID = "_pb_users_auth_", "4q1xlclmfloku33", "oap640cot4yru2s"
_CLIENTS_ID, _CLIENT1_ID, _CLIENT2_ID = "v851q4r790rhknl", "gk390qegs4y47wn", "o1y0dd0spd786md"  # client2: unverified
VERIFY_CLIENT2 = email_token("clients", _CLIENT2_ID, "verification", email="test2@example.com")
_EXPIRED = "2022-01-01 10:00:00.000Z"  # years before any OTP or MFA duration
_OTP_123456 = "$2b$10$TdYfklc07hUpAjn1gGwLi.81FFo2KvfTGX.ue8knyGzI2ii0eM/U6"  # bcrypt("123456")

# id -> (collectionRef, recordRef, created)
_OTPS = {"expiredotp00001": (_USERS_ID, _USER1_ID, _EXPIRED),
         "orphanotp000001": (_USERS_ID, "missingrecord00", None)}
_USER3_ID = "bgs820n361vj1qd"  # verified in the fixture, one OAuth2 link; made unverified with another email below
_MFAS = {"expiredmfa00001": (_USERS_ID, _USER1_ID, _EXPIRED),
         "user2mfa0000001": (_USERS_ID, _USER2_ID, None),
         "clientmfa000001": (_CLIENTS_ID, _CLIENT1_ID, None),
         "user1mfa0000001": (_USERS_ID, _USER1_ID, None)}


def write_sessions(data_db: Path) -> None:
    """The OTPs and MFA sessions above in a copy of the fixture's data.db (no date: now, so still valid)."""
    now = time.strftime("%Y-%m-%d %H:%M:%S.000Z", time.gmtime())
    connection = apsw.Connection(str(data_db))
    try:
        with connection:
            for otp_id, (collection_ref, record_ref, created) in _OTPS.items():
                connection.execute("INSERT INTO _otps (id, collectionRef, recordRef, password, sentTo, created, updated)"
                                   " VALUES (?, ?, ?, ?, '', ?, ?)", (otp_id, collection_ref, record_ref, _OTP_123456,
                                                                      created or now, created or now))
            for mfa_id, (collection_ref, record_ref, created) in _MFAS.items():
                connection.execute("INSERT INTO _mfas (id, collectionRef, recordRef, method, created, updated) "
                                   "VALUES (?, ?, ?, 'otp', ?, ?)", (mfa_id, collection_ref, record_ref, created or now,
                                                                     created or now))
            connection.execute("UPDATE users SET email = 'test3_update@example.com', verified = FALSE WHERE id = ?",
                               (_USER3_ID,))
    finally:
        connection.close()


def _otp(name: str, otp_id: str) -> list[Step]:
    return [Step(f"otp: {name}", "POST", f"{USERS}/auth-with-otp", {"otpId": otp_id, "password": "123456"}, auth=G),
            Step(f"otp: {name}, kept?", "GET", f"/api/collections/_otps/records/{otp_id}?fields=id")]


def _mfa(name: str, mfa_id: str, fields: str = "") -> list[Step]:
    return [Step(f"mfa: {name}", "POST", f"{USERS}/auth-with-password{fields}", {**TEST, "mfaId": mfa_id}, auth=G),
            Step(f"mfa: {name}, kept?", "GET", f"/api/collections/_mfas/records/{mfa_id}?fields=id")]


# (label, max requests, method, path, body, headers): the labels the older scenarios did not limit, each allowed once
# (then 429), and one order check: a collection's "auth" tag comes before "*:authWithPassword" (PocketBase looks at
# the collection's tags first, then the "*" ones).
_LIMITED = [
    ("users:authWithOTP", 1, "POST", f"{USERS}/auth-with-otp", {"otpId": "x", "password": "y"}, {}),
    ("users:authRefresh", 1, "POST", f"{USERS}/auth-refresh", None, {}),
    ("*:listAuthMethods", 1, "GET", "/api/collections/clients/auth-methods", None, {}),
    ("*:requestOTP", 1, "POST", f"{USERS}/request-otp", {"email": "missing@example.com"}, {}),
    ("*:requestVerification", 1, "POST", f"{USERS}/request-verification", {"email": "missing@example.com"}, {}),
    ("nologin:confirmVerification", 1, "POST", "/api/collections/nologin/confirm-verification", {"token": "x"}, {}),
    ("*:requestPasswordReset", 1, "POST", f"{USERS}/request-password-reset", {"email": "missing@example.com"}, {}),
    ("users:confirmPasswordReset", 1, "POST", f"{USERS}/confirm-password-reset", {"token": "x"}, {}),
    ("*:requestEmailChange", 1, "POST", "/api/collections/clients/request-email-change", {}, CLIENT1),
    ("users:confirmEmailChange", 1, "POST", f"{USERS}/confirm-email-change", {"token": "x"}, {}),
    ("*:authWithOAuth2", 1, "POST", f"{USERS}/auth-with-oauth2", {"provider": "missing"}, {}),
    ("clients:auth", 1, "POST", "/api/collections/clients/auth-with-password",
     {"identity": "missing@example.com", "password": "x"}, {}),
    ("*:authWithPassword", 5, "", "", None, {}),
]
_RATE_LIMIT_STEPS = [
    Step("rules", "PATCH", "/api/settings?fields=rateLimits", {"rateLimits": {"enabled": True, "rules": [
        {"label": label, "audience": "", "duration": 60, "maxRequests": most} for label, most, *_ in _LIMITED]}}),
    *[step for label, _, method, path, body, headers in _LIMITED if path for step in (
        Step(f"{label}: first", method, path, body, headers=headers, auth=G),
        Step(f"{label}: second", method, path, body, headers=headers, auth=G))],
    Step("rules off", "PATCH", "/api/settings?fields=rateLimits.enabled", {"rateLimits": {"enabled": False}}),
]

# record_crud_test.go's and file_test.go's "RateLimit rule - <collection>:<action>" and "- *:<action>" cases.
# PocketBase's tests allow 0 requests; its settings API asks for 1 at least, so each request is sent twice (the second
# refused). First the collection's own label under a roomy "*" one (the collection's tag wins), then the "*" label
# alone. The requests change nothing: the create and the update fail validation, the record to delete is missing.
_CRUD_LIMITED = [  # (action, collection, method, path, body)
    ("list", "view2", "GET", "/api/collections/view2/records", None),
    ("view", "numeric_id_view", "GET", "/api/collections/numeric_id_view/records/1", None),
    ("create", "demo2", "POST", "/api/collections/demo2/records", {"title": ""}),
    ("update", "demo2", "PATCH", "/api/collections/demo2/records/0yxhwia2amd8gec", {"title": ""}),
    ("delete", "demo5", "DELETE", "/api/collections/demo5/records/missing0000000?test=1", None),
    ("file", "users", "GET", "/api/files/_pb_users_auth_/4q1xlclmfloku33/300_1SEi6Q6U72.png", None),
]


def _crud_rule(label: str, most: int) -> dict[str, object]:
    return {"label": label, "audience": "", "duration": 60, "maxRequests": most}


def _crud_limited_twice(labelled: str) -> list[Step]:
    return [step for action, collection, method, path, body in _CRUD_LIMITED for step in (
        Step(f"{labelled.format(collection=collection, action=action)}: first", method, path, body, auth=G),
        Step(f"{labelled.format(collection=collection, action=action)}: second", method, path, body, auth=G))]


_CRUD_RATE_LIMIT_STEPS = [
    Step("collection rules", "PATCH", "/api/settings?fields=rateLimits", {"rateLimits": {"enabled": True, "rules": [
        _crud_rule("abc", 100),
        *[rule for action, collection, *_ in _CRUD_LIMITED
          for rule in (_crud_rule(f"*:{action}", 100), _crud_rule(f"{collection}:{action}", 1))]]}}),
    *_crud_limited_twice("RateLimit rule - {collection}:{action}"),
    Step("* rules", "PATCH", "/api/settings?fields=rateLimits", {"rateLimits": {"enabled": True, "rules": [
        _crud_rule("abc", 100), *[_crud_rule(f"*:{action}", 1) for action, *_ in _CRUD_LIMITED]]}}),
    *_crud_limited_twice("RateLimit rule - *:{action}"),
    Step("rules off", "PATCH", "/api/settings?fields=rateLimits.enabled", {"rateLimits": {"enabled": False}}),
]


def _unsigned(token: str) -> str:
    """``token``'s claims under an ``alg: none`` header and no signature."""
    claims = token.split(".")[1]
    return base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode() + f".{claims}."


_USER1_RECORD = f"{USERS}/records/{_USER1_ID}?fields=id"  # its view rule: the record itself only
_NOT_AUTH_TOKENS = [("the user's own auth token", USER1["Authorization"]),
                    ("its claims unsigned (alg none)", _unsigned(USER1["Authorization"])),
                    ("a verification token", VERIFY_USER1), ("a password reset token", RESET_USER1),
                    ("another user's email change token", CHANGE_USER2), ("a file token", USER_FILE_TOKEN),
                    ("a token in the query instead", "")]

PATCHED_SCENARIOS: dict[str, list[Step]] = {
    "go middlewares: only auth tokens authenticate (middlewares_test.go's token loader)": [
        step for name, token in _NOT_AUTH_TOKENS for step in (
            Step(f"view: {name}", "GET", _USER1_RECORD + ("" if token else f"&token={USER1['Authorization']}"),
                 headers={"Authorization": token} if token else {}, auth=G),
            Step(f"refresh: {name}", "POST", f"{USERS}/auth-refresh?fields=record.id",
                 headers={"Authorization": token} if token else {}, auth=G))],
    "go auth: expired and foreign otp and mfa sessions": [
        *_otp("expired otp with valid password", "expiredotp00001"),
        *_otp("otp of a missing record", "orphanotp000001"),
        *_mfa("expired session", "expiredmfa00001"),
        *_mfa("another record's session", "user2mfa0000001"),
        *_mfa("another collection's session", "clientmfa000001"),
        *_mfa("missing session", "missingmfa00001"),
        *_mfa("the record's own session", "user1mfa0000001", "?fields=record.email,meta"),
    ],
    "go auth: password reset of unverified users": [
        Step("links of user1", "GET", "/api/collections/_externalAuths/records?fields=id&sort=id"
             f"&filter=recordRef='{_USER1_ID}'"),
        Step("valid token and data (unverified user)", "POST", f"{USERS}/confirm-password-reset",
             {"token": RESET_USER1, "password": "1234567!", "passwordConfirm": "1234567!"}, auth=G),
        Step("user1 verified now", "GET", f"{USERS}/records/{_USER1_ID}?fields=email,verified"),
        Step("user1's links cleared", "GET", "/api/collections/_externalAuths/records?fields=id"
             f"&filter=recordRef='{_USER1_ID}'"),
        Step("the new password", "POST", f"{USERS}/auth-with-password?fields=record.email",
             {"identity": "test@example.com", "password": "1234567!"}, auth=G),
        Step("the token used up", "POST", f"{USERS}/confirm-password-reset",
             {"token": RESET_USER1, "password": "1234567?", "passwordConfirm": "1234567?"}, auth=G),
        Step("valid token and data (unverified user with a different email from the token's)", "POST",
             f"{USERS}/confirm-password-reset",
             {"token": RESET_USER3, "password": "1234567!", "passwordConfirm": "1234567!"}, auth=G),
        Step("user3 still unverified", "GET", f"{USERS}/records/{_USER3_ID}?fields=email,verified"),
        Step("user3's link kept", "GET", "/api/collections/_externalAuths/records?fields=id"
             f"&filter=recordRef='{_USER3_ID}'"),
    ],
    "go auth: verification with password auth off (record_auth_verification_confirm_test.go)": [
        Step("password auth off", "PATCH", "/api/collections/clients?fields=passwordAuth.enabled",
             {"passwordAuth": {"enabled": False}}),
        Step("valid token (disabled password auth)", "POST", "/api/collections/clients/confirm-verification",
             {"token": VERIFY_CLIENT2}, auth=G),
        Step("verified now", "GET", f"/api/collections/clients/records/{_CLIENT2_ID}?fields=verified"),
        Step("password auth on", "PATCH", "/api/collections/clients?fields=passwordAuth.enabled",
             {"passwordAuth": {"enabled": True}}),
    ],
    "go middlewares: the default body limit (middlewares_body_limit_test.go)": [
        Step("just below, a collection create", "POST", "/api/collections", raw=b" " * ((32 << 20) - 2) + b"{}"),
        Step("one byte over, a missing route", "POST", "/api/missing", raw=bytes((32 << 20) + 1), auth=G),
        Step("one byte over, a route that reads no body", "POST", "/api/collections/clients/auth-refresh",
             raw=bytes((32 << 20) + 1), headers=CLIENT1, auth=G),
        Step("one byte over, a GET", "GET", "/api/health", raw=bytes((32 << 20) + 1), auth=G),
    ],
    "go auth: rate limit labels of the other routes (record_auth_*_test.go)": _RATE_LIMIT_STEPS,
    "go rest: rate limit labels of the records and files routes (record_crud_test.go, file_test.go)":
        _CRUD_RATE_LIMIT_STEPS,
    "go admin: backup files": [
        Step("upload: guest", "POST", "/api/backups/upload", raw=multipart([], [("file", "up.zip", _zip_bytes())]),
             headers=MULTIPART, auth=G),
        Step("upload: user", "POST", "/api/backups/upload", raw=multipart([], [("file", "up.zip", _zip_bytes())]),
             headers={**MULTIPART, **CLIENT1}, auth=G),  # user1's tokens ended with its reset
        Step("upload: valid file", "POST", "/api/backups/upload",
             raw=multipart([], [("file", "up.zip", _zip_bytes())]), headers=MULTIPART),
        Step("upload: a name with an escaped char", "POST", "/api/backups/upload",
             raw=multipart([], [("file", "@up4.zip", _zip_bytes())]), headers=MULTIPART),
        Step("upload: the default body limit is skipped", "POST", "/api/backups/upload", raw=bytes((32 << 20) + 100)),
        Step("list", "GET", "/api/backups?fields=key"),
        Step("crons: list, with fields", "GET", "/api/crons?fields=id"),
        Step("download: valid superuser file token", "GET", f"/api/backups/up.zip?token={SUPERUSER_FILE_TOKEN}",
             auth=G),
        Step("download: escaped char", "GET", f"/api/backups/%40up4.zip?token={SUPERUSER_FILE_TOKEN}", auth=G),
        Step("download: a client's auth token", "GET", f"/api/backups/up.zip?token={CLIENT1['Authorization']}",
             auth=G),
        Step("delete: escaped char", "DELETE", "/api/backups/%40up4.zip"),
        Step("delete: gone", "GET", f"/api/backups/%40up4.zip?token={SUPERUSER_FILE_TOKEN}", auth=G),
        Step("superuser IPs: whitelisted", "PATCH", "/api/settings?fields=superuserIPs",
             {"superuserIPs": ["127.0.0.1", "::1"]}),
        Step("download: file token and a whitelisted IP", "GET", f"/api/backups/up.zip?token={SUPERUSER_FILE_TOKEN}",
             auth=G),
        Step("superuser IPs: not whitelisted", "PATCH", "/api/settings?fields=superuserIPs",
             {"superuserIPs": ["10.0.0.1"]}),
        Step("download: file token but a non-whitelisted IP", "GET",
             f"/api/backups/up.zip?token={SUPERUSER_FILE_TOKEN}", auth=G),
        Step("delete: superuser from a non-whitelisted IP", "DELETE", "/api/backups/up.zip"),
        Step("restore: superuser from a non-whitelisted IP", "POST", "/api/backups/up.zip/restore"),
    ],
}
