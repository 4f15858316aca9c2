"""Tokens end the moment their record's ``tokenKey`` or password changes, although a tenant keeps the records
that tokens name between requests (:mod:`pbfast.pocketbase.auth_records`): a change through the API, and a
change committed by another connection to the tenant's ``data.db`` (what another worker process of the node
does), each refuse the old token on the very next request."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import apsw
import httpx
import orjson

from pbharness import Backend

CLIENTS = "/api/collections/clients"  # the fixture's users collection asks for MFA
TEST_USER = {"identity": "test@example.com", "password": "1234567890"}


def _login(backend: Backend, password: str) -> tuple[str, str]:
    response = httpx.post(f"{backend.url}{CLIENTS}/auth-with-password", timeout=30,
                          json={"identity": TEST_USER["identity"], "password": password})
    assert response.status_code == 200, response.text
    return response.json()["token"], response.json()["record"]["id"]


def _refresh(backend: Backend, token: str) -> httpx.Response:
    return httpx.post(f"{backend.url}{CLIENTS}/auth-refresh", headers={"Authorization": token}, timeout=30)


def test_a_token_ends_at_once_when_its_record_changes_here_or_in_another_process(
        pbfast_fixture_tenant: Backend, tmp_path: Path) -> None:
    backend = pbfast_fixture_tenant
    _a_kept_token_still_expires_and_a_kept_answer_follows_its_record(backend)
    token, record_id = _login(backend, TEST_USER["password"])
    for _ in range(3):  # the record is kept from the first of these on
        assert _refresh(backend, token).status_code == 200

    # another connection (another worker process of the node) renews the tokenKey
    data_db = backend.tenant_dir / "data.db"
    other = apsw.Connection(str(data_db))
    try:
        other.setbusytimeout(10_000)
        other.execute("UPDATE clients SET tokenKey = ? WHERE id = ?", ("renewed-elsewhere-" + "k" * 32, record_id))
    finally:
        other.close()
    refused = _refresh(backend, token)
    assert refused.status_code == 401, refused.text

    # a password change through the API renews it here
    token, _ = _login(backend, TEST_USER["password"])
    assert _refresh(backend, token).status_code == 200
    changed = httpx.patch(f"{backend.url}{CLIENTS}/records/{record_id}", timeout=30,
                          headers={"Authorization": backend.superuser_token},
                          json={"password": "a-new-password-1", "passwordConfirm": "a-new-password-1"})
    assert changed.status_code == 200, changed.text
    refused = _refresh(backend, token)
    assert refused.status_code == 401, refused.text
    fresh, _ = _login(backend, "a-new-password-1")
    assert _refresh(backend, fresh).status_code == 200


def test_a_token_ends_at_once_when_its_collection_secret_changes_or_its_record_is_deleted(
        pbfast_fixture_tenant: Backend) -> None:
    backend = pbfast_fixture_tenant
    superuser = {"Authorization": backend.superuser_token}
    token, record_id = _login(backend, TEST_USER["password"])
    for _ in range(2):  # kept from the first of these on
        assert _refresh(backend, token).status_code == 200
    changed = httpx.patch(f"{backend.url}/api/collections/clients", headers=superuser, timeout=30,
                          json={"authToken": {"secret": "a-brand-new-secret-of-enough-length-123"}})
    assert changed.status_code == 200, changed.text
    assert _refresh(backend, token).status_code == 401

    token, _ = _login(backend, TEST_USER["password"])
    assert _refresh(backend, token).status_code == 200
    deleted = httpx.delete(f"{backend.url}{CLIENTS}/records/{record_id}", headers=superuser, timeout=30)
    assert deleted.status_code == 204, deleted.text
    assert _refresh(backend, token).status_code == 401


def _a_kept_token_still_expires_and_a_kept_answer_follows_its_record(backend: Backend) -> None:
    """A token verified once is not checked again while its record is unchanged, and a record's auth answer is
    kept as bytes (auth_records.verified_token, auth_answer_json): neither outlives the token's ``exp`` or a change
    of the record, and the kept answer is the one the general path gives. (Run on the first test's tenant: a
    tenant of its own costs ~2 s.)"""
    superuser = {"Authorization": backend.superuser_token}
    token, record_id = _login(backend, TEST_USER["password"])
    first = _refresh(backend, token)
    assert first.status_code == 200, first.text
    # the general path (a "fields" parameter) answers what the kept bytes answer, token aside
    general = httpx.post(f"{backend.url}{CLIENTS}/auth-refresh?fields=record,token", headers={"Authorization": token},
                         timeout=30)
    assert general.status_code == 200, general.text
    assert general.json()["record"] == _refresh(backend, token).json()["record"] == first.json()["record"]
    assert list(first.json()) == ["record", "token"]

    renamed = httpx.patch(f"{backend.url}{CLIENTS}/records/{record_id}", headers=superuser, timeout=30,
                          json={"name": "renamed while its answer was kept"})
    assert renamed.status_code == 200, renamed.text
    after = _refresh(backend, token)
    assert after.status_code == 200, after.text
    assert after.json()["record"]["name"] == "renamed while its answer was kept"
    assert after.json()["record"] == renamed.json() | {"email": after.json()["record"]["email"]}

    # an impersonation token lasting 1 s: verified and kept, then refused once its exp has passed
    impersonated = httpx.post(f"{backend.url}{CLIENTS}/impersonate/{record_id}", json={"duration": 1},
                              headers=superuser, timeout=30)
    assert impersonated.status_code == 200, impersonated.text
    short = impersonated.json()["token"]
    exp = orjson.loads(base64.urlsafe_b64decode(short.split(".")[1] + "=="))["exp"]
    kept = _refresh(backend, short)
    if time.time() < exp:  # (a slow machine may be past it already)
        assert kept.status_code == 200, kept.text
        assert kept.json()["token"] == short  # not refreshable: answered as it is
    deadline = time.monotonic() + 10
    while time.time() < exp + 0.05 and time.monotonic() < deadline:
        assert _refresh(backend, short).status_code in (200, 401)
    assert _refresh(backend, short).status_code == 401
