"""Differential scenarios for records CRUD (issue 15): the cases of PocketBase's ``apis/record_crud_test.go``
the other modules do not cover (multipart create/update with files and ``@jsonPayload`` rules, the auth
origins a password change ends, the collection body limit, rate limit rules by collection and action),
``apis/batch_test.go``'s multipart batch with uploads, and the uploads apps send most (a sign-up with an
avatar, appending, removing and clearing files, limits). Run by ``test_differential_records.py`` on one
pair of servers: each scenario puts back the rules, fields and settings it changes."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image

from differential import Step
from fixture_data import CLIENT1, USER2
from scenarios_system_records import OTHER_THAN_LOGIN
from scenarios_batch import BOUNDARY, MULTIPART, multipart
from test_differential import fields_with
from test_files import SUPERUSER_FILE_TOKEN

G = None  # a guest step
DEMO1 = "/api/collections/demo1/records"
DEMO3 = "/api/collections/demo3/records"
USERS = "/api/collections/users/records"
DEMO3_RULE = '@request.auth.id != "" && @request.auth.collectionName != "users"'
# PocketBase's tests upload files made by os.CreateTemp: the multipart part carries the full path as its name.
# the fields shown of demo1's records: the record's id and collection name let the comparison name new files
FILES = "fields=id,collectionName,file_one,file_many"
TMPFILE = ("files", "/tmp/tmpfile-3141592.txt", b"test")


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def demo1_fields(**changes: dict[str, Any]) -> list[dict[str, Any]]:
    """demo1's fields with ``changes`` (by field name) applied."""
    fields = fields_with("demo1", None)
    return [{**f, **changes.get(f["name"], {})} for f in fields]


BODY_LIMIT_FIELDS = demo1_fields(file_one={"maxSize": 5}, file_many={"maxSize": 10, "maxSelect": 2},
                                 json={"maxSize": 2})
# 32 MiB (PocketBase's default body limit) plus what demo1's fields may carry once BODY_LIMIT_FIELDS is saved
# (5 + 2 x 10 + 2 bytes)
DEMO1_BODY_LIMIT = (32 << 20) + 5 + 20 + 2

def with_empty_file_input(body: bytes, name: str) -> bytes:
    """``body`` (from :func:`multipart`) with the part a browser sends for an empty ``<input type=file>``
    first: ``filename=""``, no content."""
    part = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename=""\r\n'
            "Content-Type: application/octet-stream\r\n\r\n\r\n").encode()
    return part + body


BATCH_UPLOAD = json.dumps({"requests": [
    {"method": "POST", "url": DEMO3, "body": {"title": "batch1"}},
    {"method": "POST", "url": DEMO3, "body": {"title": "batch2"}},
    {"method": "POST", "url": DEMO3, "body": {"title": "batch3"}},
    {"method": "PATCH", "url": f"{DEMO3}/lcl9d87w22ml6jy", "body": {"files-": "test_FLurQTgrY8.txt"}}]})
BATCH_SHOWN = "fields=id,collectionName,title,files"

