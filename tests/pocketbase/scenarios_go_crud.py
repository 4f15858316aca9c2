"""PocketBase's own API scenarios, one step each, as its Go tests send them (method, URL, body and
headers verbatim, the fixture records' tokens as ``fixture_data`` names them): ``apis/file_test.go`` and
``apis/record_crud_test.go`` (``RECORD_CRUD_PORTS``), ``apis/batch_test.go``, ``apis/collection_test.go`` and
``apis/collection_import_test.go`` (``COLLECTION_PORTS``). The scenarios whose URL or body Go computes or whose
set-up is a rule, an index or a collection are ported by hand (the ``*_COMPUTED`` lists); those whose set-up
is a setting (rate limits, body limits, batch settings, superuser IPs), a multipart body or a hook live in the
other scenario modules or do not apply (hooks). Each Go scenario starts from a fresh fixture; here they run in
order on one pair of servers, so the steps named "(put back)" undo what a scenario changed that a later one
reads (through the SQL console where the API cannot: a deleted record, say)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import apsw

from differential import Step
from fixture_data import CLIENT1, NOLOGIN1, SUPERUSER1, USER1, USER2
from pbharness import FIXTURE

# The SQL console's answers to the put-back steps, less execTime (the time taken) and affectedRows (SQLite's
# changes() of the connection's last insert, update or delete, which a "create table ... as select" leaves as
# it was: pbfast's connection wrote the login's _authOrigins row, PocketBase's none yet).
SQL_SHOWN = "/api/sql?fields=columns,rows"


def fixture_collection(name: str) -> dict[str, Any]:
    """The fixture's collection ``name`` as the collections API takes it (its id, fields, rules, indexes and
    type's options)."""
    connection = apsw.Connection(str(FIXTURE / "data.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        cursor = connection.execute("SELECT id, type, name, fields, listRule, viewRule, createRule, updateRule, "
                                    "deleteRule, options, indexes FROM _collections WHERE name = ?", (name,))
        row = dict(zip([column[0] for column in cursor.getdescription()], cursor.fetchone()))
    finally:
        connection.close()
    options = json.loads(row.pop("options") or "{}")
    return {**row, "fields": json.loads(row["fields"]), "indexes": json.loads(row["indexes"]), **options}


def snapshot(*tables: str) -> Step:
    """A copy of ``tables``' rows beside them (through the SQL console), for :func:`restore`."""
    return Step(f"(set-up) snapshot of {', '.join(tables)}", "POST", SQL_SHOWN, {"query": "; ".join(
        f"create table _snapshot_{table} as select * from {table}" for table in tables)})


def restore(*tables: str, drop: bool = False) -> Step:
    """``tables``' rows as :func:`snapshot` copied them (each Go scenario starts from a fresh fixture)."""
    queries = [f"delete from {table}; insert into {table} select * from _snapshot_{table}" for table in tables]
    queries += [f"drop table _snapshot_{table}" for table in tables if drop]
    return Step(f"(put back) the rows of {', '.join(tables)}", "POST", SQL_SHOWN, {"query": "; ".join(queries)})


# Put back between Go scenarios (each of which starts from a fresh fixture in Go): the collection "new" the
# create scenarios make, demo1's name after the rename to "new".
DROP_NEW = Step("(put back) drop the collection new", "DELETE", "/api/collections/new?fields=x")
DEMO1_BACK = Step("(put back) demo1's name", "PATCH", "/api/collections/new?fields=name", {"name": "demo1"})
# The records the create scenarios made whose unique values the update scenarios set again.
CREATED_RECORDS_DROPPED = Step("(put back) drop the records made with the update scenarios' unique values", "POST",
                               SQL_SHOWN, {"query": "delete from demo2 where title = 'new'; "
                                            "delete from users where email = 'new@example.com'; "
                                            "delete from nologin where email = 'new@example.com'"})
# The tables the batch scenarios write (demo3's deletes cascade to demo4).
BATCH_TABLES = ("demo2", "demo3", "demo4", "demo5")
THUMB = "/api/files/_pb_users_auth_/4q1xlclmfloku33/300_1SEi6Q6U72.png?thumb="
DEMO4_FILTER = "/api/collections/demo4/records?filter="
# The Go scenarios' set-ups done through the API: a demo1 index named like the one another collection is given.
DEMO1_EXIST_TEST_INDEX = [*fixture_collection("demo1")["indexes"], "CREATE INDEX `exist_test` ON `demo1` (`updated`)"]
# Scenarios whose URL or body Go computes, or whose set-up only asserts (hooks checking the thumb error).
FILE_DOWNLOAD_COMPUTED = [
    Step("existing image - missing thumb (should fallback to the original)", "GET", f"{THUMB}999x999", auth=None),
    *[Step(f"existing image - existing thumb ({kind})", "GET", f"{THUMB}{size}", auth=None)
      for kind, size in (("crop center", "70x50"), ("crop top", "70x50t"), ("crop bottom", "70x50b"),
                         ("fit", "70x50f"), ("zero width", "0x50"), ("zero height", "70x0"))],
    Step("existing non image file - thumb parameter should be ignored", "GET",
         "/api/files/_pb_users_auth_/oap640cot4yru2s/test_kfd2wYLxkz.txt?thumb=100x100", auth=None),
]
RECORD_LIST_COMPUTED = [
    Step("multi-match - at least one of (guest - non-satisfied relation filter API rule)", "GET",
         DEMO4_FILTER + quote("rel_many_no_cascade_required.files:length?=2", safe=""), auth=None),
    Step("multi-match - at least one of (clients)", "GET",
         DEMO4_FILTER + quote("rel_many_no_cascade_required.files:length?=2", safe=""), auth=None, headers=CLIENT1),
    Step("multi-match - all (clients)", "GET",
         DEMO4_FILTER + quote("rel_many_no_cascade_required.files:length=2", safe=""), auth=None, headers=CLIENT1),
]
COLLECTION_COMPUTED = [
    Step("creating view collection", "POST", "/api/collections", raw=json.dumps({
        "name": "new", "type": "view", "fields": [{"type": "text", "id": "12345789", "name": "ignored!@#$"}],
        "viewQuery": "select 1 as id from _superusers limit 1"}).encode(), auth=None, headers=SUPERUSER1),
    DROP_NEW,
    Step("(set-up) an index exist_test on demo1", "PATCH", "/api/collections/demo1?fields=indexes",
         {"indexes": DEMO1_EXIST_TEST_INDEX}),
    Step("creating base collection with index name from another collection", "POST", "/api/collections",
         raw=b'{"name":"new","type":"base","fields":[{"type":"text","name":"test"}],'
             b'"indexes":["create index exist_test on new (test)"]}', auth=None, headers=SUPERUSER1),
    DROP_NEW,
    Step("updating base collection with index name from another collection", "PATCH", "/api/collections/demo2",
         raw=b'{"indexes":["create index exist_test on new (test)"]}', auth=None, headers=SUPERUSER1),
    Step("(put back) demo1's indexes", "PATCH", "/api/collections/demo1?fields=indexes",
         {"indexes": fixture_collection("demo1")["indexes"]}),
    Step("updating view collection", "PATCH", "/api/collections/view2", raw=json.dumps({
        "name": "view2_update", "fields": [{"type": "text", "id": "12345789", "name": "ignored!@#$"}],
        "viewQuery": "select 2 as id, created, updated, email from _superusers limit 1"}).encode(),
         auth=None, headers=SUPERUSER1),
    Step("(put back) view2", "PATCH", "/api/collections/view2_update?fields=name",
         {"name": "view2", "viewQuery": fixture_collection("view2")["viewQuery"]}),
]
DRY_RUN_COMPUTED = [
    Step("query length beyond validator limit", "POST", "/api/collections/meta/dry-run-view",
         raw=b'{"query":"' + b"a" * 5001 + b'"}', auth=None, headers=SUPERUSER1),
    Step("query with length equal to the validator limit", "POST", "/api/collections/meta/dry-run-view",
         raw=b'{"query":"select 1 as id' + b" " * 4986 + b'"}', auth=None, headers=SUPERUSER1),
]

RECORD_CRUD_PORTS: dict[str, list[Step]] = {
    'TestFileToken': [
        Step('unauthorized', 'POST', '/api/files/token', auth=None),
        Step('regular user', 'POST', '/api/files/token', auth=None, headers=USER1),
        Step('superuser', 'POST', '/api/files/token', auth=None, headers=SUPERUSER1),
    ],
    'TestFileDownload': [
        Step('missing collection', 'GET', '/api/files/missing/4q1xlclmfloku33/300_1SEi6Q6U72.png', auth=None),
        Step('missing record', 'GET', '/api/files/_pb_users_auth_/missing/300_1SEi6Q6U72.png', auth=None),
        Step('missing file', 'GET', '/api/files/_pb_users_auth_/4q1xlclmfloku33/missing.png', auth=None),
        Step('existing image', 'GET', '/api/files/_pb_users_auth_/4q1xlclmfloku33/300_1SEi6Q6U72.png', auth=None),
        Step('protected file - superuser with expired file token', 'GET', '/api/files/demo1/al1h9ijdeojtsjy/300_Jsjq7RdBgA.png?token=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6InN5d2JoZWNuaDQ2cmhtMCIsImV4cCI6MTY0MDk5MTY2MSwidHlwZSI6ImZpbGUiLCJjb2xsZWN0aW9uSWQiOiJwYmNfMzE0MjYzNTgyMyJ9.nqqtqpPhxU0045F4XP_ruAkzAidYBc5oPy9ErN3XBq0', auth=None),
        Step('protected file - superuser with valid file token', 'GET', '/api/files/demo1/al1h9ijdeojtsjy/300_Jsjq7RdBgA.png?token=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6InN5d2JoZWNuaDQ2cmhtMCIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6ImZpbGUiLCJjb2xsZWN0aW9uSWQiOiJwYmNfMzE0MjYzNTgyMyJ9.Lupz541xRvrktwkrl55p5pPCF77T69ZRsohsIcb2dxc', auth=None),
        Step('protected file - guest without view access', 'GET', '/api/files/demo1/al1h9ijdeojtsjy/300_Jsjq7RdBgA.png', auth=None),
        Step("protected file in view (view's View API rule failure)", 'GET', '/api/files/view1/al1h9ijdeojtsjy/300_Jsjq7RdBgA.png?token=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6ImZpbGUiLCJjb2xsZWN0aW9uSWQiOiJfcGJfdXNlcnNfYXV0aF8ifQ.nSTLuCPcGpWn2K2l-BFkC3Vlzc-ZTDPByYq8dN1oPSo', auth=None),
        Step("protected file in view (view's View API rule success)", 'GET', '/api/files/view1/84nmscqy84lsi1t/test_d61b33QdDU.txt?token=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6ImZpbGUiLCJjb2xsZWN0aW9uSWQiOiJfcGJfdXNlcnNfYXV0aF8ifQ.nSTLuCPcGpWn2K2l-BFkC3Vlzc-ZTDPByYq8dN1oPSo', auth=None),
        *FILE_DOWNLOAD_COMPUTED,
    ],
    'TestRecordCrudList': [
        Step('missing collection', 'GET', '/api/collections/missing/records', auth=None),
        Step('unauthenticated trying to access nil rule collection (aka. need superuser auth)', 'GET', '/api/collections/demo1/records', auth=None),
        Step('authenticated record trying to access nil rule collection (aka. need superuser auth)', 'GET', '/api/collections/demo1/records', auth=None, headers=USER1),
        Step('public collection but with superuser only filter param (aka. @collection, @request, etc.)', 'GET', "/api/collections/demo2/records?filter=%40collection.demo2.title='test1'", auth=None),
        Step('public collection but with superuser only sort param (aka. @collection, @request, etc.)', 'GET', '/api/collections/demo2/records?sort=@request.auth.title', auth=None),
        Step('public collection but with ENCODED superuser only filter/sort (aka. @collection)', 'GET', '/api/collections/demo2/records?filter=%40collection.demo2.title%3D%27test1%27', auth=None),
        Step('public collection', 'GET', '/api/collections/demo2/records', auth=None),
        Step('public collection (using the collection id)', 'GET', '/api/collections/sz5l5z67tg7gku0/records', auth=None),
        Step('authorized as superuser trying to access nil rule collection (aka. need superuser auth)', 'GET', '/api/collections/demo1/records', auth=None, headers=SUPERUSER1),
        Step('valid query params', 'GET', "/api/collections/demo1/records?filter=text~'test'&sort=-bool", auth=None, headers=SUPERUSER1),
        Step('invalid filter', 'GET', "/api/collections/demo1/records?filter=invalid~'test'", auth=None, headers=SUPERUSER1),
        Step('expand relations', 'GET', '/api/collections/demo1/records?expand=rel_one,rel_many.rel,missing&perPage=2&sort=created', auth=None, headers=SUPERUSER1),
        Step("authenticated record model that DOESN'T match the collection list rule", 'GET', '/api/collections/demo3/records', auth=None, headers=USER1),
        Step('authenticated record that matches the collection list rule', 'GET', '/api/collections/demo3/records', auth=None, headers=CLIENT1),
        Step(':rule modifer', 'GET', '/api/collections/demo5/records', auth=None),
        Step('check email visibility as guest', 'GET', '/api/collections/nologin/records', auth=None),
        Step('check email visibility as any authenticated record', 'GET', '/api/collections/nologin/records', auth=None, headers=CLIENT1),
        Step('check email visibility as manage auth record', 'GET', '/api/collections/nologin/records', auth=None, headers=USER1),
        Step('check email visibility as superuser', 'GET', '/api/collections/nologin/records', auth=None, headers=SUPERUSER1),
        Step('check self email visibility resolver', 'GET', '/api/collections/nologin/records', auth=None, headers=NOLOGIN1),
        Step('public view records', 'GET', '/api/collections/view2/records?filter=state=false', auth=None),
        Step("guest that doesn't match the view collection list rule", 'GET', '/api/collections/view1/records', auth=None),
        Step('authenticated record that matches the view collection list rule', 'GET', '/api/collections/view1/records', auth=None, headers=USER1),
        Step('view collection with numeric ids', 'GET', '/api/collections/numeric_id_view/records', auth=None),
        *RECORD_LIST_COMPUTED,
    ],
    'TestRecordCrudView': [
        Step('missing collection', 'GET', '/api/collections/missing/records/0yxhwia2amd8gec', auth=None),
        Step('missing record', 'GET', '/api/collections/demo2/records/missing', auth=None),
        Step('unauthenticated trying to access nil rule collection (aka. need superuser auth)', 'GET', '/api/collections/demo1/records/imy661ixudk5izi', auth=None),
        Step('authenticated record trying to access nil rule collection (aka. need superuser auth)', 'GET', '/api/collections/demo1/records/imy661ixudk5izi', auth=None, headers=USER1),
        Step("authenticated record that doesn't match the collection view rule", 'GET', '/api/collections/users/records/bgs820n361vj1qd', auth=None, headers=USER1),
        Step('public collection view', 'GET', '/api/collections/demo2/records/0yxhwia2amd8gec', auth=None),
        Step('public collection view (using the collection id)', 'GET', '/api/collections/sz5l5z67tg7gku0/records/0yxhwia2amd8gec', auth=None),
        Step('authorized as superuser trying to access nil rule collection view (aka. need superuser auth)', 'GET', '/api/collections/demo1/records/imy661ixudk5izi', auth=None, headers=SUPERUSER1),
        Step('authenticated record that does match the collection view rule', 'GET', '/api/collections/users/records/4q1xlclmfloku33', auth=None, headers=USER1),
        Step('expand relations', 'GET', '/api/collections/demo1/records/al1h9ijdeojtsjy?expand=rel_one,rel_many.rel,missing&perPage=2&sort=created', auth=None, headers=SUPERUSER1),
        Step('check email visibility as guest', 'GET', '/api/collections/nologin/records/oos036e9xvqeexy', auth=None),
        Step('check email visibility as any authenticated record', 'GET', '/api/collections/nologin/records/oos036e9xvqeexy', auth=None, headers=CLIENT1),
        Step('check email visibility as manage auth record', 'GET', '/api/collections/nologin/records/oos036e9xvqeexy', auth=None, headers=USER1),
        Step('check email visibility as superuser', 'GET', '/api/collections/nologin/records/oos036e9xvqeexy', auth=None, headers=SUPERUSER1),
        Step('check self email visibility resolver', 'GET', '/api/collections/nologin/records/dc49k6jgejn40h3', auth=None, headers=NOLOGIN1),
        Step('public view record', 'GET', '/api/collections/view2/records/84nmscqy84lsi1t', auth=None),
        Step("guest that doesn't match the view collection view rule", 'GET', '/api/collections/view1/records/84nmscqy84lsi1t', auth=None),
        Step('authenticated record that matches the view collection view rule', 'GET', '/api/collections/view1/records/84nmscqy84lsi1t', auth=None, headers=USER1),
        Step('view record with numeric id', 'GET', '/api/collections/numeric_id_view/records/1', auth=None),
    ],
    'TestRecordCrudCreate': [
        Step('missing collection', 'POST', '/api/collections/missing/records', auth=None),
        Step('guest trying to access nil-rule collection', 'POST', '/api/collections/demo1/records', auth=None),
        Step('auth record trying to access nil-rule collection', 'POST', '/api/collections/demo1/records', auth=None, headers=USER1),
        Step('trying to create a new view collection record', 'POST', '/api/collections/view1/records', raw=b'{"text":"new"}', auth=None),
        Step('submit invalid body', 'POST', '/api/collections/demo2/records', raw=b'{"', auth=None),
        Step('submit empty json body', 'POST', '/api/collections/nologin/records', raw=b'{}', auth=None),
        Step('guest submit in public collection', 'POST', '/api/collections/demo2/records', raw=b'{"title":"new"}', auth=None),
        Step('guest trying to submit in restricted collection', 'POST', '/api/collections/demo3/records', raw=b'{"title":"test123"}', auth=None),
        Step('auth record submit in restricted collection (rule failure check)', 'POST', '/api/collections/demo3/records', raw=b'{"title":"test123"}', auth=None, headers=USER1),
        Step('auth record submit in restricted collection (rule pass check) + expand relations', 'POST', '/api/collections/demo4/records?expand=missing,rel_one_no_cascade,rel_many_no_cascade_required', raw=b'{\n\t\t\t\t"title":"test123",\n\t\t\t\t"rel_one_no_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_one_no_cascade_required":"7nwo8tuiatetxdm",\n\t\t\t\t"rel_one_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_many_no_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_many_no_cascade_required":["7nwo8tuiatetxdm","lcl9d87w22ml6jy"],\n\t\t\t\t"rel_many_cascade":"lcl9d87w22ml6jy"\n\t\t\t}', auth=None, headers=USER1),
        Step('superuser submit in restricted collection (rule skip check) + expand relations', 'POST', '/api/collections/demo4/records?expand=missing,rel_one_no_cascade,rel_many_no_cascade_required', raw=b'{\n\t\t\t\t"title":"test123",\n\t\t\t\t"rel_one_no_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_one_no_cascade_required":"7nwo8tuiatetxdm",\n\t\t\t\t"rel_one_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_many_no_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_many_no_cascade_required":["7nwo8tuiatetxdm","lcl9d87w22ml6jy"],\n\t\t\t\t"rel_many_cascade":"lcl9d87w22ml6jy"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('unique field error check', 'POST', '/api/collections/demo2/records', raw=b'{\n\t\t\t\t"title":"test2"\n\t\t\t}', auth=None),
        Step('invalid custom insertion id (less than 15 chars)', 'POST', '/api/collections/demo3/records', raw=b'{\n\t\t\t\t"id": "12345678901234",\n\t\t\t\t"title": "test"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('invalid custom insertion id (more than 15 chars)', 'POST', '/api/collections/demo3/records', raw=b'{\n\t\t\t\t"id": "1234567890123456",\n\t\t\t\t"title": "test"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('valid custom insertion id (exactly 15 chars)', 'POST', '/api/collections/demo3/records', raw=b'{\n\t\t\t\t"id": "123456789012345",\n\t\t\t\t"title": "test"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('valid custom insertion id existing in another non-auth collection', 'POST', '/api/collections/demo3/records', raw=b'{\n\t\t\t\t"id": "0yxhwia2amd8gec",\n\t\t\t\t"title": "test"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('valid custom insertion auth id duplicating in another auth collection', 'POST', '/api/collections/users/records', raw=b'{\n\t\t\t\t"id":"o1y0dd0spd786md",\n\t\t\t\t"title":"test",\n\t\t\t\t"password":"1234567890",\n\t\t\t\t"passwordConfirm":"1234567890"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('@request.body.field with compute modifers (rule failure check)', 'POST', '/api/collections/demo5/records', raw=b'{\n\t\t\t\t"total+":4,\n\t\t\t\t"total-":2\n\t\t\t}', auth=None),
        Step('@request.body.field with compute modifers (rule pass check)', 'POST', '/api/collections/demo5/records', raw=b'{\n\t\t\t\t"total+":4,\n\t\t\t\t"total-":1\n\t\t\t}', auth=None),
        Step('auth record with invalid form data', 'POST', '/api/collections/users/records', raw=b'{\n\t\t\t\t"password":"1234567",\n\t\t\t\t"passwordConfirm":"1234560",\n\t\t\t\t"email":"invalid",\n\t\t\t\t"username":"Users75657"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('auth record with valid form data but invalid record fields', 'POST', '/api/collections/users/records', raw=b'{\n\t\t\t\t"password":"1234567",\n\t\t\t\t"passwordConfirm":"1234567",\n\t\t\t\t"rel":"invalid"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('auth record with valid data and explicitly verified state by guest', 'POST', '/api/collections/users/records', raw=b'{\n\t\t\t\t"password":"12345678",\n\t\t\t\t"passwordConfirm":"12345678",\n\t\t\t\t"verified":true\n\t\t\t}', auth=None),
        Step('auth record with valid data and explicitly verified state by random user', 'POST', '/api/collections/users/records', raw=b'{\n\t\t\t\t"password":"12345678",\n\t\t\t\t"passwordConfirm":"12345678",\n\t\t\t\t"emailVisibility":true,\n\t\t\t\t"verified":true\n\t\t\t}', auth=None, headers=USER1),
        Step('auth record with valid data by superuser', 'POST', '/api/collections/users/records', raw=b'{\n\t\t\t\t"id":"o1o1y0pd78686mq",\n\t\t\t\t"username":"test.valid",\n\t\t\t\t"email":"new@example.com",\n\t\t\t\t"password":"12345678",\n\t\t\t\t"passwordConfirm":"12345678",\n\t\t\t\t"rel":"achvryl401bhse3",\n\t\t\t\t"emailVisibility":true,\n\t\t\t\t"verified":true\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('auth record with valid data by auth record with manage access', 'POST', '/api/collections/nologin/records', raw=b'{\n\t\t\t\t"email":"new@example.com",\n\t\t\t\t"password":"12345678",\n\t\t\t\t"passwordConfirm":"12345678",\n\t\t\t\t"name":"test_name",\n\t\t\t\t"emailVisibility":true,\n\t\t\t\t"verified":true\n\t\t\t}', auth=None, headers=USER1),
        Step('submit nil body', 'POST', '/api/collections/demo2/records', auth=None),
    ],
    'TestRecordCrudUpdate': [
        CREATED_RECORDS_DROPPED,
        Step('missing collection', 'PATCH', '/api/collections/missing/records/0yxhwia2amd8gec', auth=None),
        Step('guest trying to access nil-rule collection record', 'PATCH', '/api/collections/demo1/records/imy661ixudk5izi', auth=None),
        Step('auth record trying to access nil-rule collection', 'PATCH', '/api/collections/demo1/records/imy661ixudk5izi', auth=None, headers=USER1),
        Step('trying to update a view collection record', 'PATCH', '/api/collections/view1/records/imy661ixudk5izi', raw=b'{"text":"new"}', auth=None),
        Step('submit invalid body', 'PATCH', '/api/collections/demo2/records/0yxhwia2amd8gec', raw=b'{"', auth=None),
        Step('submit empty body (aka. no fields change)', 'PATCH', '/api/collections/demo2/records/0yxhwia2amd8gec', raw=b'{}', auth=None),
        Step('trigger field validation', 'PATCH', '/api/collections/demo2/records/0yxhwia2amd8gec', raw=b'{"title":"a"}', auth=None),
        Step('guest submit in public collection', 'PATCH', '/api/collections/demo2/records/0yxhwia2amd8gec', raw=b'{"title":"new"}', auth=None),
        Step('guest trying to submit in restricted collection', 'PATCH', '/api/collections/demo3/records/mk5fmymtx4wsprk', raw=b'{"title":"new"}', auth=None),
        Step('auth record submit in restricted collection (rule failure check)', 'PATCH', '/api/collections/demo3/records/mk5fmymtx4wsprk', raw=b'{"title":"new"}', auth=None, headers=USER1),
        Step('auth record submit in restricted collection (rule pass check) + expand relations', 'PATCH', '/api/collections/demo4/records/i9naidtvr6qsgb4?expand=missing,rel_one_no_cascade,rel_many_no_cascade_required', raw=b'{\n\t\t\t\t"title":"test123",\n\t\t\t\t"rel_one_no_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_one_no_cascade_required":"7nwo8tuiatetxdm",\n\t\t\t\t"rel_one_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_many_no_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_many_no_cascade_required":["7nwo8tuiatetxdm","lcl9d87w22ml6jy"],\n\t\t\t\t"rel_many_cascade":"lcl9d87w22ml6jy"\n\t\t\t}', auth=None, headers=USER1),
        Step('superuser submit in restricted collection (rule skip check) + expand relations', 'PATCH', '/api/collections/demo4/records/i9naidtvr6qsgb4?expand=missing,rel_one_no_cascade,rel_many_no_cascade_required', raw=b'{\n\t\t\t\t"title":"test123",\n\t\t\t\t"rel_one_no_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_one_no_cascade_required":"7nwo8tuiatetxdm",\n\t\t\t\t"rel_one_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_many_no_cascade":"mk5fmymtx4wsprk",\n\t\t\t\t"rel_many_no_cascade_required":["7nwo8tuiatetxdm","lcl9d87w22ml6jy"],\n\t\t\t\t"rel_many_cascade":"lcl9d87w22ml6jy"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('try to change the id of an existing record', 'PATCH', '/api/collections/demo3/records/mk5fmymtx4wsprk', raw=b'{\n\t\t\t\t"id": "mk5fmymtx4wspra"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('unique field error check', 'PATCH', '/api/collections/demo2/records/llvuca81nly1qls', raw=b'{\n\t\t\t\t"title":"test2"\n\t\t\t}', auth=None),
        Step('@request.body.field with compute modifers (rule failure check)', 'PATCH', '/api/collections/demo5/records/la4y2w4o98acwuj', raw=b'{\n\t\t\t\t"total+":3,\n\t\t\t\t"total-":1\n\t\t\t}', auth=None),
        Step('@request.body.field with compute modifers (rule pass check)', 'PATCH', '/api/collections/demo5/records/la4y2w4o98acwuj', raw=b'{\n\t\t\t\t"total+":2,\n\t\t\t\t"total-":1\n\t\t\t}', auth=None),
        Step('auth record with invalid form data', 'PATCH', '/api/collections/users/records/bgs820n361vj1qd', raw=b'{\n\t\t\t\t"password":"",\n\t\t\t\t"passwordConfirm":"1234560",\n\t\t\t\t"email":"invalid",\n\t\t\t\t"verified":false\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('auth record with valid form data but invalid record fields', 'PATCH', '/api/collections/users/records/bgs820n361vj1qd', raw=b'{\n\t\t\t\t"password":"1234567",\n\t\t\t\t"passwordConfirm":"1234567",\n\t\t\t\t"rel":"invalid"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('try to change account managing fields by guest', 'PATCH', '/api/collections/nologin/records/phhq3wr65cap535', raw=b'{\n\t\t\t\t"password":"12345678",\n\t\t\t\t"passwordConfirm":"12345678",\n\t\t\t\t"emailVisibility":true,\n\t\t\t\t"verified":true\n\t\t\t}', auth=None),
        Step('try to change account managing fields by auth record (owner)', 'PATCH', '/api/collections/users/records/4q1xlclmfloku33', raw=b'{\n\t\t\t\t"password":"12345678",\n\t\t\t\t"passwordConfirm":"12345678",\n\t\t\t\t"emailVisibility":true,\n\t\t\t\t"verified":true\n\t\t\t}', auth=None, headers=USER1),
        Step('try to unset/downgrade email and verified fields (owner)', 'PATCH', '/api/collections/users/records/oap640cot4yru2s', raw=b'{\n\t\t\t\t"email":"",\n\t\t\t\t"verified":false\n\t\t\t}', auth=None, headers=USER2),
        Step('try to change account managing fields by auth record with managing rights', 'PATCH', '/api/collections/nologin/records/phhq3wr65cap535', raw=b'{\n\t\t\t\t"email":"new@example.com",\n\t\t\t\t"password":"12345678",\n\t\t\t\t"passwordConfirm":"12345678",\n\t\t\t\t"name":"test_name",\n\t\t\t\t"emailVisibility":true,\n\t\t\t\t"verified":true\n\t\t\t}', auth=None, headers=USER1),
        Step('update auth record with valid data by superuser', 'PATCH', '/api/collections/users/records/oap640cot4yru2s', raw=b'{\n\t\t\t\t"username":"test.valid",\n\t\t\t\t"email":"new@example.com",\n\t\t\t\t"password":"12345678",\n\t\t\t\t"passwordConfirm":"12345678",\n\t\t\t\t"rel":"achvryl401bhse3",\n\t\t\t\t"emailVisibility":true,\n\t\t\t\t"verified":false\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('submit nil body (aka. no fields change)', 'PATCH', '/api/collections/demo2/records/0yxhwia2amd8gec', auth=None),
    ],
    'TestRecordCrudDelete': [
        Step('missing collection', 'DELETE', '/api/collections/missing/records/0yxhwia2amd8gec', auth=None),
        Step('missing record', 'DELETE', '/api/collections/demo2/records/missing', auth=None),
        Step('unauthenticated trying to delete nil rule collection (aka. need superuser auth)', 'DELETE', '/api/collections/demo1/records/imy661ixudk5izi', auth=None),
        Step('authenticated record trying to delete nil rule collection (aka. need superuser auth)', 'DELETE', '/api/collections/demo1/records/imy661ixudk5izi', auth=None, headers=USER1),
        Step("authenticated record that doesn't match the collection delete rule", 'DELETE', '/api/collections/users/records/bgs820n361vj1qd', auth=None, headers=USER1),
        Step('trying to delete a view collection record', 'DELETE', '/api/collections/view1/records/imy661ixudk5izi', auth=None),
        snapshot("nologin"),
        Step('public collection record delete', 'DELETE', '/api/collections/nologin/records/dc49k6jgejn40h3', auth=None),
        restore("nologin", drop=True),
        Step('public collection record delete (using the collection id as identifier)', 'DELETE', '/api/collections/kpv709sk2lqbqk8/records/dc49k6jgejn40h3', auth=None),
        Step('authorized as superuser trying to delete nil rule collection view (aka. need superuser auth)', 'DELETE', '/api/collections/clients/records/o1y0dd0spd786md', auth=None, headers=SUPERUSER1),
        Step('authenticated record that match the collection delete rule', 'DELETE', '/api/collections/users/records/4q1xlclmfloku33', auth=None, headers=USER1),
        Step('@request :isset (rule failure check)', 'DELETE', '/api/collections/demo5/records/la4y2w4o98acwuj', auth=None),
        Step('@request :isset (rule pass check)', 'DELETE', '/api/collections/demo5/records/la4y2w4o98acwuj?test=1', auth=None),
        Step('trying to delete a record while being part of a non-cascade required relation', 'DELETE', '/api/collections/demo3/records/7nwo8tuiatetxdm', auth=None, headers=SUPERUSER1),
        Step('delete a record with non-cascade references', 'DELETE', '/api/collections/demo3/records/1tmknxy2868d869', auth=None, headers=SUPERUSER1),
        Step('delete a record with cascade references', 'DELETE', '/api/collections/users/records/oap640cot4yru2s', auth=None, headers=SUPERUSER1),
    ],
    'TestCollectionsImport': [
        Step('unauthorized', 'PUT', '/api/collections/import', auth=None),
        Step('authorized as regular user', 'PUT', '/api/collections/import', auth=None, headers=USER1),
        Step('authorized as superuser + empty collections', 'PUT', '/api/collections/import', raw=b'{"collections":[]}', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + collections validator failure', 'PUT', '/api/collections/import', raw=b'{\n\t\t\t\t"collections":[\n\t\t\t\t\t{"name": "import1"},\n\t\t\t\t\t{\n\t\t\t\t\t\t"name": "import2",\n\t\t\t\t\t\t"fields": [\n\t\t\t\t\t\t\t{\n\t\t\t\t\t\t\t  "id": "koih1lqx",\n\t\t\t\t\t\t\t  "name": "expand",\n\t\t\t\t\t\t\t  "type": "text"\n\t\t\t\t\t\t\t}\n\t\t\t\t\t\t]\n\t\t\t\t\t}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + successful collections create', 'PUT', '/api/collections/import', raw=b'{\n\t\t\t\t"collections":[\n\t\t\t\t\t{\n\t\t\t\t\t\t"name": "import1",\n\t\t\t\t\t\t"fields": [\n\t\t\t\t\t\t\t{\n\t\t\t\t\t\t\t  "id": "koih1lqx",\n\t\t\t\t\t\t\t  "name": "test",\n\t\t\t\t\t\t\t  "type": "text"\n\t\t\t\t\t\t\t}\n\t\t\t\t\t\t]\n\t\t\t\t\t},\n\t\t\t\t\t{\n\t\t\t\t\t\t"name": "import2",\n\t\t\t\t\t\t"fields": [\n\t\t\t\t\t\t\t{\n\t\t\t\t\t\t\t  "id": "koih1lqx",\n\t\t\t\t\t\t\t  "name": "test",\n\t\t\t\t\t\t\t  "type": "text"\n\t\t\t\t\t\t\t}\n\t\t\t\t\t\t],\n\t\t\t\t\t\t"indexes": [\n\t\t\t\t\t\t\t"create index idx_test on import2 (test)"\n\t\t\t\t\t\t]\n\t\t\t\t\t},\n\t\t\t\t\t{\n\t\t\t\t\t\t"name": "auth_without_fields",\n\t\t\t\t\t\t"type": "auth"\n\t\t\t\t\t}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + create/update/delete', 'PUT', '/api/collections/import', raw=b'{\n\t\t\t\t"deleteMissing": true,\n\t\t\t\t"collections":[\n\t\t\t\t\t{"name": "test123"},\n\t\t\t\t\t{\n\t\t\t\t\t\t"id":"wsmn24bux7wo113",\n\t\t\t\t\t\t"name":"demo1",\n\t\t\t\t\t\t"fields":[\n\t\t\t\t\t\t\t{\n\t\t\t\t\t\t\t\t"id":"_2hlxbmp",\n\t\t\t\t\t\t\t\t"name":"title",\n\t\t\t\t\t\t\t\t"type":"text",\n\t\t\t\t\t\t\t\t"required":true\n\t\t\t\t\t\t\t}\n\t\t\t\t\t\t],\n\t\t\t\t\t\t"indexes": []\n\t\t\t\t\t}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
    ],
}

COLLECTION_PORTS: dict[str, list[Step]] = {
    'TestBatchRequest': [
        snapshot(*BATCH_TABLES),
        Step('unknown batch request action', 'POST', '/api/batch', raw=b'{\n\t\t\t\t"requests": [\n\t\t\t\t\t{"method":"GET", "url":"/api/health"}\n\t\t\t\t]\n\t\t\t}', auth=None),
        restore(*BATCH_TABLES),
        Step('base 2 successful and 1 failed (public collection)', 'POST', '/api/batch', raw=b'{\n\t\t\t\t"requests": [\n                    {"method":"POST", "url":"/api/collections/demo2/records", "body": {"title": "batch1"}},\n\t\t\t\t\t{"method":"POST", "url":"/api/collections/demo2/records", "body": {"title": "batch2"}},\n\t\t\t\t\t{"method":"POST", "url":"/api/collections/demo2/records", "body": {"title": ""}}\n\t\t\t\t]\n\t\t\t}', auth=None),
        restore(*BATCH_TABLES),
        Step('base 4 successful (public collection)', 'POST', '/api/batch', raw=b'{\n\t\t\t\t"requests": [\n\t\t\t\t\t{"method":"POST", "url":"/api/collections/demo2/records", "body": {"title": "batch1"}},\n\t\t\t\t\t{"method":"POST", "url":"/api/collections/demo2/records", "body": {"title": "batch2"}},\n\t\t\t\t\t{"method":"PUT", "url":"/api/collections/demo2/records", "body": {"title": "batch3"}},\n\t\t\t\t\t{"method":"PUT", "url":"/api/collections/demo2/records?fields=*,id:excerpt(4,true)", "body": {"id":"achvryl401bhse3","title": "batch4"}}\n\t\t\t\t]\n\t\t\t}', auth=None),
        restore(*BATCH_TABLES),
        Step('mixed create/update/delete (non-superuser rule failure)', 'POST', '/api/batch', raw=b'{\n\t\t\t\t"requests": [\n\t\t\t\t\t{"method":"POST", "url":"/api/collections/demo2/records", "body": {"title": "batch_create"}},\n\t\t\t\t\t{"method":"DELETE", "url":"/api/collections/demo2/records/achvryl401bhse3"},\n\t\t\t\t\t{"method":"PATCH", "url":"/api/collections/demo3/records/1tmknxy2868d869", "body": {"title": "batch_update"}}\n\t\t\t\t]\n\t\t\t}', auth=None),
        restore(*BATCH_TABLES),
        Step('mixed create/update/delete (superuser rule failure)', 'POST', '/api/batch', raw=b'{\n\t\t\t\t"requests": [\n\t\t\t\t\t{"method":"DELETE", "url":"/api/collections/demo2/records/achvryl401bhse3", "headers": {"Authorization": "ignored"}},\n\t\t\t\t\t{"method":"PATCH", "url":"/api/collections/demo3/records/1tmknxy2868d869", "body": {"title": "batch_update"}, "headers": {"Authorization": "ignored"}},\n\t\t\t\t\t{"method":"POST", "url":"/api/collections/_superusers/records", "body": {"email":"test_batch@example.com","password":"1234567890"}}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=CLIENT1),
        restore(*BATCH_TABLES),
        Step('mixed create/update/delete (rules success)', 'POST', '/api/batch', raw=b'{\n\t\t\t\t"requests": [\n\t\t\t\t\t{"method":"POST", "url":"/api/collections/demo2/records", "body": {"title": "batch_create"}, "headers": {"Authorization": "ignored"}},\n\t\t\t\t\t{"method":"DELETE", "url":"/api/collections/demo2/records/achvryl401bhse3", "headers": {"Authorization": "ignored"}},\n\t\t\t\t\t{"method":"PATCH", "url":"/api/collections/demo3/records/1tmknxy2868d869", "body": {"title": "batch_update"}, "headers": {"Authorization": "ignored"}}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=CLIENT1),
        restore(*BATCH_TABLES),
        Step('mixed create/update/delete (superuser auth)', 'POST', '/api/batch', raw=b'{\n\t\t\t\t"requests": [\n\t\t\t\t\t{"method":"POST", "url":"/api/collections/demo2/records", "body": {"title": "batch_create"}},\n\t\t\t\t\t{"method":"DELETE", "url":"/api/collections/demo2/records/achvryl401bhse3"},\n\t\t\t\t\t{"method":"PATCH", "url":"/api/collections/demo3/records/1tmknxy2868d869", "body": {"title": "batch_update"}}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        restore(*BATCH_TABLES),
        Step('cascade delete/update', 'POST', '/api/batch', raw=b'{\n\t\t\t\t"requests": [\n\t\t\t\t\t{"method":"DELETE", "url":"/api/collections/demo3/records/1tmknxy2868d869"},\n\t\t\t\t\t{"method":"DELETE", "url":"/api/collections/demo3/records/mk5fmymtx4wsprk"}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        restore(*BATCH_TABLES),
        Step('create/update with expand query params', 'POST', '/api/batch', raw=b'{\n\t\t\t\t"requests": [\n\t\t\t\t\t{"method":"POST", "url":"/api/collections/demo5/records?expand=rel_one", "body": {"total": 9, "rel_one":"qzaqccwrmva4o1n"}},\n\t\t\t\t\t{"method":"PATCH", "url":"/api/collections/demo5/records/qjeql998mtp1azp?expand=rel_many", "body": {"total": 10}}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        restore(*BATCH_TABLES, drop=True),
    ],
    'TestCollectionsList': [
        Step('unauthorized', 'GET', '/api/collections', auth=None),
        Step('authorized as regular user', 'GET', '/api/collections', auth=None, headers=USER1),
        Step('authorized as superuser', 'GET', '/api/collections', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + paging and sorting', 'GET', '/api/collections?page=2&perPage=2&sort=-created', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + invalid filter', 'GET', "/api/collections?filter=invalidfield~'demo2'", auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + valid filter', 'GET', "/api/collections?filter=name~'demo'", auth=None, headers=SUPERUSER1),
    ],
    'TestCollectionOAuth2Providers': [
        Step('unauthorized', 'GET', '/api/collections/meta/oauth2-providers', auth=None),
        Step('authorized as regular user', 'GET', '/api/collections/meta/oauth2-providers', auth=None, headers=USER1),
        Step('authorized as superuser', 'GET', '/api/collections/meta/oauth2-providers', auth=None, headers=SUPERUSER1),
    ],
    'TestCollectionView': [
        Step('unauthorized', 'GET', '/api/collections/demo1', auth=None),
        Step('authorized as regular user', 'GET', '/api/collections/demo1', auth=None, headers=USER1),
        Step('authorized as superuser + nonexisting collection identifier', 'GET', '/api/collections/missing', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + using the collection name', 'GET', '/api/collections/demo1', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + using the collection id', 'GET', '/api/collections/wsmn24bux7wo113', auth=None, headers=SUPERUSER1),
    ],
    'TestCollectionScaffolds': [
        Step('unauthorized', 'GET', '/api/collections/meta/scaffolds', auth=None),
        Step('authorized as regular user', 'GET', '/api/collections/meta/scaffolds', auth=None, headers=USER1),
        Step('authorized as superuser', 'GET', '/api/collections/meta/scaffolds', auth=None, headers=SUPERUSER1, random_key_order=True),
    ],
    'TestCollectionTestView': [
        Step('unauthorized', 'POST', '/api/collections/meta/dry-run-view', raw=b'{"query":"select 1 as id"}', auth=None),
        Step('authorized as regular user', 'POST', '/api/collections/meta/dry-run-view', raw=b'{"query":"select 1 as id"}', auth=None, headers=USER1),
        Step('authorized as superuser', 'POST', '/api/collections/meta/dry-run-view', raw=b'{"query":"select 1 as id"}', auth=None, headers=SUPERUSER1),
        Step('empty query', 'POST', '/api/collections/meta/dry-run-view', raw=b'{"query":""}', auth=None, headers=SUPERUSER1),
        Step('missing ids sample', 'POST', '/api/collections/meta/dry-run-view', raw=b'{"query":"(select 1 as id union select \'\' as id)"}', auth=None, headers=SUPERUSER1),
        Step('duplicated ids sample', 'POST', '/api/collections/meta/dry-run-view', raw=b'{"query":"(select 1 as id union all select 1 as id)"}', auth=None, headers=SUPERUSER1),
        Step('write query', 'POST', '/api/collections/meta/dry-run-view', raw=b'{"query":"CREATE TABLE t1(x INT)"}', auth=None, headers=SUPERUSER1),
        *DRY_RUN_COMPUTED,
    ],
    'TestCollectionCreate': [
        Step('unauthorized', 'POST', '/api/collections', auth=None),
        DROP_NEW,
        Step('authorized as regular user', 'POST', '/api/collections', raw=b'{"name":"new","type":"base","fields":[{"type":"text","name":"test"}]}', auth=None, headers=USER1),
        DROP_NEW,
        Step('authorized as superuser + empty data', 'POST', '/api/collections', raw=b'', auth=None, headers=SUPERUSER1),
        DROP_NEW,
        Step('authorized as superuser + invalid data (eg. existing name)', 'POST', '/api/collections', raw=b'{"name":"demo1","type":"base","fields":[{"type":"text","name":""}]}', auth=None, headers=SUPERUSER1),
        DROP_NEW,
        Step('authorized as superuser + valid data', 'POST', '/api/collections', raw=b'{"name":"new","type":"base","fields":[{"type":"text","id":"12345789","name":"test"}]}', auth=None, headers=SUPERUSER1),
        DROP_NEW,
        Step('creating auth collection (default settings merge test)', 'POST', '/api/collections', raw=b'{\n\t\t\t\t"name":"new",\n\t\t\t\t"type":"auth",\n\t\t\t\t"emailChangeToken":{"duration":123},\n\t\t\t\t"fields":[\n\t\t\t\t\t{"type":"text","id":"12345789","name":"test"},\n\t\t\t\t\t{"type":"text","name":"tokenKey","system":true,"required":false,"min":10}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        DROP_NEW,
        Step('creating base collection with reserved auth fields', 'POST', '/api/collections', raw=b'{\n\t\t\t\t"name":"new",\n\t\t\t\t"type":"base",\n\t\t\t\t"fields":[\n\t\t\t\t\t{"type":"text","name":"email"},\n\t\t\t\t\t{"type":"text","name":"username"},\n\t\t\t\t\t{"type":"text","name":"verified"},\n\t\t\t\t\t{"type":"text","name":"emailVisibility"},\n\t\t\t\t\t{"type":"text","name":"lastResetSentAt"},\n\t\t\t\t\t{"type":"text","name":"lastVerificationSentAt"},\n\t\t\t\t\t{"type":"text","name":"tokenKey"},\n\t\t\t\t\t{"type":"text","name":"passwordHash"},\n\t\t\t\t\t{"type":"text","name":"password"},\n\t\t\t\t\t{"type":"text","name":"passwordConfirm"},\n\t\t\t\t\t{"type":"text","name":"oldPassword"}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        DROP_NEW,
        Step('trying to create base collection with reserved system fields', 'POST', '/api/collections', raw=b'{\n\t\t\t\t"name":"new",\n\t\t\t\t"type":"base",\n\t\t\t\t"fields":[\n\t\t\t\t\t{"type":"text","name":"id"},\n\t\t\t\t\t{"type":"text","name":"expand"},\n\t\t\t\t\t{"type":"text","name":"collectionId"},\n\t\t\t\t\t{"type":"text","name":"collectionName"}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        DROP_NEW,
        Step('trying to create auth collection with reserved auth fields', 'POST', '/api/collections', raw=b'{\n\t\t\t\t"name":"new",\n\t\t\t\t"type":"auth",\n\t\t\t\t"fields":[\n\t\t\t\t\t{"type":"text","name":"oldPassword"},\n\t\t\t\t\t{"type":"text","name":"passwordConfirm"}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        DROP_NEW,
        Step('trying to create view collection with invalid options', 'POST', '/api/collections', raw=b'{\n\t\t\t\t"name":"new",\n\t\t\t\t"type":"view",\n\t\t\t\t"fields":[{"type":"text","id":"12345789","name":"ignored!@#$"}],\n\t\t\t\t"viewQuery":"select \'123\' as abc"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        DROP_NEW,
        Step('creating base collection with invalid indexes', 'POST', '/api/collections', raw=b'{\n\t\t\t\t"name":"new",\n\t\t\t\t"type":"base",\n\t\t\t\t"fields":[\n\t\t\t\t\t{"type":"text","name":"test"}\n\t\t\t\t],\n\t\t\t\t"indexes": [\n\t\t\t\t\t"create index idx_test1 on new (test)",\n\t\t\t\t\t"create index idx_test2 on new (missing)"\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        DROP_NEW,
        Step('creating base collection with 2 indexes using the same name', 'POST', '/api/collections', raw=b'{\n\t\t\t\t"name":"new",\n\t\t\t\t"type":"base",\n\t\t\t\t"indexes": [\n\t\t\t\t\t"create index duplicate_idx on new (created)",\n\t\t\t\t\t"create index duplicate_idx on new (updated)"\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        DROP_NEW,
        Step('creating base collection with valid indexes (+ random table name)', 'POST', '/api/collections', raw=b'{\n\t\t\t\t"name":"new",\n\t\t\t\t"type":"base",\n\t\t\t\t"fields":[\n\t\t\t\t\t{"type":"text","name":"test"}\n\t\t\t\t],\n\t\t\t\t"indexes": [\n\t\t\t\t\t"create index idx_test1 on new (test)",\n\t\t\t\t\t"create index idx_test2 on anything (id, test)"\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        DROP_NEW,
    ],
    'TestCollectionUpdate': [
        Step('unauthorized', 'PATCH', '/api/collections/demo1', auth=None),
        Step('authorized as regular user', 'PATCH', '/api/collections/demo1', auth=None, headers=USER1),
        Step('authorized as superuser + missing collection', 'PATCH', '/api/collections/missing', raw=b'{}', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + empty body', 'PATCH', '/api/collections/demo1', raw=b'{}', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + invalid data (eg. existing name)', 'PATCH', '/api/collections/demo1', raw=b'{\n\t\t\t\t"name":"demo2",\n\t\t\t\t"type":"auth"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + valid data', 'PATCH', '/api/collections/demo1', raw=b'{"name":"new"}', auth=None, headers=SUPERUSER1),
        DEMO1_BACK,
        Step('trying to update collection with reserved fields', 'PATCH', '/api/collections/demo1', raw=b'{\n\t\t\t\t"name":"new",\n\t\t\t\t"fields":[\n\t\t\t\t\t{"type":"text","name":"id","id":"_pbf_text_id_"},\n\t\t\t\t\t{"type":"text","name":"created"},\n\t\t\t\t\t{"type":"text","name":"updated"},\n\t\t\t\t\t{"type":"text","name":"expand"},\n\t\t\t\t\t{"type":"text","name":"collectionId"},\n\t\t\t\t\t{"type":"text","name":"collectionName"}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('trying to update collection with changed/removed system fields', 'PATCH', '/api/collections/demo1', raw=b'{\n\t\t\t\t"name":"new",\n\t\t\t\t"fields":[\n\t\t\t\t\t{"type":"text","name":"created"}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('trying to update auth collection with invalid options', 'PATCH', '/api/collections/users', raw=b'{\n\t\t\t\t"passwordAuth":{"identityFields": ["missing"]}\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('trying to update view collection with invalid options', 'PATCH', '/api/collections/view1', raw=b'{\n\t\t\t\t"fields":[{"type":"text","id":"12345789","name":"ignored!@#$"}],\n\t\t\t\t"viewQuery":"invalid"\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('updating base collection with invalid indexes', 'PATCH', '/api/collections/demo2', raw=b'{\n\t\t\t\t"indexes": [\n\t\t\t\t\t"create unique idx_test1 on demo1 (text)",\n\t\t\t\t\t"create index idx_test2 on demo2 (id, title)"\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('updating base collection with 2 indexes using the same name', 'PATCH', '/api/collections/demo2', raw=b'{\n\t\t\t\t"indexes": [\n\t\t\t\t\t"create index duplicate_idx on new (created)",\n\t\t\t\t\t"create index duplicate_idx on new (updated)"\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('updating base collection with valid indexes (+ random table name)', 'PATCH', '/api/collections/demo2', raw=b'{\n\t\t\t\t"indexes": [\n\t\t\t\t\t"create unique index idx_test1 on demo2 (title)",\n\t\t\t\t\t"create index idx_test2 on anything (active)"\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
    ],
    'TestCollectionCreate and TestCollectionUpdate (set-ups, computed bodies)': COLLECTION_COMPUTED,
    'TestCollectionTruncate': [
        Step('unauthorized', 'DELETE', '/api/collections/demo5/truncate', auth=None),
        Step('authorized as regular user', 'DELETE', '/api/collections/demo5/truncate', auth=None, headers=USER1),
        Step('authorized as superuser', 'DELETE', '/api/collections/demo5/truncate', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser but collection with required cascade delete references', 'DELETE', '/api/collections/demo3/truncate', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser trying to truncate view collection', 'DELETE', '/api/collections/view2/truncate', auth=None, headers=SUPERUSER1),
    ],
    'TestCollectionDelete': [
        Step('unauthorized', 'DELETE', '/api/collections/demo1', auth=None),
        Step('authorized as regular user', 'DELETE', '/api/collections/demo1', auth=None, headers=USER1),
        Step('authorized as superuser + nonexisting collection identifier', 'DELETE', '/api/collections/missing', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + using the collection name', 'DELETE', '/api/collections/demo5', auth=None, headers=SUPERUSER1),
        Step("(put back) demo5", "POST", "/api/collections?fields=id,name", fixture_collection("demo5")),
        Step('authorized as superuser + using the collection id', 'DELETE', '/api/collections/9n89pl5vkct6330', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + trying to delete a referenced collection', 'DELETE', '/api/collections/demo2', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + deleting a view', 'DELETE', '/api/collections/view2', auth=None, headers=SUPERUSER1),
    ],
    'TestCollectionsImport': [
        Step('unauthorized', 'PUT', '/api/collections/import', auth=None),
        Step('authorized as regular user', 'PUT', '/api/collections/import', auth=None, headers=USER1),
        Step('authorized as superuser + empty collections', 'PUT', '/api/collections/import', raw=b'{"collections":[]}', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + collections validator failure', 'PUT', '/api/collections/import', raw=b'{\n\t\t\t\t"collections":[\n\t\t\t\t\t{"name": "import1"},\n\t\t\t\t\t{\n\t\t\t\t\t\t"name": "import2",\n\t\t\t\t\t\t"fields": [\n\t\t\t\t\t\t\t{\n\t\t\t\t\t\t\t  "id": "koih1lqx",\n\t\t\t\t\t\t\t  "name": "expand",\n\t\t\t\t\t\t\t  "type": "text"\n\t\t\t\t\t\t\t}\n\t\t\t\t\t\t]\n\t\t\t\t\t}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + successful collections create', 'PUT', '/api/collections/import', raw=b'{\n\t\t\t\t"collections":[\n\t\t\t\t\t{\n\t\t\t\t\t\t"name": "import1",\n\t\t\t\t\t\t"fields": [\n\t\t\t\t\t\t\t{\n\t\t\t\t\t\t\t  "id": "koih1lqx",\n\t\t\t\t\t\t\t  "name": "test",\n\t\t\t\t\t\t\t  "type": "text"\n\t\t\t\t\t\t\t}\n\t\t\t\t\t\t]\n\t\t\t\t\t},\n\t\t\t\t\t{\n\t\t\t\t\t\t"name": "import2",\n\t\t\t\t\t\t"fields": [\n\t\t\t\t\t\t\t{\n\t\t\t\t\t\t\t  "id": "koih1lqx",\n\t\t\t\t\t\t\t  "name": "test",\n\t\t\t\t\t\t\t  "type": "text"\n\t\t\t\t\t\t\t}\n\t\t\t\t\t\t],\n\t\t\t\t\t\t"indexes": [\n\t\t\t\t\t\t\t"create index idx_test on import2 (test)"\n\t\t\t\t\t\t]\n\t\t\t\t\t},\n\t\t\t\t\t{\n\t\t\t\t\t\t"name": "auth_without_fields",\n\t\t\t\t\t\t"type": "auth"\n\t\t\t\t\t}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
        Step('authorized as superuser + create/update/delete', 'PUT', '/api/collections/import', raw=b'{\n\t\t\t\t"deleteMissing": true,\n\t\t\t\t"collections":[\n\t\t\t\t\t{"name": "test123"},\n\t\t\t\t\t{\n\t\t\t\t\t\t"id":"wsmn24bux7wo113",\n\t\t\t\t\t\t"name":"demo1",\n\t\t\t\t\t\t"fields":[\n\t\t\t\t\t\t\t{\n\t\t\t\t\t\t\t\t"id":"_2hlxbmp",\n\t\t\t\t\t\t\t\t"name":"title",\n\t\t\t\t\t\t\t\t"type":"text",\n\t\t\t\t\t\t\t\t"required":true\n\t\t\t\t\t\t\t}\n\t\t\t\t\t\t],\n\t\t\t\t\t\t"indexes": []\n\t\t\t\t\t}\n\t\t\t\t]\n\t\t\t}', auth=None, headers=SUPERUSER1),
    ],
}
