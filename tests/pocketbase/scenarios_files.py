"""Differential scenarios for ``GET /api/files/...`` (issue 15): the cases of PocketBase's ``apis/file_test.go``
that change a rule or a setting first (protected files under a collection's view rule, a superuser's file
token from an address outside ``superuserIPs``), and the paths apps build by hand (collection ids, a record of
another collection, a file the record does not name, a protected thumb). Run by
``test_differential_records.py``; each scenario puts back the rules and settings it changes."""

from __future__ import annotations

from differential import Step
from test_files import PROTECTED, SUPERUSER_FILE_TOKEN, USER_FILE_TOKEN

G = None  # a guest step
DEMO1_FILES = "/api/files/demo1/84nmscqy84lsi1t"
SETTINGS = "/api/settings?fields=superuserIPs,trustedProxy"
TEST_IP = "x-test-ip"

FILE_SCENARIOS: dict[str, list[Step]] = {
    "files: protected files under view rules (file_test.go)": [
        Step("guest without view access", "GET", PROTECTED, auth=G),
        Step("public view rule", "PATCH", "/api/collections/demo1?fields=viewRule", {"viewRule": ""}),
        Step("guest with view access", "GET", PROTECTED, auth=G),
        Step("guest, thumb of a protected image", "GET", f"{PROTECTED}?thumb=100x100", auth=G),
        Step("restricted view rule", "PATCH", "/api/collections/demo1?fields=viewRule",
             {"viewRule": "@request.auth.verified = true"}),
        Step("auth record without view access", "GET", f"{PROTECTED}?token={USER_FILE_TOKEN}", auth=G),
        Step("user view rule", "PATCH", "/api/collections/demo1?fields=viewRule",
             {"viewRule": "@request.auth.verified = false"}),
        Step("auth record with view access", "GET", f"{PROTECTED}?token={USER_FILE_TOKEN}", auth=G),
        Step("an Authorization header is no file token", "GET", PROTECTED, auth=G,
             headers={"Authorization": USER_FILE_TOKEN}),
        Step("view rule on the record's fields", "PATCH", "/api/collections/demo1?fields=viewRule",
             {"viewRule": "@request.auth.id != '' && bool = true"}),
        Step("a record the rule excludes", "GET", f"{PROTECTED}?token={USER_FILE_TOKEN}", auth=G),
        Step("an unprotected file of a record the rule excludes", "GET",
             f"{DEMO1_FILES}/test_QZFjKjXchk.txt", auth=G),
        Step("a protected file of a record the rule keeps", "GET",
             f"{DEMO1_FILES}/test_d61b33QdDU.txt?token={USER_FILE_TOKEN}", auth=G),
        Step("view rule back", "PATCH", "/api/collections/demo1?fields=viewRule", {"viewRule": None}),
        Step("superuser token, download and thumb", "GET",
             f"{PROTECTED}?thumb=100x100&download=1&token={SUPERUSER_FILE_TOKEN}", auth=G),
    ],
    "files: paths apps build": [
        Step("by collection id", "GET", "/api/files/wsmn24bux7wo113/84nmscqy84lsi1t/test_QZFjKjXchk.txt", auth=G),
        Step("a record of another collection", "GET", "/api/files/demo2/84nmscqy84lsi1t/test_QZFjKjXchk.txt", auth=G),
        Step("a stored file the record does not name (a thumb's folder)", "GET",
             f"{DEMO1_FILES}/thumbs_300_WlbFWSGmW9.png", auth=G),
        Step("a thumb's stored name", "GET", f"{DEMO1_FILES}/100x100_300_WlbFWSGmW9.png", auth=G),
        Step("a name in another case", "GET", f"{DEMO1_FILES}/TEST_QZFjKjXchk.txt", auth=G),
        Step("through a view collection", "GET", "/api/files/view2/84nmscqy84lsi1t/test_QZFjKjXchk.txt", auth=G),
        Step("a view's protected file as guest", "GET", "/api/files/view1/84nmscqy84lsi1t/test_d61b33QdDU.txt", auth=G),
        Step("an image as download", "GET", f"{DEMO1_FILES}/300_WlbFWSGmW9.png?download=true", auth=G),
        Step("an unknown thumb size", "GET", f"{DEMO1_FILES}/300_WlbFWSGmW9.png?thumb=123x456", auth=G),
        Step("a malformed thumb size", "GET", f"{DEMO1_FILES}/300_WlbFWSGmW9.png?thumb=abc", auth=G),
        Step("an svg thumb", "GET", f"{DEMO1_FILES}/logo_vcfJJG5TAh.svg?thumb=100x100", auth=G),
        Step("a malformed token", "GET", f"{DEMO1_FILES}/test_d61b33QdDU.txt?token=abc", auth=G),
        Step("an empty token", "GET", f"{DEMO1_FILES}/test_d61b33QdDU.txt?token=", auth=G),
        Step("an empty file name", "GET", f"{DEMO1_FILES}/", auth=G),
        Step("no file name", "GET", DEMO1_FILES, auth=G),
        Step("a trailing slash", "GET", f"{DEMO1_FILES}/test_QZFjKjXchk.txt/", auth=G),
        Step("an encoded slash in the name", "GET", f"{DEMO1_FILES}/a%2Ftest_QZFjKjXchk.txt", auth=G),
        Step("an encoded slash in the record id", "GET", "/api/files/demo1/x%2F84nmscqy84lsi1t/test_QZFjKjXchk.txt",
             auth=G),
        Step("file token as guest", "POST", "/api/files/token", auth=G),
        Step("a delete", "DELETE", f"{DEMO1_FILES}/test_QZFjKjXchk.txt", auth=G),
    ],
    "files: percent-encoded paths, matched on the path as sent": [
        Step("an escaped underscore in the name", "GET", f"{DEMO1_FILES}/test%5FQZFjKjXchk.txt", auth=G),
        Step("an encoded slash between collection and record", "GET",
             "/api/files/demo1%2F84nmscqy84lsi1t/test_QZFjKjXchk.txt", auth=G),
        Step("an encoded slash between record and name", "GET",
             "/api/files/demo1/84nmscqy84lsi1t%2Ftest_QZFjKjXchk.txt", auth=G),
        Step("an encoded slash after files", "GET", "/api/files%2Fdemo1/84nmscqy84lsi1t/test_QZFjKjXchk.txt", auth=G),
        Step("an encoded double slash in the name", "GET", f"{DEMO1_FILES}/a%2F%2Ftest_QZFjKjXchk.txt", auth=G),
        Step("an encoded leading slash in the name", "GET", f"{DEMO1_FILES}/%2Ftest_QZFjKjXchk.txt", auth=G),
        Step("an encoded double slash, posted", "POST", f"{DEMO1_FILES}/a%2F%2Ftest_QZFjKjXchk.txt", auth=G),
        Step("an encoded trailing slash", "GET", f"{DEMO1_FILES}/test_QZFjKjXchk.txt%2F", auth=G),
        Step("an encoded trailing slash after the record", "GET", f"{DEMO1_FILES}%2F", auth=G),
        Step("an encoded dot-dot name", "GET", f"{DEMO1_FILES}/%2e%2e", auth=G),
        Step("an encoded dot name", "GET", f"{DEMO1_FILES}/%2E", auth=G),
        Step("an encoded dot-dot record", "GET", "/api/files/demo1/%2e%2e/test_QZFjKjXchk.txt", auth=G),
        Step("an encoded dot-dot collection", "GET", "/api/files/%2e%2e/84nmscqy84lsi1t/test_QZFjKjXchk.txt", auth=G),
        Step("encoded traversal to the database", "GET", f"{DEMO1_FILES}/%2E%2E%2F%2E%2E%2F%2E%2E%2Fdata.db", auth=G),
        Step("half-encoded traversal to the database", "GET", f"{DEMO1_FILES}/..%2F..%2F..%2Fdata.db", auth=G),
        Step("double-encoded traversal", "GET", f"{DEMO1_FILES}/%252e%252e%252f%252e%252e%252fdata.db", auth=G),
        Step("a double-encoded slash in the name", "GET", f"{DEMO1_FILES}/a%252Ftest_QZFjKjXchk.txt", auth=G),
        Step("an encoded NUL after the name", "GET", f"{DEMO1_FILES}/test_QZFjKjXchk.txt%00", auth=G),
        Step("an encoded slash in the health route", "GET", "/api%2Fhealth", auth=G),
        Step("an encoded trailing slash on a record", "GET", "/api/collections/demo1/records/84nmscqy84lsi1t%2F",
             auth=G),
        Step("an encoded slash in a records path", "GET", "/api/collections/demo1%2Frecords", auth=G),
        Step("an encoded slash in a records path, posted", "POST", "/api/collections/demo1%2Frecords", auth=G),
        Step("an encoded slash before a record id", "GET", "/api/collections/demo1/records%2F84nmscqy84lsi1t",
             auth=G),
        Step("an encoded slash in a record id, as superuser", "GET",
             "/api/collections/demo1/records/x%2F84nmscqy84lsi1t"),
        Step("an encoded slash in a backup key", "GET", "/api/backups/..%2Fdata.db"),
    ],
}

