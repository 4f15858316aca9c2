"""The scenarios ported from PocketBase's own API tests (``scenarios_auth_api.py``: ``record_auth_*_test.go``
and ``health_test.go``; ``scenarios_admin_api.py``: ``collection_test.go``, ``settings_test.go``,
``logs_test.go``, ``backup_test.go``, ``realtime_test.go``; ``scenarios_go_verbatim.py``: the Go requests
those do not send): each module's scenarios run in order on one pair
of servers (stock PocketBase 0.40.6 and a pbfast tenant on copies of the fixture), every difference reported."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from differential import Step, compare
from conftest import DataPatch
from pbharness import Backend
from scenarios_admin_api import ADMIN_API_SCENARIOS, APPLE, APPLE_TEST_KEY
from scenarios_auth_api import AUTH_API_SCENARIOS, RATE_LIMIT_SCENARIOS
from scenarios_go_verbatim import GO_VERBATIM_BACKUP_PORTS, GO_VERBATIM_PORTS
from oauth2_redirects import redirect_cases
from scenarios_patched_ports import PATCHED_SCENARIOS, write_sessions
from scenarios_remaining_ports import REMAINING_SCENARIOS
from test_differential import fixture_ids

# In this order on the same servers: the verbatim Go requests first (they change nothing the others read), the
# admin scenarios leave the auth records alone (the verbatim backups after theirs), the auth scenarios end by
# changing test@example.com's email (its tokens void), the rate limits stay on.
SCENARIOS: dict[str, list[Step]] = {**GO_VERBATIM_PORTS, **ADMIN_API_SCENARIOS, **GO_VERBATIM_BACKUP_PORTS,
                                    **REMAINING_SCENARIOS, **AUTH_API_SCENARIOS, **RATE_LIMIT_SCENARIOS}


def test_ported_scenarios_answer_as_pocketbase(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend,
                                               tmp_path: Path) -> None:
    ids = fixture_ids()
    differences: list[str] = []
    with open(tmp_path.parent / "differential-report.txt", "a") as report:
        for scenario, steps in SCENARIOS.items():
            found = compare(stock_pocketbase, pbfast_fixture_tenant, steps, ids, key_order=True)
            report.write(f"{scenario}: {len(steps) - len(found)}/{len(steps)} equal\n")
            differences += [f"[{scenario}] {line}" for line in found]
    assert not differences, "\n".join(differences)
    _check_apple_client_secret(pbfast_fixture_tenant)
    _check_backup_job_on_demand(pbfast_fixture_tenant)


def test_ported_scenarios_on_written_sessions_answer_as_pocketbase(
        patched_backends: Callable[[DataPatch], tuple[Backend, Backend]], tmp_path: Path) -> None:
    """``scenarios_patched_ports.py``: OTPs and MFA sessions written before the servers start, then backups;
    first, on the same servers, the OAuth2 redirect's cases (``oauth2_redirects.py``)."""
    stock, fast = patched_backends(write_sessions)
    expected = redirect_cases(stock)
    for got, wanted in zip(redirect_cases(fast), expected, strict=True):
        assert got == wanted, f"\npbfast: {got}\nstock:  {wanted}"
    outcome = {name: rest for name, *rest in expected}
    assert outcome["with @oauth2"] == [204, (True, False), [{"code": "123", "state": "<state>"}], (True, True)]
    assert outcome["different IP"] == [204, (True, True), [], (True, True)]
    ids = fixture_ids()
    differences: list[str] = []
    for scenario, steps in PATCHED_SCENARIOS.items():
        differences += [f"[{scenario}] {line}" for line in compare(stock, fast, steps, ids, key_order=True)]
    assert not differences, "\n".join(differences)


def _check_backup_job_on_demand(backend: Backend) -> None:
    """``POST /api/crons/__pbAutoBackup__`` answers at once; the ``@auto_pb_backup_`` zip follows."""
    su = {"Authorization": backend.superuser_token}
    saved = httpx.patch(f"{backend.url}/api/settings", json={"backups": {"cron": "0 3 * * *", "cronMaxKeep": 2}},
                        headers=su, timeout=30)
    assert saved.status_code == 200, saved.text
    assert httpx.post(f"{backend.url}/api/crons/__pbAutoBackup__", headers=su, timeout=30).status_code == 204
    deadline = time.monotonic() + 30
    keys: list[str] = []
    while not any(key.startswith("@auto_pb_backup_") for key in keys):
        assert time.monotonic() < deadline, keys
        time.sleep(0.2)
        keys = [item["key"] for item in httpx.get(f"{backend.url}/api/backups", headers=su, timeout=30).json()]


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _check_apple_client_secret(backend: Backend) -> None:
    """The generated secret is an ES256 JWT Apple accepts: signed by the key, with the claims it asks for."""
    answer = httpx.post(f"{backend.url}{APPLE}", headers={"Authorization": backend.superuser_token}, timeout=30, json={
        "clientId": "com.example.app", "teamId": "TEAM123456", "keyId": "KEY1234567", "privateKey": APPLE_TEST_KEY,
        "duration": 3600})
    assert answer.status_code == 200, answer.text
    header, claims, signature = answer.json()["secret"].split(".")
    assert orjson.loads(_b64decode(header)) == {"alg": "ES256", "kid": "KEY1234567", "typ": "JWT"}
    payload = orjson.loads(_b64decode(claims))
    assert (payload["iss"], payload["sub"], payload["aud"]) == ("TEAM123456", "com.example.app",
                                                                ["https://appleid.apple.com"])
    assert payload["exp"] - payload["iat"] == 3600
    key = serialization.load_pem_private_key(APPLE_TEST_KEY.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    raw = _b64decode(signature)
    key.public_key().verify(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
                            f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
