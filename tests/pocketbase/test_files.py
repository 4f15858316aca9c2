"""Files (issue 15, item 4) side by side with stock PocketBase 0.40.6 on copies of its test data dir: the
cases of PocketBase's ``apis/file_test.go`` (serving, thumbs, protected files and file tokens), then uploads
through record create/update and batch (names, modifiers, limits, deletes), each answer compared on
status, PocketBase's file headers and body. Generated file names are compared by shape
(``name_<10 random>.ext``); thumbs by format and size (the pixels come from different image libraries).
The Python SDK's uploads (``FileUpload``), thumb and file-token calls are compared too."""

from __future__ import annotations

import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from pbharness import SUPERUSER, Backend
from pocketbase import PocketBase
from pocketbase.models import FileUpload
from scenarios_batch import MULTIPART, multipart

SUPERUSER_FILE_TOKEN = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6InN5d2JoZWNuaDQ2cmhtMCIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6"
                        "ImZpbGUiLCJjb2xsZWN0aW9uSWQiOiJwYmNfMzE0MjYzNTgyMyJ9.Lupz541xRvrktwkrl55p5pPCF77T69ZRsohsIcb2dxc")
EXPIRED_FILE_TOKEN = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6InN5d2JoZWNuaDQ2cmhtMCIsImV4cCI6MTY0MDk5MTY2MSwidHlwZSI6"
                      "ImZpbGUiLCJjb2xsZWN0aW9uSWQiOiJwYmNfMzE0MjYzNTgyMyJ9.nqqtqpPhxU0045F4XP_ruAkzAidYBc5oPy9ErN3XBq0")
USER_FILE_TOKEN = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6"
                   "ImZpbGUiLCJjb2xsZWN0aW9uSWQiOiJfcGJfdXNlcnNfYXV0aF8ifQ.nSTLuCPcGpWn2K2l-BFkC3Vlzc-ZTDPByYq8dN1oPSo")
USER_AUTH_TOKEN = ("eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoiX3BiX3Vz"
                   "ZXJzX2F1dGhfIiwiZXhwIjoyNTI0NjA0NDYxLCJyZWZyZXNoYWJsZSI6dHJ1ZX0.ZT3F0Z3iM-xbGgSG3LEKiEzHrPHr8t8IuHLZGGNuxLo")
AVATAR = "/api/files/_pb_users_auth_/4q1xlclmfloku33/300_1SEi6Q6U72.png"
PROTECTED = "/api/files/demo1/al1h9ijdeojtsjy/300_Jsjq7RdBgA.png"
COMPARED_HEADERS = ("content-type", "content-disposition", "content-security-policy", "cache-control",
                    "content-range", "accept-ranges")
