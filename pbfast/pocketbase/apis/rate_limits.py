"""The tenant's ``rateLimits`` settings enforced as PocketBase does (``apis/middlewares_rate_limit.go``):
off unless enabled; superusers and ``excludedIPs`` are never limited; a rule is found for the request's
labels (``METHOD /path``, then ``/path``; rules ending in ``/`` match as path prefixes) and audience (``""``
for everyone, ``@guest``, ``@auth``); collection routes look first for their tags (``users:auth``,
``users:create``, then ``*:auth`` ...), and only there: PocketBase's collection middleware has the id of the
global one and replaces it on those routes, so a request counts once. The matched rule counts the client
(``RealIP``, with the tenant's ``trustedProxy`` settings) in a fixed window; past ``maxRequests`` the answer is
429. Saved settings start every window afresh, as in PocketBase (identical settings saved again excepted).

The counting is native, well under a microsecond a check: in the process (:class:`pbfast.primitives.RateLimiter`)
on a node without workers, and in the node's shared memory (:class:`pbfast.primitives.SharedRateLimiter`, one
count per client for the main process and every worker) on a node with ``--workers=N`` (docs/logs-backups.md).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pbfast.http import ApiError
from pbfast.pocketbase.app_settings import RateLimitRule, Settings, ip_in_list
from pbfast.pocketbase.apis.request import TenantRequest
from pbfast.pocketbase.apis.settings import client_ip, real_ip
from pbfast.pocketbase.request_logs import cached_settings
from pbfast.primitives import RateLimiter, SharedRateLimiter

if TYPE_CHECKING:
    from pbfast.pocketbase.collections.model import Collection

__all__ = ["CollectionTags", "RateLimits", "find_rule"]

TOO_MANY: Final = "Too Many Requests."
MEMO_SIZE: Final = 1024  # label lists remembered per tenant and audience (then the memo starts afresh)
CLEAN_EVERY_SECONDS: Final = 3600  # PocketBase cleans its limiters hourly
GUEST_AUDIENCES: Final = ("", "@guest")
AUTH_AUDIENCES: Final = ("", "@auth")


@dataclass(frozen=True, slots=True)
class CollectionTags:
    """A collection route's rate limit tags (``list``, ``auth`` ...) and its pattern (``GET /api/...``)."""

    pattern: str
    tags: tuple[str, ...]


def find_rule(rules: Sequence[RateLimitRule], labels: Sequence[str],
              audiences: Sequence[str]) -> RateLimitRule | None:
    """PocketBase's ``FindRateLimitRule``: per label in order, an exact label first, then the prefix rules
    (labels ending in ``/``, collected while looking at the first label)."""
    prefix_rules: list[RateLimitRule] = []
    for index, label in enumerate(labels):
        for rule in rules:
            if label == rule.label and rule.audience in audiences:
                return rule
            if index == 0 and rule.label.endswith("/"):
                prefix_rules.append(rule)
        for rule in prefix_rules:
            if (label + "/").startswith(rule.label) and rule.audience in audiences:
                return rule
    return None


@dataclass(frozen=True, slots=True)
class _Found:
    """A matched rule as a request counts it: its count key up to the client's IP, and its window."""

    key: str
    max_requests: int
    duration: int


_MISSING: Final = _Found("", 0, 0)  # not in a memo yet (None there: no rule applies)
_BY_LABEL: Final = _Found("", 0, 0)  # no rule of the route's tags: the route's labels decide
_NO_COLLECTION: Final = _Found("", 0, 0)  # a collection route of a missing collection: answered 404, not counted


