"""Differential scenarios for ``POST /api/batch`` (issue 15): PocketBase's ``apis/batch_test.go`` cases that
run on the fixture as it is (its settings have batch on: maxRequests 50, timeout 5), the bodies the SDKs
send, and bodies PocketBase refuses. The cases that need other settings are in ``test_differential.py``
(``BATCH_SETTINGS_SCENARIOS``). Run by ``test_differential.py``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from differential import Step
from fixture_data import CLIENT1, SUPERUSER1

G = None  # a guest step
BATCH = "/api/batch"
DEMO2 = "/api/collections/demo2/records"
DEMO3 = "/api/collections/demo3/records"
BOUNDARY = "pbfastDifferentialBoundary7MA4YWxkTrZu0gW"


def batch(*requests: dict[str, Any]) -> dict[str, Any]:
    return {"requests": list(requests)}


def multipart(fields: Sequence[tuple[str, str]], files: Sequence[tuple[str, str, bytes]] = ()) -> bytes:
    """A multipart/form-data body with :data:`BOUNDARY` (text fields, then files)."""
    out = b""
    for name, value in fields:
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        out += head.encode() + value.encode() + b"\r\n"
    for name, filename, data in files:
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
LIST_BATCH_TITLES = f"{DEMO2}?filter=title~'batch'&sort=title&fields=title"


def js_sdk_body(requests: list[dict[str, Any]]) -> bytes:
    """What the JS SDK's ``pb.createBatch().send()`` sends without files: a FormData with one field."""
    return multipart([("@jsonPayload", json.dumps({"requests": requests}))])


