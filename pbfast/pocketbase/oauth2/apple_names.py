"""The name Apple gives once: "Sign in with Apple" POSTs the user's name (a ``user`` JSON form field) to the
redirect URL with the code on the first consent only, and its id_token has no name. As PocketBase's redirect
handler does, ``/api/oauth2-redirect`` keeps that name for one minute under the code (:func:`remember`), and
the ``auth-with-oauth2`` call with that code takes it when the provider gave no name (:func:`take`).

Per process, as PocketBase's app store is per app: with ``--workers`` > 1 the workers hand the redirect and
the ``auth-with-oauth2`` calls over to the main process, so the login finds the name there. Thread-safe (the
redirect runs on the event loop, the login's provider calls on a thread).
"""

from __future__ import annotations

import threading
import time
from typing import Final

from pbfast.pocketbase.gocompat.strconv import trim_space
from pbfast.pocketbase.oauth2.user_json import DecodeError, decode, parse

__all__ = ["remember", "take"]

KEEP_SECONDS: Final = 60.0
MAX_NAMES: Final = 10_000  # bounded: each needs a subscribed realtime client, but those are cheap to open
_KEY_PREFIX: Final = "@redirect_name_"

_lock = threading.Lock()
_names: dict[tuple[str, str], tuple[float, str]] = {}  # (tenant, code) -> (expires at, name)


def _purge(now: float) -> None:
    for key in [key for key, (expires, _) in _names.items() if expires <= now]:
        del _names[key]


def remember(tenant_id: str, code: str, user_form: str) -> None:
    """Keeps the name of Apple's ``user`` form field (``{"name": {"firstName", "lastName"}}``) for ``code``;
    anything unreadable is ignored, as PocketBase ignores it."""
    if not user_form or len(_KEY_PREFIX + code) > 1000:
        return
    try:
        value = decode(parse(user_form.encode()), {("name", "firstName"): "string", ("name", "lastName"): "string"})
    except DecodeError:
        return
    full = f"{value[('name', 'firstName')]} {value[('name', 'lastName')]}".encode()
    if len(full) > 150:
        full = full[:150]  # Go slices bytes: a character cut in two becomes U+FFFD
    name = trim_space(full.decode(errors="replace"))
    if not name:
        return
    now = time.monotonic()
    with _lock:
        _purge(now)
        if len(_names) < MAX_NAMES:
            _names[(tenant_id, code)] = (now + KEEP_SECONDS, name)


def take(tenant_id: str, code: str) -> str | None:
    """The name kept for ``code`` (removed: once), None when there is none (or it expired)."""
    with _lock:
        _purge(time.monotonic())
        kept = _names.pop((tenant_id, code), None)
    return None if kept is None else kept[1]