class _Compiled:
    """A tenant's rules as one settings object has them, ready for the per-request check: the count keys'
    prefix (the tenant and its settings' generation); per audience (guest, auth) the first rule of each exact
    label and the prefix rules in order (:func:`find_rule` with dictionary lookups); and the rule found for
    each label list seen, a bounded memo (the search was most of a check's cost)."""

    __slots__ = ("collection_found", "collections", "exact", "found", "key_prefix", "prefixes", "route_found",
                 "settings", "tagged")

    def __init__(self, tenant_id: str, settings: Settings) -> None:
        self.settings = settings
        # Every process of the node (the windows may be shared) derives the same generation, and a change of
        # any setting gives new keys, i.e. fresh windows.
        generation = int.from_bytes(hashlib.blake2b(repr(settings).encode(), digest_size=8).digest(), "little")
        self.key_prefix = f"{tenant_id}\0{generation}"
        rules = settings.rate_limits.rules
        self.exact: tuple[dict[str, RateLimitRule], dict[str, RateLimitRule]] = ({}, {})
        self.prefixes: tuple[list[RateLimitRule], list[RateLimitRule]] = ([], [])
        for authenticated, audiences in enumerate((GUEST_AUDIENCES, AUTH_AUDIENCES)):
            for rule in rules:
                if rule.audience in audiences:
                    self.exact[authenticated].setdefault(rule.label, rule)
                    if rule.label.endswith("/"):
                        self.prefixes[authenticated].append(rule)
        # The count key and window of each rule for a route label (one object per rule: the memo shares them).
        self.route_found = {id(rule): _Found(f"{self.key_prefix}\0{rule.label}{rule.audience}\0",
                                             max(rule.max_requests, 0), max(rule.duration, 1)) for rule in rules}
        self.found: tuple[dict[Hashable, _Found | None], dict[Hashable, _Found | None]] = ({}, {})
        # Per (route's tags, collection): the rule its tags find, or _BY_LABEL (then ``found`` per label).
        self.tagged: tuple[dict[Hashable, _Found | None], dict[Hashable, _Found | None]] = ({}, {})
        # A collection route's rule by its ``METHOD /path`` label (which decides the route, so its tags, and the
        # collection): one lookup a request, while the tenant's collections are the ones it was found with.
        self.collection_found: tuple[dict[Hashable, _Found | None], dict[Hashable, _Found | None]] = ({}, {})
        self.collections: object = None

    def find(self, labels: Sequence[str], authenticated: bool) -> RateLimitRule | None:
        """:func:`find_rule` for the audience of a guest or an authenticated request."""
        exact, prefixes = self.exact[authenticated], self.prefixes[authenticated]
        for label in labels:
            rule = exact.get(label)
            if rule is not None:
                return rule
            for rule in prefixes:
                if (label + "/").startswith(rule.label):
                    return rule
        return None

    def route_rule(self, label: str, path: str, authenticated: bool) -> _Found | None:
        """The rule for the request's ``METHOD /path`` label and its path."""
        memo = self.found[authenticated]
        found = memo.get(label, _MISSING)
        if found is _MISSING:
            rule = self.find((label, path), authenticated)
            found = None if rule is None else self.route_found[id(rule)]
            _remember(memo, label, found)
        return found

    def collection_rule(self, tags: CollectionTags, collection: Collection, label: str, path: str,
                        authenticated: bool) -> _Found | None:
        """The rule for a collection route: its tags for the collection, then for any (``*:auth``), then the
        route's labels; counted per collection and route (PocketBase's ``collection.Id + pattern + tags``)."""
        tagged = self.tagged[authenticated]
        tag_key = (id(tags), collection.id, collection.name)  # tags: the router's, alive as long as it
        found = tagged.get(tag_key, _MISSING)  # (the check looks this key up itself first)
        if found is _MISSING:
            rule = self.find([f"{collection.name}:{tag}" for tag in tags.tags] + [f"*:{tag}" for tag in tags.tags],
                             authenticated)
            found = _BY_LABEL if rule is None else self._collection_found(tags, collection, rule)
            _remember(tagged, tag_key, found)
        if found is not _BY_LABEL:
            return found
        memo = self.found[authenticated]
        memo_key = (id(tags), collection.id, label)
        found = memo.get(memo_key, _MISSING)
        if found is _MISSING:
            rule = self.find((label, path), authenticated)
            found = None if rule is None else self._collection_found(tags, collection, rule)
            _remember(memo, memo_key, found)
        return found

    def collection_route_rule(self, request: TenantRequest, tags: CollectionTags, label: str,
                              authenticated: bool) -> _Found | None:
        """:meth:`collection_rule` for the request's collection (:data:`_NO_COLLECTION`: it has none), kept
        for its label in :attr:`collection_found`."""
        collections = request.tenant.collections
        if collections is not self.collections:  # a schema change: labels may name other collections now
            self.collection_found[0].clear()
            self.collection_found[1].clear()
            self.collections = collections
        collection = request.tenant.collection(request.params.get("collection", ""))
        found = _NO_COLLECTION if collection is None else \
            self.collection_rule(tags, collection, label, request.path, authenticated)
        _remember(self.collection_found[authenticated], label, found)
        return found

    def _collection_found(self, tags: CollectionTags, collection: Collection, rule: RateLimitRule) -> _Found:
        return _Found(f"{self.key_prefix}\0{collection.id}{tags.pattern}{''.join(tags.tags)}{rule.audience}\0",
                      max(rule.max_requests, 0), max(rule.duration, 1))


