"""Differential scenarios for the records of the system collections through the records API (issue 15):
PocketBase's ``apis/record_crud_auth_origin_test.go``, ``record_crud_external_auth_test.go``,
``record_crud_mfa_test.go``, ``record_crud_otp_test.go`` and ``record_crud_superuser_test.go`` (apps list and
delete ``_externalAuths`` and ``_authOrigins`` records to unlink providers and sign devices out). The MFA and
OTP records PocketBase's tests stub are written into both data dirs before the servers start
(:func:`stub_system_records`). Run by ``test_differential_records.py``, last: they delete records."""

from __future__ import annotations

import time
from pathlib import Path

import apsw

from differential import Step
from fixture_data import CLIENT1, SUPERUSER1, USER1, USER2

G = None  # a guest step
# The superuser the suite logs in as: pbfast notes the login's origin in _authOrigins even when the login alert
# mail fails (it mails in the background); PocketBase saves it only once the mail went out.
OTHER_THAN_LOGIN = "recordRef!='sywbhecnh46rhm0'"
# One date for both copies (the dates of a stub are compared): the moment the module is loaded, so that the
# sessions are still valid while the scenarios run.
_STUB_DATE = time.strftime("%Y-%m-%d %H:%M:%S.000Z", time.gmtime())
_USER1 = ("_pb_users_auth_", "4q1xlclmfloku33")
_SUPERUSER3 = ("pbc_3142635823", "9q2trqumvlyr3bd")
# id -> (collectionRef, recordRef, MFA method); the OTPs have the same ids and owners
_STUBS = {"user1_0": (*_USER1, "oauth2"), "superuser3_0": (*_SUPERUSER3, "password")}
STUBBED_IDS = set(_STUBS)


def stub_system_records(data_db: Path) -> None:
    """PocketBase's ``tests.StubMFARecords`` and ``tests.StubOTPRecords`` (the records the tests use) in a copy
    of the fixture's data.db."""
    connection = apsw.Connection(str(data_db))
    try:
        with connection:
            for record_id, (collection_ref, record_ref, method) in _STUBS.items():
                connection.execute("INSERT INTO _mfas (id, collectionRef, recordRef, method, created, updated) "
                                   "VALUES (?, ?, ?, ?, ?, ?)",
                                   (record_id, collection_ref, record_ref, method, _STUB_DATE, _STUB_DATE))
                connection.execute("INSERT INTO _otps (id, collectionRef, recordRef, password, sentTo, created, "
                                   "updated) VALUES (?, ?, ?, ?, '', ?, ?)",
                                   (record_id, collection_ref, record_ref,
                                    "$2a$10$Ww.Bv1Qa3b6AVB0fQN6VDODgM1n1VvnTuUZ9MOlOBy2zGPYRRq6tW", _STUB_DATE,
                                    _STUB_DATE))
    finally:
        connection.close()


def _owned(collection: str, record_id: str, create_body: dict[str, str], update_body: dict[str, str],
           owner: dict[str, str], other: dict[str, str], owner_deletes: bool) -> list[Step]:
    """The list/view/create/update/delete cases of one system collection's test file, in an order that lets
    them run one after the other: reads, creates and updates, then deletes."""
    records = f"/api/collections/{collection}/records"
    record = f"{records}/{record_id}"
    return [
        Step("list: guest", "GET", records, auth=G),
        Step("list: the owner", "GET", records, auth=G, headers=owner),
        Step("list: another auth record", "GET", records, auth=G, headers=other),
        Step("list: superuser", "GET",
             f"{records}?sort=id&fields=id,collectionRef,recordRef&filter={OTHER_THAN_LOGIN}"),
        Step("view: guest", "GET", record, auth=G),
        Step("view: not the owner", "GET", record, auth=G, headers=other),
        Step("view: the owner", "GET", record, auth=G, headers=owner),
        Step("create: guest", "POST", records, create_body, auth=G),
        Step("create: the owner", "POST", records, create_body, auth=G, headers=owner),
        Step("create: superuser", "POST", records, create_body, auth=G, headers=SUPERUSER1),
        Step("create: a duplicate", "POST", records, create_body, auth=G, headers=SUPERUSER1),
        Step("update: guest", "PATCH", record, update_body, auth=G),
        Step("update: the owner", "PATCH", record, update_body, auth=G, headers=owner),
        Step("update: superuser", "PATCH", record, update_body, auth=G, headers=SUPERUSER1),
        Step("delete: guest", "DELETE", record, auth=G),
        Step("delete: not the owner", "DELETE", record, auth=G, headers=other),
        Step("delete: the owner", "DELETE", record, auth=G, headers=owner),
        *([] if owner_deletes else [Step("delete: superuser", "DELETE", record, auth=G, headers=SUPERUSER1)]),
        Step("deleted", "GET", record),
    ]


