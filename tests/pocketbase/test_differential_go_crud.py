"""PocketBase's record, batch, file and collection API scenarios (``scenarios_go_crud.py``, verbatim from its
Go tests) sent to stock PocketBase 0.40.6 and to a pbfast tenant on copies of the fixture; status codes and
JSON bodies must be equal, their keys in the same order (``differential.py``). The file and record scenarios share one pair of servers, the
batch and collection scenarios another (they delete, truncate and import collections); ``scenarios_record_access.py``'s
run first on them (the hidden fields' reads on the first, the managed fields' writes on the second)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from differential import Step, compare
from pbharness import Backend, fixture_backends
from scenarios_go_crud import COLLECTION_PORTS, RECORD_CRUD_PORTS
from scenarios_record_access import HIDDEN_FIELD_SCENARIOS, MANAGED_FIELD_SCENARIOS
from test_differential import fixture_ids


@pytest.fixture(scope="module")
def known_ids() -> set[str]:
    return fixture_ids()


def _run_all(scenarios: dict[str, list[Step]], pair: tuple[Backend, Backend], ids: set[str], report: Path) -> None:
    differences: list[str] = []
    with open(report, "a") as out:
        for scenario, steps in scenarios.items():
            found = compare(*pair, steps, ids, key_order=True)
            out.write(f"go crud {scenario}: {len(steps) - len(found)}/{len(steps)} equal\n")
            differences += [f"[{scenario}] {line}" for line in found]
    assert not differences, "\n".join(differences)


def test_record_and_file_ports_answer_as_pocketbase(known_ids: set[str], tmp_path: Path) -> None:
    with fixture_backends(tmp_path / "records") as pair:
        _check_security_headers(pair)
        _run_all({**HIDDEN_FIELD_SCENARIOS, **RECORD_CRUD_PORTS}, pair, known_ids,
                 tmp_path.parent / "differential-report.txt")


SECURITY_HEADERS = ("x-xss-protection", "x-content-type-options", "x-frame-options", "cross-origin-opener-policy")
AVATAR = "/api/files/_pb_users_auth_/4q1xlclmfloku33/300_1SEi6Q6U72.png"
# PocketBase's securityHeaders middleware: on every answer but a preflight's and a redirect to the clean path;
# a served file (whole, a range, not satisfiable, a thumb) without X-Frame-Options.
HEADER_REQUESTS = [
    ("GET", "/api/collections/demo2/records", {}), ("GET", "/api/collections/demo1/records", {}),
    ("GET", "/api/unknown", {}), ("DELETE", "/api/collections/demo2/records/missing", {}),
    ("POST", "/api/realtime", {}), ("GET", "/api/health", {}), ("GET", "/api//health", {}),
    ("OPTIONS", "/api/health", {"Origin": "http://example.com", "Access-Control-Request-Method": "GET"}),
    ("GET", AVATAR, {}), ("GET", f"{AVATAR}?thumb=70x50", {}), ("HEAD", AVATAR, {}),
    ("GET", AVATAR, {"Range": "bytes=0-3"}), ("GET", AVATAR, {"Range": "bytes=99999999-"}),
    ("GET", "/api/files/_pb_users_auth_/4q1xlclmfloku33/missing.png", {}),
]


def _check_security_headers(pair: tuple[Backend, Backend]) -> None:
    differences = []
    for method, path, headers in HEADER_REQUESTS:
        answers = [httpx.request(method, backend.url + path, headers=headers, timeout=30) for backend in pair]
        shown = [(answer.status_code, {name: answer.headers.get_list(name) for name in SECURITY_HEADERS})
                 for answer in answers]
        if shown[0] != shown[1]:
            differences.append(f"{method} {path} {headers}\n  pocketbase: {shown[0]}\n  pbfast:     {shown[1]}")
    assert not differences, "\n".join(differences)


def test_batch_and_collection_ports_answer_as_pocketbase(known_ids: set[str], tmp_path: Path) -> None:
    with fixture_backends(tmp_path / "collections") as pair:
        _run_all({**MANAGED_FIELD_SCENARIOS, **COLLECTION_PORTS}, pair, known_ids,
                 tmp_path.parent / "differential-report.txt")
