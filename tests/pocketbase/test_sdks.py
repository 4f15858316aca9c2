"""The official SDKs against a pbfast tenant through its gateway and against stock PocketBase 0.40.6, both on
copies of PocketBase's test data dir: ``expand`` and batches as an app uses them (issue 15), and the JS SDK's
auth flows, realtime subscriptions, files and admin services.

* the JS SDK (0.28.0, vendored in ``js_sdk/``, run with node): ``pb.createBatch()`` sends a multipart form
  with the batch under ``@jsonPayload``; ``expand`` on lists and views;
* the Python ``pocketbase`` SDK: ``expand`` through its query parameters; its ``create_batch()`` sends the
  payload as JSON ``{"@jsonPayload": "..."}``, which PocketBase itself refuses (400): pbfast answers alike.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pbharness import SUPERUSER, Backend
from pocketbase import PocketBase
from pocketbase.models.record import Record
from pocketbase.utils import ClientResponseError

JS_SDK = Path(__file__).resolve().parent / "js_sdk"


def _run_js(base_url: str, script: str = "batch_and_expand.js") -> dict[str, Any]:
    done = subprocess.run(["node", str(JS_SDK / script), str(JS_SDK / "pocketbase.cjs.js"), base_url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _without_new_values(value: Any) -> Any:
    """Values only the run decides (dates written now) left out, so the two backends compare."""
    if isinstance(value, dict):
        return {k: _without_new_values(v) for k, v in value.items() if k not in ("created", "updated")}
    if isinstance(value, list):
        return [_without_new_values(v) for v in value]
    return value


def test_js_sdk_as_pocketbase(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend) -> None:
    """Both scripts on one pair of servers (a pair costs seconds to start)."""
    _check_batch_and_expand(stock_pocketbase, pbfast_fixture_tenant)
    _check_auth_realtime_and_admin_services(stock_pocketbase, pbfast_fixture_tenant)


def _check_batch_and_expand(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend) -> None:
    stock, fast = _run_js(stock_pocketbase.url), _run_js(pbfast_fixture_tenant.url)
    assert _without_new_values(fast) == _without_new_values(stock)
    # and it did what an app expects
    assert [r["status"] for r in fast["batch"]["ok"]] == [200, 200, 200, 200, 200, 204]
    assert fast["batch"]["ok"][4]["body"] == {"expand": {"rel_one": {"id": "qzaqccwrmva4o1n"}}, "total": 9}
    assert fast["failing"]["status"] == 400 and "1" in fast["failing"]["response"]["data"]["requests"]
    assert "js_rolled_back" not in {t["title"] for t in fast["titles"]["ok"]}
    assert fast["ruled"]["response"]["data"]["requests"]["0"]["response"]["status"] == 404
    assert fast["list"]["ok"]["items"][1]["expand"]["rel_one"]["id"] == "84nmscqy84lsi1t"


def _check_auth_realtime_and_admin_services(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend) -> None:
    """``js_sdk/auth_realtime_admin.js``: logins, refresh, MFA's first factor, the email flows' requests,
    impersonation, settings, health, crons, backups, logs, a protected file through a file token, and realtime
    subscriptions (a collection, a record, unsubscribing, a guest under the list rule)."""
    stock = _run_js(stock_pocketbase.url, "auth_realtime_admin.js")
    fast = _run_js(pbfast_fixture_tenant.url, "auth_realtime_admin.js")
    for key in stock:
        assert fast.get(key) == stock[key], f"{key}:\n  pbfast:     {fast.get(key)}\n  pocketbase: {stock[key]}"
    assert set(fast) == set(stock)
    # and it did what an app expects
    assert fast["login"]["ok"]["record"]["email"] == "test@example.com"
    assert fast["refreshStore"] == [True, "gk390qegs4y47wn"]
    assert fast["events"] == [["*", "create", "js_rt_one"], ["*", "delete", "js_rt_two"], ["*", "update", "js_rt_two"],
                              ["one", "update", "js_rt_two"]]
    assert fast["guestEvents"] == ["js_rt_public"] and fast["file"][1] == 200
    assert fast["filesUpdated"] == ["a*_<random>.png", "c*_<random>.txt"]
    assert [status for status, *_ in fast["filesFetched"]] == [404, 200, 200, 200]  # file_one is protected


def _tree(record: Record) -> dict[str, Any]:
    """A Python SDK record's id and expand, recursively."""
    out: dict[str, Any] = {"id": record.id}
    for key, value in sorted(record.expand.items()):
        out[key] = [_tree(v) for v in value] if isinstance(value, list) else _tree(value)
    return out


def _python_sdk_calls(base_url: str) -> dict[str, Any]:
    pb = PocketBase(base_url)
    pb.collection("_superusers").auth_with_password(SUPERUSER["identity"], SUPERUSER["password"])
    out: dict[str, Any] = {}
    listed = pb.collection("demo1").get_list(1, 2, {"expand": "rel_one,rel_many.rel", "sort": "created"})
    out["list"] = [_tree(item) for item in listed.items]
    viewed = pb.collection("demo3").get_one("lcl9d87w22ml6jy", {"expand": "demo4_via_rel_many_no_cascade_required"})
    out["view"] = _tree(viewed)
    created = pb.collection("demo5").create({"total": 3, "rel_many": ["qzaqccwrmva4o1n"]}, {"expand": "rel_many"})
    out["create"] = {k: v for k, v in _tree(created).items() if k != "id"}
    batch = pb.create_batch()
    batch.collection("demo2").create({"title": "py_batch"})
    with pytest.raises(ClientResponseError) as refused:
        batch.send()
    out["sdk batch"] = (refused.value.status, refused.value.data)
    sent = pb.send("/api/batch", {"method": "POST", "body": {"requests": [
        {"method": "POST", "url": "/api/collections/demo2/records?fields=title", "body": {"title": "py_json_batch"}}]}})
    out["json batch"] = sent
    return out


def test_python_sdk_expand_and_batch(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend) -> None:
    stock, fast = _python_sdk_calls(stock_pocketbase.url), _python_sdk_calls(pbfast_fixture_tenant.url)
    assert fast == stock
    assert fast["list"][1]["rel_one"] == {"id": "84nmscqy84lsi1t"}
    assert fast["view"]["demo4_via_rel_many_no_cascade_required"] == [{"id": "qzaqccwrmva4o1n"}]
    assert fast["sdk batch"][0] == 400
    assert fast["json batch"] == [{"body": {"title": "py_json_batch"}, "status": 200}]

