"""The cluster's header names are one table, written twice: ``pbfast/cluster/wire.py`` for the Python side and
``rust/src/gateway/wire.rs`` for the native data path. They must agree name for name."""

from __future__ import annotations

import re
from pathlib import Path

from pbfast.cluster import wire

RUST_WIRE = Path(__file__).resolve().parents[1] / "rust" / "src" / "gateway" / "wire.rs"
# Rust constant -> Python constant
TWINS = {"PREFIX": "HEADER_PREFIX", "CLUSTER_TOKEN": "CLUSTER_TOKEN_HEADER", "EPOCH": "EPOCH_HEADER",
         "MOVED": "MOVED_HEADER", "CLIENT": "CLIENT_HEADER", "REQUEST_ID": "REQUEST_ID_HEADER",
         "STREAM_HOLDER": "STREAM_HOLDER_HEADER", "STREAM_HELD": "STREAM_HELD_HEADER",
         "STREAM_MUX": "STREAM_MUX_HEADER", "RAW_PATH": "RAW_PATH_HEADER"}


def _rust_constants() -> dict[str, str]:
    return dict(re.findall(r'^pub const ([A-Z_]+): &str = "([^"]*)";$', RUST_WIRE.read_text(), re.MULTILINE))


def test_rust_and_python_name_the_same_headers() -> None:
    rust = _rust_constants()
    python = {name: getattr(wire, name) for name in wire.__all__ if name.endswith(("_HEADER", "_PREFIX"))}
    assert set(rust) == set(TWINS), "a constant of wire.rs has no Python twin in TWINS (or the other way round)"
    assert set(python) == set(TWINS.values()), "a header of pbfast/cluster/wire.py has no Rust twin"
    assert {TWINS[name]: value for name, value in rust.items()} == python


def test_every_cluster_header_is_under_the_prefix() -> None:
    names = [wire.CLUSTER_TOKEN_HEADER, wire.EPOCH_HEADER, wire.MOVED_HEADER, wire.CLIENT_HEADER,
             wire.STREAM_HOLDER_HEADER, wire.STREAM_HELD_HEADER, wire.STREAM_MUX_HEADER, wire.RAW_PATH_HEADER]
    assert all(name.startswith(wire.HEADER_PREFIX) and name == name.lower() for name in names)


def test_moved_is_read_from_the_header_not_the_body() -> None:
    assert wire.is_moved(503, wire.MOVED_ANSWER_HEADERS)
    assert not wire.is_moved(503, [("content-type", "application/json")])  # a tenant's own 503
    assert not wire.is_moved(200, [(wire.MOVED_HEADER, "1")])
