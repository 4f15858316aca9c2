"""Differential scenarios ported from PocketBase's own admin API tests (``apis/collection_test.go``,
``settings_test.go``, ``logs_test.go``, ``backup_test.go``, ``realtime_test.go``'s plain HTTP cases): the
cases the older scenario modules did not cover yet, with the requests, bodies and tokens of those tests.
Backups only through what does not depend on the store's timing. Run by ``test_differential_go_ports.py``, in order, on
one pair of servers, before ``scenarios_auth_api.py`` (which voids the fixture users' tokens)."""

from __future__ import annotations

import io
import zipfile

from differential import Step
from fixture_data import SUPERUSER1, USER1
from scenarios_batch import MULTIPART, multipart

G = None  # a guest step
SUPERUSER_FILE_TOKEN = (  # backup_test.go's superuser file token (until 2050)
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6InN5d2JoZWNuaDQ2cmhtMCIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6ImZpbGUiLCJj"
    "b2xsZWN0aW9uSWQiOiJwYmNfMzE0MjYzNTgyMyJ9.Lupz541xRvrktwkrl55p5pPCF77T69ZRsohsIcb2dxc")
SUPERUSER_FILE_TOKEN_EXPIRED = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6InN5d2JoZWNuaDQ2cmhtMCIsImV4cCI6MTY0MDk5MTY2MSwidHlwZSI6ImZpbGUiLCJj"
    "b2xsZWN0aW9uSWQiOiJwYmNfMzE0MjYzNTgyMyJ9.nqqtqpPhxU0045F4XP_ruAkzAidYBc5oPy9ErN3XBq0")
USER_FILE_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6ImZpbGUiLCJj"
    "b2xsZWN0aW9uSWQiOiJfcGJfdXNlcnNfYXV0aF8ifQ.nSTLuCPcGpWn2K2l-BFkC3Vlzc-ZTDPByYq8dN1oPSo")
DRY_RUN = "/api/collections/meta/dry-run-view"


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.db", b"not really")
    return buffer.getvalue()



APPLE = "/api/settings/apple/generate-client-secret"
# An ES256 private key made for these tests only (openssl ecparam -name prime256v1 -genkey | openssl pkcs8 -topk8 -nocrypt).
APPLE_TEST_KEY = ("-----BEGIN PRIVATE KEY-----\n"
                  "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgFu9EOGhGuPFcuYzi\n"
                  "bKElpRTnYXkjM5EVACLmfb0SYAKhRANCAARGTb3vqViuhpNC1eBbtNr3dEWOlWVM\n"
                  "mq3f7hSoi7rf9gypFzAGVotIAzjipanQ1/HA8B0IDNKLL4gshfVRhu3g\n"
                  "-----END PRIVATE KEY-----")

