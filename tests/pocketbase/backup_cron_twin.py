"""Scheduled backups side by side with stock PocketBase 0.40.6 on the real clock (a long form, about two minutes
plus the servers' start, so not in the suite; the cron settings' answers are compared there, in
``test_differential_auth.py``, and the scheduler itself in ``tests/test_backup_cron.py``): both servers get
``* * * * *`` with ``cronMaxKeep`` 1 and a manual backup, and after two due minutes list the same backups: the
manual one and one ``@auto_pb_backup_<app>_<time>.zip``, the older automatic one pruned.

    PYTHONPATH=$PWD python3 tests/pocketbase/backup_cron_twin.py
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # run as a script

from pbharness import Backend, fixture_backends  # noqa: E402 - after the path above


def _patch(backend: Backend, body: dict[str, object]) -> tuple[int, object]:
    response = httpx.patch(f"{backend.url}/api/settings?fields=backups.cron,backups.cronMaxKeep", json=body,
                           headers={"authorization": backend.superuser_token}, timeout=30)
    return response.status_code, response.json()


def _backups(backend: Backend) -> list[str]:
    response = httpx.get(f"{backend.url}/api/backups", headers={"authorization": backend.superuser_token},
                         timeout=30)
    assert response.status_code == 200, response.text
    return sorted(item["key"] for item in response.json())


def _automatic(backend: Backend) -> list[str]:
    return [key for key in _backups(backend) if key.startswith("@auto_pb_backup_")]


def scheduled_backups_as_pocketbase(base: Path) -> None:
    with fixture_backends(base) as (stock, fast):
        for backend in (stock, fast):
            assert _patch(backend, {"meta": {"appName": "Cron Twin"}, "backups": {
                "cron": "* * * * *", "cronMaxKeep": 1}})[0] == 200
            made = httpx.post(f"{backend.url}/api/backups", json={"name": "manual_one.zip"},
                              headers={"authorization": backend.superuser_token}, timeout=60)
            assert made.status_code == 204, made.text
        first: dict[str, list[str]] = {}
        deadline = time.monotonic() + 75
        while len(first) < 2:  # the first due minute
            assert time.monotonic() < deadline, "no scheduled backup within a minute"
            for backend in (stock, fast):
                if backend.name not in first and _automatic(backend):
                    first[backend.name] = _automatic(backend)
            time.sleep(1)
        deadline = time.monotonic() + 75
        while any(_automatic(backend) == first[backend.name] for backend in (stock, fast)):  # the second one
            assert time.monotonic() < deadline, "no second scheduled backup within a minute"
            time.sleep(1)
        time.sleep(3)  # the prune follows the upload

        def shown(backend: Backend) -> list[str]:
            return [re.sub(r"_\d{14}\.zip$", "_<time>.zip", key) for key in _backups(backend)]

        assert shown(stock) == shown(fast) == ["@auto_pb_backup_cron_twin_<time>.zip", "manual_one.zip"]
        for backend in (stock, fast):
            assert _automatic(backend) != first[backend.name]  # the newer one kept
        print("same backups on both:", _backups(stock), _backups(fast))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="cron-twin-") as scratch:
        scheduled_backups_as_pocketbase(Path(scratch))