BATCH_SCENARIOS: dict[str, list[Step]] = {
    "batch: batch_test.go": [
        Step("trigger requests validations", "POST", BATCH, batch(
            {}, {"method": "GET", "url": "/valid"}, {"method": "invalid", "url": "/valid"},
            {"method": "POST", "url": "a" * 2001})),
        Step("unknown batch request action", "POST", BATCH, batch({"method": "GET", "url": "/api/health"})),
        Step("base 2 successful and 1 failed (public collection)", "POST", BATCH, batch(
            {"method": "POST", "url": DEMO2, "body": {"title": "batch1"}},
            {"method": "POST", "url": DEMO2, "body": {"title": "batch2"}},
            {"method": "POST", "url": DEMO2, "body": {"title": ""}}), auth=G),
        Step("nothing persisted", "GET", LIST_BATCH_TITLES),
        Step("base 4 successful (public collection)", "POST", BATCH, batch(
            {"method": "POST", "url": DEMO2, "body": {"title": "batch1"}},
            {"method": "POST", "url": DEMO2, "body": {"title": "batch2"}},
            {"method": "PUT", "url": DEMO2, "body": {"title": "batch3"}},
            {"method": "PUT", "url": f"{DEMO2}?fields=*,id:excerpt(4,true)",
             "body": {"id": "achvryl401bhse3", "title": "batch4"}}), auth=G),
        Step("four persisted", "GET", LIST_BATCH_TITLES),
        Step("mixed create/update/delete (non-superuser rule failure)", "POST", BATCH, batch(
            {"method": "POST", "url": DEMO2, "body": {"title": "batch_create"}},
            {"method": "DELETE", "url": f"{DEMO2}/achvryl401bhse3"},
            {"method": "PATCH", "url": f"{DEMO3}/1tmknxy2868d869", "body": {"title": "batch_update"}}), auth=G),
        Step("mixed create/update/delete (superuser rule failure)", "POST", BATCH, batch(
            {"method": "DELETE", "url": f"{DEMO2}/achvryl401bhse3", "headers": {"Authorization": "ignored"}},
            {"method": "PATCH", "url": f"{DEMO3}/1tmknxy2868d869", "body": {"title": "batch_update"},
             "headers": {"Authorization": "ignored"}},
            {"method": "POST", "url": "/api/collections/_superusers/records",
             "body": {"email": "test_batch@example.com", "password": "1234567890"}}), auth=G, headers=CLIENT1),
        Step("nothing changed", "GET", f"{DEMO2}/achvryl401bhse3?fields=id,title"),
        Step("mixed create/update/delete (rules success)", "POST", BATCH, batch(
            {"method": "POST", "url": DEMO2, "body": {"title": "batch_create"}, "headers": {"Authorization": "ignored"}},
            {"method": "DELETE", "url": f"{DEMO2}/achvryl401bhse3", "headers": {"Authorization": "ignored"}},
            {"method": "PATCH", "url": f"{DEMO3}/1tmknxy2868d869", "body": {"title": "batch_update"},
             "headers": {"Authorization": "ignored"}}), auth=G, headers=CLIENT1),
        Step("deleted", "GET", f"{DEMO2}/achvryl401bhse3"),
        Step("mixed create/update/delete (superuser auth)", "POST", BATCH, batch(
            {"method": "POST", "url": DEMO2, "body": {"title": "batch_create2"}},
            {"method": "DELETE", "url": f"{DEMO2}/llvuca81nly1qls"},
            {"method": "PATCH", "url": f"{DEMO3}/1tmknxy2868d869", "body": {"title": "batch_update2"}}),
             auth=G, headers=SUPERUSER1),
        Step("cascade delete/update", "POST", BATCH, batch(
            {"method": "DELETE", "url": f"{DEMO3}/1tmknxy2868d869"},
            {"method": "DELETE", "url": f"{DEMO3}/mk5fmymtx4wsprk"}), auth=G, headers=SUPERUSER1),
        Step("cascaded", "GET", "/api/collections/demo4/records?sort=id"),
        Step("create/update with expand query params", "POST", BATCH, batch(
            {"method": "POST", "url": "/api/collections/demo5/records?expand=rel_one",
             "body": {"total": 9, "rel_one": "qzaqccwrmva4o1n"}},
            {"method": "PATCH", "url": "/api/collections/demo5/records/qjeql998mtp1azp?expand=rel_many",
             "body": {"total": 10}}), auth=G, headers=SUPERUSER1),
    ],
    "batch: upsert, fields, urls": [
        Step("upsert: update, number id, empty id", "POST", BATCH, batch(
            {"method": "PUT", "url": f"{DEMO2}?fields=id,title", "body": {"id": "achvryl401bhse3", "title": "up"}},
            {"method": "PUT", "url": f"{DEMO2}?fields=title", "body": {"id": 5, "title": "up2"}})),
        Step("upsert: new id, no id", "POST", BATCH, batch(
            {"method": "PUT", "url": f"{DEMO2}?fields=id,title", "body": {"id": "newbatchrecord1", "title": "up3"}},
            {"method": "PUT", "url": f"{DEMO2}?fields=title", "body": {"id": "", "title": "up4"}},
            {"method": "PUT", "url": f"{DEMO2}?fields=title"})),
        Step("upsert into a view", "POST", BATCH, batch(
            {"method": "PUT", "url": "/api/collections/view2/records", "body": {"id": "84nmscqy84lsi1t"}})),
        Step("upsert into a missing collection", "POST", BATCH, batch(
            {"method": "PUT", "url": "/api/collections/nope/records", "body": {"id": "84nmscqy84lsi1t"}})),
        Step("outer fields", "POST", f"{BATCH}?fields=status", batch(
            {"method": "POST", "url": f"{DEMO2}?fields=title", "body": {"title": "batch_fields"}})),
        Step("trailing slash", "POST", BATCH, batch({"method": "POST", "url": f"{DEMO2}/", "body": {"title": "x1"}})),
        Step("escaped collection name", "POST", BATCH, batch(
            {"method": "POST", "url": "/api/collections/demo%32/records", "body": {"title": "x2"}})),
        Step("bad escape in the query", "POST", BATCH, batch(
            {"method": "POST", "url": f"{DEMO2}?fields=title%zz", "body": {"title": "x3"}})),
        Step("bad escape in the path", "POST", BATCH, batch(
            {"method": "POST", "url": "/api/collections/de%zzmo2/records", "body": {"title": "x4"}})),
        Step("a fragment", "POST", BATCH, batch(
            {"method": "POST", "url": f"{DEMO2}?fields=title#frag", "body": {"title": "batch_frag"}})),
        Step("a newline in the query", "POST", BATCH, batch(
            {"method": "POST", "url": f"{DEMO2}?fields=ti\ntle", "body": {"title": "x5"}})),
        Step("a semicolon in the query", "POST", BATCH, batch(
            {"method": "POST", "url": f"{DEMO2}?fields=title;id", "body": {"title": "x6"}})),
        Step("lowercase method", "POST", BATCH, batch({"method": "post", "url": DEMO2, "body": {"title": "x7"}})),
        Step("a delete of a view record", "POST", BATCH, batch({"method": "DELETE", "url": "/api/collections/view2/records/x"})),
        Step("an item's content type", "POST", BATCH, batch(
            {"method": "POST", "url": f"{DEMO2}?fields=title", "body": {"title": "batch_ct"},
             "headers": {"Content-Type": "text/plain"}})),
        Step("rule on @request.context", "PATCH", "/api/collections/demo2?fields=createRule",
             {"createRule": "@request.context = 'batch'"}),
        Step("created in a batch", "POST", BATCH, batch(
            {"method": "POST", "url": f"{DEMO2}?fields=title", "body": {"title": "batch_ctx"}}), auth=G),
        Step("not created directly", "POST", f"{DEMO2}?fields=title", {"title": "direct_ctx"}, auth=G),
        Step("fifty requests", "POST", f"{BATCH}?fields=status", batch(
            *[{"method": "POST", "url": f"{DEMO2}?fields=title", "body": {"title": f"batch_many_{i:02d}"}}
              for i in range(50)])),
        Step("fifty-one requests", "POST", BATCH, batch(*[{"method": "GET", "url": "/x"}] * 51)),
        Step("batch titles at the end", "GET", f"{LIST_BATCH_TITLES}&perPage=100"),
    ],
    "batch: items see earlier items": [
        Step("create, update, modify twice, then read back", "POST", BATCH, batch(
            {"method": "POST", "url": f"{DEMO2}?fields=id,title", "body": {"id": "batchseq0000001", "title": "seq1"}},
            {"method": "PATCH", "url": f"{DEMO2}/batchseq0000001?fields=id,title", "body": {"title": "seq2"}},
            {"method": "PATCH", "url": "/api/collections/demo5/records/qjeql998mtp1azp?fields=total",
             "body": {"total+": 2}},
            {"method": "PATCH", "url": "/api/collections/demo5/records/qjeql998mtp1azp?fields=total",
             "body": {"total-": 0.5, "+select_many": "optionB"}},
            {"method": "PUT", "url": f"{DEMO2}?fields=id,title", "body": {"id": "batchseq0000001", "title": "seq3"}})),
        Step("after the batch", "GET", f"{DEMO2}/batchseq0000001?fields=id,title"),
        Step("create then delete, then a failure", "POST", BATCH, batch(
            {"method": "POST", "url": f"{DEMO2}?fields=id", "body": {"id": "batchseq0000002", "title": "seq4"}},
            {"method": "DELETE", "url": f"{DEMO2}/batchseq0000001"},
            {"method": "DELETE", "url": f"{DEMO2}/batchseq0000001"})),
        Step("still there", "GET", f"{DEMO2}/batchseq0000001?fields=id,title"),
        Step("never created", "GET", f"{DEMO2}/batchseq0000002?fields=id,title"),
        Step("an auth record in a batch", "POST", BATCH, batch(
            {"method": "POST", "url": "/api/collections/users/records?fields=email,verified,emailVisibility",
             "body": {"email": "batch_user@example.com", "password": "1234567890", "passwordConfirm": "1234567890",
                      "verified": True}},
            {"method": "POST", "url": "/api/collections/users/records?fields=email",
             "body": {"email": "batch_user@example.com", "password": "1234567890",
                      "passwordConfirm": "1234567890"}}), auth=G, headers=CLIENT1),
    ],
    "batch: bodies": [
        Step("empty object", "POST", BATCH, {}),
        Step("empty body", "POST", BATCH, raw=b""),
        Step("no content type", "POST", BATCH, raw=b'{"requests":[]}', headers={"content-type": ""}),
        Step("text/plain", "POST", BATCH, raw=b'{"requests":[]}', headers={"content-type": "text/plain"}),
        Step("upper-case JSON type", "POST", BATCH, raw=b'{"requests":[]}', headers={"content-type": "Application/JSON"}),
        Step("JSON with charset", "POST", BATCH, raw=json.dumps(batch(
            {"method": "POST", "url": f"{DEMO2}?fields=title", "body": {"title": "batch_charset"}})).encode(),
             headers={"content-type": "application/json; charset=utf-8"}),
        Step("names in another case", "POST", BATCH, {"Requests": [
            {"METHOD": "POST", "Url": f"{DEMO2}?fields=title", "BODY": {"title": "batch_case"}}]}),
        Step("null", "POST", BATCH, raw=b"null"),
        Step("requests null", "POST", BATCH, {"requests": None}),
        Step("requests an object", "POST", BATCH, {"requests": {}}),
        Step("a list", "POST", BATCH, raw=b"[]"),
        Step("trailing data", "POST", BATCH, raw=b'{"requests":[]} trailing'),
        Step("method a number", "POST", BATCH, batch({"method": 1, "url": "/x"})),
        Step("body a list", "POST", BATCH, batch({"method": "POST", "url": "/x", "body": []})),
        Step("header a number", "POST", BATCH, batch({"method": "POST", "url": "/x", "headers": {"a": 1}})),
        Step("nulls", "POST", BATCH, batch({"method": None, "url": "/x", "headers": {"a": None}, "body": None})),
        Step("duplicate names", "POST", BATCH, raw=b'{"requests":[{"method":"GET","url":"/x"}],"requests":[]}'),
        Step("duplicate names in a request", "POST", BATCH, raw=b'{"requests":[{"method":"GET","url":"/x","method":"POST"}]}'),
        Step("duplicate names folded", "POST", BATCH, raw=b'{"requests":[],"REQUESTS":[]}'),
        Step("invalid UTF-8", "POST", BATCH,
             raw=b'{"requests":[{"method":"POST","url":"/api/collections/demo2/records","body":{"title":"\xff\xfe"}}]}'),
        Step("a lone surrogate", "POST", BATCH,
             raw=b'{"requests":[{"method":"POST","url":"/api/collections/demo2/records","body":{"title":"\\ud800"}}]}'),
        Step("a number past float64", "POST", BATCH,
             raw=b'{"requests":[{"method":"POST","url":"/api/collections/demo2/records","body":{"n":1e400}}]}'),
        Step("form: a field", "POST", BATCH, raw=b"a=1", headers={"content-type": "application/x-www-form-urlencoded"}),
        Step("form: requests", "POST", BATCH, raw=b"requests=x",
             headers={"content-type": "application/x-www-form-urlencoded"}),
        Step("form: @jsonPayload", "POST", BATCH, raw=("%40jsonPayload=" + json.dumps(batch(
            {"method": "POST", "url": f"{DEMO2}?fields=title", "body": {"title": "batch_form"}}))).encode(),
             headers={"content-type": "application/x-www-form-urlencoded"}),
        Step("xml", "POST", BATCH, raw=b"<a></a>", headers={"content-type": "text/xml"}),
        Step("python SDK shape (JSON @jsonPayload)", "POST", BATCH, {"@jsonPayload": json.dumps(batch(
            {"method": "POST", "url": DEMO2, "body": {"title": "batch_py"}}))}),
        Step("JS SDK shape (multipart @jsonPayload)", "POST", BATCH, raw=js_sdk_body([
            {"method": "POST", "url": f"{DEMO2}?fields=title", "headers": None, "body": {"title": "batch_js"}},
            {"method": "PUT", "url": f"{DEMO2}?fields=title", "body": {"id": "achvryl401bhse3", "title": "batch_js2"}},
            {"method": "DELETE", "url": f"{DEMO2}/batch_js_none"}]), headers=MULTIPART),
        Step("multipart: names are exact", "POST", BATCH, raw=multipart([("@jsonPayload", json.dumps({"Requests": [
            {"method": "GET", "url": "/x"}]}))]), headers=MULTIPART),
        Step("multipart: two payloads, the last wins", "POST", BATCH, raw=multipart([
            ("@jsonPayload", json.dumps(batch({"method": "POST", "url": DEMO2, "body": {"title": "batch_mp1"}}))),
            ("@jsonPayload", json.dumps(batch({"method": "GET", "url": "/x"})))]), headers=MULTIPART),
        Step("multipart: a requests field", "POST", BATCH, raw=multipart([
            ("@jsonPayload", json.dumps(batch({"method": "GET", "url": "/x"}))), ("requests", "zzz")]),
             headers=MULTIPART),
        Step("multipart: payload not JSON", "POST", BATCH, raw=multipart([("@jsonPayload", "nope")]), headers=MULTIPART),
        Step("multipart: malformed", "POST", BATCH, raw=b"--x\r\nbad", headers={"content-type": "multipart/form-data; boundary=x"}),
        Step("multipart: no boundary", "POST", BATCH, raw=b"abc", headers={"content-type": "multipart/form-data"}),
        Step("multipart: a file for no request", "POST", BATCH, raw=multipart(
            [("@jsonPayload", json.dumps(batch({"method": "POST", "url": f"{DEMO2}?fields=title",
                                                "body": {"title": "batch_mp_other"}})))],
            [("requests.5.file", "a.txt", b"hello"), ("other", "b.txt", b"hi")]), headers=MULTIPART),
        Step("batch titles at the end", "GET", f"{LIST_BATCH_TITLES}&perPage=100"),
    ],
}