_RANDOM_NAME = re.compile(r"_[a-z0-9]{10}(?=\.|\"|$)")
# a name under 3 characters gets 10 random ones more: "a.txt" -> "a" + 10 random + "_" + 10 random + ".txt"
_SHORT_NAME = re.compile(r'([a-z0-9_]{0,3})[a-z0-9]{10}_<random>')
_RECORD_ID = re.compile(r'"id":"[a-z0-9]{15}"')
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Session:
    """One backend's run: the ids and file names its answers gave, by the placeholders the steps use."""

    backend: Backend
    names: dict[str, str] = field(default_factory=dict)
    client: httpx.Client = field(default_factory=httpx.Client)  # one per run: ~25 ms of CPU per client

    def request(self, method: str, path: str, *, auth: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if auth == "superuser":
            headers["Authorization"] = self.backend.superuser_token
        elif auth == "user":
            headers["Authorization"] = USER_AUTH_TOKEN
        for placeholder, real in self.names.items():
            path = path.replace(placeholder, real)
        return self.client.request(method, self.backend.url + path, headers=headers, timeout=30, **kwargs)

    def answer(self, method: str, path: str, **kwargs: Any) -> Answer:
        response = self.request(method, path, **kwargs)
        headers = {k: response.headers[k] for k in COMPARED_HEADERS if k in response.headers}
        body: Any = response.content
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            body = _JWT.sub("<token>", _RANDOM_NAME.sub("_<random>", response.text))
            for placeholder, real in self.names.items():
                body = body.replace(real, placeholder)
            body = re.sub(r'"(created|updated)":"[^"]*"', r'"\1":"<date>"', body)
            body = _SHORT_NAME.sub(r'<short>_<random>', body)
            body = _RECORD_ID.sub('"id":"<id>"', body)
            body = json.dumps(json.loads(body), sort_keys=True)  # key order aside
        elif content_type.startswith("image/") and "thumb=" in path and response.status_code == 200:
            with Image.open(io.BytesIO(response.content)) as image:
                body = (image.format, image.size)
        boundary = re.search(r"boundary=(\w+)", headers.get("content-type", ""))
        if boundary:  # a random multipart/byteranges boundary
            headers["content-type"] = headers["content-type"].replace(boundary[1], "<boundary>")
            body = body.replace(boundary[1].encode(), b"<boundary>")
        if "content-disposition" in headers:
            headers["content-disposition"] = _SHORT_NAME.sub(
                "<short>_<random>", _RANDOM_NAME.sub("_<random>", headers["content-disposition"]))
        return Answer(response.status_code, headers, body)


def _serving(session: Session) -> list[tuple[str, Answer]]:
    """The cases of PocketBase's ``TestFileDownload`` (rate limits aside) and of its token test."""
    get = session.answer
    return [
        ("token unauthorized", get("POST", "/api/files/token")),
        ("token regular user", _claims(session.request("POST", "/api/files/token", auth="user"))),
        ("token superuser", _claims(session.request("POST", "/api/files/token", auth="superuser"))),
        ("missing collection", get("GET", "/api/files/missing/4q1xlclmfloku33/300_1SEi6Q6U72.png")),
        ("missing record", get("GET", "/api/files/_pb_users_auth_/missing/300_1SEi6Q6U72.png")),
        ("missing file", get("GET", "/api/files/_pb_users_auth_/4q1xlclmfloku33/missing.png")),
        ("traversal", get("GET", "/api/files/_pb_users_auth_/4q1xlclmfloku33/..%2F..%2Fdata.db")),
        ("existing image", get("GET", AVATAR)),
        ("existing image as download", get("GET", AVATAR + "?download=1")),
        ("a byte range", get("GET", AVATAR, headers={"Range": "bytes=0-99"})),
        ("a suffix range", get("GET", AVATAR, headers={"Range": "bytes=-10"})),
        ("an unsatisfiable range", get("GET", AVATAR, headers={"Range": "bytes=999999-"})),
        ("two ranges", get("GET", AVATAR, headers={"Range": "bytes=0-1,5-6"})),
        ("not modified since", get("GET", AVATAR, headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})),
        ("modified since", get("GET", AVATAR, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})),
        ("head", get("HEAD", AVATAR)),
        ("post to a file", get("POST", AVATAR)),
        *[(f"thumb {size}", get("GET", f"{AVATAR}?thumb={size}"))
          for size in ("999x999", "70x50", "70x50t", "70x50b", "70x50f", "0x50", "70x0", "100x100")],
        ("thumb of a text file ignored", get("GET", "/api/files/_pb_users_auth_/oap640cot4yru2s/test_kfd2wYLxkz.txt"
                                                    "?thumb=100x100")),
        ("svg with its content security policy", get("GET", "/api/files/demo1/84nmscqy84lsi1t/logo_vcfJJG5TAh.svg")),
        ("text file", get("GET", "/api/files/demo1/84nmscqy84lsi1t/test_QZFjKjXchk.txt")),
        ("protected: expired superuser token", get("GET", f"{PROTECTED}?token={EXPIRED_FILE_TOKEN}")),
        ("protected: superuser token", get("GET", f"{PROTECTED}?token={SUPERUSER_FILE_TOKEN}")),
        ("protected: guest", get("GET", PROTECTED)),
        ("protected: auth record token", get("GET", f"{PROTECTED}?token={USER_FILE_TOKEN}")),
        ("protected: an auth token is no file token", get("GET", f"{PROTECTED}?token={USER_AUTH_TOKEN}")),
        ("view: rule fails", get("GET", f"/api/files/view1/al1h9ijdeojtsjy/300_Jsjq7RdBgA.png?token={USER_FILE_TOKEN}")),
        ("view: rule holds", get("GET", f"/api/files/view1/84nmscqy84lsi1t/test_d61b33QdDU.txt?token={USER_FILE_TOKEN}")),
    ]


def _claims(response: httpx.Response) -> Answer:
    import base64
    import json
    token = response.json().get("token", "") if response.status_code == 200 else ""
    payload = token.split(".")[1] if token.count(".") == 2 else ""
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))) if payload else {}
    return Answer(response.status_code, {}, sorted((k, v) for k, v in claims.items() if k != "exp"))