_USER1_REFS = {"recordRef": "4q1xlclmfloku33", "collectionRef": "_pb_users_auth_"}

SYSTEM_RECORD_SCENARIOS: dict[str, list[Step]] = {
    "system records: _authOrigins (record_crud_auth_origin_test.go)": _owned(
        "_authOrigins", "9r2j0m74260ur8i", {**_USER1_REFS, "fingerprint": "abc"}, {"fingerprint": "abc"},
        owner=CLIENT1, other=USER1, owner_deletes=True),
    "system records: _externalAuths (record_crud_external_auth_test.go)": _owned(
        "_externalAuths", "dlmflokuq1xl342", {**_USER1_REFS, "provider": "github", "providerId": "abc"},
        {"providerId": "abc"}, owner=USER1, other=CLIENT1, owner_deletes=True),
    "system records: _mfas (record_crud_mfa_test.go)": _owned(
        "_mfas", "user1_0", {**_USER1_REFS, "method": "abc"}, {"method": "abc"}, owner=USER1, other=CLIENT1,
        owner_deletes=False),
    "system records: _otps (record_crud_otp_test.go)": _owned(
        "_otps", "user1_0", {**_USER1_REFS, "password": "abc"}, {"password": "abc"}, owner=USER1, other=CLIENT1,
        owner_deletes=False),
    "system records: _superusers (record_crud_superuser_test.go)": [
        Step("list: guest", "GET", "/api/collections/_superusers/records", auth=G),
        Step("list: not a superuser", "GET", "/api/collections/_superusers/records", auth=G, headers=USER2),
        Step("list: superuser", "GET", "/api/collections/_superusers/records?sort=id", auth=G, headers=SUPERUSER1),
        Step("view: guest", "GET", "/api/collections/_superusers/records/sywbhecnh46rhm0", auth=G),
        Step("view: not a superuser", "GET", "/api/collections/_superusers/records/sywbhecnh46rhm0", auth=G,
             headers=USER1),
        Step("view: superuser", "GET", "/api/collections/_superusers/records/sywbhecnh46rhm0", auth=G,
             headers=SUPERUSER1),
        *[Step(f"create: {who}", "POST", "/api/collections/_superusers/records",
               {"email": "test_new@example.com", "password": "1234567890", "passwordConfirm": "1234567890",
                "verified": False}, auth=G, headers=headers)
          for who, headers in (("guest", {}), ("not a superuser", USER1), ("superuser", SUPERUSER1))],
        *[Step(f"update: {who}", "PATCH", "/api/collections/_superusers/records/q911776rrfy658l",
               {"email": "test_new2@example.com", "verified": True}, auth=G, headers=headers)
          for who, headers in (("guest", {}), ("not a superuser", USER1), ("superuser", SUPERUSER1))],
        *[Step(f"delete: {who}", "DELETE", "/api/collections/_superusers/records/sbmbsdb40jyxf7h", auth=G,
               headers=headers)
          for who, headers in (("guest", {}), ("not a superuser", USER1), ("superuser", SUPERUSER1))],
        Step("its auth origins went with it", "GET", "/api/collections/_authOrigins/records?sort=recordRef"
             f"&fields=recordRef&filter={OTHER_THAN_LOGIN}"),
        Step("superusers at the end", "GET", "/api/collections/_superusers/records?sort=email&fields=email,verified"),
    ],
}