SLOW_VIEW_ROWS = 6_000_000  # ~0.6 s of SQLite work per evaluation here (~3 s in PocketBase's Go SQLite)
SLOW_VIEW = {
    "name": "slowview", "type": "view", "listRule": "", "viewRule": "",
    "viewQuery": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < "
                 f"{SLOW_VIEW_ROWS}) SELECT (ROW_NUMBER() OVER()) AS id, MAX(x) AS n FROM c",
}

# name -> (changes to the fixture's "batch" settings, steps); None removes the section (PocketBase's defaults)
BATCH_SETTINGS_SCENARIOS: dict[str, tuple[dict[str, Any] | None, list[Step]]] = {
    "batch disabled": ({"enabled": False}, [
        Step("disabled batch requests", "POST", BATCH, batch({"method": "GET", "url": "/x"})),
        Step("disabled, invalid body", "POST", BATCH, raw=b"nul"),
    ]),
    "batch defaults": (None, [
        Step("off by default", "POST", BATCH, batch({"method": "POST", "url": DEMO2, "body": {"title": "b"}})),
    ]),
    "batch maxRequests 2": ({"maxRequests": 2}, [
        Step("max request limits reached", "POST", BATCH, batch(*[{"method": "GET", "url": f"/test{i}"} for i in range(3)])),
        Step("two", "POST", BATCH, batch(*[{"method": "POST", "url": f"{DEMO2}?fields=title",
                                           "body": {"title": f"batch_two_{i}"}} for i in range(2)])),
    ]),
    "batch maxRequests 0": ({"maxRequests": 0}, [
        Step("no requests allowed", "POST", BATCH, batch({"method": "GET", "url": "/x"})),
    ]),
    "batch maxBodySize 10": ({"maxBodySize": 10}, [
        Step("check body limit middleware", "POST", BATCH, batch(
            {"method": "POST", "url": "/api/collections/demo5/records?expand=rel_one",
             "body": {"total": 9, "rel_one": "qzaqccwrmva4o1n"}})),
        Step("ten bytes", "POST", BATCH, raw=b'{"a":"12"}'),
    ]),
    "batch timeout 1 s": ({"timeout": 1}, [
        Step("a slow view", "POST", "/api/collections?fields=name", SLOW_VIEW),
        Step("a create rule reading it", "PATCH", "/api/collections/demo2?fields=createRule",
             {"createRule": "@collection.slowview.n > 0"}),
        Step("transaction timeout", "POST", BATCH, batch(*[
            {"method": "POST", "url": f"{DEMO2}?fields=title", "body": {"title": f"batch_slow{i}"}} for i in range(3)]),
             auth=G),
        Step("nothing persisted", "GET", LIST_BATCH_TITLES),
        Step("fast again", "PATCH", "/api/collections/demo2?fields=createRule", {"createRule": ""}),
        Step("within the timeout", "POST", BATCH, batch(
            {"method": "POST", "url": f"{DEMO2}?fields=title", "body": {"title": "batch_fast"}}), auth=G),
    ]),
}
