"""Differential tests for records CRUD, uploads, files and system collections' records (issue 15): the
scenarios of ``scenarios_records.py``, ``scenarios_files.py`` and ``scenarios_system_records.py``, sent to
stock PocketBase 0.40.6 and to a pbfast tenant, both on copies of PocketBase's test data dir plus the MFA and
OTP records PocketBase's own tests stub (``STUBBED_IDS``); status codes and JSON bodies must be equal (see
``differential.py``).

One pair of servers serves the whole module (a pair costs seconds to start): the scenarios run in the order
listed, each leaves the rules and settings it changes as it found them, and none reads what another wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from differential import Step, compare
from pbharness import Backend, fixture_backends
from scenarios_files import FILE_SCENARIOS, SUPERUSER_IP_SCENARIOS
from scenarios_records import RATE_LIMIT_SCENARIOS, RECORD_SCENARIOS
from scenarios_system_records import STUBBED_IDS, SYSTEM_RECORD_SCENARIOS, stub_system_records
from test_differential import fixture_ids

SCENARIOS: dict[str, list[Step]] = {**RECORD_SCENARIOS, **FILE_SCENARIOS, **SYSTEM_RECORD_SCENARIOS,
                                    **RATE_LIMIT_SCENARIOS, **SUPERUSER_IP_SCENARIOS}


@pytest.fixture(scope="module")
def backend_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Backend, Backend]]:
    """Stock PocketBase and a pbfast all-in-one tenant on stubbed copies of the fixture, for the module."""
    with fixture_backends(tmp_path_factory.mktemp("records"), stub_system_records) as pair:
        yield pair


@pytest.fixture(scope="module")
def known_ids() -> set[str]:
    return fixture_ids() | STUBBED_IDS


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_records_as_pocketbase(scenario: str, backend_pair: tuple[Backend, Backend], known_ids: set[str],
                               tmp_path: Path) -> None:
    steps = SCENARIOS[scenario]
    differences = compare(*backend_pair, steps, known_ids, key_order=True)
    with open(tmp_path.parent / "differential-report.txt", "a") as out:
        out.write(f"{scenario}: {len(steps) - len(differences)}/{len(steps)} equal\n")
    assert not differences, "\n".join(differences)