def _remember(memo: dict[Hashable, _Found | None], key: Hashable, found: _Found | None) -> None:
    if len(memo) >= MEMO_SIZE:  # request paths carry record ids: a long-lived tenant sees many
        memo.clear()
    memo[key] = found


class RateLimits:
    """The rate limiter's windows (the process's, or the node's shared ones: set :attr:`limiter`), and the
    check each tenant request goes through."""

    def __init__(self) -> None:
        self.limiter: RateLimiter | SharedRateLimiter = RateLimiter()
        self._cleaned = int(time.time())
        # Per tenant: its rules compiled for the settings last seen. PocketBase starts its limiters afresh when
        # the settings are saved; a new generation (part of every key) does that here, once the changed
        # settings are seen (settings changed back to an earlier state within a window find its count again).
        self._compiled: dict[str, _Compiled] = {}

    def check(self, request: TenantRequest, collection_tags: CollectionTags | None) -> None:
        """Raise 429 when a rule of the tenant's settings refuses the request."""
        tenant = request.tenant
        settings = cached_settings(tenant)
        limits = settings.rate_limits
        if not limits.enabled or not limits.rules:
            return
        auth = request.auth
        if auth is not None and auth.superuser:
            return
        remote = client_ip(request)
        ip = real_ip(request, settings, remote) if settings.trusted_proxy_headers else remote
        if not ip or (limits.excluded_ips and ip_in_list(limits.excluded_ips, ip)):
            return
        compiled = self._compiled.get(tenant.id)
        if compiled is None or compiled.settings is not settings:
            compiled = self._compile(tenant.id, settings, compiled)
        authenticated = auth is not None
        label = f"{request.scope.method} {request.path}"
        if collection_tags is None:
            found = compiled.found[authenticated].get(label, _MISSING)  # compiled.route_rule, inline: the usual case
            if found is _MISSING:
                found = compiled.route_rule(label, request.path, authenticated)
        else:
            # A collection route counts once, by its collection's rule (a missing collection: 404, not counted).
            found = compiled.collection_found[authenticated].get(label, _MISSING) \
                if compiled.collections is tenant.collections else _MISSING  # collection_route_rule, inline
            if found is _MISSING:
                found = compiled.collection_route_rule(request, collection_tags, label, authenticated)
            if found is _NO_COLLECTION:
                return
        now = int(time.time())
        if found is not None and not self.limiter.allow(found.key + ip, found.max_requests, found.duration, now):
            raise ApiError(429, TOO_MANY)
        if now - self._cleaned > CLEAN_EVERY_SECONDS:
            self._cleaned = now
            if isinstance(self.limiter, RateLimiter):  # shared windows need none: ended ones are reused
                self.limiter.clean(now)

    def _compile(self, tenant_id: str, settings: Settings, seen: _Compiled | None) -> _Compiled:
        """The rules of ``settings``; those already compiled when they are equal (the settings are read again
        every second: a new object, mostly the same settings)."""
        if seen is not None and seen.settings == settings:
            seen.settings = settings
            return seen
        compiled = self._compiled[tenant_id] = _Compiled(tenant_id, settings)
        return compiled
