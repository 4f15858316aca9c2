"""Differential scenarios for the cases of PocketBase's ``apis/*_test.go`` that no other module sent yet (found
by listing every case's method, URL, token and body against the steps of this folder): the rest of
``record_crud_test.go``, ``collection_test.go``, ``settings_test.go``, ``record_auth_*_test.go`` and
``cron_test.go``, ``sql_test.go``, and the request-level equivalents of ``middlewares_test.go`` (its cases run on routes the test
registers; here the same middleware on a route PocketBase has). Run by ``test_differential_go_ports.py`` after
``scenarios_admin_api.py``, on the same pair of servers; the scenarios put back what they change.

Not ported, with the reason:
- the "tx body write check" cases of every file, ``OnRecordsListRequest``-style hooks, the realtime
  ``PB_CONNECT interrupt`` and "Skipping/ignoring messages" cases: they need Go hooks in the server.
- ``middlewares_test.go``'s ``TestPanicRecover``, ``TestRequireGuestOnly``, ``TestRequireSuperuserOrOwnerAuth``:
  no built-in route of PocketBase uses those middlewares (nor panics on purpose).
- ``cron_test.go``'s "empty list" (needs ``app.Cron().RemoveAll()``) and its "test" job (added by Go code):
  here a built-in job is run instead.
- ``sql_test.go``: its cases are here (``execTime`` left out of the comparison); what pbfast's console refuses
  beyond PocketBase (docs/security.md) is tested in ``tests/security/test_sql_console.py``.
- ``record_auth_with_oauth2_redirect_test.go``'s failures: PocketBase redirects to its dashboard, which a pbfast
  tenant does not have (see ``scenarios_auth_api.py``).
"""

from __future__ import annotations

from differential import Step
from fixture_data import CLIENT1, CLIENT2, EXPIRED, NOLOGIN1, SUPERUSER1, USER1, USER1_STATIC, USER2

G = None  # a guest step
SQL = "/api/sql?fields=affectedRows,columns,rows"  # (execTime: milliseconds, not compared)
DRY_RUN = "/api/collections/meta/dry-run-view"


def _bearer(prefix: str, header: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"{prefix} {header['Authorization']}"}


def _view(name: str, query: str) -> list[Step]:
    """A public view collection made from ``query`` (its fields shown), its first records, and its deletion."""
    return [Step(f"{name}: create", "POST", "/api/collections?fields=name,fields.name,fields.type,fields.collectionId,"
                 "fields.maxSelect", {"name": name, "type": "view", "listRule": "", "viewQuery": query}),
            Step(f"{name}: list", "GET", f"/api/collections/{name}/records?perPage=3&sort=id", auth=G),
            Step(f"{name}: drop", "DELETE", f"/api/collections/{name}")]