def _uploads(session: Session) -> list[tuple[str, Answer]]:
    """Uploads through record create/update and batch, the limits, and the files' lives after."""
    answers: list[tuple[str, Answer]] = []

    def step(name: str, method: str, path: str, **kwargs: Any) -> Answer:
        answer = session.answer(method, path, **kwargs)
        answers.append((name, answer))
        return answer

    def remember(prefix: str, response: httpx.Response) -> None:
        record = response.json()
        session.names[f"<{prefix}-id>"] = record["id"]
        names = [n for key in ("file_one", "file_many") for n in
                 ([record[key]] if isinstance(record.get(key), str) else record.get(key) or []) if n]
        for index, name in enumerate(names):
            session.names[f"<{prefix}-file-{index}>"] = name

    demo1 = "/api/collections/demo1/records"
    created = session.request("POST", demo1, auth="superuser", headers=MULTIPART, content=multipart(
        [("text", "with files")], [("file_one", "My Report.PDF", b"%PDF-1.4 tiny"),
                                   ("file_many", "a.txt", b"hello"), ("file_many", "photo.png", _png(40, 30))]))
    answers.append(("create with files", Answer(created.status_code, {}, _RANDOM_NAME.sub("_<random>", created.text)
                                                 .split('"created"')[0] if created.status_code != 200 else "")))
    remember("r", created)
    shown = "?fields=file_one,file_many"
    step("view the record", "GET", f"{demo1}/<r-id>{shown}", auth="superuser")
    step("its text file", "GET", "/api/files/demo1/<r-id>/<r-file-1>")
    step("its image thumb (default size)", "GET", "/api/files/demo1/<r-id>/<r-file-2>?thumb=100x100")
    step("its protected file without a token", "GET", "/api/files/demo1/<r-id>/<r-file-0>")
    step("append with field+", "PATCH", f"{demo1}/<r-id>{shown}", auth="superuser", headers=MULTIPART,
         content=multipart([], [("file_many+", "b.txt", b"more")]))
    step("remove with field-", "PATCH", f"{demo1}/<r-id>{shown}", auth="superuser",
         json={"file_many-": [session.names["<r-file-1>"]]})
    step("the removed file", "GET", "/api/files/demo1/<r-id>/<r-file-1>")
    step("replace a single file", "PATCH", f"{demo1}/<r-id>{shown}", auth="superuser", headers=MULTIPART,
         content=multipart([], [("file_one", "x.txt", b"x"), ("file_one", "y.txt", b"y")]))
    step("the replaced file", "GET", "/api/files/demo1/<r-id>/<r-file-0>?token=" + SUPERUSER_FILE_TOKEN)
    step("names sent as text are kept with the uploads", "PATCH", f"{demo1}/<r-id>{shown}", auth="superuser",
         headers=MULTIPART, content=multipart([("file_many", session.names["<r-file-2>"])],
                                              [("file_many", "c.txt", b"c")]))
    step("an unknown name", "PATCH", f"{demo1}/<r-id>{shown}", auth="superuser", json={"file_many": ["nope.txt"]})
    step("too large", "POST", "/api/collections/demo3/records", auth="superuser", headers=MULTIPART,
         content=multipart([("title", "big")], [("files", "big.bin", b"\0" * (5 * 1024 * 1024 + 1))]))
    step("a type not allowed", "PATCH", "/api/collections/users/records/4q1xlclmfloku33?fields=avatar",
         auth="superuser", headers=MULTIPART, content=multipart([], [("avatar", "notimage.txt", b"not an image")]))
    step("an odd name", "POST", f"{demo1}{shown}", auth="superuser", headers=MULTIPART,
         content=multipart([("text", "odd")], [("file_many", "../../Été Photo!!.tar.gz", b"x"),
                                               ("file_many", ".x", b"y"), ("file_many", "noext", b"\x89PNG\r\n\x1a\n")]))
    step("a batch with files", "POST", "/api/batch", auth="superuser", headers=MULTIPART, content=multipart(
        [("@jsonPayload", '{"requests":[{"method":"POST","url":"/api/collections/demo1/records?fields=file_many",'
                          '"body":{"text":"batch"}}]}')], [("requests.0.file_many", "batched.txt", b"batch")]))
    step("a failing batch stores nothing", "POST", "/api/batch", auth="superuser", headers=MULTIPART, content=multipart(
        [("@jsonPayload", '{"requests":[{"method":"POST","url":"/api/collections/demo1/records","body":{"text":"a"}},'
                          '{"method":"POST","url":"/api/collections/missing/records","body":{"text":""}}]}')],
        [("requests.0.file_many", "rolled.txt", b"rolled back")]))
    step("delete the record", "DELETE", f"{demo1}/<r-id>", auth="superuser")
    step("its files are gone", "GET", "/api/files/demo1/<r-id>/<r-file-2>")
    return answers


