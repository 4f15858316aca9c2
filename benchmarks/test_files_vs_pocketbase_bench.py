"""Files (issue 15, item 4): a pbfast tenant node (direct, as a gateway talks to it) vs stock ``pocketbase
serve`` 0.40.6, side by side, wrk over loopback, same run: download of a 100 KB PNG, download of its
100x100 thumb once kept, upload of a 100 KB file (multipart record create).

``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_files_vs_pocketbase_bench.py -s -p no:cacheprovider``
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import httpx
from bench_tools import headers_script, needs_tools, node_direct_tenant, start_pocketbase, superuser_token
from PIL import Image

from cpcluster import Start
from test_control_plane_bench import run_wrk

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
PHOTOS = {"name": "photos", "type": "base", "listRule": "", "viewRule": "", "createRule": "",
          "fields": [{"name": "image", "type": "file", "maxSelect": 1, "maxSize": 1 << 20, "thumbs": ["100x100"]}]}
BOUNDARY = "benchboundary0123456789"


def _png() -> bytes:
    """A PNG of about 100 KB (noise does not compress)."""
    rng = random.Random(7)
    side = 182
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), bytes(rng.randrange(256) for _ in range(side * side * 3))).save(buffer, "PNG")
    return buffer.getvalue()


def _multipart(data: bytes) -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="photo.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _upload_script(path: Path, body: Path, headers: dict[str, str]) -> Path:
    lines = [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines += ['wrk.method = "POST"', f'wrk.headers["Content-Type"] = "multipart/form-data; boundary={BOUNDARY}"',
              f'local f = io.open("{body}", "rb")', "wrk.body = f:read(\"*all\")", "f:close()"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _seed(base: str, headers: dict[str, str], png: bytes) -> str:
    """The photos collection and one photo; the photo's path under /api/files."""
    token = superuser_token(base, headers)
    created = httpx.post(f"{base}/api/collections", json=PHOTOS, headers={"Authorization": token, **headers})
    assert created.status_code == 200, created.text
    record = httpx.post(f"{base}/api/collections/photos/records", headers=headers,
                        files={"image": ("photo.png", png, "image/png")}).json()
    path = f"/api/files/photos/{record['id']}/{record['image']}"
    assert httpx.get(f"{base}{path}?thumb=100x100", headers=headers).status_code == 200  # made once, kept
    return path


@needs_tools("wrk", "pocketbase")
def test_files_pbfast_vs_pocketbase(pbfast_process: Start, tmp_path: Path) -> None:
    png = _png()
    body = tmp_path / "upload.bin"
    body.write_bytes(_multipart(png))
    stock = start_pocketbase(tmp_path / "stock" / "pb_data")
    try:
        pb_url = stock.url
        pb_path = _seed(pb_url, {}, png)
        tenant = node_direct_tenant(pbfast_process, tmp_path)
        forward, fast_url = tenant.forward, tenant.url
        fast_path = _seed(fast_url, forward, png)

        seconds = 10 if FULL else 1
        scripts = {"pocketbase": (headers_script(tmp_path / "pb.lua", {}),
                                  _upload_script(tmp_path / "pb_up.lua", body, {})),
                   "pbfast": (headers_script(tmp_path / "fast.lua", forward),
                              _upload_script(tmp_path / "fast_up.lua", body, forward))}
        cases = {"download 100 KB original": ("", 0), "download cached thumb 100x100": ("?thumb=100x100", 0),
                 "upload 100 KB (record create)": (None, 1)}
        for name, (query, script) in cases.items():
            rates = {}
            for backend, (base, path) in {"pocketbase": (pb_url, pb_path), "pbfast": (fast_url, fast_path)}.items():
                url = base + (path + query if query is not None else "/api/collections/photos/records")
                rate, latency, errors = run_wrk(url, scripts[backend][script], 16, seconds)
                assert errors == 0, (backend, name)
                rates[backend] = (rate, latency)
            ratio = rates["pbfast"][0] / rates["pocketbase"][0]
            print(f"\n[bench] {name}: pocketbase {rates['pocketbase'][0]:,.0f} req/s ({rates['pocketbase'][1]}) | "
                  f"pbfast {rates['pbfast'][0]:,.0f} req/s ({rates['pbfast'][1]}) = {ratio:.2f}x pocketbase")
    finally:
        stock.stop()
