"""Differential scenarios for record bodies sent as forms (issue 15): ``multipart/form-data`` and
``application/x-www-form-urlencoded`` on record create/update and in batch items, bound as PocketBase binds
them (values inferred, repeated keys, ``@jsonPayload``, the URL's query values, ``field+``/``field-``
modifiers, malformed bodies). Run by ``test_differential.py``."""

from __future__ import annotations

import json

from differential import Step
from scenarios_batch import BATCH, MULTIPART, batch, multipart

G = None  # a guest step
DEMO1 = "/api/collections/demo1/records"
DEMO5 = "/api/collections/demo5/records"
URLENCODED = {"content-type": "application/x-www-form-urlencoded"}
SHOWN = "fields=text,bool,number,json,select_many,email,url,rel_many"

FORM_SCENARIOS: dict[str, list[Step]] = {
    "forms: record create": [
        Step("typed values inferred", "POST", f"{DEMO1}?{SHOWN}", raw=multipart([
            ("text", "hello"), ("bool", "true"), ("number", "0012"), ("json", '{"a":1}'), ("email", "x@example.com"),
            ("select_many", "optionA"), ("select_many", "optionB"), ("rel_many", "al1h9ijdeojtsjy"),
            ("rel_many", "84nmscqy84lsi1t")]), headers=MULTIPART),
        Step("numbers only in their shortest form", "POST", f"{DEMO1}?fields=text,number,json", raw=multipart([
            ("text", "12"), ("number", "12.50"), ("json", "12")]), headers=MULTIPART),
        Step("odd numbers", "POST", f"{DEMO1}?fields=text,number,json", raw=multipart([
            ("text", "-0"), ("number", "-0"), ("json", "-0")]), headers=MULTIPART),
        *[Step(f"json {raw!r}", "POST", f"{DEMO1}?fields=json", raw=multipart([("json", raw)]), headers=MULTIPART)
          for raw in ("1e3", "1.50", "-.5", ".5", "1.5", "-12", "00", "9007199254740993", "1--2", "false", "null", "")],
        Step("repeated text", "POST", f"{DEMO1}?fields=text", raw=multipart([("text", "a"), ("text", "b")]),
             headers=MULTIPART),
        Step("repeated json", "POST", f"{DEMO1}?fields=json", raw=multipart([
            ("json", "a"), ("json", "2"), ("json", "true")]), headers=MULTIPART),
        Step("@jsonPayload over the plain values", "POST", f"{DEMO1}?fields=text,number,json,bool", raw=multipart([
            ("@jsonPayload", '{"text":"from payload","number":5,"json":{"b":[1,2]}}'), ("text", "plain"),
            ("bool", "1")]), headers=MULTIPART),
        Step("two payloads merged", "POST", f"{DEMO1}?fields=text,number", raw=multipart([
            ("@jsonPayload", '{"text":"a"}'), ("@jsonPayload", '{"number":4}')]), headers=MULTIPART),
        Step("null payload", "POST", f"{DEMO1}?fields=text", raw=multipart([("@jsonPayload", "null"),
                                                                              ("text", "n")]), headers=MULTIPART),
        *[Step(f"payload {raw!r}", "POST", f"{DEMO1}?fields=text", raw=multipart([("@jsonPayload", raw)]),
               headers=MULTIPART)
          for raw in ("[1,2]", "not json", '{"text":"a","text":"b"}', '{"text":"a"} trailing', '{"json":1e400}',
                      '"text"', "")],
        Step("invalid UTF-8 in a value", "POST", "/api/collections/demo2/records?fields=title", headers=MULTIPART,
             raw=multipart([("title", "ab")]).replace(b"ab", b"\xff\xfeab\xe9")),
        Step("invalid UTF-8 in a payload", "POST", "/api/collections/demo2/records?fields=title", headers=MULTIPART,
             raw=multipart([("@jsonPayload", '{"title":"ab"}')]).replace(b"ab", b"\xff\xfeab")),
        Step("invalid UTF-8 urlencoded", "POST", "/api/collections/demo2/records?fields=title", headers=URLENCODED,
             raw=b"title=%FF%FEab&%FF=1"),
        Step("the query's values are body values", "POST", f"{DEMO1}?fields=text,bool&text=fromquery",
             raw=multipart([("bool", "true")]), headers=MULTIPART),
        Step("the body's after the query's", "POST", f"{DEMO1}?fields=text&text=fromquery",
             raw=multipart([("text", "frombody")]), headers=MULTIPART),
        Step("a query Go refuses", "POST", f"{DEMO1}?fields=text;x=1", raw=multipart([("text", "semi")]),
             headers=MULTIPART),
        Step("a bad escape in the query", "POST", f"{DEMO1}?fields=text&x=%zz", raw=multipart([("text", "e")]),
             headers=MULTIPART),
        Step("urlencoded", "POST", f"{DEMO1}?fields=text,number,select_many", headers=URLENCODED,
             raw=b"text=url+enc%21&number=3&select_many=optionA&select_many=optionC"),
        Step("urlencoded, body before query", "POST", f"{DEMO1}?fields=text&text=q", raw=b"text=b",
             headers=URLENCODED),
        Step("urlencoded, bad escape", "POST", f"{DEMO1}?fields=text", raw=b"text=%zz", headers=URLENCODED),
        Step("an empty form binds nothing", "POST", f"{DEMO1}?fields=text&text=q", raw=b"", headers=MULTIPART),
        Step("an empty form, no file fields", "POST", "/api/collections/demo2/records?fields=title&title=q", raw=b"",
             headers=MULTIPART),
        Step("an empty urlencoded form", "POST", f"{DEMO1}?fields=text&text=q", raw=b"", headers=URLENCODED),
        Step("an empty form, guest to a superusers-only collection", "POST", f"{DEMO1}?fields=text", raw=b"",
             headers=MULTIPART, auth=G),
        Step("a closing boundary only", "POST", f"{DEMO1}?fields=text", raw=b"--" + MULTIPART["content-type"].split(
            "boundary=")[1].encode() + b"--\r\n", headers=MULTIPART),
        Step("garbage", "POST", f"{DEMO1}?fields=text", raw=b"garbage", headers=MULTIPART),
        Step("no boundary", "POST", f"{DEMO1}?fields=text", raw=b"abc",
             headers={"content-type": "multipart/form-data"}),
        Step("a part never ends", "POST", f"{DEMO1}?fields=text", raw=multipart([("text", "x")])[:-30],
             headers=MULTIPART),
        Step("a file for no field is ignored", "POST", f"{DEMO1}?fields=text", raw=multipart(
            [("text", "other file")], [("nofield", "a.txt", b"hello")]), headers=MULTIPART),
        Step("create rule on the inferred body", "POST", f"{DEMO5}?fields=total", raw=multipart([("total", "3")]),
             headers=MULTIPART, auth=G),
        Step("create rule, not matched", "POST", f"{DEMO5}?fields=total", raw=multipart([("total", "3.0")]),
             headers=MULTIPART, auth=G),
        Step("superuser only collection, guest", "POST", f"{DEMO1}?fields=collectionName", raw=multipart([("text", "g")]),
             headers=MULTIPART, auth=G),
        # Uploads a create rule refuses before the turn (pbfast writes nothing for them: early_rules.py).
        Step("superuser only collection, a guest's upload", "POST", f"{DEMO1}?fields=text", headers=MULTIPART, auth=G,
             raw=multipart([("text", "g")], [("file_one", "one.txt", b"one")])),
        Step("create rule needs an auth record", "PATCH", "/api/collections/demo1?fields=createRule",
             {"createRule": "@request.auth.id != ''"}),
        Step("a guest's upload the rule refuses", "POST", f"{DEMO1}?fields=text", headers=MULTIPART, auth=G,
             raw=multipart([("text", "g")], [("file_one", "one.txt", b"one")])),
        Step("create rule of a header and the method", "PATCH", "/api/collections/demo1?fields=createRule",
             {"createRule": "@request.headers.x_key = 'k1' && @request.method = 'POST'"}),
        Step("an upload without the header", "POST", f"{DEMO1}?fields=text", headers=MULTIPART, auth=G,
             raw=multipart([("text", "g")], [("file_one", "one.txt", b"one")])),
        Step("an upload with the header", "POST", f"{DEMO1}?fields=text", headers={**MULTIPART, "x-key": "k1"},
             auth=G, raw=multipart([("text", "g")], [("file_one", "one.txt", b"one")])),
        Step("create rule back", "PATCH", "/api/collections/demo1?fields=createRule", {"createRule": None}),
    ],
    "forms: record update and modifiers": [
        Step("base record", "POST", f"{DEMO1}?{SHOWN}", {"id": "formsbase000001", "text": "base", "number": 10,
                                                          "select_many": ["optionA"]}),
        Step("number+ and select_many+", "PATCH", f"{DEMO1}/formsbase000001?{SHOWN}", raw=multipart([
            ("number+", "5"), ("select_many+", "optionB"), ("select_many+", "optionC")]), headers=MULTIPART),
        Step("+select_many and number-", "PATCH", f"{DEMO1}/formsbase000001?{SHOWN}", raw=multipart([
            ("+select_many", "optionA"), ("number-", "2.5")]), headers=MULTIPART),
        Step("select_many-", "PATCH", f"{DEMO1}/formsbase000001?{SHOWN}", raw=multipart([
            ("select_many-", "optionB")]), headers=MULTIPART),
        Step("modifier in the payload", "PATCH", f"{DEMO1}/formsbase000001?{SHOWN}", raw=multipart([
            ("@jsonPayload", json.dumps({"number+": 1, "select_many-": ["optionA"]}))]), headers=MULTIPART),
        Step("urlencoded update", "PATCH", f"{DEMO1}/formsbase000001?{SHOWN}", raw=b"text=patched&bool=true",
             headers=URLENCODED),
        Step("an empty form update", "PATCH", f"{DEMO1}/formsbase000001?{SHOWN}", raw=b"", headers=MULTIPART),
        Step("an empty form update of a missing record", "PATCH", f"{DEMO1}/missing?{SHOWN}", raw=b"",
             headers=MULTIPART),
        Step("update a missing record", "PATCH", f"{DEMO1}/missing?{SHOWN}", raw=multipart([("text", "x")]),
             headers=MULTIPART),
    ],
    "forms: other routes": [
        Step("password auth as a multipart form", "POST", "/api/collections/clients/auth-with-password?fields=record.email",
             raw=multipart([("identity", "test@example.com"), ("password", "1234567890")]), headers=MULTIPART, auth=G),
        Step("password auth urlencoded", "POST", "/api/collections/clients/auth-with-password?fields=record.email",
             raw=b"identity=test%40example.com&password=1234567890", headers=URLENCODED, auth=G),
        Step("password auth, @jsonPayload", "POST", "/api/collections/clients/auth-with-password?fields=record.email",
             raw=multipart([("@jsonPayload", '{"identity":"test@example.com","password":"1234567890"}')]),
             headers=MULTIPART, auth=G),
        Step("password auth, names are exact", "POST", "/api/collections/clients/auth-with-password?fields=record.email",
             raw=multipart([("@jsonPayload", '{"IDENTITY":"test@example.com","Password":"1234567890"}')]),
             headers=MULTIPART, auth=G),
        Step("password auth, a number", "POST", "/api/collections/clients/auth-with-password?fields=record.email",
             raw=multipart([("@jsonPayload", '{"identity":"test@example.com","password":1234567890}')]),
             headers=MULTIPART, auth=G),
        Step("password auth, the first value", "POST", "/api/collections/clients/auth-with-password?fields=record.email",
             raw=multipart([("identity", "test@example.com"), ("password", "1234567890"), ("password", "x")]),
             headers=MULTIPART, auth=G),
        Step("password auth, the payload over the values", "POST",
             "/api/collections/clients/auth-with-password?fields=record.email", headers=MULTIPART, auth=G,
             raw=multipart([("identity", "test@example.com"), ("password", "x"),
                            ("@jsonPayload", '{"password":"1234567890"}')])),
        Step("password auth, identity in the query", "POST",
             "/api/collections/clients/auth-with-password?fields=record.email&identity=test@example.com",
             raw=multipart([("password", "1234567890")]), headers=MULTIPART, auth=G),
        Step("password auth, a null payload", "POST", "/api/collections/clients/auth-with-password?fields=record.email",
             raw=multipart([("@jsonPayload", "null"), ("identity", "test@example.com"), ("password", "1234567890")]),
             headers=MULTIPART, auth=G),
        Step("password auth, duplicate names", "POST", "/api/collections/clients/auth-with-password",
             raw=multipart([("@jsonPayload", '{"identity":"a","password":"1234567890","identity":"x"}')]),
             headers=MULTIPART, auth=G),
        Step("password auth, garbage", "POST", "/api/collections/clients/auth-with-password", raw=b"garbage",
             headers=MULTIPART, auth=G),
        Step("password auth, empty", "POST", "/api/collections/clients/auth-with-password", raw=b"",
             headers=MULTIPART, auth=G),
        Step("password auth with expand", "POST",
             "/api/collections/clients/auth-with-password?fields=record.email,record.expand&expand=missing",
             raw=b"identity=test%40example.com&password=1234567890", headers=URLENCODED, auth=G),
    ],
    "forms: batch items": [
        Step("an item's query values are body values", "POST", BATCH, batch(
            {"method": "POST", "url": "/api/collections/demo2/records?title=fromquery&fields=title", "body": {}},
            {"method": "POST", "url": "/api/collections/demo2/records?title=fromquery&fields=title",
             "body": {"title": "body"}})),
        Step("an upsert's id is the body's, not the query's", "POST", BATCH, batch(
            {"method": "PUT", "url": "/api/collections/demo2/records?id=achvryl401bhse3&fields=title",
             "body": {"title": "upsert by query id"}})),
        Step("multipart batch payload with trailing text", "POST", BATCH, raw=multipart([
            ("@jsonPayload", json.dumps(batch({"method": "POST", "url": "/api/collections/demo2/records",
                                               "body": {"title": "t"}})) + " trailing")]), headers=MULTIPART),
    ],
}