RECORD_SCENARIOS: dict[str, list[Step]] = {
    "records: multipart create and update (record_crud_test.go)": [
        Step("guest create, unsatisfied @request.body rule: set the rule", "PATCH",
             "/api/collections/demo3?fields=createRule,updateRule",
             {"createRule": "@request.body.testPayload != 123", "updateRule": "@request.body.testPayload != 123"}),
        Step("create: @jsonPayload and an unsatisfied @request.body rule", "POST", DEMO3, auth=G, headers=MULTIPART,
             raw=multipart([("@jsonPayload", '{"title": "title_test2", "testPayload": 123}')], [TMPFILE])),
        Step("update: @jsonPayload and an unsatisfied @request.body rule", "PATCH", f"{DEMO3}/mk5fmymtx4wsprk", auth=G,
             headers=MULTIPART, raw=multipart([("@jsonPayload", '{"title": "title_test2", "testPayload": 123}')],
                                              [TMPFILE])),
        Step("satisfied rules", "PATCH", "/api/collections/demo3?fields=createRule,updateRule",
             {"createRule": "@request.body.testPayload = 123", "updateRule": "@request.body.testPayload = 123"}),
        Step("create: @jsonPayload and a satisfied @request.body rule", "POST", DEMO3, auth=G, headers=MULTIPART,
             raw=multipart([("@jsonPayload", '{"title": "title_test3", "testPayload": 123}')], [TMPFILE])),
        Step("update: @jsonPayload keeps a named file beside the upload", "PATCH", f"{DEMO3}/mk5fmymtx4wsprk",
             auth=G, headers=MULTIPART, raw=multipart(
                 [("@jsonPayload", '{"title": "title_test3", "testPayload": 123, "files":"300_JdfBOieXAW.png"}')],
                 [TMPFILE])),
        Step("the kept file", "GET", "/api/files/demo3/mk5fmymtx4wsprk/300_JdfBOieXAW.png", auth=G),
        Step("the uploaded file", "GET", "/api/files/demo3/mk5fmymtx4wsprk/<file-2>", auth=G),
        Step("rules back", "PATCH", "/api/collections/demo3?fields=createRule,updateRule",
             {"createRule": DEMO3_RULE, "updateRule": DEMO3_RULE}),
        Step("superuser create via multipart", "POST", DEMO3, headers=MULTIPART,
             raw=multipart([("title", "title_test")], [TMPFILE])),
        Step("its file", "GET", "/api/files/demo3/<new-2>/<file-3>", auth=G),
        Step("superuser update via multipart: the upload replaces the files", "PATCH", f"{DEMO3}/mk5fmymtx4wsprk",
             headers=MULTIPART, raw=multipart([("title", "title_test")], [TMPFILE])),
        Step("the replaced file is gone", "GET", "/api/files/demo3/mk5fmymtx4wsprk/300_JdfBOieXAW.png", auth=G),
        Step("guest create, superusers' rule", "POST", DEMO3, auth=G, headers=MULTIPART,
             raw=multipart([("title", "title_test4")], [TMPFILE])),
    ],
    "records: uploads apps send": [
        Step("sign-up with an avatar", "POST", "/api/collections/users/records", auth=G, headers=MULTIPART,
             raw=multipart([("email", "avatar@example.com"), ("password", "1234567890"),
                            ("passwordConfirm", "1234567890"), ("name", "With Avatar")],
                           [("avatar", "Me At The Beach.PNG", png(40, 30))])),
        Step("a sign-up with a text file as avatar", "POST", "/api/collections/users/records", auth=G,
             headers=MULTIPART, raw=multipart([("email", "avatar2@example.com"), ("password", "1234567890"),
                                               ("passwordConfirm", "1234567890")],
                                              [("avatar", "me.png", b"not really an image")])),
        Step("the owner changes its avatar", "PATCH", f"{USERS}/oap640cot4yru2s?fields=id,collectionName,avatar",
             auth=G, headers=MULTIPART | USER2, raw=multipart([], [("avatar", "new.png", png(8, 8))])),
        Step("another user's avatar", "PATCH", f"{USERS}/4q1xlclmfloku33?fields=id,collectionName,avatar",
             auth=G, headers=MULTIPART | USER2, raw=multipart([], [("avatar", "new.png", png(8, 8))])),
        Step("several files at once", "POST", f"{DEMO1}?{FILES}", headers=MULTIPART,
             raw=multipart([("text", "uploads")], [("file_one", "one.txt", b"one"), ("file_many", "a.txt", b"a"),
                                                   ("file_many", "b.txt", b"b"), ("file_many", "c.txt", b"c")])),
        Step("append with field+", "PATCH", f"{DEMO1}/<new-2>?{FILES}", headers=MULTIPART,
             raw=multipart([], [("file_many+", "d.txt", b"d")])),
        Step("prepend with +field", "PATCH", f"{DEMO1}/<new-2>?{FILES}", headers=MULTIPART,
             raw=multipart([], [("+file_many", "e.txt", b"e")])),
        # the answers' keys are sorted: file_many's a, b, c are <file-3..5>, file_one's one.txt <file-6>
        Step("the protected file with a file token", "GET",
             f"/api/files/demo1/<new-2>/<file-6>?token={SUPERUSER_FILE_TOKEN}", auth=G),
        Step("remove two by name (JSON)", "PATCH", f"{DEMO1}/<new-2>?{FILES}",
             {"file_many-": ["<file-3>", "<file-5>"]}),
        Step("a removed file", "GET", "/api/files/demo1/<new-2>/<file-3>", auth=G),
        Step("a kept file", "GET", "/api/files/demo1/<new-2>/<file-4>", auth=G),
        Step("remove one by name (form)", "PATCH", f"{DEMO1}/<new-2>?{FILES}", headers=MULTIPART,
             raw=multipart([("file_many-", "<file-4>")])),
        Step("remove a name the record does not have", "PATCH", f"{DEMO1}/<new-2>?{FILES}",
             {"file_many-": "nope.txt"}),
        Step("reorder by names", "PATCH", f"{DEMO1}/<new-2>?{FILES}", {"file_many": ["<file-7>", "<file-8>"]}),
        Step("clear the single file with null", "PATCH", f"{DEMO1}/<new-2>?{FILES}", {"file_one": None}),
        Step("the cleared file", "GET", f"/api/files/demo1/<new-2>/<file-6>?token={SUPERUSER_FILE_TOKEN}", auth=G),
        Step("delete the record", "DELETE", f"{DEMO1}/<new-2>"),
        Step("its files are gone", "GET", "/api/files/demo1/<new-2>/<file-7>", auth=G),
        Step("more files than maxSelect", "PATCH", "/api/collections/users/records/oap640cot4yru2s?fields=file",
             headers=MULTIPART, raw=multipart([], [("file", f"f{i}.txt", b"x") for i in range(6)])),
        Step("a file for a text field", "POST", "/api/collections/demo2/records?fields=title", headers=MULTIPART,
             raw=multipart([("title", "file for text")], [("title", "t.txt", b"text")])),
        Step("an empty file", "POST", f"{DEMO1}?{FILES}", headers=MULTIPART,
             raw=multipart([], [("file_many", "empty.txt", b"")])),
        Step("a view collection", "POST", "/api/collections/view2/records", headers=MULTIPART,
             raw=multipart([], [("file_many", "v.txt", b"v")])),
        Step("upload with fields and expand", "POST", f"{DEMO1}?{FILES},expand.rel_one.id&expand=rel_one",
             headers=MULTIPART, raw=multipart([("rel_one", "84nmscqy84lsi1t")], [("file_many", "x.txt", b"x")])),
        Step("clear many with an empty list", "PATCH", f"{DEMO1}/<new-3>?{FILES}", {"file_many": []}),
    ],
    "records: forms with empty file inputs": [
        Step("a record with files", "POST", f"{DEMO1}?{FILES}", headers=MULTIPART,
             raw=multipart([("text", "form")], [("file_one", "one.txt", b"1"), ("file_many", "a.txt", b"a"),
                                                ("file_many", "b.txt", b"b")])),
        Step("an empty input for a multiple field", "PATCH", f"{DEMO1}/<new-1>?{FILES}", headers=MULTIPART,
             raw=with_empty_file_input(multipart([("text", "form2")]), "file_many")),
        Step("an empty input for a single field", "PATCH", f"{DEMO1}/<new-1>?{FILES}", headers=MULTIPART,
             raw=with_empty_file_input(multipart([("text", "form3")]), "file_one")),
        Step("an empty input beside an upload", "PATCH", f"{DEMO1}/<new-1>?{FILES}", headers=MULTIPART,
             raw=with_empty_file_input(multipart([], [("file_many", "c.txt", b"c")]), "file_many")),
        Step("an empty input on create", "POST", f"{DEMO1}?{FILES}", headers=MULTIPART,
             raw=with_empty_file_input(multipart([("text", "form4")]), "file_one")),
        Step("a single name as a string", "PATCH", f"{DEMO1}/<new-1>?{FILES}", {"file_many": "<file-4>"}),
    ],
    "records and collections: content types of a JSON body": [
        *[Step(f"create, Content-Type {content_type!r}", "POST", "/api/collections/demo2/records?fields=title",
               raw=json.dumps({"title": f"typed {n}"}).encode(), headers={"content-type": content_type})
          for n, content_type in enumerate(("", "Application/JSON", "application/vnd.api+json", "application/jsonx",
                                            "application/json;charset=UTF-8", "text/plain;charset=UTF-8"))],
        Step("update, no Content-Type", "PATCH", "/api/collections/demo2/records/0yxhwia2amd8gec?fields=title",
             raw=b'{"title":"untyped"}', headers={"content-type": ""}),
        Step("update, no Content-Type, only spaces", "PATCH",
             "/api/collections/demo2/records/0yxhwia2amd8gec?fields=title", raw=b"  ", headers={"content-type": ""}),
        Step("update, no Content-Type, no body", "PATCH", "/api/collections/demo2/records/0yxhwia2amd8gec?fields=title",
             raw=b"", headers={"content-type": ""}),
        *[Step(f"collection {method} {path}, Content-Type {content_type!r}", method, path, raw=b'{"name":"demo2"}',
               headers={"content-type": content_type})
          for content_type in ("", "text/plain", "Application/JSON", "application/jsonx")
          for method, path in (("POST", "/api/collections"), ("PATCH", "/api/collections/demo2?fields=name"),
                               ("PUT", "/api/collections/import"))],
    ],
    "batch: multipart/form-data with file uploads (batch_test.go)": [
        Step("multipart/form-data + file upload", "POST", "/api/batch", auth=G, headers=MULTIPART | CLIENT1,
             raw=multipart([("@jsonPayload", BATCH_UPLOAD)], [
                 *[("requests.0.files", f"/tmp/tmpfile-{i}.txt", b"test") for i in (1, 2, 3)],
                 ("requests[2].files", "/tmp/tmpfile-4.txt", b"test")])),
        Step("the batch's records", "GET", f"{DEMO3}?filter=title~'batch'&sort=title&{BATCH_SHOWN}"),
        Step("the updated record", "GET", f"{DEMO3}/lcl9d87w22ml6jy?{BATCH_SHOWN}"),
        Step("an uploaded file", "GET", "/api/files/demo3/<new-3>/<file-4>", auth=G),
        Step("append, upsert and delete with files", "POST", "/api/batch",
             headers=MULTIPART, raw=multipart([("@jsonPayload", json.dumps({"requests": [
                 {"method": "PATCH", "url": f"{DEMO3}/<new-1>?{BATCH_SHOWN}", "body": {}},
                 {"method": "PUT", "url": f"{DEMO3}?{BATCH_SHOWN}", "body": {"id": "batchupsert0001", "title": "up"}},
                 {"method": "DELETE", "url": f"{DEMO3}/<new-3>"}]}))],
                 [("requests.0.files+", "more.txt", b"more"), ("requests.1.files", "upsert.txt", b"upsert")])),
        Step("the deleted record's file", "GET", "/api/files/demo3/<new-3>/<file-4>", auth=G),
        Step("a file for a delete", "POST", "/api/batch", headers=MULTIPART, raw=multipart([("@jsonPayload", json.dumps(
            {"requests": [{"method": "DELETE", "url": f"{DEMO3}/batchupsert0001"}]}))],
            [("requests.0.files", "x.txt", b"x")])),
        Step("too many files for one field", "POST", "/api/batch", headers=MULTIPART, raw=multipart(
            [("@jsonPayload", json.dumps({"requests": [{"method": "PATCH", "url": "/api/collections/demo5/records/"
                                                        "la4y2w4o98acwuj", "body": {"total": 3}}]}))],
            [("requests.0.file", "a.txt", b"a"), ("requests.0.file", "b.txt", b"b")])),
    ],
    "records: a password change ends the record's auth origins (record_crud_test.go)": [
        *[Step(f"an auth origin {i}", "POST", "/api/collections/_authOrigins/records?fields=recordRef,fingerprint",
               {"collectionRef": "kpv709sk2lqbqk8", "recordRef": "dc49k6jgejn40h3", "fingerprint": f"abc_{i}"})
          for i in range(3)],
        Step("guest update, empty update rule", "PATCH", "/api/collections/nologin/records/dc49k6jgejn40h3",
             {"username": "test_new", "emailVisibility": True, "name": "test"}, auth=G),
        Step("auth origins kept", "GET", "/api/collections/_authOrigins/records?filter=recordRef='dc49k6jgejn40h3'"
             "&fields=fingerprint&sort=fingerprint"),
        Step("password change with oldPassword", "PATCH", "/api/collections/nologin/records/dc49k6jgejn40h3",
             {"password": "123456789", "passwordConfirm": "123456789", "oldPassword": "1234567890"}, auth=G),
        Step("auth origins removed", "GET", "/api/collections/_authOrigins/records?filter=recordRef='dc49k6jgejn40h3'"
             "&fields=fingerprint"),
        Step("others' auth origins kept", "GET",
             f"/api/collections/_authOrigins/records?sort=id&fields=id&filter={OTHER_THAN_LOGIN}"),
    ],
    "records: the collection's body limit (record_crud_test.go)": [
        Step("smaller file and json fields", "PATCH", "/api/collections/demo1?fields=name",
             {"fields": BODY_LIMIT_FIELDS}),
        Step("body > collection BodyLimit", "POST", DEMO1, raw=bytes(DEMO1_BODY_LIMIT + 1)),
        Step("body <= collection BodyLimit", "POST", DEMO1, raw=bytes(DEMO1_BODY_LIMIT)),
        Step("update: body > collection BodyLimit", "PATCH", f"{DEMO1}/imy661ixudk5izi", raw=bytes(DEMO1_BODY_LIMIT + 1)),
        Step("update: body <= collection BodyLimit", "PATCH", f"{DEMO1}/imy661ixudk5izi", raw=bytes(DEMO1_BODY_LIMIT)),
        Step("fields back", "PATCH", "/api/collections/demo1?fields=name", {"fields": demo1_fields()}),
    ],
}

