"""Differential tests of what PocketBase 0.40.6 answers before and around its routes, on one pair of servers
(stock PocketBase and a pbfast tenant on copies of PocketBase's test data dir):

- paths with an empty segment (``//``): 307 to Go's cleaned path, query kept, for every method (pbfast's ``Location`` keeps the ``/t/{id}`` prefix the client used, compared without it);
- the CORS middleware: ``OPTIONS`` answered 204 on any path, with and without ``Origin``; ``Vary: Origin``
  and ``Access-Control-Allow-Origin`` on the answers of other requests;
- the body binder's Content-Type rule on every route that binds a body: JSON only when the type as sent
  begins with ``application/json``, forms bound as forms (settings by dotted names), else 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from differential import Step, compare
from pbharness import Backend, fixture_backends
from test_differential import fixture_ids

USERS = "/api/collections/users"
G = None  # a guest step
NO_TYPE = {"content-type": ""}  # Go's Header.Get and pbfast read an empty header as none
CONTENT_TYPES = {"none": "", "upper case": "APPLICATION/JSON", "+json": "application/vnd.api+json",
                 "text": "text/plain", "charset": "application/json; charset=utf-8",
                 "json prefix": "application/jsonx"}


@pytest.fixture(scope="module")
def backend_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Backend, Backend]]:
    with fixture_backends(tmp_path_factory.mktemp("front")) as pair:
        yield pair


def _prefix(backend: Backend) -> str:
    return httpx.URL(backend.url).path.rstrip("/")


# Raw "." and ".." segments are left out: clients resolve them before sending, and pbfast, which sees the path
# decoded, does not redirect them (PocketBase does not either when they come encoded, as they then would).
UNCLEAN = ["//api/health", "/api//health?x=1&y=%20z", "/api/collections//records", "/api/health//",
           "/api//collections/demo1/records/", "/a:b//c", "/api/collections/demo1/records/84nmscqy84lsi1t//",
           "/api//../health", "//"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"])
def test_unclean_paths_redirect_as_pocketbase(method: str, backend_pair: tuple[Backend, Backend]) -> None:
    differences = []
    for path in UNCLEAN:
        answers = []
        for backend in backend_pair:
            response = httpx.request(method, backend.url + path, headers={"origin": "http://example.com"},
                                     content=b"{}" if method in ("POST", "PATCH") else None)
            prefix = _prefix(backend)
            location = response.headers.get("location", "")
            answers.append((response.status_code, location.removeprefix(prefix),
                            response.headers.get("content-type"), response.text.replace(f'"{prefix}/', '"/'),
                            response.headers.get("vary")))
        if answers[0] != answers[1]:
            differences.append(f"{method} {path}: pocketbase {answers[0]}, pbfast {answers[1]}")
    assert not differences, "\n".join(differences)


def test_a_redirect_is_followed_to_the_tenant(backend_pair: tuple[Backend, Backend]) -> None:
    for backend in backend_pair:
        response = httpx.get(backend.url + "/api//collections/demo1/records?perPage=1&fields=id",
                             headers={"authorization": backend.superuser_token}, follow_redirects=True)
        assert response.status_code == 200, (backend.name, response.text)
        assert response.json()["items"] == [{"id": "84nmscqy84lsi1t"}]
        assert response.url.path == _prefix(backend) + "/api/collections/demo1/records"


_CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers",
                 "access-control-allow-credentials", "access-control-expose-headers", "access-control-max-age")


@pytest.mark.parametrize("origin", [None, "http://example.com"])
def test_cors_as_pocketbase(origin: str | None, backend_pair: tuple[Backend, Backend]) -> None:
    requests = [("OPTIONS", "/api/collections/demo1/records", {"access-control-request-method": "POST",
                                                                "access-control-request-headers": "content-type,x-a"}),
                ("OPTIONS", "/api/health", {}), ("OPTIONS", "/nope/at/all", {}),
                ("OPTIONS", "/api/realtime", {"access-control-request-method": "GET"}),
                ("GET", "/api/health", {}), ("GET", "/api/collections/demo1/records", {}),
                ("GET", "/nope", {}), ("POST", "/api/collections/users/auth-with-password", {}),
                ("DELETE", "/api/health", {}), ("GET", "/api/files/demo1/84nmscqy84lsi1t/nofile.txt", {})]
    differences = []
    for method, path, headers in requests:
        answers = []
        for backend in backend_pair:
            sent = {**headers, **({"origin": origin} if origin else {})}
            response = httpx.request(method, backend.url + path, headers=sent)
            answers.append((response.status_code, response.text,
                            sorted(v.strip() for v in ",".join(response.headers.get_list("vary")).split(",")),
                            {name: response.headers.get(name) for name in _CORS_HEADERS}))
        if answers[0] != answers[1]:
            differences.append(f"{method} {path}: pocketbase {answers[0]}, pbfast {answers[1]}")
    assert not differences, "\n".join(differences)


def test_a_realtime_stream_allows_any_origin(backend_pair: tuple[Backend, Backend]) -> None:
    for backend in backend_pair:
        with httpx.stream("GET", backend.url + "/api/realtime", headers={"origin": "http://example.com"}) as stream:
            assert stream.status_code == 200
            assert stream.headers.get("access-control-allow-origin") == "*", backend.name


def _content_type_steps() -> list[Step]:
    bodies = [
        ("POST", f"{USERS}/auth-with-password", b'{"identity":"test@example.com","password":"wrong-password"}', G),
        ("POST", f"{USERS}/request-verification", b'{"email":"test@example.com"}', G),
        ("POST", f"{USERS}/confirm-verification", b'{"token":"abc"}', G),
        ("POST", f"{USERS}/request-password-reset", b'{"email":"test@example.com"}', G),
        ("POST", f"{USERS}/confirm-password-reset", b'{"token":"abc","password":"12345678","passwordConfirm":"1"}', G),
        ("POST", f"{USERS}/confirm-email-change", b'{"token":"abc","password":"1234567890"}', G),
        ("POST", f"{USERS}/auth-with-otp", b'{"otpId":"abc","password":"x"}', G),
        ("POST", f"{USERS}/auth-with-oauth2", b'{"provider":"nope","code":"x","codeVerifier":"y","redirectURL":"z"}', G),
        ("POST", f"{USERS}/impersonate/4q1xlclmfloku33?fields=record.email", b'{"duration":100}', "superuser"),
        ("PATCH", "/api/settings?fields=meta.appName,batch", b'{"meta":{"appName":"acme"}}', "superuser"),
        ("POST", "/api/settings/test/s3", b'{"filesystem":"nope"}', "superuser"),
        ("POST", "/api/collections/meta/dry-run-view?fields=fields", b'{"query":"select id from users"}', "superuser"),
        ("POST", "/api/realtime", b'{"clientId":"nope","subscriptions":[]}', G),
        ("POST", "/api/backups", b'{"name":"bad name!.zip"}', "superuser"),
        ("PUT", "/api/collections/import", b'{"collections":[]}', "superuser"),
    ]
    return [Step(f"{method} {path} ({label})", method, path, raw=raw, auth=auth, headers={"content-type": value})
            for method, path, raw, auth in bodies for label, value in CONTENT_TYPES.items()]


FORM = {"content-type": "application/x-www-form-urlencoded"}
FORM_STEPS = [
    Step("settings: dotted names", "PATCH", "/api/settings?fields=meta.appName,batch,superuserIPs", headers=FORM,
         raw=b"meta.appName=dotted&batch.maxRequests=7&batch.enabled=f&meta=ignored&Meta.AppName=ignored"),
    Step("settings: a list by repeated names", "PATCH", "/api/settings?fields=superuserIPs,meta.appName",
         headers=FORM, raw=b"superuserIPs=127.0.0.1&superuserIPs=::1&superuserIPs=10.0.0.0/8"),
    Step("settings: a payload over the names", "PATCH", "/api/settings?fields=meta.appName,batch.maxRequests",
         headers=FORM, raw=b"meta.appName=plain&%40jsonPayload=%7B%22meta%22%3A%7B%22appName%22%3A%22json%22%7D%7D"),
    Step("settings: not a number", "PATCH", "/api/settings?fields=batch", headers=FORM, raw=b"batch.maxRequests=x"),
    Step("settings: not a bool", "PATCH", "/api/settings?fields=batch", headers=FORM, raw=b"batch.enabled=yes"),
    Step("settings: unknown names ignored", "PATCH", "/api/settings?fields=logs.maxDays,meta.appName", headers=FORM,
         raw=b"unknown=1&logs.maxDays=12&smtp=x"),
    Step("settings: a multipart form", "PATCH", "/api/settings?fields=meta.appName,logs.maxDays",
         headers={"content-type": "multipart/form-data; boundary=XB"},
         raw=b'--XB\r\ncontent-disposition: form-data; name="meta.appName"\r\n\r\nMulti\r\n'
             b'--XB\r\ncontent-disposition: form-data; name="logs.maxDays"\r\n\r\n4\r\n--XB--\r\n'),
    Step("settings: a multipart form's bad number", "PATCH", "/api/settings?fields=smtp.port",
         headers={"content-type": "multipart/form-data; boundary=XB"},
         raw=b'--XB\r\ncontent-disposition: form-data; name="smtp.port"\r\n\r\nport\r\n--XB--\r\n'),
    Step("settings: back to no IPs", "PATCH", "/api/settings?fields=superuserIPs,meta.appName",
         body={"superuserIPs": [], "meta": {"appName": "acme"}}),
    Step("realtime: a form", "POST", "/api/realtime", headers=FORM, raw=b"clientId=nope&subscriptions=a", auth=G),
    Step("backups: a form's bad name", "POST", "/api/backups", headers=FORM, raw=b"name=bad+name%21.zip"),
    Step("import: a form", "PUT", "/api/collections/import", headers=FORM, raw=b"deleteMissing=true"),
    Step("empty body, no type", "POST", f"{USERS}/request-verification", headers=NO_TYPE, raw=b"", auth=G),
]


def test_body_content_types_as_pocketbase(backend_pair: tuple[Backend, Backend], tmp_path: Path) -> None:
    steps = _content_type_steps() + FORM_STEPS
    differences = compare(*backend_pair, steps, fixture_ids())
    assert not differences, "\n".join(differences)


NEW_KEY = "abcdefghijklmnopqrstuvwxyz0123456789"
SUPERUSERS = "/api/collections/_superusers"
TOKEN_KEY_STEPS = [
    *[Step(f"a superuser sets tokenKey {raw!r}", "PATCH", f"{USERS}/records/oap640cot4yru2s?fields=id",
           body={"tokenKey": raw}) for raw in ("short", "", 123, "x" * 61, None, ["a" * 40])],
    Step("a user's session", "POST", f"{USERS}/impersonate/oap640cot4yru2s?fields=token", body={"duration": 600}),
    Step("the user's session works", "GET", f"{USERS}/records/oap640cot4yru2s?fields=id", auth="as:a user's session"),
    Step("a superuser sets a valid tokenKey", "PATCH", f"{USERS}/records/oap640cot4yru2s?fields=id",
         body={"tokenKey": NEW_KEY}),
    Step("the user's session is over", "GET", f"{USERS}/records/oap640cot4yru2s?fields=id",
         auth="as:a user's session"),
    Step("the same key again with a new password", "PATCH", f"{USERS}/records/oap640cot4yru2s?fields=id",
         body={"tokenKey": NEW_KEY, "password": "1234567890", "passwordConfirm": "1234567890"}),
    Step("a key set on create", "POST", f"{USERS}/records?fields=email", body={
        "tokenKey": "x" * 30, "password": "1234567890", "passwordConfirm": "1234567890", "email": "tk1@example.com"}),
    Step("a new superuser", "POST", f"{SUPERUSERS}/records?fields=email", body={
        "id": "second000000001", "email": "second@example.com", "password": "1234567890",
        "passwordConfirm": "1234567890"}),
    Step("the new superuser logs in", "POST", f"{SUPERUSERS}/auth-with-password?fields=token,record.email",
         body={"identity": "second@example.com", "password": "1234567890"}, auth=G),
    Step("as the new superuser", "GET", "/api/settings?fields=meta.appName", auth="as:the new superuser logs in"),
    Step("its tokenKey changed by another", "PATCH", f"{SUPERUSERS}/records/second000000001?fields=email",
         body={"tokenKey": "y" * 40}),
    Step("its old session", "GET", "/api/settings?fields=meta.appName", auth="as:the new superuser logs in"),
    Step("its old session refreshed", "POST", f"{SUPERUSERS}/auth-refresh", auth="as:the new superuser logs in"),
    Step("it logs in again", "POST", f"{SUPERUSERS}/auth-with-password?fields=token,record.email",
         body={"identity": "second@example.com", "password": "1234567890"}, auth=G),
    Step("its password changed by another", "PATCH", f"{SUPERUSERS}/records/second000000001?fields=email",
         body={"password": "0987654321", "passwordConfirm": "0987654321"}),
    Step("its session after the password change", "GET", "/api/settings?fields=meta.appName",
         auth="as:it logs in again"),
    Step("the new superuser goes", "DELETE", f"{SUPERUSERS}/records/second000000001"),
]


def test_superuser_set_token_keys_as_pocketbase(backend_pair: tuple[Backend, Backend]) -> None:
    differences = compare(*backend_pair, TOKEN_KEY_STEPS, fixture_ids())
    assert not differences, "\n".join(differences)


LF_FORM = {"content-type": "multipart/form-data; boundary=XB"}
DEMO1_SHOWN = "/api/collections/demo1/records?fields=collectionName,text,number,file_one"
MULTIPART_LINE_ENDINGS = {
    "bare LF": b'--XB\ncontent-disposition: form-data; name="text"\n\nhello\n--XB--\n',
    "bare LF, two parts": b'--XB\nContent-Disposition: form-data; name="text"\n\nhello\n--XB\n'
                          b'Content-Disposition: form-data; name="number"\n\n5\n--XB--',
    "bare LF, a file": b'--XB\nContent-Disposition: form-data; name="text"\n\nfile\n--XB\nContent-Disposition: '
                       b'form-data; name="file_one"; filename="hello.txt"\nContent-Type: text/plain\n\nabc\n--XB--\n',
    "bare LF after spaces": b'--XB  \nContent-Disposition: form-data; name="text"\n\nhello\n--XB--',
    "CRLF first, then LF (one part)": b'--XB\r\nContent-Disposition: form-data; name="text"\r\n\r\nhello\n--XB\n'
                                      b'Content-Disposition: form-data; name="number"\n\n5\r\n--XB--',
    "LF first, then CRLF": b'--XB\nContent-Disposition: form-data; name="text"\r\n\r\nhello\r\n--XB\r\n'
                           b'Content-Disposition: form-data; name="number"\r\n\r\n5\r\n--XB--\r\n',
    "CRLF headers, LF blank line": b'--XB\r\nContent-Disposition: form-data; name="text"\n\nhello\r\n--XB--',
    "bare CR": b'--XB\rContent-Disposition: form-data; name="text"\r\rhello\r--XB--',
}


def test_multipart_line_endings_as_pocketbase(backend_pair: tuple[Backend, Backend]) -> None:
    steps = [Step(name, "POST", DEMO1_SHOWN, raw=raw, headers=LF_FORM) for name, raw in MULTIPART_LINE_ENDINGS.items()]
    differences = compare(*backend_pair, steps, fixture_ids())
    assert not differences, "\n".join(differences)


WHITE = {"content-type": "application/json"}
SWEEP_STEPS = [
    # a JSON body of white space only: Go's decoder finds no value
    *[Step(f"white space to {path}", "POST", path, raw=b"  \n", headers=WHITE, auth=auth) for path, auth in (
        (f"{USERS}/auth-with-password", G), (f"{USERS}/request-otp", G), (f"{USERS}/confirm-verification", G),
        ("/api/collections/demo1/records", "superuser"), ("/api/collections/demo1/records", G),
        ("/api/realtime", G), ("/api/settings/test/email", "superuser"),
        ("/api/collections/meta/dry-run-view", "superuser"))],
    Step("white space to an update", "PATCH", "/api/collections/demo1/records/84nmscqy84lsi1t", raw=b" ",
         headers=WHITE),
    # the route that has the method, over a path another method names exactly
    *[Step(f"{method} {path} as {auth}", method, path, auth=auth) for method, path in (
        ("GET", "/api/collections/import"), ("DELETE", "/api/collections/import"), ("HEAD", "/api/collections/import"),
        ("GET", "/api/backups/upload"), ("DELETE", "/api/backups/upload"), ("GET", "/api/collections/meta/scaffolds"),
        ("PATCH", "/api/collections/meta"), ("DELETE", "/api/files/token"), ("GET", "/api/logs/stats"))
      # (not as a superuser: scaffolds carry random index names, the backup error a server path, the log stats
      # counts that PocketBase writes in batches)
      for auth in (G, "superuser") if not (auth and path.endswith(("scaffolds", "upload", "stats")))],
    # every successful JSON answer is trimmed by ``fields``
    Step("health, fields", "GET", "/api/health?fields=code,message", auth=G),
    Step("health, a field of nothing", "GET", "/api/health?fields=%C3%A9", auth=G),
    Step("health as a superuser, fields", "GET", "/api/health?fields=code,data.canBackup"),
    Step("a file token, a field of nothing", "POST", "/api/files/token?fields=x"),
    Step("an OTP request, a field of nothing", "POST", f"{USERS}/request-otp?fields=x",
         body={"email": "nobody@example.com"}, auth=G),
    # the collections list without a sort: the table's own order
    Step("collections unsorted", "GET", "/api/collections?fields=name"),
    Step("collections unsorted, page 2", "GET", "/api/collections?fields=name&page=2&perPage=4"),
    Step("collections filtered, unsorted", "GET", "/api/collections?fields=name&filter=type='auth'"),
]


def test_odd_requests_as_pocketbase(backend_pair: tuple[Backend, Backend]) -> None:
    differences = compare(*backend_pair, SWEEP_STEPS, fixture_ids())
    assert not differences, "\n".join(differences)


# Go's router answers HEAD for every GET route (the handler runs, its body is not sent); other paths fall
# through to the static file handler as GET does.
HEAD_PATHS = ["/api/health", "/api/realtime", "/api/collections", "/api/collections/demo1",
              "/api/collections/meta/scaffolds", "/api/collections/users/auth-methods",
              "/api/collections/demo1/records?perPage=1", "/api/collections/demo1/records/84nmscqy84lsi1t",
              "/api/collections/demo1/records/missing", "/api/settings", "/api/logs", "/api/logs/stats",
              "/api/backups", "/api/files/demo1/84nmscqy84lsi1t/missing.png", "/api/nope", "/nope",
              "/api/collections/users/auth-with-password", "/api/batch"]


@pytest.mark.parametrize("who", ["guest", "superuser"])
def test_head_as_pocketbase(who: str, backend_pair: tuple[Backend, Backend]) -> None:
    differences = []
    for path in HEAD_PATHS:
        answers = []
        for backend in backend_pair:
            headers = {"authorization": backend.superuser_token} if who == "superuser" else {}
            response = httpx.head(backend.url + path, headers=headers, timeout=10)
            answers.append((response.status_code, response.headers.get("content-type"), response.content,
                            response.headers.get("cache-control")))
        if answers[0] != answers[1]:
            differences.append(f"HEAD {path}: pocketbase {answers[0]}, pbfast {answers[1]}")
    assert not differences, "\n".join(differences)
