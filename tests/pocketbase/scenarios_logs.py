"""``/api/logs`` side by side with stock PocketBase 0.40.6 on logs seeded into both copies of the fixture's
``auxiliary.db`` (:func:`seed_logs`), and the logs pbfast writes for requests (shape, the tenant's ``logs``
settings). Run by ``test_logs_backups_rate_limits.py`` on servers it shares with the other scenarios."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import apsw
import httpx
import orjson

from pbharness import Backend

SEEDED = [  # id, level, message, data, created
    (f"seedlog{index:08d}", level, f"{method} /api/seed/{index}",
     {"type": "request", "method": method, "status": status, "url": f"/api/seed/{index}", "auth": auth,
      "execTime": index / 3, "nested": {"k": index % 3}},
     f"2026-0{1 + index % 3}-1{index % 10} 0{index % 7}:1{index % 6}:00.{index:03d}Z")
    for index, (level, method, status, auth) in enumerate(
        [(0, "GET", 200, ""), (8, "POST", 400, "users"), (0, "PATCH", 200, "_superusers"), (4, "GET", 404, ""),
         (-4, "DELETE", 204, "users")] * 5)
]


def seed_logs(data_db: Path) -> None:
    aux = apsw.Connection(str(data_db.parent / "auxiliary.db"))
    with aux:
        aux.execute("DELETE FROM _logs")
        aux.executemany("INSERT INTO _logs (id, level, message, data, created) VALUES (?, ?, ?, ?, ?)",
                        [(i, lv, m, orjson.dumps(d).decode(), c) for i, lv, m, d, c in SEEDED])
    aux.close()


def _user_token(backend: Backend) -> str:
    answer = httpx.post(f"{backend.url}/api/collections/clients/auth-with-password",
                        json={"identity": "test@example.com", "password": "1234567890"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


ONLY_SEEDED = 'message ~ "/api/seed/"'
REQUESTS: list[tuple[str, str, str, str]] = [  # who, method, path, query
    ("guest", "GET", "/api/logs", ""),
    ("user", "GET", "/api/logs", ""),
    ("guest", "GET", "/api/logs/stats", ""),
    ("user", "GET", "/api/logs/seedlog00000001", ""),
    ("superuser", "GET", "/api/logs", f"filter={ONLY_SEEDED}&sort=-created,id&perPage=7"),
    ("superuser", "GET", "/api/logs", f"filter={ONLY_SEEDED}&sort=created&page=3&perPage=4"),
    ("superuser", "GET", "/api/logs", f"filter={ONLY_SEEDED} %26%26 level > 0&sort=-level,id"),
    ("superuser", "GET", "/api/logs", f"filter={ONLY_SEEDED} %26%26 data.status >= 400&sort=id&fields=id,data.url"),
    ("superuser", "GET", "/api/logs", f"filter={ONLY_SEEDED} %26%26 data.nested.k = 2&sort=id&skipTotal=1"),
    ("superuser", "GET", "/api/logs", f"filter={ONLY_SEEDED} %26%26 data.auth = ''&sort=data.execTime"),
    ("superuser", "GET", "/api/logs", "filter=missing = 1"),
    ("superuser", "GET", "/api/logs", "filter=(("),
    ("superuser", "GET", "/api/logs", "sort=unknownfield"),
    ("superuser", "GET", "/api/logs", "page=x"),
    ("superuser", "GET", "/api/logs/stats", f"filter={ONLY_SEEDED}"),
    ("superuser", "GET", "/api/logs/stats", f"filter={ONLY_SEEDED} %26%26 level = 8"),
    ("superuser", "GET", "/api/logs/stats", "filter=nope = 1"),
    ("superuser", "GET", "/api/logs/seedlog00000003", ""),
    ("superuser", "GET", "/api/logs/seedlog00000003", "fields=message"),
    ("superuser", "GET", "/api/logs/missing", ""),
    ("user", "DELETE", "/api/logs", ""),
]


def _ask(backend: Backend, tokens: dict[str, str], who: str, method: str, path: str, query: str) -> httpx.Response:
    headers = {"Authorization": tokens[who]} if who in tokens else {}
    return httpx.request(method, f"{backend.url}{path}{'?' + query if query else ''}", headers=headers, timeout=30)


def check_logs_api(stock: Backend, fast: Backend) -> None:
    tokens = {name: {"superuser": backend.superuser_token, "user": _user_token(backend)}
              for name, backend in (("stock", stock), ("fast", fast))}
    compared = 0
    for who, method, path, query in REQUESTS:
        want = _ask(stock, tokens["stock"], who, method, path, query)
        got = _ask(fast, tokens["fast"], who, method, path, query)
        assert (got.status_code, got.json()) == (want.status_code, want.json()), (who, method, path, query)
        compared += 1
    assert compared == len(REQUESTS)
    # DELETE (0.40): 204, then nothing is left (the list request itself is not logged on success).
    for backend, mine in ((stock, tokens["stock"]), (fast, tokens["fast"])):
        deleted = _ask(backend, mine, "superuser", "DELETE", "/api/logs", "")
        assert deleted.status_code == 204, (backend.name, deleted.text)
        left = _ask(backend, mine, "superuser", "GET", "/api/logs", f"filter={ONLY_SEEDED}").json()
        assert left["totalItems"] == 0
    _check_requests_are_logged(fast)  # on the same server: one start fewer


def _patch_settings(backend: Backend, body: dict[str, Any]) -> None:
    answer = httpx.patch(f"{backend.url}/api/settings", json=body, headers={"Authorization": backend.superuser_token},
                         timeout=30)
    assert answer.status_code == 200, answer.text


def _logs(backend: Backend, query: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{backend.url}/api/logs?{query}", headers={"Authorization": backend.superuser_token},
                       timeout=30)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def _check_requests_are_logged(fast: Backend) -> None:
    """The logs pbfast writes for requests: PocketBase's data, and the tenant's ``logs`` settings honoured."""
    _patch_settings(fast, {"logs": {"logAuthId": True, "logIP": True, "maxDays": 7, "minLevel": 0}})
    marker = f"probe{time.monotonic_ns()}"
    httpx.get(f"{fast.url}/api/collections/missing_{marker}/records", headers={"User-Agent": "UA-" + marker,
                                                                                "Referer": "http://r/"})
    httpx.get(f"{fast.url}/api/collections/demo1/records?marker={marker}",
              headers={"Authorization": fast.superuser_token})
    failed, = _logs(fast, f'filter=message ~ "missing_{marker}"')
    assert failed["level"] == 8 and failed["message"] == f"GET /api/collections/missing_{marker}/records"
    data = failed["data"]
    assert list(data) == sorted(data)  # Go writes map keys in order
    assert {k: data[k] for k in ("type", "method", "status", "error", "details", "auth", "referer", "userAgent")} == {
        "type": "request", "method": "GET", "status": 404, "error": "Missing collection context.", "details": None,
        "auth": "", "referer": "http://r/", "userAgent": "UA-" + marker}
    assert data["userIP"] == data["remoteIP"] == "127.0.0.1" and data["execTime"] >= 0
    # A request no route takes is logged too, as PocketBase logs it (its middlewares run before the 404).
    httpx.delete(f"{fast.url}/api/health?unrouted={marker}", headers={"Authorization": fast.superuser_token})
    httpx.get(f"{fast.url}/api/unrouted_{marker}")
    unrouted, = _logs(fast, f'filter=data.url ~ "unrouted={marker}"')
    assert unrouted["level"] == 8 and unrouted["message"] == f"DELETE /api/health?unrouted={marker}"
    assert {k: unrouted["data"][k] for k in ("status", "error", "details", "auth")} == {
        "status": 404, "error": "The requested resource wasn't found.", "details": None, "auth": "_superusers"}
    static, = _logs(fast, f'filter=message ~ "unrouted_{marker}"')
    assert static["level"] == 8 and static["data"]["status"] == 404
    ok, = _logs(fast, f'filter=data.url ~ "marker={marker}"')
    assert ok["level"] == 0 and ok["data"]["auth"] == "_superusers" and ok["data"]["authId"]
    assert "error" not in ok["data"] and len(ok["id"]) == 15
    # logIP off, and minLevel above info: successes are not kept; maxDays 0: nothing is.
    _patch_settings(fast, {"logs": {"logIP": False, "minLevel": 5}})
    httpx.get(f"{fast.url}/api/health?second={marker}")
    httpx.get(f"{fast.url}/api/collections/again_{marker}/records")
    assert _logs(fast, f'filter=data.url ~ "second={marker}"') == []
    again, = _logs(fast, f'filter=message ~ "again_{marker}"')
    assert "userIP" not in again["data"]
    assert _logs(fast, f'filter=data.url ~ "marker={marker}"') == []  # pruned: below the new minLevel
    _patch_settings(fast, {"logs": {"maxDays": 0}})
    httpx.get(f"{fast.url}/api/collections/third_{marker}/records")
    assert _logs(fast, f'filter=message ~ "{marker}"') == []