FIXTURE_RATE_LIMIT_RULES = [
    {"label": "*:auth", "audience": "", "duration": 3, "maxRequests": 2},
    {"label": "*:create", "audience": "", "duration": 5, "maxRequests": 20},
    {"label": "/api/batch", "audience": "", "duration": 1, "maxRequests": 3},
    {"label": "/api/", "audience": "", "duration": 10, "maxRequests": 300},
]


def _twice(name: str, method: str, path: str, body: Any = None) -> list[Step]:
    return [Step(f"{name} ({n})", method, path, body, auth=G) for n in ("first", "second")]


# Near the end of the module: while it runs, guests are limited.
RATE_LIMIT_SCENARIOS: dict[str, list[Step]] = {
    "records: rate limit rules by collection and action (record_crud_test.go)": [
        Step("one request a minute per rule", "PATCH", "/api/settings?fields=rateLimits", {"rateLimits": {
            "enabled": True, "rules": [
                {"label": f"{tag}", "audience": "", "duration": 60, "maxRequests": 1}
                for tag in ("view2:list", "numeric_id_view:view", "demo2:create", "*:update", "demo5:delete")]}}),
        *_twice("view2:list", "GET", "/api/collections/view2/records?fields=id&filter=id='84nmscqy84lsi1t'"),
        *_twice("numeric_id_view:view", "GET", "/api/collections/numeric_id_view/records/1"),
        *_twice("demo2:create", "POST", "/api/collections/demo2/records?fields=title", {"title": "rate limited"}),
        *_twice("*:update", "PATCH", "/api/collections/demo2/records/0yxhwia2amd8gec?fields=title", {"title": "rl"}),
        *_twice("demo5:delete", "DELETE", "/api/collections/demo5/records/missing?test=1"),
        Step("a list without a rule", "GET", "/api/collections/demo2/records?fields=id&perPage=1", auth=G),
        Step("superusers are not limited", "POST", "/api/collections/demo2/records?fields=title", {"title": "su"}),
        Step("wildcard rules and files", "PATCH", "/api/settings?fields=rateLimits", {"rateLimits": {
            "enabled": True, "rules": [
                {"label": f"{tag}", "audience": "", "duration": 60, "maxRequests": 1}
                for tag in ("*:list", "*:view", "*:create", "*:delete", "users:file", "*:file")]}}),
        *_twice("*:list", "GET", "/api/collections/demo2/records?fields=id&perPage=1"),
        *_twice("*:view", "GET", "/api/collections/demo2/records/0yxhwia2amd8gec?fields=id"),
        *_twice("*:create", "POST", "/api/collections/demo2/records?fields=title", {"title": "rate limited 2"}),
        *_twice("*:delete", "DELETE", "/api/collections/demo2/records/missing"),
        *_twice("users:file", "GET", "/api/files/_pb_users_auth_/4q1xlclmfloku33/300_1SEi6Q6U72.png?thumb=70x50"),
        *_twice("*:file", "GET", "/api/files/demo1/84nmscqy84lsi1t/test_QZFjKjXchk.txt"),
        Step("auth action rules", "PATCH", "/api/settings?fields=rateLimits", {"rateLimits": {
            "enabled": True, "rules": [
                {"label": f"{tag}", "audience": "", "duration": 60, "maxRequests": 1}
                for tag in ("*:requestPasswordReset", "clients:confirmVerification", "*:authWithOAuth2",
                            "*:requestEmailChange", "*:confirmPasswordReset")]}}),
        *_twice("*:requestPasswordReset", "POST", "/api/collections/clients/request-password-reset",
                {"email": "nobody@example.com"}),
        *_twice("clients:confirmVerification", "POST", "/api/collections/clients/confirm-verification",
                {"token": "invalid"}),
        *_twice("*:authWithOAuth2", "POST", "/api/collections/users/auth-with-oauth2", {"provider": "nope"}),
        *_twice("*:requestEmailChange", "POST", "/api/collections/users/request-email-change", {}),
        *_twice("*:confirmPasswordReset", "POST", "/api/collections/users/confirm-password-reset", {}),
        Step("rules back", "PATCH", "/api/settings?fields=rateLimits",
             {"rateLimits": {"enabled": False, "rules": FIXTURE_RATE_LIMIT_RULES}}),
        Step("not limited any more", "GET", "/api/collections/view2/records?fields=id&filter=id='84nmscqy84lsi1t'",
             auth=G),
    ],
}