# Last in the module: while it runs, superusers are limited to the addresses the steps name.
SUPERUSER_IP_SCENARIOS: dict[str, list[Step]] = {
    "files: superuser file tokens and superuserIPs (file_test.go)": [
        Step("a trusted proxy header, superusers from 0.0.0.0", "PATCH", SETTINGS,
             {"trustedProxy": {"headers": [TEST_IP]}, "superuserIPs": ["0.0.0.0"]}),
        Step("superuser with non-whitelisted IP", "GET", f"{PROTECTED}?token={SUPERUSER_FILE_TOKEN}", auth=G,
             headers={TEST_IP: "127.0.0.1"}),
        Step("superuser auth from a non-whitelisted IP", "GET", "/api/collections/demo1/records?fields=id",
             headers={TEST_IP: "127.0.0.1"}),
        Step("whitelist 127.0.0.1 (from 0.0.0.0)", "PATCH", SETTINGS, {"superuserIPs": ["127.0.0.1"]},
             headers={TEST_IP: "0.0.0.0"}),
        Step("superuser with whitelisted IP", "GET", f"{PROTECTED}?token={SUPERUSER_FILE_TOKEN}", auth=G,
             headers={TEST_IP: "127.0.0.1"}),
        Step("a user's token is not limited", "GET", f"{DEMO1_FILES}/test_QZFjKjXchk.txt?token={USER_FILE_TOKEN}",
             auth=G, headers={TEST_IP: "10.1.1.1"}),
        Step("settings back", "PATCH", SETTINGS, {"trustedProxy": {"headers": []}, "superuserIPs": []},
             headers={TEST_IP: "127.0.0.1"}),
    ],
}