ADMIN_API_SCENARIOS: dict[str, list[Step]] = {
    "go admin: dry-run-view": [
        Step("dry run: guest", "POST", DRY_RUN, {"query": "select 1 as id"}, auth=G),
        Step("dry run: user", "POST", DRY_RUN, {"query": "select 1 as id"}, headers=USER1, auth=G),
        Step("dry run", "POST", DRY_RUN + "?fields=fields,sample.id", {"query": "select 1 as id"}),
        Step("dry run: empty query", "POST", DRY_RUN, {"query": ""}),
        Step("dry run: query beyond the limit", "POST", DRY_RUN, {"query": "a" * 5001}),
        Step("dry run: query at the limit", "POST", DRY_RUN + "?fields=fields,sample.id", {"query": "select 1 as id" + " " * 4986}),
        Step("dry run: write query", "POST", DRY_RUN, {"query": "CREATE TABLE t1(x INT)"}),
        Step("dry run: fields of a real table", "POST", DRY_RUN + "?fields=fields,sample.id,sample.title,sample.enabled",
             {"query": "select id, title, active as enabled, created from demo2"}),
        Step("dry run: expressions and duplicated ids", "POST", DRY_RUN + "?fields=fields,sample.id",
             {"query": "select 1 as id, count(*) as total, cast(2 as text) as t from demo2"}),
        Step("dry run: no id column", "POST", DRY_RUN, {"query": "select 1 as x"}),
        Step("dry run: wildcard", "POST", DRY_RUN, {"query": "select * from demo2"}),
        Step("dry run: empty id", "POST", DRY_RUN, {"query": "select '' as id"}),
        Step("dry run: duplicated ids", "POST", DRY_RUN, {"query": "select 'a' as id from demo2"}),
        Step("dry run: trailing semicolon", "POST", DRY_RUN + "?fields=sample.id",
             {"query": "select id from demo1 order by id limit 2;"}),
        Step("dry run: two statements", "POST", DRY_RUN, {"query": "select 1 as id; delete from demo1"}),
        Step("dry run: a separator in a string", "POST", DRY_RUN + "?fields=sample.id", {"query": "select 'a;b' as id"}),
        Step("dry run: a parameter", "POST", DRY_RUN, {"query": "select ? as id"}),
        Step("dry run: recursive, sampled", "POST", DRY_RUN + "?fields=sample.id", {
            "query": "with recursive c(x) as (select 1 union all select x+1 from c) select x as id from c"}),
        Step("dry run: an extension", "POST", DRY_RUN, {"query": "select load_extension('x') as id"}),
        Step("dry run: a pragma", "POST", DRY_RUN, {"query": "pragma table_info(demo1)"}),
        Step("dry run: values of json fields", "POST", DRY_RUN + "?fields=sample.id,sample.j,sample.n,sample.f", {
            "query": "select id, json_object('a', 1) as j, null as n, 1.5 as f from demo1 order by id limit 2"}),
        Step("dry run: a form body", "POST", DRY_RUN + "?fields=sample.id", raw=b"query=select+1+as+id",
             headers={"content-type": "application/x-www-form-urlencoded"}),
        Step("dry run: a comment only", "POST", DRY_RUN, {"query": "-- nothing"}),
        Step("dry run: nothing was written", "GET", "/api/collections/t1"),
        Step("dry run: demo1 kept its records", "GET", "/api/collections/demo1/records?fields=id&perPage=1"),
        Step("dry run: invalid body", "POST", DRY_RUN, raw=b'{"query'),
        Step("dry run: query not a string", "POST", DRY_RUN, {"query": 5}),
        Step("dry run: not sql", "POST", DRY_RUN, {"query": "nope"}),
    ],
    "go admin: collections delete and truncate": [
        Step("delete: system collection", "DELETE", "/api/collections/_mfas"),
        Step("truncate: guest", "DELETE", "/api/collections/demo5/truncate", auth=G),
        Step("truncate: user", "DELETE", "/api/collections/demo5/truncate", headers=USER1, auth=G),
        Step("truncate: required cascade delete references", "DELETE", "/api/collections/demo3/truncate"),
        Step("truncate: view", "DELETE", "/api/collections/view2/truncate"),
        Step("truncate: missing", "DELETE", "/api/collections/missing/truncate"),
        Step("truncate", "DELETE", "/api/collections/demo5/truncate"),
        Step("truncate: emptied", "GET", "/api/collections/demo5/records?fields=id"),
        Step("delete: by id", "DELETE", "/api/collections/9n89pl5vkct6330"),
        Step("delete: gone", "GET", "/api/collections/9n89pl5vkct6330"),
        Step("view: by id with fields", "GET", "/api/collections/_pb_users_auth_?fields=id,name,type,system"),
    ],
    "go admin: collections create and update": [
        Step("create: superuser token of the tests", "POST", "/api/collections?fields=name,type",
             {"name": "go_new", "type": "base", "fields": [{"type": "text", "id": "12345789", "name": "test"}]},
             headers=SUPERUSER1, auth=G),
        Step("update: superuser token of the tests", "PATCH", "/api/collections/go_new?fields=name,listRule",
             {"listRule": ""}, headers=SUPERUSER1, auth=G),
        Step("update: invalid body", "PATCH", "/api/collections/go_new", raw=b'{"name'),
        Step("create: invalid body", "POST", "/api/collections", raw=b'{"name'),
        Step("update: empty body keeps it", "PATCH", "/api/collections/go_new?fields=name,listRule,fields", raw=b""),
        Step("create: a custom id", "POST", "/api/collections?fields=id,name", {"id": "custom_id_12345", "name": "customid"}),
        Step("rename: the same name in another case", "PATCH", "/api/collections/customid?fields=name",
             {"name": "CUSTOMID"}),
        Step("rename: the name of an internal table", "PATCH", "/api/collections/customid?fields=name",
             {"name": "sqlite_master"}),
        Step("create: system is ignored", "POST", "/api/collections?fields=name,system", {"name": "sys_try", "system": True}),
        Step("create: a text body", "POST", "/api/collections", raw=b'{"name":"x"}', headers={"content-type": "text/plain"}),
        Step("update: a text body", "PATCH", "/api/collections/sys_try", raw=b"{}", headers={"content-type": "text/plain"}),
        Step("import: a form body", "PUT", "/api/collections/import", raw=b"collections=x",
             headers={"content-type": "application/x-www-form-urlencoded"}),
        Step("import: a text body", "PUT", "/api/collections/import", raw=b"{}", headers={"content-type": "text/plain"}),
        Step("list: sort by an unknown field", "GET", "/api/collections?sort=nope"),
        Step("list: filter by system", "GET", "/api/collections?filter=system=true&sort=name&fields=name"),
        Step("list: perPage beyond the maximum", "GET", "/api/collections?perPage=1000&fields=name&sort=name"),
    ],
    "go admin: settings": [
        Step("test s3: missing body, no s3", "POST", "/api/settings/test/s3", raw=b""),
        Step("test s3: invalid body", "POST", "/api/settings/test/s3", raw=b"{"),
        Step("test email: invalid body", "POST", "/api/settings/test/email", raw=b"{"),
        Step("test email: unknown template", "POST", "/api/settings/test/email",
             {"template": "nope", "email": "test@example.com"}),
        Step("update: invalid body", "PATCH", "/api/settings", raw=b"{"),
        Step("update: superuser token of the tests", "PATCH", "/api/settings?fields=meta.appName",
             {"meta": {"appName": "go tests"}}, headers=SUPERUSER1, auth=G),
        Step("apple secret: guest", "POST", APPLE, {}, auth=G),
        Step("apple secret: user", "POST", APPLE, {}, headers=USER1, auth=G),
        Step("apple secret: invalid body", "POST", APPLE, raw=b"{"),
        Step("apple secret: empty json", "POST", APPLE, {}),
        Step("apple secret: invalid data", "POST", APPLE, {
            "clientId": "", "teamId": "123456789", "keyId": "123456789", "privateKey": "invalid", "duration": -1}),
        Step("apple secret: too long a duration", "POST", APPLE, {
            "clientId": "123", "teamId": "1234567890", "keyId": "1234567891", "privateKey": APPLE_TEST_KEY,
            "duration": 15777001}),
        Step("apple secret: not a key", "POST", APPLE, {
            "clientId": "123", "teamId": "1234567890", "keyId": "1234567891",
            "privateKey": "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----", "duration": 1}),
        Step("apple secret: valid data", "POST", APPLE, {
            "clientId": "123", "teamId": "1234567890", "keyId": "1234567891", "privateKey": APPLE_TEST_KEY,
            "duration": 1}),
    ],
    "go admin: logs": [  # the logs themselves: scenarios_logs.py (stock PocketBase drops the fixture's old one)
        Step("view: guest", "GET", "/api/logs/873f2133-9f38-44fb-bf82-c8f53b310d91", auth=G),
        Step("view: user", "GET", "/api/logs/873f2133-9f38-44fb-bf82-c8f53b310d91", headers=USER1, auth=G),
        Step("view: missing", "GET", "/api/logs/missing1-9f38-44fb-bf82-c8f53b310d91"),
        Step("stats: user", "GET", "/api/logs/stats", headers=USER1, auth=G),
        Step("stats: invalid filter", "GET", "/api/logs/stats?filter=nope>1"),
        Step("delete: guest", "DELETE", "/api/logs", auth=G),
        Step("delete: user", "DELETE", "/api/logs", headers=USER1, auth=G),
    ],
    "go admin: backups": [
        Step("list: guest", "GET", "/api/backups", auth=G),
        Step("list: user", "GET", "/api/backups", headers=USER1, auth=G),
        Step("list: empty", "GET", "/api/backups"),
        Step("create: invalid name", "POST", "/api/backups", {"name": "!test.zip"}),
        Step("create: invalid body", "POST", "/api/backups", raw=b"{"),
        Step("create: valid name", "POST", "/api/backups", {"name": "test1.zip"}),
        Step("create: existing name", "POST", "/api/backups", {"name": "test1.zip"}),
        Step("create: name with an escaped char", "POST", "/api/backups", {"name": "@test4.zip"}),
        Step("upload: existing backup name", "POST", "/api/backups/upload",
             raw=multipart([], [("file", "test1.zip", _zip_bytes())]), headers=MULTIPART),
        Step("upload: no file", "POST", "/api/backups/upload", raw=multipart([("file", "x")]), headers=MULTIPART),
        Step("download: guest", "GET", "/api/backups/test1.zip", auth=G),
        Step("download: record auth header", "GET", "/api/backups/test1.zip", headers=USER1, auth=G),
        Step("download: superuser auth header", "GET", "/api/backups/test1.zip"),
        Step("download: empty token", "GET", "/api/backups/test1.zip?token=", auth=G),
        Step("download: record auth token", "GET", f"/api/backups/test1.zip?token={USER1['Authorization']}", auth=G),
        Step("download: record file token", "GET", f"/api/backups/test1.zip?token={USER_FILE_TOKEN}", auth=G),
        Step("download: superuser auth token", "GET", f"/api/backups/test1.zip?token={SUPERUSER1['Authorization']}",
             auth=G),
        Step("download: expired superuser file token", "GET",
             f"/api/backups/test1.zip?token={SUPERUSER_FILE_TOKEN_EXPIRED}", auth=G),
        Step("download: missing backup", "GET", f"/api/backups/missing?token={SUPERUSER_FILE_TOKEN}", auth=G),
        Step("delete: guest", "DELETE", "/api/backups/test1.zip", auth=G),
        Step("delete: user", "DELETE", "/api/backups/test1.zip", headers=USER1, auth=G),
        Step("restore: guest", "POST", "/api/backups/test1.zip/restore", auth=G),
        Step("restore: user", "POST", "/api/backups/test1.zip/restore", headers=USER1, auth=G),
        Step("restore: missing", "POST", "/api/backups/missing.zip/restore"),
        Step("delete", "DELETE", "/api/backups/test1.zip"),
        Step("list: empty again", "GET", "/api/backups"),
    ],
    "go admin: realtime": [
        Step("missing client", "POST", "/api/realtime", {"clientId": "missing", "subscriptions": ["test1", "test2"]},
             auth=G),
        Step("empty data", "POST", "/api/realtime", {}, auth=G),
        Step("invalid body", "POST", "/api/realtime", raw=b'{"clientId', auth=G),
        Step("client id too long", "POST", "/api/realtime", {"clientId": "x" * 256}, auth=G),
        Step("missing client, superuser", "POST", "/api/realtime", {"clientId": "missing", "subscriptions": []}),
    ],
}
