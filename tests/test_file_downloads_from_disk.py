"""Downloads answered again from the local store's file (issue 15, download performance): the first download
of a file (or of its thumb) is read and answered as before, later ones are sent by the server from the file
itself. Both answers are the same (bytes and headers), conditional requests and ranges still work, and a file
the record no longer names is not served from what was remembered. A real all-in-one (local object store)
through its gateway."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "pocketbase"))
from pbharness import all_in_one_with_owner  # noqa: E402

OWNER = {"email": "owner@example.com", "password": "owner-password-1"}
SAME_HEADERS = ("content-type", "content-disposition", "content-security-policy", "cache-control", "last-modified",
                "accept-ranges", "content-length")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


def test_later_downloads_are_the_same_answers_sent_from_the_file(pbfast_process: object, tmp_path: Path) -> None:
    _, _, gw, token = all_in_one_with_owner(pbfast_process, tmp_path / "node", "pics", OWNER)
    base = f"{gw}/t/pics"
    made = httpx.post(f"{base}/api/collections", headers={"Authorization": token}, json={
        "name": "photos", "type": "base", "listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": "",
        "fields": [{"name": "image", "type": "file", "maxSelect": 2, "thumbs": ["20x20"]}]})
    assert made.status_code == 200, made.text
    png = _png()
    record = httpx.post(f"{base}/api/collections/photos/records",
                        files=[("image", ("a.png", png, "image/png")), ("image", ("b.png", png, "image/png"))]).json()
    first_name, second_name = record["image"]
    url = f"{base}/api/files/photos/{record['id']}/{first_name}"

    for query in ("", "?thumb=20x20", "?download=1"):
        answers = [httpx.get(url + query) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200], query
        assert answers[0].content == answers[1].content == answers[2].content, query
        for name in SAME_HEADERS:
            assert answers[0].headers.get(name) == answers[1].headers.get(name) == answers[2].headers.get(name), \
                (query, name)
    assert httpx.get(url).content == png
    assert Image.open(io.BytesIO(httpx.get(url + "?thumb=20x20").content)).size == (20, 20)
    assert httpx.get(url + "?download=1").headers["content-disposition"] == f'attachment; filename="{first_name}"'

    modified = httpx.get(url).headers["last-modified"]
    assert httpx.get(url, headers={"If-Modified-Since": modified}).status_code == 304
    ranged = httpx.get(url, headers={"Range": "bytes=0-9"})
    assert (ranged.status_code, ranged.content, ranged.headers["content-range"]) == (206, png[:10], f"bytes 0-9/{len(png)}")
    assert httpx.head(url).headers["content-length"] == str(len(png))

    # The record drops the file: not served from what was remembered (and the other file still is).
    updated = httpx.patch(f"{base}/api/collections/photos/records/{record['id']}", json={"image-": [first_name]})
    assert updated.status_code == 200, updated.text
    for query in ("", "?thumb=20x20"):
        gone = httpx.get(url + query)
        assert (gone.status_code, gone.json()["message"]) == (404, "The requested resource wasn't found."), query
    kept = httpx.get(f"{base}/api/files/photos/{record['id']}/{second_name}")
    assert (kept.status_code, kept.content) == (200, png)

    # The record is deleted: nothing of it is served.
    assert httpx.delete(f"{base}/api/collections/photos/records/{record['id']}").status_code == 204
    assert httpx.get(f"{base}/api/files/photos/{record['id']}/{second_name}").status_code == 404
