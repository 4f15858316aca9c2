"""Differential tests: the same requests to stock PocketBase 0.40.6 and to a pbfast tenant, both on copies of
PocketBase's own test data dir; status codes and JSON bodies must be equal (see ``differential.py`` for the
little that is normalised)."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from pbharness import FIXTURE, Backend
from differential import Step, compare

S, G = "superuser", None  # auth of a step: superuser, guest


def fixture_ids() -> set[str]:
    connection = apsw.Connection(str(FIXTURE / "data.db"), flags=apsw.SQLITE_OPEN_READONLY)
    ids: set[str] = set()
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM _collections WHERE type != 'view'")]
        ids |= {row[0] for row in connection.execute("SELECT id FROM _collections")}
        for table in tables:
            ids |= {row[0] for row in connection.execute(f'SELECT id FROM "{table}"')}
    finally:
        connection.close()
    return ids


SCENARIOS: dict[str, list[Step]] = {
    "health and unknown routes": [
        Step("health", "GET", "/api/health", auth=G),
        Step("unknown api route", "GET", "/api/nope", auth=G),
        Step("missing collection", "GET", "/api/collections/missing/records", auth=G),
    ],
    "superuser auth": [
        Step("login ok", "POST", "/api/collections/_superusers/auth-with-password",
             {"identity": "test@example.com", "password": "1234567890"}, auth=G),
        Step("login wrong password", "POST", "/api/collections/_superusers/auth-with-password",
             {"identity": "test@example.com", "password": "wrong-password"}, auth=G),
        Step("login unknown identity", "POST", "/api/collections/_superusers/auth-with-password",
             {"identity": "nobody@example.com", "password": "1234567890"}, auth=G),
        Step("login empty body", "POST", "/api/collections/_superusers/auth-with-password", {}, auth=G),
        Step("refresh", "POST", "/api/collections/_superusers/auth-refresh", auth="as:login ok"),
        Step("refresh as guest", "POST", "/api/collections/_superusers/auth-refresh", auth=G),
        Step("refresh with garbage token", "POST", "/api/collections/_superusers/auth-refresh", auth=G,
             headers={"Authorization": "not-a-token"}),
    ],
    "records list": [
        Step("list demo2", "GET", "/api/collections/demo2/records"),
        Step("list demo2 paged", "GET", "/api/collections/demo2/records?page=2&perPage=1"),
        Step("list demo2 sorted", "GET", "/api/collections/demo2/records?sort=-title"),
        Step("list demo2 filtered", "GET", "/api/collections/demo2/records?filter=title~'test'&sort=created"),
        Step("list demo2 skipTotal", "GET", "/api/collections/demo2/records?skipTotal=1&sort=id"),
        Step("list demo2 fields", "GET", "/api/collections/demo2/records?fields=id,title&sort=id"),
        Step("list demo1", "GET", "/api/collections/demo1/records?sort=id"),
        Step("list demo1 guest (null rule)", "GET", "/api/collections/demo1/records", auth=G),
        Step("list demo2 guest", "GET", "/api/collections/demo2/records?sort=id", auth=G),
        Step("list users", "GET", "/api/collections/users/records?sort=id"),
        Step("list users guest", "GET", "/api/collections/users/records?sort=id", auth=G),
        Step("list by id", "GET", "/api/collections/sz5l5z67tg7gku0/records?sort=id"),
        Step("list bad filter", "GET", "/api/collections/demo2/records?filter=(((", ),
        Step("list bad sort", "GET", "/api/collections/demo2/records?sort=nope"),
        Step("list perPage huge", "GET", "/api/collections/demo2/records?perPage=5000&sort=id"),
        Step("list excerpt", "GET", "/api/collections/demo1/records?fields=id,text:excerpt(5,true)&sort=id"),
    ],
    "records view": [
        Step("view", "GET", "/api/collections/demo2/records/llvuca81nly1qls"),
        Step("view missing", "GET", "/api/collections/demo2/records/missing"),
        Step("view guest", "GET", "/api/collections/demo2/records/llvuca81nly1qls", auth=G),
        Step("view demo1 guest", "GET", "/api/collections/demo1/records/al1h9ijdeojtsjy", auth=G),
        Step("view user", "GET", "/api/collections/users/records/4q1xlclmfloku33"),
        Step("view user guest", "GET", "/api/collections/users/records/4q1xlclmfloku33", auth=G),
    ],
    "records create, update, delete": [
        Step("create demo2", "POST", "/api/collections/demo2/records", {"title": "new one", "active": True}),
        Step("view created", "GET", "/api/collections/demo2/records/<new-1>"),
        Step("update created", "PATCH", "/api/collections/demo2/records/<new-1>", {"title": "changed"}),
        Step("update with bad json", "PATCH", "/api/collections/demo2/records/<new-1>", raw=b"{bad"),
        Step("create with explicit id", "POST", "/api/collections/demo2/records",
             {"id": "abcdefghijklmno", "title": "explicit"}),
        Step("create duplicate id", "POST", "/api/collections/demo2/records",
             {"id": "abcdefghijklmno", "title": "again"}),
        Step("create invalid id", "POST", "/api/collections/demo2/records", {"id": "BAD", "title": "x"}),
        Step("delete created", "DELETE", "/api/collections/demo2/records/<new-1>"),
        Step("view deleted", "GET", "/api/collections/demo2/records/<new-1>"),
        Step("delete missing", "DELETE", "/api/collections/demo2/records/missing"),
        Step("create guest (null rule)", "POST", "/api/collections/demo1/records", {"text": "x"}, auth=G),
        Step("create malformed", "POST", "/api/collections/demo2/records", raw=b"[1,2"),
        Step("create not an object", "POST", "/api/collections/demo2/records", raw=b"[1,2]"),
    ],
    "field validation": [
        Step("demo1 select invalid", "POST", "/api/collections/demo1/records", {"select_one": "nope"}),
        Step("demo1 select too many", "POST", "/api/collections/demo1/records",
             {"select_many": ["optionA", "optionB", "optionC", "optionA"]}),
        Step("demo1 email invalid", "POST", "/api/collections/demo1/records", {"email": "not-an-email"}),
        Step("demo1 url invalid", "POST", "/api/collections/demo1/records", {"url": "not a url"}),
        Step("demo1 number string", "POST", "/api/collections/demo1/records", {"number": "12.5", "text": "n"}),
        Step("demo1 bool string", "POST", "/api/collections/demo1/records", {"bool": "true", "text": "b"}),
        Step("demo1 date", "POST", "/api/collections/demo1/records", {"datetime": "2024-01-02 03:04:05.678Z"}),
        Step("demo1 date invalid", "POST", "/api/collections/demo1/records", {"datetime": "yesterday"}),
        Step("demo1 json", "POST", "/api/collections/demo1/records", {"json": {"a": [1, 2, {"b": None}]}}),
        Step("demo1 relation missing", "POST", "/api/collections/demo1/records", {"rel_one": "missingmissingx"}),
        Step("users create", "POST", "/api/collections/users/records",
             {"email": "new@example.com", "password": "1234567890", "passwordConfirm": "1234567890",
              "name": "New"}),
        Step("users create mismatch", "POST", "/api/collections/users/records",
             {"email": "new2@example.com", "password": "1234567890", "passwordConfirm": "0987654321"}),
        Step("users create short password", "POST", "/api/collections/users/records",
             {"email": "new3@example.com", "password": "123", "passwordConfirm": "123"}),
        Step("users create duplicate email", "POST", "/api/collections/users/records",
             {"email": "test@example.com", "password": "1234567890", "passwordConfirm": "1234567890"}),
    ],
    "collections": [
        Step("list collections", "GET", "/api/collections?perPage=100&sort=name"),
        Step("list collections guest", "GET", "/api/collections", auth=G),
        Step("view collection", "GET", "/api/collections/demo1"),
        Step("view collection by id", "GET", "/api/collections/wsmn24bux7wo113"),
        Step("view users", "GET", "/api/collections/users"),
        Step("view missing collection", "GET", "/api/collections/nope"),
        Step("view collection guest", "GET", "/api/collections/demo1", auth=G),
        Step("filter collections", "GET", "/api/collections?filter=type='auth'&sort=name"),
        Step("truncate demo3", "DELETE", "/api/collections/demo3/truncate"),
        Step("list truncated", "GET", "/api/collections/demo3/records"),
    ],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_answers_as_pocketbase(scenario: str, stock_pocketbase: Backend, pbfast_fixture_tenant: Backend,
                                    tmp_path: Path) -> None:
    steps = SCENARIOS[scenario]
    differences = compare(stock_pocketbase, pbfast_fixture_tenant, steps, fixture_ids())
    report = tmp_path.parent / "differential-report.txt"
    with open(report, "a") as out:
        out.write(f"{scenario}: {len(steps) - len(differences)}/{len(steps)} equal\n")
    assert not differences, "\n".join(differences)
