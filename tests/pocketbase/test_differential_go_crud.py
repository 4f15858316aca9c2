"""PocketBase's record, batch, file and collection API scenarios (``scenarios_go_crud.py``, verbatim from its
Go tests) sent to stock PocketBase 0.40.6 and to a pbfast tenant on copies of the fixture; status codes and
JSON bodies must be equal, their keys in the same order (``differential.py``). The file and record scenarios share one pair of servers, the
batch and collection scenarios another (they delete, truncate and import collections)."""

from __future__ import annotations

from pathlib import Path

import pytest

from differential import Step, compare
from pbharness import Backend, fixture_backends
from scenarios_go_crud import COLLECTION_PORTS, RECORD_CRUD_PORTS
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
        _run_all(RECORD_CRUD_PORTS, pair, known_ids, tmp_path.parent / "differential-report.txt")


def test_batch_and_collection_ports_answer_as_pocketbase(known_ids: set[str], tmp_path: Path) -> None:
    with fixture_backends(tmp_path / "collections") as pair:
        _run_all(COLLECTION_PORTS, pair, known_ids, tmp_path.parent / "differential-report.txt")
