"""Differential scenarios beside PocketBase's Go tests (run by ``test_differential_go_crud.py``): what a guest, a
user and a client can learn of hidden fields through relations and back-relations (filters, sorts, expands),
and which fields of a record only superusers or the collection's managers may set."""

from __future__ import annotations

from urllib.parse import quote

from differential import Step
from fixture_data import CLIENT1, USER1, USER2

G = None  # a guest step
VIEW2 = "/api/collections/view2/records?sort=id&filter="  # public; rel_many -> users
DEMO2 = "/api/collections/demo2/records?sort=id&filter="  # public; users.rel -> demo2 (users_via_rel)
USER1_RECORD = "/api/collections/users/records/4q1xlclmfloku33"
NOLOGIN1_RECORD = "/api/collections/nologin/records/dc49k6jgejn40h3"
USERS = "/api/collections/users/records"
THROUGH_RELATION = ["rel_many.tokenKey!=''", "rel_many.password!=''", "rel_many.email='test@example.com'",
                    "rel_many.emailVisibility=true", "rel_many.tokenKey:lower!=''", "rel_many.tokenKey?!=''",
                    "rel_many.password:length>0", "rel_many.tokenKey:each!=''",
                    "rel_many.rel.users_via_rel.tokenKey!=''", "@collection.users.tokenKey!=''",
                    "@request.auth.tokenKey!=''", "@request.auth.password!=''", "@request.auth.email!=''"]
THROUGH_BACK_RELATION = ["users_via_rel.tokenKey!=''", "users_via_rel.email!=''", "users_via_rel.password:length>0",
                         "users_via_rel.id!=''", "users_via_rel.username!=''", "users_via_rel.verified=true",
                         "users_via_rel.file:length>0", "users_via_rel.emailVisibility=false"]


def _hidden_fields_as(who: str, headers: dict[str, str]) -> list[Step]:
    return [
        *[Step(f"{who}: view2 {rule}", "GET", VIEW2 + quote(rule), auth=G, headers=headers)
          for rule in THROUGH_RELATION],
        *[Step(f"{who}: demo2 {rule}", "GET", DEMO2 + quote(rule), auth=G, headers=headers)
          for rule in THROUGH_BACK_RELATION],
        Step(f"{who}: demo2 expand users_via_rel", "GET", "/api/collections/demo2/records?sort=id&expand=users_via_rel",
             auth=G, headers=headers),
        Step(f"{who}: view2 expand rel_many", "GET", "/api/collections/view2/records?sort=id&expand=rel_many", auth=G,
             headers=headers),
        Step(f"{who}: view2 sorted by a hidden field", "GET", "/api/collections/view2/records?sort=rel_many.tokenKey",
             auth=G, headers=headers),
        Step(f"{who}: demo2 sorted by a back-relation's hidden field", "GET",
             "/api/collections/demo2/records?sort=users_via_rel.tokenKey", auth=G, headers=headers),
        Step(f"{who}: users with their rel expanded", "GET", f"{USERS}?sort=id&expand=rel", auth=G, headers=headers),
        Step(f"{who}: users filtered by email", "GET", f"{USERS}?filter=" + quote("email~'example'"), auth=G,
             headers=headers),
        Step(f"{who}: clients filtered by email", "GET",
             "/api/collections/clients/records?filter=" + quote("email~'example'"), auth=G, headers=headers),
    ]


HIDDEN_FIELD_SCENARIOS: dict[str, list[Step]] = {
    "hidden fields through relations and back-relations": [
        *_hidden_fields_as("guest", {}), *_hidden_fields_as("user", USER1), *_hidden_fields_as("client", CLIENT1),
        *[Step(f"superuser: view2 {rule}", "GET", VIEW2 + quote(rule)) for rule in THROUGH_RELATION[:4]],
    ],
}

SIGNUP = {"password": "1234567890", "passwordConfirm": "1234567890"}
MANAGED_FIELD_SCENARIOS: dict[str, list[Step]] = {
    "fields only superusers and managers set": [
        Step("owner sets verified", "PATCH", USER1_RECORD, {"verified": True}, auth=G, headers=USER1),
        Step("owner sets email", "PATCH", USER1_RECORD, {"email": "x1@example.com"}, auth=G, headers=USER1),
        Step("owner sets a password without the old one", "PATCH", USER1_RECORD,
             {"password": "1234567890a", "passwordConfirm": "1234567890a"}, auth=G, headers=USER1),
        Step("owner sets a password with a wrong old one", "PATCH", USER1_RECORD,
             {"password": "1234567890a", "passwordConfirm": "1234567890a", "oldPassword": "x"}, auth=G, headers=USER1),
        Step("owner sets tokenKey", "PATCH", f"{USER1_RECORD}?fields=id", {"tokenKey": "abc"}, auth=G, headers=USER1),
        Step("owner sets emailVisibility", "PATCH", USER1_RECORD, {"emailVisibility": True}, auth=G, headers=USER1),
        Step("owner sets the id", "PATCH", USER1_RECORD, {"id": "newid123456789a"}, auth=G, headers=USER1),
        Step("owner sets system keys", "PATCH", USER1_RECORD, {"collectionId": "x", "collectionName": "y",
                                                               "created": "2020-01-01", "updated": "2020-01-01"},
             auth=G, headers=USER1),
        Step("owner sets an invalid username", "PATCH", USER1_RECORD, {"username": "Bad Name!"}, auth=G, headers=USER1),
        Step("another user updates it", "PATCH", USER1_RECORD, {"name": "x"}, auth=G, headers=USER2),
        Step("a user signs up another, verified", "POST", USERS, {"email": "v1@example.com", "verified": True, **SIGNUP},
             auth=G, headers=USER1),
        Step("a guest signs up verified, with a tokenKey", "POST", USERS,
             {"email": "v2@example.com", "verified": True, "tokenKey": "x", **SIGNUP}, auth=G),
        Step("a guest signs up with a visible email", "POST", USERS,
             {"email": "v3@example.com", "emailVisibility": True, **SIGNUP}, auth=G),
        Step("nologin: a guest sets verified", "PATCH", NOLOGIN1_RECORD, {"verified": False}, auth=G),
        Step("nologin: a user (manageRule) sets verified and email", "PATCH", NOLOGIN1_RECORD,
             {"verified": False, "email": "m@example.com"}, auth=G, headers=USER1),
        Step("nologin: a client sets verified", "PATCH", NOLOGIN1_RECORD, {"verified": False}, auth=G,
             headers=CLIENT1),
        Step("superuser sets tokenKey on create", "POST", f"{USERS}?fields=id,collectionName,email",
             {"email": "h@example.com", "tokenKey": "customtokenkey1234567890123456", **SIGNUP}),
    ],
}
