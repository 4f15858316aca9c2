"""MFA is enforced (issue 11 §5): on an auth collection with MFA on, a correct password alone must not log in.

An all-in-one process serving a copy of PocketBase's test data (``users`` has MFA on, 1,800 s sessions).
PocketBase answers the first method with ``401 {"mfaId"}`` and an ``_mfas`` row; password is the only method
pbfast has, so such a login cannot complete (a second password with the ``mfaId`` is "a different
authentication method is required"). The exact answers are compared with stock PocketBase by the "mfa first
step" differential scenario; these tests check what the stored session allows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import apsw
import pytest

from inputrig import AllInOne, start_all_in_one_rig

LOGIN = "/api/collections/users/auth-with-password"
USER = {"identity": "test@example.com", "password": "1234567890"}
USER_ID, USERS_ID = "4q1xlclmfloku33", "_pb_users_auth_"


@pytest.fixture(scope="module")
def aio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AllInOne]:
    with start_all_in_one_rig(tmp_path_factory.mktemp("mfa")) as rig:
        yield rig


def sessions(aio: AllInOne) -> list[dict[str, Any]]:
    answer = aio.gateway.request("GET", "/api/collections/_mfas/records?sort=created&perPage=500", superuser=True)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def first_step(aio: AllInOne, body: dict[str, Any] = USER, superuser: bool = False,
               path: str = LOGIN) -> str:
    answer = aio.gateway.request("POST", path, json=body, superuser=superuser)
    assert answer.status_code == 401, answer.text  # pbfast answered 200 with a full token
    assert set(answer.json()) == {"mfaId"} and "token" not in answer.text
    return str(answer.json()["mfaId"])


def age_session(aio: AllInOne, mfa_id: str, seconds: float) -> None:
    """Make a session look ``seconds`` old (the clock cannot be moved for a running server)."""
    created = (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    conn = apsw.Connection(str(aio.tenant_db))
    try:
        conn.set_busy_timeout(10_000)
        conn.execute("UPDATE _mfas SET created = ? WHERE id = ?", (created, mfa_id))
    finally:
        conn.close()


def test_password_alone_gets_only_an_mfa_id(aio: AllInOne) -> None:
    started = datetime.now(UTC) - timedelta(seconds=2)
    mfa_id = first_step(aio)
    stored = [s for s in sessions(aio) if s["id"] == mfa_id]
    assert len(stored) == 1
    session = stored[0]
    assert (session["collectionRef"], session["recordRef"], session["method"]) == (USERS_ID, USER_ID, "password")
    created = datetime.strptime(session["created"], "%Y-%m-%d %H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert started <= created <= datetime.now(UTC) + timedelta(seconds=2)


def test_a_second_password_does_not_complete_the_login(aio: AllInOne) -> None:
    mfa_id = first_step(aio)
    for how in ("body", "query"):
        body = {**USER, "mfaId": mfa_id} if how == "body" else USER
        path = LOGIN if how == "body" else f"{LOGIN}?mfaId={mfa_id}"
        answer = aio.gateway.request("POST", path, json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["message"] == "A different authentication method is required."
        assert "token" not in answer.json()
    assert mfa_id in {s["id"] for s in sessions(aio)}  # kept for the other method


def test_a_session_lasts_the_collections_mfa_duration(aio: AllInOne) -> None:
    mfa_id = first_step(aio)
    age_session(aio, mfa_id, 1790)  # users: 1,800 s
    answer = aio.gateway.request("POST", LOGIN, json={**USER, "mfaId": mfa_id})
    assert answer.json()["message"] == "A different authentication method is required."
    age_session(aio, mfa_id, 1810)
    answer = aio.gateway.request("POST", LOGIN, json={**USER, "mfaId": mfa_id})
    assert answer.status_code == 400 and answer.json()["message"] == "Invalid or expired MFA session."
    assert mfa_id not in {s["id"] for s in sessions(aio)}  # an expired session is deleted
    changed = aio.gateway.request("PATCH", "/api/collections/users", superuser=True,
                                  json={"mfa": {"duration": 60}})
    assert changed.status_code == 200, changed.text
    try:
        mfa_id = first_step(aio)
        age_session(aio, mfa_id, 90)
        answer = aio.gateway.request("POST", LOGIN, json={**USER, "mfaId": mfa_id})
        assert answer.json()["message"] == "Invalid or expired MFA session."
    finally:
        aio.gateway.request("PATCH", "/api/collections/users", superuser=True, json={"mfa": {"duration": 1800}})


def test_a_session_belongs_to_its_record(aio: AllInOne) -> None:
    mfa_id = first_step(aio)
    answer = aio.gateway.request("POST", LOGIN, json={"identity": "test2@example.com", "password": "1234567890",
                                                      "mfaId": mfa_id})
    assert answer.status_code == 400 and answer.json()["message"] == "Invalid MFA session."


def test_superusers_get_no_exemption(aio: AllInOne) -> None:
    """A superuser logging a users record in gets the same first step; the superusers' own collection
    enforces MFA when it is on."""
    first_step(aio, {"identity": "test2@example.com", "password": "1234567890"}, superuser=True)
    gw = aio.gateway
    enabled = gw.request("PATCH", "/api/collections/_superusers", superuser=True,
                         json={"otp": {"enabled": True}, "mfa": {"enabled": True}})
    assert enabled.status_code == 200, enabled.text
    try:
        mfa_id = first_step(aio, {"identity": "test@example.com", "password": "1234567890"},
                            path="/api/collections/_superusers/auth-with-password")
        session = next(s for s in sessions(aio) if s["id"] == mfa_id)
        assert session["collectionRef"] == "pbc_3142635823" and session["method"] == "password"
    finally:
        gw.request("PATCH", "/api/collections/_superusers", superuser=True,
                   json={"mfa": {"enabled": False}, "otp": {"enabled": False}})


def test_mfa_rule_decides_who_needs_a_second_method(aio: AllInOne) -> None:
    gw = aio.gateway
    changed = gw.request("PATCH", "/api/collections/users", superuser=True,
                         json={"mfa": {"rule": "email = 'test2@example.com'"}})
    assert changed.status_code == 200, changed.text
    try:
        logged_in = gw.request("POST", LOGIN, json=USER)
        assert logged_in.status_code == 200 and logged_in.json()["record"]["id"] == USER_ID
        first_step(aio, {"identity": "test2@example.com", "password": "1234567890"})
    finally:
        gw.request("PATCH", "/api/collections/users", superuser=True, json={"mfa": {"rule": ""}})
    first_step(aio)


def test_a_new_password_ends_the_records_sessions(aio: AllInOne) -> None:
    mfa_id = first_step(aio)
    changed = aio.gateway.request("PATCH", f"/api/collections/users/records/{USER_ID}", superuser=True,
                                  json={"password": "1234567890", "passwordConfirm": "1234567890"})
    assert changed.status_code == 200, changed.text
    assert not [s for s in sessions(aio) if s["recordRef"] == USER_ID]
    answer = aio.gateway.request("POST", LOGIN, json={**USER, "mfaId": mfa_id})
    assert answer.json()["message"] == "Invalid or expired MFA session."
