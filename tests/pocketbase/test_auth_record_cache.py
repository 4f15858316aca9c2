"""Tokens end the moment their record's ``tokenKey`` or password changes, although a tenant keeps the records
that tokens name between requests (:mod:`pbfast.pocketbase.auth_records`): a change through the API, and a
change committed by another connection to the tenant's ``data.db`` (what another worker process of the node
does), each refuse the old token on the very next request."""

from __future__ import annotations

from pathlib import Path

import apsw
import httpx

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