REMAINING_SCENARIOS: dict[str, list[Step]] = {
    "go rest: record_crud_test.go": [
        Step("view: expand relations (with list params)", "GET",
             "/api/collections/demo1/records/al1h9ijdeojtsjy?expand=rel_one,rel_many.rel,missing&perPage=2&sort=created"),
        Step("list: expand relations", "GET",
             "/api/collections/demo1/records?expand=rel_one,rel_many.rel,missing&perPage=2&sort=created"),
        Step("create: nil body", "POST", "/api/collections/demo2/records"),
        Step("update: nil body (no fields change)", "PATCH", "/api/collections/demo2/records/0yxhwia2amd8gec"),
        Step("create: nil body, guest on a nil rule", "POST", "/api/collections/demo1/records", auth=G),
        Step("update: nil body, user on a nil rule", "PATCH", "/api/collections/demo1/records/imy661ixudk5izi",
             auth=G, headers=USER1),
        Step("create: missing collection", "POST", "/api/collections/missing/records", auth=G),
        Step("update: missing collection", "PATCH", "/api/collections/missing/records/0yxhwia2amd8gec", auth=G),
    ],
    "go rest: collection_test.go": [
        Step("delete a system collection", "DELETE", "/api/collections/_mfas"),
        Step("delete a system collection by id", "DELETE", "/api/collections/pbc_2281828961"),
        # (the dates of the collections an earlier scenario made are not normalised here: not shown)
        Step("list: paging and sorting", "GET", "/api/collections?page=2&perPage=2&sort=-created&fields=id,name,system"),
        Step("list: valid filter", "GET", "/api/collections?filter=name~'demo'"),
        Step("list: guest with a filter", "GET", "/api/collections?filter=name~'demo'", auth=G),
        Step("create: empty data", "POST", "/api/collections", raw=b""),
        Step("create: guest", "POST", "/api/collections", auth=G),
        Step("update: guest, no body", "PATCH", "/api/collections/demo1", auth=G),
        Step("update: user, no body", "PATCH", "/api/collections/demo1", auth=G, headers=USER1),
        Step("dry run: missing ids sample", "POST", DRY_RUN, {"query": "(select 1 as id union select '' as id)"}),
        Step("dry run: duplicated ids sample", "POST", DRY_RUN,
             {"query": "(select 1 as id union all select 1 as id)"}),
        Step("dry run: a sample query that fails", "POST", DRY_RUN, {"query": "select 1 as id, json_extract('{', '$') as j"}),
        # the id column of a view is made text when the query's is not (PocketBase's normalizeViewQueryId)
        Step("a view with a numeric id", "POST", "/api/collections?fields=name,fields.name,fields.type", {
            "name": "numeric_ids", "type": "view", "listRule": "", "viewRule": "",
            "viewQuery": "select (ROW_NUMBER() OVER(ORDER BY id)) as id, title as label from demo2"}),
        Step("its records by text id", "GET", "/api/collections/numeric_ids/records?filter=id='1'", auth=G),
        Step("its records by id > text", "GET", "/api/collections/numeric_ids/records?filter=id>'1'", auth=G),
        Step("a record by id", "GET", "/api/collections/numeric_ids/records/2", auth=G),
        Step("a view with a text id from a table", "PATCH", "/api/collections/numeric_ids?fields=name",
             {"viewQuery": "select id, title as label from demo2"}),
        Step("its records", "GET", "/api/collections/numeric_ids/records?filter=id>'0'&sort=id", auth=G),
        Step("a view whose query starts with a parenthesis", "PATCH", "/api/collections/numeric_ids?fields=name",
             {"viewQuery": "(select 1 as id)"}),
        Step("the view dropped", "DELETE", "/api/collections/numeric_ids"),
        Step("create: a view whose first rows share an id", "POST", "/api/collections", {
            "name": "same_ids", "type": "view", "viewQuery": "select 'a' as id, title from demo2"}),
        Step("create: a view whose query starts with a parenthesis", "POST", "/api/collections", {
            "name": "in_parens", "type": "view", "viewQuery": "(select 1 as id)"}),
        Step("create: a view with an empty id", "POST", "/api/collections", {
            "name": "empty_id", "type": "view", "viewQuery": "select '' as id"}),
    ],
    "go rest: settings_test.go": [
        Step("update: guest, no body", "PATCH", "/api/settings", auth=G),
        Step("update: user, no body", "PATCH", "/api/settings", auth=G, headers=USER1),
        Step("update: empty data", "PATCH", "/api/settings", raw=b""),
        Step("update: invalid data", "PATCH", "/api/settings", {"meta": {"appName": ""}}),
        Step("test s3: guest", "POST", "/api/settings/test/s3", auth=G),
        Step("test s3: user", "POST", "/api/settings/test/s3", auth=G, headers=USER1),
        Step("test s3: invalid filesystem", "POST", "/api/settings/test/s3", {"filesystem": "invalid"}),
        Step("test email: guest", "POST", "/api/settings/test/email",
             {"template": "verification", "email": "test@example.com"}, auth=G),
        Step("test email: user", "POST", "/api/settings/test/email",
             {"template": "verification", "email": "test@example.com"}, auth=G, headers=USER1),
        Step("test email: empty json", "POST", "/api/settings/test/email", {}),
        Step("apple secret: guest", "POST", "/api/settings/apple/generate-client-secret", auth=G),
        Step("apple secret: user", "POST", "/api/settings/apple/generate-client-secret", auth=G, headers=USER1),
    ],
    "go rest: record_auth_*_test.go": [
        Step("auth-with-password: already authenticated record", "POST",
             "/api/collections/clients/auth-with-password?fields=record.email",
             {"identity": "test@example.com", "password": "1234567890"}, auth=G, headers=USER1),
        Step("auth-refresh: guest", "POST", "/api/collections/users/auth-refresh", auth=G),
        Step("auth-refresh: superuser, another auth collection", "POST", "/api/collections/users/auth-refresh"),
        Step("auth-refresh: not an auth collection", "POST", "/api/collections/demo1/auth-refresh", auth=G,
             headers=USER1),
        Step("auth-refresh: different auth collection", "POST", "/api/collections/clients/auth-refresh?expand=rel,missing",
             auth=G, headers=USER1),
        Step("auth-refresh: same auth collection", "POST",
             "/api/collections/users/auth-refresh?expand=rel,missing&fields=record.id,record.expand", auth=G,
             headers=USER1),
        Step("auth-refresh: static token", "POST", "/api/collections/users/auth-refresh", auth=G,
             headers=USER1_STATIC),
        Step("auth-refresh: unverified, onlyVerified collection", "POST", "/api/collections/clients/auth-refresh",
             auth=G, headers=CLIENT2),
        Step("auth-refresh: verified, onlyVerified collection", "POST",
             "/api/collections/clients/auth-refresh?fields=record.id", auth=G, headers=CLIENT1),
    ],
    "go rest: middlewares_test.go through PocketBase's routes": [
        # RequireAuth (auth-refresh) and the token loader of every route
        Step("RequireAuth: expired token", "POST", "/api/collections/users/auth-refresh", auth=G,
             headers={"Authorization": EXPIRED}),
        Step("RequireAuth: invalid token", "POST", "/api/collections/users/auth-refresh", auth=G,
             headers={"Authorization": "invalid"}),
        Step("RequireAuth: Bearer prefix in any case", "POST", "/api/collections/users/auth-refresh?fields=record.id",
             auth=G, headers=_bearer("BeArEr", USER1)),
        Step("token loader: Bearer prefix", "GET", "/api/collections/users/records/4q1xlclmfloku33?fields=id,email",
             auth=G, headers=_bearer("Bearer", USER1)),
        Step("token loader: lowercase bearer prefix, superuser", "GET", "/api/settings?fields=meta.appName",
             auth=G, headers=_bearer("bearer", SUPERUSER1)),
        Step("token loader: a prefix alone", "GET", "/api/collections/users/records/4q1xlclmfloku33?fields=id",
             auth=G, headers={"Authorization": "Bearer"}),
        Step("token loader: another scheme", "GET", "/api/collections/users/records/4q1xlclmfloku33?fields=id",
             auth=G, headers=_bearer("Basic", USER1)),
        Step("token loader: a static token", "GET", "/api/collections/users/records/4q1xlclmfloku33?fields=id",
             auth=G, headers=USER1_STATIC),
        # RequireSuperuserAuth (settings)
        Step("RequireSuperuserAuth: expired token", "GET", "/api/settings", auth=G,
             headers={"Authorization": EXPIRED}),
        Step("RequireSuperuserAuth: regular user", "GET", "/api/settings", auth=G, headers=USER2),
        Step("RequireSuperuserAuth: nologin record", "GET", "/api/settings", auth=G, headers=NOLOGIN1),
        # RequireSameCollectionContextAuth (request-email-change)
        Step("same collection: token of another collection", "POST", "/api/collections/clients/request-email-change",
             {"newEmail": "new@example.com"}, auth=G, headers=USER1),
        Step("same collection: superuser token", "POST", "/api/collections/users/request-email-change",
             {"newEmail": "new@example.com"}),
    ],
    "go rest: cron_test.go": [
        Step("list: guest", "GET", "/api/crons", auth=G),
        Step("list: user", "GET", "/api/crons", auth=G, headers=USER1),
        Step("list: superuser", "GET", "/api/crons"),
        Step("run: guest", "POST", "/api/crons/__pbDBOptimize__", auth=G),
        Step("run: user", "POST", "/api/crons/__pbDBOptimize__", auth=G, headers=USER1),
        Step("run: missing job", "POST", "/api/crons/missing"),
        Step("run: a built-in job", "POST", "/api/crons/__pbDBOptimize__"),
        Step("run: cleanup of MFA sessions", "POST", "/api/crons/__pbMFACleanup__"),
        Step("run: cleanup of one-time passwords", "POST", "/api/crons/__pbOTPCleanup__"),
        Step("run: cleanup of the request logs", "POST", "/api/crons/__pbLogsCleanup__"),
        Step("a scheduled backup", "PATCH", "/api/settings?fields=backups", {"backups": {"cron": "0 3 * * *"}}),
        Step("list: with the backup job", "GET", "/api/crons"),
        Step("no scheduled backup", "PATCH", "/api/settings?fields=backups", {"backups": {"cron": ""}}),
        Step("list: without it", "GET", "/api/crons"),
        Step("run: the backup job once unscheduled", "POST", "/api/crons/__pbAutoBackup__"),
        Step("run: trailing slash", "POST", "/api/crons/"),
        Step("list: POST", "POST", "/api/crons"),
        Step("run: GET", "GET", "/api/crons/__pbDBOptimize__"),
    ],    "go rest: sql_test.go": [
        Step("guest", "POST", SQL, {"query": "select 1"}, auth=G),
        Step("regular user", "POST", SQL, {"query": "select 1"}, auth=G, headers=USER2),
        Step("superuser", "POST", SQL, {"query": "select 1"}),
        Step("a trailing comment and semicolons", "POST", SQL, {"query": "select 1 as a; -- the end\n;;"}),
        Step("two statements, a comment between", "POST", SQL, {"query": "select 1; /* x */ select 2 as b;"}),
        Step("superuser (execTime shown)", "POST", "/api/sql?fields=execTime", {"query": "select 1"}),
        Step("empty query", "POST", SQL, {"query": ""}),
        Step("only spaces", "POST", SQL, {"query": "   "}),
        Step("not a string", "POST", SQL, {"query": 5}),
        Step("invalid body", "POST", SQL, raw=b"x"),
        Step("invalid query", "POST", SQL, {"query": "invalid"}),
        Step("query with length above the limit", "POST", SQL, {"query": "a" * 5001}),
        Step("query with length equal to the limit", "POST", SQL, {"query": "select '" + "a" * 4985 + "' as id"}),
        # affectedRows is SQLite's changes() of the connection's last insert, update or delete, as in PocketBase:
        # a write of no rows first, so that both connections start from 0
        Step("a write of no rows", "POST", SQL, {"query": "update demo2 set title = title where 0"}),
        Step("single write query", "POST", SQL, {"query": "create table test_sql_table(id int primary key)"}),
        Step("multiple write queries (transaction rollback)", "POST", SQL, {
            "query": "insert into test_sql_table(id) VALUES(1);invalid"}),
        Step("nothing was written", "POST", SQL, {"query": "select count(*) from test_sql_table"}),
        Step("multiple write queries", "POST", SQL, {
            "query": "insert into test_sql_table(id) VALUES(1),(2);insert into test_sql_table(id) VALUES(3)"}),
        Step("multiple read queries", "POST", SQL, {"query": "select 1;select 2"}),
        Step("update", "POST", SQL, {"query": "update test_sql_table set id = id + 10"}),
        Step("values as text", "POST", SQL, {"query": "select id, title, active, created from demo2 order by id"}),
        Step("numbers, blobs, nulls", "POST", SQL, {
            "query": "select 1.5 as f, 1e20 as g, 100000000.0 as h, x'00ff41' as b, null as n, 2=2 as t, -0.0 as z"}),
        Step("table introspection", "POST", SQL, {"query": "pragma table_info(test_sql_table)"}),
        Step("a missing table", "POST", SQL, {"query": "delete from missing"}),
        Step("a select with no rows", "POST", SQL, {"query": "select * from test_sql_table where id < 0"}),
        Step("more rows than answered", "POST", SQL,
             {"query": "with recursive n(x) as (select 1 union all select x + 1 from n limit 1200) select x from n"}),
        Step("drop", "POST", SQL, {"query": "  drop table test_sql_table ;  "}),
    ],
    # view_test.go's parsing, through collections: fields named and typed from the query's text as
    # PocketBase reads it (UNIONs it cannot read refused, CTE columns json)
    "go rest: view queries as PocketBase reads them": [
    *_view("u1", "select id, title from demo2 union all select id, text from demo1"),
    *_view("u2", "select id, title as t from demo2 union select id, text as t from demo1"),
    *_view("j1", "select a.id, b.title, b.id as other from demo2 a left join demo2 b on a.id = b.id"),
    *_view("j2", "select demo1.id, demo1.rel_one, demo2.title from demo1 join demo2 on demo1.rel_one = demo2.id"),
    *_view("sub", "select id, (select count(*) from demo1 where demo1.rel_one = demo2.id) as c from demo2"),
    *_view("cte", "with x as (select id, title from demo2) select id, title from x"),
    *_view("dist", "select distinct id, title from demo2"),
    *_view("cmt", "select id, /* c, d */ title -- x\n from demo2"),
    *_view("quoted", 'select "id", `title`, [active] from demo2'),
    *_view("alias_noas", "select id, title t from demo2"),
    *_view("casts", "select id, cast(title as int) as n, cast(active as bool) as b, cast(created as text) as c from demo2"),
    *_view("fns", "select id, coalesce(title, '') as t, lower(title) as l, json_extract('{}', '$.a') as j from demo2"),
    *_view("expand_rel", "select id, rel_many from demo1"),
],
}
