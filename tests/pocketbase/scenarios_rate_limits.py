"""The tenant's ``rateLimits`` settings side by side with stock PocketBase 0.40.6: path, ``METHOD /path``,
prefix and collection-tag rules, audiences, superusers and excluded IPs, the 429 answer. Run by
``test_logs_backups_rate_limits.py`` (last: the limits stay on)."""

from __future__ import annotations

import time

import httpx

from pbharness import Backend

RULES = [
    {"label": "GET /api/health", "audience": "", "duration": 60, "maxRequests": 2},
    {"label": "demo1:list", "audience": "@guest", "duration": 60, "maxRequests": 1},
    {"label": "*:view", "audience": "", "duration": 60, "maxRequests": 3},
    {"label": "/api/collections/demo2/", "audience": "", "duration": 60, "maxRequests": 2},
    {"label": "clients:auth", "audience": "", "duration": 60, "maxRequests": 2},
    # a collection route counts once, by its tags' rule: the route's own label rule is not counted there
    {"label": "GET /api/collections/demo3/records", "audience": "", "duration": 60, "maxRequests": 1},
    {"label": "demo3:list", "audience": "", "duration": 60, "maxRequests": 3},
]
STEPS: list[tuple[str, str, str]] = [  # who, method, path
    *[("guest", "GET", "/api/health")] * 3,
    *[("superuser", "GET", "/api/collections/demo2/records")] * 3,
    *[("guest", "GET", "/api/collections/demo1/records")] * 2,
    *[("user", "GET", "/api/collections/demo1/records")] * 2,
    *[("guest", "GET", "/api/collections/demo1/records/missing")] * 2,
    *[("user", "GET", "/api/collections/demo1/records/missing")] * 2,
    *[("guest", "GET", "/api/collections/demo2/records")] * 3,
    *[("guest", "POST", "/api/collections/clients/auth-with-password")] * 3,
    *[("guest", "GET", "/api/collections/demo3/records")] * 4,
]


def check_rate_limits(stock: Backend, fast: Backend) -> None:
    users = {}
    for backend in (stock, fast):
        answer = httpx.post(f"{backend.url}/api/collections/clients/auth-with-password",
                            json={"identity": "test@example.com", "password": "1234567890"}, timeout=30)
        assert answer.status_code == 200, answer.text
        users[backend.name] = answer.json()["token"]
        patched = httpx.patch(f"{backend.url}/api/settings", headers={"Authorization": backend.superuser_token},
                              json={"rateLimits": {"enabled": True, "rules": RULES, "excludedIPs": []}}, timeout=30)
        assert patched.status_code == 200, patched.text
    compared, refused = 0, 0
    for who, method, path in STEPS:
        answers = []
        for backend in (stock, fast):
            token = {"superuser": backend.superuser_token, "user": users[backend.name]}.get(who)
            answer = httpx.request(method, backend.url + path, headers={"Authorization": token} if token else {},
                                   json={"identity": "nobody@example.com", "password": "x"} if method == "POST" else None,
                                   timeout=30)
            answers.append((answer.status_code, answer.json()))
        assert answers[0] == answers[1], (who, method, path)
        compared += 1
        refused += answers[0][0] == 429
    assert compared == len(STEPS) and refused == 6
    for backend in (stock, fast):  # excluded addresses are never limited
        patched = httpx.patch(f"{backend.url}/api/settings", headers={"Authorization": backend.superuser_token},
                              json={"rateLimits": {"excludedIPs": ["127.0.0.1"]}}, timeout=30)
        assert patched.status_code == 200, patched.text
    time.sleep(1.1)  # pbfast's other processes read a tenant's settings again within a second
    for backend in (stock, fast):
        assert httpx.get(f"{backend.url}/api/health").status_code == 200
