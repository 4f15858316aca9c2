"""The tenant's ``rateLimits`` settings enforced as PocketBase does (``apis/middlewares_rate_limit.go``):
off unless enabled; superusers and ``excludedIPs`` are never limited; a rule is found for the request's
labels (``METHOD /path``, then ``/path``; rules ending in ``/`` match as path prefixes) and audience (``""``
for everyone, ``@guest``, ``@auth``); collection routes look first for their tags (``users:auth``,
``users:create``, then ``*:auth`` ...). Each matched rule counts the client (``RealIP``, with the tenant's
``trustedProxy`` settings) in a fixed window; past ``maxRequests`` the answer is 429. Saved settings start
every window afresh, as in PocketBase (identical settings saved again excepted).

The counting is native, well under a microsecond a check: in the process (:class:`pbfast.primitives.RateLimiter`)
on a node without workers, and in the node's shared memory (:class:`pbfast.primitives.SharedRateLimiter`, one
count per client for the main process and every worker) on a node with ``--workers=N`` (docs/logs-backups.md).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pbfast.http import ApiError
from pbfast.pocketbase.app_settings import RateLimitRule, Settings, ip_in_list
from pbfast.pocketbase.apis.request import TenantRequest
from pbfast.pocketbase.apis.settings import client_ip, real_ip
from pbfast.pocketbase.request_logs import cached_settings
from pbfast.primitives import RateLimiter, SharedRateLimiter

__all__ = ["CollectionTags", "RateLimits", "find_rule"]

TOO_MANY: Final = "Too Many Requests."
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


class RateLimits:
    """The rate limiter's windows (the process's, or the node's shared ones: set :attr:`limiter`), and the
    check each tenant request goes through."""

    def __init__(self) -> None:
        self.limiter: RateLimiter | SharedRateLimiter = RateLimiter()
        self._cleaned = time.monotonic()
        # Per tenant: the settings last seen and their generation. PocketBase starts its limiters afresh when
        # the settings are saved; a new generation (part of every key) does that here, once the changed
        # settings are seen (settings changed back to an earlier state within a window find its count again).
        self._generations: dict[str, tuple[Settings, int]] = {}

    def check(self, request: TenantRequest, collection_tags: CollectionTags | None) -> None:
        """Raise 429 when a rule of the tenant's settings refuses the request."""
        settings = cached_settings(request.tenant)
        limits = settings.rate_limits
        if not limits.enabled or not limits.rules or request.superuser:
            return
        remote = client_ip(request)
        ip = real_ip(request, settings, remote) if settings.trusted_proxy_headers else remote
        if not ip or (limits.excluded_ips and ip_in_list(limits.excluded_ips, ip)):
            return
        audiences = AUTH_AUDIENCES if request.auth is not None else GUEST_AUDIENCES
        path = request.path
        labels = [f"{request.method} {path}", path]
        now = int(time.time())
        tenant_id = f"{request.tenant.id}\0{self._generation(request.tenant.id, settings)}"
        rule = find_rule(limits.rules, labels, audiences)
        if rule is not None:
            self._count(f"{tenant_id}\0{rule.label}{rule.audience}\0{ip}", rule, now)
        if collection_tags is not None:
            collection = request.tenant.collection(request.params.get("collection", ""))
            if collection is not None:
                tags = collection_tags.tags
                tagged = [f"{collection.name}:{tag}" for tag in tags] + [f"*:{tag}" for tag in tags] + labels
                rule = find_rule(limits.rules, tagged, audiences)
                if rule is not None:
                    key = f"{tenant_id}\0{collection.id}{collection_tags.pattern}{''.join(tags)}{rule.audience}\0{ip}"
                    self._count(key, rule, now)
        if time.monotonic() - self._cleaned > CLEAN_EVERY_SECONDS:
            self._cleaned = time.monotonic()
            if isinstance(self.limiter, RateLimiter):  # shared windows need none: ended ones are reused
                self.limiter.clean(now)

    def _generation(self, tenant_id: str, settings: Settings) -> int:
        """A digest of the tenant's settings: every process of the node (the windows may be shared) derives the
        same one, and a change of any setting gives new keys, i.e. fresh windows."""
        seen = self._generations.get(tenant_id)
        if seen is not None and seen[0] is settings:
            return seen[1]
        generation = int.from_bytes(hashlib.blake2b(repr(settings).encode(), digest_size=8).digest(), "little")
        self._generations[tenant_id] = (settings, generation)
        return generation

    def _count(self, key: str, rule: RateLimitRule, now: int) -> None:
        if not self.limiter.allow(key, max(rule.max_requests, 0), max(rule.duration, 1), now):
            raise ApiError(429, TOO_MANY)
