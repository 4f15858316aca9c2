"""Names and types of uploaded files as PocketBase gives them (``tools/filesystem/file.go``): the client's
name cleaned (snake case, a cleaned extension) with a random ``_xxxxxxxxxx`` suffix, and the content type
sniffed from the bytes (Go's ``mimetype`` for the common formats; anything else is
``application/octet-stream``)."""

from __future__ import annotations

import re
import secrets
import string
from typing import Final

import orjson

__all__ = ["detect_type", "normalize_name", "random_suffix"]

_RANDOM_ALPHABET: Final = string.ascii_lowercase + string.digits
_EXT_INVALID: Final = re.compile(r"[^0-9A-Za-z_.*\-+=#]+")
_SNAKE_SPLIT: Final = re.compile(r"[^0-9A-Za-z]+")  # Go's [\W_]+ (ASCII classes)
_OCTET_STREAM: Final = ("application/octet-stream", "")
_TEXT: Final = ("text/plain; charset=utf-8", ".txt")


def random_suffix(length: int = 10) -> str:
    """``length`` characters of ``[a-z0-9]``, uniform: random bytes below 252 (7 × 36) taken mod 36, drawn in
    one system call for most names rather than one per character (``secrets.choice``)."""
    chars: list[str] = []
    while len(chars) < length:
        chars += [_RANDOM_ALPHABET[byte % 36] for byte in secrets.token_bytes(length + 4) if byte < 252]
    return "".join(chars[:length])


def _snakecase(text: str) -> str:
    words = []
    for word in _SNAKE_SPLIT.split(text):
        if not word:
            continue
        out = []
        for index, char in enumerate(word):
            if char.isupper() and index > 0 and not word[index - 1].isupper():
                out.append("_")
            out.append(char)
        words.append("".join(out))
    return "_".join(words).lower()


def _extension(name: str) -> str:
    """The extension with its dot, a double one (``.tar.gz``) included; "" when none."""
    primary = name.rfind(".")
    if primary < 0:
        return ""
    secondary = name.rfind(".", 0, primary)
    return name[secondary:] if secondary >= 0 else name[primary:]


def normalize_name(original: str, data: bytes) -> str:
    """PocketBase's stored name for an upload called ``original`` holding ``data``."""
    raw = original.encode("utf-8", errors="surrogateescape")
    if len(raw) > 300:
        raw = raw[-300:]  # cut as bytes, as Go does (what is not ASCII is dropped below anyway)
    name = raw.decode("utf-8", errors="replace")
    original_ext = _extension(name)
    clean_ext = "." + _EXT_INVALID.sub("", original_ext).strip(".")
    if clean_ext == ".":
        clean_ext = detect_type(data)[1]
    if len(clean_ext) > 20:
        clean_ext = "." + clean_ext[-20:].strip(".")
    base = name[:len(name) - len(original_ext)] if original_ext else name
    clean = _snakecase(base.strip("."))
    if len(clean) < 3:
        clean += random_suffix()
    elif len(clean) > 100:
        clean = clean[:100]
    return f"{clean}_{random_suffix()}{clean_ext}"


def detect_type(data: bytes) -> tuple[str, str]:
    """The content type (as Go's ``mimetype`` names it) and its usual extension."""
    head = data[:3072]
    for magic, found in _MAGIC:
        if head.startswith(magic):
            return found
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp", ".webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav", ".wav"
    if head[4:8] == b"ftyp":
        return ("video/quicktime", ".mov") if head[8:10] == b"qt" else ("video/mp4", ".mp4")
    if head.startswith(b"BM") and len(head) > 14:
        return "image/bmp", ".bmp"
    return _text_type(head, len(data) <= len(head), data)


_MAGIC: Final = (
    (b"\x89PNG\r\n\x1a\n", ("image/png", ".png")),
    (b"\xff\xd8\xff", ("image/jpeg", ".jpg")),
    (b"GIF87a", ("image/gif", ".gif")),
    (b"GIF89a", ("image/gif", ".gif")),
    (b"%PDF-", ("application/pdf", ".pdf")),
    (b"PK\x03\x04", ("application/zip", ".zip")),
    (b"\x1f\x8b", ("application/gzip", ".gz")),
    (b"\x1a\x45\xdf\xa3", ("video/webm", ".webm")),
    (b"ID3", ("audio/mpeg", ".mp3")),
    (b"\x00\x00\x01\x00", ("image/x-icon", ".ico")),
    (b"OggS", ("audio/ogg", ".ogg")),
)
_HTML_STARTS: Final = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<iframe", b"<h1", b"<div",
                       b"<font", b"<table", b"<a", b"<style", b"<title", b"<b", b"<br", b"<p", b"<!--")


def _text_type(head: bytes, whole: bool, data: bytes) -> tuple[str, str]:
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    lower = stripped[:64].lower()
    if lower.startswith(b"<svg") or (lower.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "image/svg+xml", ".svg"
    if lower.startswith(b"<?xml"):
        return "text/xml; charset=utf-8", ".xml"
    for start in _HTML_STARTS:
        if lower.startswith(start) and len(lower) > len(start) and lower[len(start)] in b" >":
            return "text/html; charset=utf-8", ".html"
    if stripped[:1] in (b"{", b"[") and whole:
        try:
            orjson.loads(data)
            return "application/json", ".json"
        except orjson.JSONDecodeError:
            pass
    if not head:
        return _TEXT
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not just a character cut at the sniffed length
            return _OCTET_STREAM
        text = head[:err.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\n\r\x0c\x1b" for c in text):
        return _OCTET_STREAM
    return _TEXT
