"""Seeded random requests must never get a 5xx (issue 11, "Done when").

Random filters (a small grammar with random depth and junk), JSON bodies of random shapes (huge numbers and
strings, deep nesting, non-objects, broken JSON), random record ids and collection names, random paths
(traversal, encodings, repeated slashes), random methods and headers, against a tenant through an
all-in-one's gateway, through a cluster's native gateway and at its tenant node directly. Afterwards every
target still answers ``/api/health``.

``PBFAST_FUZZ_REQUESTS`` sets the number of requests (default 3,000, split over the targets; the full run
is 10,000 or more, see ``docs/security.md`` "## Fuzzing"); ``PBFAST_FUZZ_SEED`` replays a run (the seed is
printed and is in every failure message).
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest

from inputrig import AllInOne, ClusterRig, Target, start_all_in_one_rig, start_cluster_rig

REQUESTS = int(os.environ.get("PBFAST_FUZZ_REQUESTS", "3000"))
SEED = int(os.environ.get("PBFAST_FUZZ_SEED", str(random.SystemRandom().randrange(2**32))))

COLLECTIONS = ["demo1", "demo2", "users", "clients", "_superusers", "_mfas", "_otps", "fuzzbox", "view1",
               "nologin", "numbers"]
FIELDS = ["id", "created", "updated", "title", "email", "name", "verified", "n", "j", "t", "rel_one", "rel_many",
          "select_one", "file_one", "json", "number", "bool", "username", "collectionRef", "@request.auth.id",
          "@request.body.title", "@request.query.x", "@request.headers.x_y", "@collection.demo1.title",
          "@collection.users:u.email", "rel_many.title", "demo2_via_rel_many.title", "title:lower",
          "rel_many:length", "select_many:each", "@request.auth.collectionName", "created:isset", "j.a.b",
          "@request.body.n:changed", "@now", "@todayStart", "@yesterday"]
OPERATORS = ["=", "!=", "~", "!~", "<", "<=", ">", ">=", "?=", "?!=", "?~", "?!~", "?<", "?<=", "?>", "?>="]
HUGE_NUMBERS = ["18446744073709551616", "-9223372036854775809", "1e308", "1e400", "-0", "0.1e-400",
                "123456789012345678901234567890", "9007199254740993", "1.5", "-2", "0x10", "1_000", "NaN"]


@dataclass
class Fuzzer:
    rng: random.Random

    def pick(self, items: list[str]) -> str:
        return self.rng.choice(items)

    def junk(self, size: int = 8) -> str:
        alphabet = "abc()'\"\\&|=!~<>?@.:_-%/ \t\n\x00é漢😀{}[],;#+*"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, size)))

    def text(self) -> str:
        roll = self.rng.random()
        if roll < 0.1:
            return "x" * self.rng.choice([0, 1, 255, 256, 5000, 100_000])
        if roll < 0.2:
            return self.junk(40)
        return self.rng.choice(["", "a", "test", "test@example.com", "84nmscqy84lsi1t", "' OR 1=1 --", "%",
                                "_", "\\", "\u202e", "null", "true", "[]", "{}", "<script>"])

    # -- filters ---------------------------------------------------------------------------------------

    def operand(self) -> str:
        roll = self.rng.random()
        if roll < 0.45:
            return self.pick(FIELDS)
        if roll < 0.65:
            quote_char = self.rng.choice("'\"")
            return quote_char + self.text().replace(quote_char, "\\" + quote_char)[:200] + quote_char
        if roll < 0.8:
            return self.pick(HUGE_NUMBERS)
        if roll < 0.9:
            return self.rng.choice(["strftime('%Y', created)", "geoDistance(1, 2, 3, 4)", "strftime(", "f(a,)",
                                    "geoDistance(a.b, 'x', 1e400, -0)", "nope(1)"])
        return self.junk(6)

    def expression(self, depth: int) -> str:
        if depth <= 0 or self.rng.random() < 0.35:
            return f"{self.operand()} {self.pick(OPERATORS)} {self.operand()}"
        if self.rng.random() < 0.5:
            return "(" * self.rng.randint(1, 3) + self.expression(depth - 1) + ")" * self.rng.randint(0, 3)
        return f"{self.expression(depth - 1)} {self.rng.choice(['&&', '||', '&', '|||'])} {self.expression(depth - 1)}"

    def filter(self) -> str:
        roll = self.rng.random()
        if roll < 0.1:
            depth = self.rng.choice([50, 500, 1000, 1800, 3000])
            return "(" * depth + self.expression(1) + ")" * depth
        if roll < 0.15:
            return " && ".join(self.expression(0) for _ in range(self.rng.choice([100, 201, 400])))
        expression = self.expression(self.rng.randint(0, 6))
        if self.rng.random() < 0.2:
            cut = self.rng.randrange(len(expression) + 1)
            expression = expression[:cut] + self.junk(4) + expression[cut:]
        return expression

    def sort(self) -> str:
        return ",".join(self.rng.choice(["", "-", "+"]) + self.rng.choice(FIELDS + ["@random", "@rowid", self.junk(4)])
                        for _ in range(self.rng.randint(1, 4)))

    def query(self) -> str:
        params: list[tuple[str, str]] = []
        for name, make in (("filter", self.filter), ("sort", self.sort),
                           ("fields", lambda: ",".join(self.rng.choice(FIELDS + ["*", "expand.*", "title:excerpt(5,true)",
                                                                             "title:excerpt(-1)", self.junk(3)])
                                                       for _ in range(self.rng.randint(1, 3)))),
                           ("page", lambda: self.rng.choice(["1", "0", "-1", "99999999999999999999999", "1e3", "x"])),
                           ("perPage", lambda: self.rng.choice(["1", "500", "501", "-5", "18446744073709551616", ""])),
                           ("skipTotal", lambda: self.rng.choice(["1", "true", "x"])),
                           ("expand", lambda: self.rng.choice(["rel_one", "rel_many.rel", "a.b.c.d.e.f.g", self.junk(5)])),
                           ("mfaId", lambda: self.text()[:30])):
            if self.rng.random() < (0.6 if name == "filter" else 0.2):
                params.append((name, make()))
        return "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params)

    # -- bodies ----------------------------------------------------------------------------------------

    def value(self, depth: int) -> object:
        roll = self.rng.random()
        if depth > 0 and roll < 0.15:
            return {self.rng.choice(FIELDS + [self.junk(5)]): self.value(depth - 1) for _ in range(self.rng.randint(0, 4))}
        if depth > 0 and roll < 0.25:
            return [self.value(depth - 1) for _ in range(self.rng.randint(0, 4))]
        if roll < 0.45:
            return self.text()
        if roll < 0.6:
            return self.rng.choice([0, -1, 1.5, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**30, 1e308, -0.0])
        if roll < 0.7:
            return self.rng.choice([True, False, None])
        return self.rng.choice(["84nmscqy84lsi1t", ["84nmscqy84lsi1t", "x"], "test@example.com", "1234567890"])

    def body(self) -> bytes:
        roll = self.rng.random()
        if roll < 0.08:
            depth = self.rng.choice([100, 254, 255, 300, 1100])
            return ('{"j": ' + "[" * depth + "]" * depth + "}").encode()
        if roll < 0.16:
            return self.rng.choice([b"null", b"[]", b'"x"', b"1", b"true", b"nul", b"{", b'{"a":1}{', b"\xff\xfe",
                                    b'{"n": 1e400}', b'{"t": NaN}', b'{"t": "\\ud800"}', b'{"a":1,"a":2}', b"{}" * 1000])
        if roll < 0.3:
            key = self.rng.choice(["n", "j", "title", "email", "password", "identity", "mfaId", "listRule", "name",
                                   "fields", "mfa", "authToken", "otp", "passwordConfirm", "oldPassword"])
            return b'{"%s": %s}' % (key.encode(), self.pick(HUGE_NUMBERS).encode())
        fields = {}
        for _ in range(self.rng.randint(0, 8)):
            key = self.rng.choice(FIELDS + ["title+", "n-", "rel_many+", "file_one-", "password", "passwordConfirm",
                                            "identity", "mfaId", "listRule", "viewRule", "name", "type", "fields",
                                            "mfa", "otp", "authRule", self.junk(5)])
            fields[key] = self.value(self.rng.randint(0, 3))
        return json.dumps(fields).encode()

    # -- paths -----------------------------------------------------------------------------------------

    def record_id(self) -> str:
        return self.rng.choice(["84nmscqy84lsi1t", "4q1xlclmfloku33", "", "x" * 300, "..", "%2e%2e", "a%2fb",
                                "%00", "' or 1=1", "é", quote(self.junk(6), safe=""), "_pb_users_auth_"])

    def path(self) -> str:
        collection = self.rng.choice(COLLECTIONS + [quote(self.junk(5), safe=""), "..", "%2e%2e%2f"])
        roll = self.rng.random()
        if roll < 0.35:
            path = f"/api/collections/{collection}/records"
        elif roll < 0.6:
            path = f"/api/collections/{collection}/records/{self.record_id()}"
        elif roll < 0.7:
            path = f"/api/collections/{collection}/auth-with-password"
        elif roll < 0.8:
            path = f"/api/collections/{collection}" + self.rng.choice(["", "/truncate", "/auth-refresh"])
        else:
            path = self.rng.choice(["/api/collections", "/api/health", "/api/../api/health", "//api//collections",
                                    "/api/collections/meta/scaffolds", "/api/%2e%2e/node/tenants", "/api/files/x/y/z",
                                    "/api/settings", "/" + quote(self.junk(10), safe="/%"), "/api/collections/..%2f..",
                                    "/api/collections/demo1/records/../../../" + self.junk(3)])
        query = self.query()
        return path + ("?" + query if query else "")


@dataclass
class Failure:
    target: str
    method: str
    path: str
    body: bytes
    status: int
    answer: bytes

    def __str__(self) -> str:
        return (f"{self.target}: {self.method} {self.path[:300]} body={self.body[:200]!r} -> {self.status} "
                f"{self.answer[:300]!r}")


def collection_definition(fuzz: Fuzzer) -> bytes:
    """A random collection for ``POST /api/collections`` or a PATCH: mostly sensible, with odd values."""
    rng = fuzz.rng
    field_types = ["text", "number", "bool", "email", "url", "editor", "date", "autodate", "select", "json",
                   "file", "relation", "geoPoint", "password", fuzz.junk(4)]
    definition: dict[str, object] = {}
    if rng.random() < 0.7:
        definition["name"] = rng.choice(["fz" + str(rng.randrange(1000)), fuzz.junk(6), "demo1", "_x", "a" * 300])
    if rng.random() < 0.6:
        definition["type"] = rng.choice(["base", "auth", "view", fuzz.junk(3)])
    for rule in ("listRule", "viewRule", "createRule", "updateRule", "deleteRule", "authRule", "manageRule"):
        if rng.random() < 0.2:
            definition[rule] = rng.choice([None, "", fuzz.filter()])
    if rng.random() < 0.5:
        definition["fields"] = [{"name": rng.choice(FIELDS[:12] + [fuzz.junk(4)]), "type": rng.choice(field_types),
                                 **{key: fuzz.value(1) for key in rng.sample(
                                     ["min", "max", "maxSelect", "maxSize", "values", "required", "onlyInt",
                                      "pattern", "collectionId", "cascadeDelete", "hidden", "id"], rng.randint(0, 4))}}
                                for _ in range(rng.randint(0, 4))]
    for option in ("mfa", "otp", "authToken", "passwordAuth", "oauth2", "authAlert", "indexes", "viewQuery"):
        if rng.random() < 0.1:
            definition[option] = rng.choice([fuzz.value(2), {"enabled": True, "duration": 10**30},
                                              {"duration": -1, "secret": fuzz.text()}, {"rule": fuzz.filter()},
                                              ["CREATE INDEX x ON y (z)", fuzz.junk(10)], "SELECT 1 as id"])
    return json.dumps(definition).encode()


def request_of(fuzz: Fuzzer, created: list[str]) -> tuple[str, str, bytes, bool]:
    """One request: (method, path, body, as superuser); mostly ones that reach the API's handlers."""
    rng = fuzz.rng
    kind = rng.random()
    superuser = rng.random() < 0.4
    collection = rng.choice(COLLECTIONS)
    if kind < 0.3:
        return "GET", f"/api/collections/{collection}/records?{fuzz.query()}", b"", superuser
    if kind < 0.4:
        record = rng.choice(created) if created and rng.random() < 0.5 else fuzz.record_id()
        return "GET", f"/api/collections/{collection}/records/{quote(record, safe='%')}?{fuzz.query()}", b"", superuser
    if kind < 0.55:
        return "POST", f"/api/collections/fuzzbox/records?{fuzz.query()}", fuzz.body(), superuser
    if kind < 0.6 and created:
        method = rng.choice(["PATCH", "PATCH", "DELETE"])
        return method, f"/api/collections/fuzzbox/records/{rng.choice(created)}", fuzz.body(), superuser
    if kind < 0.67:
        login = rng.choice(["users", "_superusers", "clients", "nologin", "demo1"])
        body = json.dumps({"identity": rng.choice(["test@example.com", "test2@example.com", fuzz.text()]),
                           "password": rng.choice(["1234567890", fuzz.text()]), "mfaId": fuzz.value(0),
                           "identityField": rng.choice(["", "email", "username", fuzz.junk(3)])}).encode()
        return "POST", f"/api/collections/{login}/auth-with-password?{fuzz.query()}", body, superuser
    if kind < 0.72:
        if rng.random() < 0.5:
            return "POST", "/api/collections", collection_definition(fuzz), True
        return "PATCH", f"/api/collections/{rng.choice(['fuzzbox', 'users', 'demo1', 'fz1'])}", \
            collection_definition(fuzz), True
    method = rng.choice(["GET", "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "PROPFIND"])
    body = fuzz.body() if method in ("POST", "PATCH", "PUT") or rng.random() < 0.05 else b""
    return method, fuzz.path(), body, superuser


def send(client: httpx.Client, target: Target, fuzz: Fuzzer, created: list[str]) -> tuple[str, str, bytes, int, bytes]:
    rng = fuzz.rng
    method, path, body, superuser = request_of(fuzz, created)
    headers = dict(target.headers)
    roll = rng.random()
    if superuser:
        headers.update(target.superuser)
    elif roll < 0.1:
        headers["Authorization"] = rng.choice(["Bearer x", "eyJ.eyJ.x", "Bearer " + "a" * 5000, fuzz.junk(20),
                                               "eyJhbGciOiJub25lIn0.eyJpZCI6IngifQ."])
    headers["content-type"] = rng.choice(["application/json", "application/json; charset=utf-8", "text/plain",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/vnd.api+json", ""])
    if not headers["content-type"]:
        del headers["content-type"]
    if rng.random() < 0.05:
        headers[fuzz.rng.choice(["X-Forwarded-For", "X-Pbfast-Epoch", "X-Pbfast-Client", "Origin", "Range"])] = fuzz.junk(10)
    headers = {k: "".join(ch for ch in v if ch not in "\r\n\x00").strip(" \t") for k, v in headers.items()}
    if rng.random() < 0.15:
        status, answer = _raw(target, method, path, headers, body)
    else:
        try:
            response = client.request(method, target.base + path, content=body or None,
                                      headers={k: v.encode() for k, v in headers.items()})
        except (httpx.InvalidURL, httpx.LocalProtocolError):  # refused by the client library itself
            return method, path, body, -100, b""
        status, answer = response.status_code, response.content
        if status == 200 and method == "POST" and "/fuzzbox/records" in path:
            created.append(str(response.json().get("id")))
    return method, path, body, status, answer


def _raw(target: Target, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """Byte for byte (no path normalisation), chunked now and then; only the status line is parsed."""
    head = f"{method} {target.path_prefix}{path} HTTP/1.1\r\nHost: pb.test\r\nconnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if body and len(body) % 3 == 0:
        data = head.encode() + b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    else:
        data = head.encode() + b"content-length: %d\r\n\r\n" % len(body) + body
    with socket.create_connection(target.host_port, timeout=30) as conn:
        conn.sendall(data)
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    line = raw.split(b"\r\n", 1)[0].split()
    return (int(line[1]) if len(line) > 1 and line[1].isdigit() else 0), raw.partition(b"\r\n\r\n")[2]


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Target]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with start_all_in_one_rig(tmp) as aio, start_cluster_rig(tmp) as cluster:
        _seed_collections(aio, cluster)
        yield [aio.gateway, cluster.gateway, cluster.node]


def _seed_collections(aio: AllInOne, cluster: ClusterRig) -> None:
    """A public collection with a number and a JSON field on each tenant, for bodies to land in."""
    for target in (aio.gateway, cluster.gateway):
        created = target.request("POST", "/api/collections", superuser=True, json={
            "name": "fuzzbox", "type": "base", "listRule": "", "viewRule": "", "createRule": "", "updateRule": "",
            "deleteRule": "", "fields": [{"type": "number", "name": "n"}, {"type": "json", "name": "j"},
                                         {"type": "text", "name": "title"}]})
        assert created.status_code == 200, created.text


def test_random_requests_get_no_5xx(targets: list[Target]) -> None:
    print(f"fuzz seed {SEED} ({REQUESTS} requests); replay with PBFAST_FUZZ_SEED={SEED}")
    rng = random.Random(SEED)
    fuzz = Fuzzer(rng)
    failures: list[Failure] = []
    counts: dict[int, int] = {}
    created: dict[str, list[str]] = {target.name: [] for target in targets}
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        for number in range(REQUESTS):
            target = targets[number % len(targets)]
            method, path, body, status, answer = send(client, target, fuzz, created[target.name])
            counts[status // 100] = counts.get(status // 100, 0) + 1
            if status >= 500:
                failures.append(Failure(target.name, method, path, body, status, answer))
    elapsed = time.monotonic() - started
    print(f"fuzz: {REQUESTS} requests in {elapsed:.1f}s, answers by class {dict(sorted(counts.items()))}")
    for target in targets:
        assert target.request("GET", "/api/health").status_code == 200, f"{target.name} is down (seed {SEED})"
    assert not failures, f"seed {SEED}: {len(failures)} answers were 5xx:\n" + "\n".join(
        str(f) for f in failures[:20])