def _differences(stock: list[tuple[str, Answer]], fast: list[tuple[str, Answer]]) -> list[str]:
    return [f"{name}:\n  pocketbase: {a}\n  pbfast:     {b}" for (name, a), (_, b) in zip(stock, fast, strict=True)
            if a != b]


def _python_sdk_files(base_url: str) -> dict[str, Any]:
    """Upload with the Python SDK's ``FileUpload``, then read back: the file, a thumb, a protected file with
    the SDK's file token."""
    pb = PocketBase(base_url)
    pb.collection("_superusers").auth_with_password(SUPERUSER["identity"], SUPERUSER["password"])
    png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x02\x00\x00\x00\x02\x08\x02\x00\x00\x00\xfd\xd4\x9as"
           b"\x00\x00\x00\x16IDATx\x9cc\xf8\xcf\xc0\xf0\x9f\x81\x81\x81\x01\x03\x00\x1f\xf0\x03\xfd\x8a\xd2\x12\xbb"
           b"\x00\x00\x00\x00IEND\xaeB`\x82")
    record = pb.collection("demo1").create({
        "text": "sdk upload",
        "file_one": FileUpload(("secret.txt", b"protected text", "text/plain")),
        "file_many": FileUpload(("a.png", png, "image/png"), ("notes.txt", b"notes", "text/plain"))})
    many = record.file_many
    out: dict[str, Any] = {"names": [name.split("_")[0][:1] for name in [record.file_one, *many]]}
    out["image"] = httpx.get(pb.files.get_url(record, many[0])).content == png
    thumb = httpx.get(pb.files.get_url(record, many[0], {"thumb": "100x100"}))
    out["thumb"] = (thumb.status_code, thumb.headers["content-type"])
    out["protected without token"] = httpx.get(pb.files.get_url(record, record.file_one)).status_code
    token = pb.files.get_token()
    protected = httpx.get(pb.files.get_url(record, record.file_one, {"token": token}))
    out["protected with token"] = (protected.status_code, protected.content)
    return out


def test_files_as_pocketbase(stock_pocketbase: Backend, pbfast_fixture_tenant: Backend, tmp_path: Path) -> None:
    """Both sequences, and the Python SDK's uploads, against one pair of servers (a pair costs seconds)."""
    report = tmp_path.parent / "differential-report.txt"
    problems = []
    for title, sequence in (("serving", _serving), ("uploads", _uploads)):
        sessions = Session(stock_pocketbase), Session(pbfast_fixture_tenant)
        stock, fast = sequence(sessions[0]), sequence(sessions[1])
        for session in sessions:
            session.client.close()
        differences = _differences(stock, fast)
        with report.open("a") as out:
            out.write(f"files: {title}: {len(stock) - len(differences)}/{len(stock)} equal\n")
        problems += [d[:1500] for d in differences]
    stock_sdk, fast_sdk = _python_sdk_files(stock_pocketbase.url), _python_sdk_files(pbfast_fixture_tenant.url)
    assert fast_sdk == stock_sdk
    assert fast_sdk["protected with token"] == (200, b"protected text")
    assert not problems, "\n".join(problems)
    # the node's store: the deleted record's files, and the failed batch's upload, are gone once deletes ran
    store = pbfast_fixture_tenant.replica_dir / "storage"
    deadline = time.monotonic() + 10
    def left_behind() -> list[str]:  # a failed batch's upload, a file the save dropped, an invalid upload
        # files only: a record's directory is named by its random id, which may start with "x" too
        # os.walk, not rglob: a record directory emptied by a background delete may go while it is walked
        return [name for _, _, names in os.walk(store) for name in names
                if name.startswith(("rolled", "x", "big_", "notimage_"))]

    while time.monotonic() < deadline and left_behind():
        time.sleep(0.1)
    kept = [name for _, _, names in os.walk(store) for name in names]
    assert any(name.startswith("batched_") for name in kept), kept  # the store is the replica directory
    assert not left_behind(), left_behind()
    # committed deletes wait for the restore window (noted under deleted/): the replaced file is still there
    assert any(name.startswith("my_report_") for name in kept), kept
    assert list((store.parent / "deleted").iterdir()), "the deletes are noted"
