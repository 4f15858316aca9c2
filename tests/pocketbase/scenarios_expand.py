"""Differential scenarios for ``expand`` (issue 15): PocketBase's ``apis/record_crud_test.go`` expand cases
and ``core/record_query_expand_test.go``'s paths, sent as requests, plus rules, ``fields`` inside expands,
auth answers and hostile paths. Run by ``test_differential.py``."""

from __future__ import annotations

from urllib.parse import quote

from differential import Step
from fixture_data import CLIENT1, DEMO4_BODY, SUPERUSER1, USER1

G = None  # a guest step (no superuser token)
USERS_LOGIN = "/api/collections/users/auth-with-password"
DEMO1 = "/api/collections/demo1/records"
DEMO3 = "/api/collections/demo3/records"
DEMO4 = "/api/collections/demo4/records"
SELF_MANY_12 = ".".join(["self_rel_many"] * 12)

EXPAND_SCENARIOS: dict[str, list[Step]] = {
    "expand: relations and paths": [
        # record_crud_test.go TestRecordCrudList / TestRecordCrudView "expand relations"
        Step("list expand relations", "GET", f"{DEMO1}?expand=rel_one,rel_many.rel,missing&perPage=2&sort=created",
             auth=G, headers=SUPERUSER1),
        Step("view expand relations", "GET", f"{DEMO1}/al1h9ijdeojtsjy?expand=rel_one,rel_many.rel,missing",
             auth=G, headers=SUPERUSER1),
        Step("only a missing path", "GET", f"{DEMO1}?expand=missing&sort=id&fields=id,expand"),
        Step("not a relation field", "GET", f"{DEMO4}?expand=title&sort=id&fields=id,expand"),
        Step("missing second level", "GET", f"{DEMO1}?expand=rel_one.missing&sort=id&fields=id,expand"),
        Step("missing second level, no records there", "GET",
             f"{DEMO1}/84nmscqy84lsi1t?expand=rel_one.missing&fields=id,expand"),
        Step("invalid second level (demo4)", "GET", f"{DEMO4}?expand=rel_one_no_cascade.title&sort=id&fields=id,expand"),
        Step("normalised: spaces and dots", "GET", f"{DEMO1}?expand={quote(' rel_one .')}&sort=id&fields=id,expand"),
        Step("normalised: contained paths", "GET", f"{DEMO4}?sort=id&expand=" + ",".join([
            "self_rel_one", "self_rel_many.self_rel_many.rel_one_no_cascade",
            "self_rel_many.self_rel_one.self_rel_many.self_rel_one.rel_one_no_cascade", "self_rel_many",
            "self_rel_many.", quote("  self_rel_many  "), ""])),
        Step("a lone dot", "GET", f"{DEMO1}?expand=.&sort=id&fields=id,expand"),
        Step("an empty segment", "GET", f"{DEMO1}?expand=rel_one..rel_one&sort=id&fields=id,expand"),
        Step("first expand parameter only", "GET", f"{DEMO1}?expand=rel_one&expand=rel_many&sort=id&fields=id,expand"),
        Step("deeper than 6 levels", "GET", f"{DEMO4}/qzaqccwrmva4o1n?expand={SELF_MANY_12}"),
        Step("users rel", "GET", "/api/collections/users/records?expand=rel&sort=id"),
        Step("shared prefixes merged", "GET", f"{DEMO4}/qzaqccwrmva4o1n?expand=" + ",".join([
            "rel_one_no_cascade", "rel_many_no_cascade", "self_rel_many.self_rel_one.rel_many_cascade",
            "self_rel_many.self_rel_one.rel_many_no_cascade_required"])),
        Step("merged on a multiple relation", "GET",
             "/api/collections/demo5/records?expand=rel_many.self_rel_many,rel_many.rel_one_no_cascade&sort=id"),
        Step("same path twice", "GET", f"{DEMO1}?expand=rel_one,rel_one&sort=id&fields=id,expand"),
        Step("expand with skipTotal and paging", "GET", f"{DEMO1}?expand=rel_many&skipTotal=1&perPage=1&page=2&sort=id"),
        Step("expand on an empty page", "GET", f"{DEMO1}?expand=rel_many&filter=id='none'"),
        Step("from a view", "GET", "/api/collections/view2/records?expand=rel_many&sort=id"),
        Step("from a view with a rule", "GET", "/api/collections/view1/records?expand=rel_one,rel_many&sort=id"),
    ],
    "expand: back-relations": [
        Step("via a multiple relation", "GET", f"{DEMO3}?expand=demo4_via_rel_many_no_cascade_required&sort=id"),
        Step("via a single relation", "GET", f"{DEMO3}/lcl9d87w22ml6jy?expand=demo4_via_rel_one_no_cascade_required"),
        Step("deprecated syntax", "GET", f"{DEMO3}/lcl9d87w22ml6jy?expand=demo4(rel_one_no_cascade_required)"),
        Step("via unique relations", "GET",
             f"{DEMO3}?expand=demo4_via_rel_one_unique,demo4_via_rel_many_unique&sort=id&fields=id,expand"),
        Step("nested via single", "GET", f"{DEMO3}/lcl9d87w22ml6jy?expand="
             "demo4_via_rel_one_no_cascade_required.self_rel_many.self_rel_many.self_rel_one"),
        Step("nested via multiple", "GET", f"{DEMO3}/lcl9d87w22ml6jy?expand=demo4_via_rel_many_no_cascade_required"
             ".self_rel_many.rel_many_no_cascade_required.demo4_via_rel_many_no_cascade_required"),
        Step("via a field that is no relation", "GET", f"{DEMO3}?expand=demo4_via_title&sort=id&fields=id,expand"),
        Step("via a missing collection", "GET", f"{DEMO3}?expand=nope_via_title&sort=id&fields=id,expand"),
        Step("via a relation to another collection", "GET", f"{DEMO3}?expand=demo5_via_rel_one&sort=id&fields=id,expand"),
        Step("via collection id", "GET", f"{DEMO3}?expand=4d1blo5cuycfaca_via_rel_many_cascade&sort=id&fields=id,expand"),
        Step("via, case of the collection name", "GET", f"{DEMO3}?expand=DEMO4_via_rel_many_cascade&sort=id&fields=id,expand"),
        Step("users via demo1 (null viewRule, superuser)", "GET",
             "/api/collections/users/records/4q1xlclmfloku33?expand=demo1_via_rel_many"),
        Step("demo2 via users", "GET", "/api/collections/demo2/records?expand=users_via_rel&sort=id&fields=id,expand"),
        Step("via a view", "GET", "/api/collections/users/records?expand=view2_via_rel_many&sort=id&fields=id,expand"),
    ],
    "expand: rules and visibility": [
        Step("user: demo3 not viewable", "GET", f"{DEMO4}?expand=rel_one_no_cascade,rel_many_no_cascade_required",
             auth=G, headers=USER1),
        Step("client: demo3 viewable", "GET", f"{DEMO4}?expand=rel_one_no_cascade,rel_many_no_cascade_required",
             auth=G, headers=CLIENT1),
        Step("guest: demo3 not viewable", "GET", f"{DEMO4}?expand=rel_one_no_cascade&sort=id", auth=G),
        Step("user: null viewRule path dropped", "GET",
             "/api/collections/users/records/4q1xlclmfloku33?expand=rel,demo1_via_rel_many", auth=G, headers=USER1),
        Step("user: only itself among users", "GET", "/api/collections/view2/records?expand=rel_many&sort=id",
             auth=G, headers=USER1),
        Step("guest: no users", "GET", "/api/collections/view2/records?expand=rel_many&sort=id", auth=G),
        Step("demo5 viewRule on nested relations", "GET",
             "/api/collections/demo4/records?expand=demo5_via_rel_many&sort=id", auth=G, headers=CLIENT1),
        Step("open users' viewRule", "PATCH", "/api/collections/users?fields=viewRule,manageRule",
             {"viewRule": "", "manageRule": "@request.auth.collectionName = 'clients'"}),
        Step("guest sees users without emails", "GET", "/api/collections/view2/records?expand=rel_many&sort=id", auth=G),
        Step("client manages users: emails shown", "GET", "/api/collections/view2/records?expand=rel_many&sort=id",
             auth=G, headers=CLIENT1),
        Step("user sees its own email only", "GET", "/api/collections/view2/records?expand=rel_many&sort=id",
             auth=G, headers=USER1),
        Step("rule on @request.context", "PATCH", "/api/collections/demo2?fields=viewRule",
             {"viewRule": "@request.context = 'expand'"}),
        Step("demo2 through expand only", "GET", "/api/collections/users/records?expand=rel&sort=id&fields=id,expand",
             auth=G, headers=CLIENT1),
        Step("demo2 directly", "GET", "/api/collections/demo2/records/llvuca81nly1qls", auth=G),
        Step("a rule that cannot be compiled", "PATCH", "/api/collections/demo2?fields=viewRule",
             {"viewRule": "id = @request.body.x.y"}),
        Step("expand under it", "GET", "/api/collections/users/records?expand=rel&sort=id&fields=id,expand",
             auth=G, headers=CLIENT1),
    ],
    "expand: fields inside expands": [
        Step("excerpt inside", "GET", f"{DEMO1}?expand=rel_one&sort=id&fields=id,expand.rel_one.text:excerpt(3)"),
        Step("star and nested", "GET", f"{DEMO1}?expand=rel_many&fields=*,expand.rel_many.email&perPage=1&sort=id"),
        Step("two levels", "GET", f"{DEMO1}?expand=rel_many.rel&sort=id&fields=id,expand.rel_many.expand.rel.title"),
        Step("only expand", "GET", f"{DEMO1}/al1h9ijdeojtsjy?expand=rel_one&fields=expand"),
        Step("star inside expand", "GET", f"{DEMO1}/al1h9ijdeojtsjy?expand=rel_one&fields=expand.rel_one.*"),
        Step("expand not asked", "GET", f"{DEMO1}/al1h9ijdeojtsjy?fields=id,expand"),
    ],
    "expand: create, update, auth": [
        # record_crud_test.go TestRecordCrudCreate / TestRecordCrudUpdate "+ expand relations"
        Step("user create", "POST", f"{DEMO4}?expand=missing,rel_one_no_cascade,rel_many_no_cascade_required",
             DEMO4_BODY, auth=G, headers=USER1),
        Step("superuser create", "POST", f"{DEMO4}?expand=missing,rel_one_no_cascade,rel_many_no_cascade_required",
             DEMO4_BODY, auth=G, headers=SUPERUSER1),
        Step("user update", "PATCH", f"{DEMO4}/i9naidtvr6qsgb4?expand=missing,rel_one_no_cascade,"
             "rel_many_no_cascade_required", DEMO4_BODY | {"title": "upd1"}, auth=G, headers=USER1),
        Step("superuser update", "PATCH", f"{DEMO4}/i9naidtvr6qsgb4?expand=missing,rel_one_no_cascade,"
             "rel_many_no_cascade_required", DEMO4_BODY | {"title": "upd2"}, auth=G, headers=SUPERUSER1),
        Step("create with expand and fields", "POST", f"{DEMO4}?expand=self_rel_one&fields=title,expand.self_rel_one.id",
             {"title": "with self", "self_rel_one": "qzaqccwrmva4o1n"}),
        Step("update back-relation", "PATCH", f"{DEMO3}/mk5fmymtx4wsprk?expand=demo4_via_rel_many_cascade",
             {"title": "test4"}),
        Step("users mfa off", "PATCH", "/api/collections/users?fields=mfa", {"mfa": {"enabled": False, "rule": ""}}),
        Step("login with expand", "POST", f"{USERS_LOGIN}?expand=rel,demo1_via_rel_many,missing",
             {"identity": "test@example.com", "password": "1234567890"}, auth=G),
        Step("login expand and fields", "POST", f"{USERS_LOGIN}?expand=rel&fields=record.expand.rel.title",
             {"identity": "test@example.com", "password": "1234567890"}, auth=G),
        Step("superuser login expand", "POST", "/api/collections/_superusers/auth-with-password?expand=missing",
             {"identity": "test@example.com", "password": "1234567890"}, auth=G),
        Step("refresh with expand", "POST", "/api/collections/users/auth-refresh?expand=rel", auth=G, headers=USER1),
        Step("client refresh, nothing to expand", "POST", "/api/collections/clients/auth-refresh?expand=rel,missing",
             auth=G, headers=CLIENT1),
    ],
    "expand: hostile paths": [
        Step("self cycle at depth", "GET", f"{DEMO4}?sort=id&expand={SELF_MANY_12},{'.'.join(['self_rel_one'] * 12)}"),
        Step("a hundred segments", "GET", f"{DEMO4}?sort=id&fields=id&expand=" + ".".join(["self_rel_many"] * 100)),
        Step("a thousand paths", "GET", f"{DEMO1}?sort=id&fields=id,expand.rel_one.id&expand="
             + ",".join(["rel_one"] * 500 + [f"x{i}" for i in range(500)])),
        *[Step(f"odd path {raw!r}", "GET", f"{DEMO1}?sort=id&fields=id,expand.rel_one.id&expand={quote(raw)}")
          for raw in ("rel_one)(", "demo1(", "_via_", "a_via_", "demo1_via_", "rel_one.*", "rel_one;DROP TABLE demo1",
                      "rel_one,*", "\u00e9_via_rel_one", "REL_ONE", "rel_one\t", "%00", "rel_one.rel_one.rel_one")],
        Step("numeric id view", "GET", "/api/collections/numeric_id_view/records?expand=x_via_y,email"),
    ],
}
