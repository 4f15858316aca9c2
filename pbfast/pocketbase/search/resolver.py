"""PocketBase's ``RecordFieldResolver`` over a tenant's ``data.db`` tables: which SQL an identifier of a
filter, rule or sort (``title``, ``rel.name``, ``@request.auth.id``, ``@collection.x.y``) stands for."""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pbfast.pocketbase.gocompat import go_quote
from pbfast.pocketbase.search.errors import FilterError
from pbfast.pocketbase.search.runner import IdentifierRunner
from pbfast.pocketbase.search.sql import ResolvedField

if TYPE_CHECKING:  # the engine itself does not depend on the collections package (it depends on this one)
    from pbfast.pocketbase.collections.model import Collection, CollectionMap

__all__ = ["RequestInfo", "TableResolver", "superuser_only_field"]

_ALLOWED_FIELD_PATTERNS: Final = tuple(re.compile(p, re.ASCII) for p in (
    r"\w+[\w.:]*",
    r"@request\.context",
    r"@request\.method",
    r"@request\.auth\.[\w.:]*\w+",
    r"@request\.body\.[\w.:]*\w+",
    r"@request\.query\.[\w.:]*\w+",
    r"@request\.headers\.[\w.:]*\w+",
    r"@collection\.\w+(:\w+)?\.[\w.:]*\w+",
))


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What ``@request.*`` identifiers read (PocketBase's ``RequestInfo``): the auth record (its row with
    ``collectionId`` and ``collectionName``; None for guests), the body, query and headers of the request,
    its method and the context (``default``, ``oauth2``, ...)."""

    auth: Mapping[str, Any] | None = None
    body: Mapping[str, Any] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "GET"
    context: str = "default"


SUPERUSER_ONLY_FIELD_PREFIXES: Final = ("@collection.", "@request.")


def superuser_only_field(value: str) -> str | None:
    """The ``@collection.``/``@request.`` prefix if ``value`` (a client ``filter`` or ``sort``) mentions one.

    PocketBase refuses these for non-superusers with ``403 "Only superusers can filter by <prefix>"``
    (a loose substring check, done before any parsing).
    """
    for prefix in SUPERUSER_ONLY_FIELD_PREFIXES:
        if prefix in value:
            return prefix
    return None


class TableResolver:
    """Resolves identifiers of one collection's table in a PocketBase ``data.db`` (PocketBase's
    ``RecordFieldResolver``).

    Args:
        collection: the collection whose table is queried.
        request: what ``@request.*`` reads; None makes every ``@request.*`` identifier NULL.
        collections: every collection of the tenant, needed for relations, back-relations,
            ``@collection.*`` and ``@request.auth.<non-plain field>``.
        allow_hidden_fields: ``True`` for superusers and API rules; ``False`` for client filters of
            other users (hidden fields are refused, joined collections' list rules apply, ``email`` of
            auth records only matches where ``emailVisibility`` is on).
        table_alias: the alias of the table in the caller's ``FROM`` (default: the table name).
    """

    def __init__(self, collection: Collection, request: RequestInfo | None = None, *,
                 collections: CollectionMap | None = None, allow_hidden_fields: bool = True,
                 table_alias: str | None = None) -> None:
        self.collections = collections
        self.base = collection
        self.request = request
        self.allow_hidden_fields = allow_hidden_fields
        self.table_alias = table_alias or collection.name
        self._alias_suffix = ""
        self._static: dict[str, Any] = {}
        if request is not None:
            self._static = {
                "context": request.context,
                "method": request.method,
                "query": dict(request.query),
                "headers": {str(k).lower().replace("-", "_"): v for k, v in request.headers.items()},
                "body": dict(request.body),
                "auth": request.auth,
            }

    def with_hidden_fields(self, allow: bool) -> TableResolver:
        """A copy that allows (or refuses) hidden fields."""
        clone = object.__new__(TableResolver)
        clone.__dict__.update(self.__dict__)
        clone.allow_hidden_fields = allow
        return clone

    def _for_rule_join(self, coll: Collection, alias: str) -> TableResolver:
        clone = object.__new__(TableResolver)
        clone.__dict__.update(self.__dict__)
        clone.base = coll
        clone.table_alias = alias
        clone.allow_hidden_fields = True
        clone._alias_suffix = f"_r{zlib.crc32(alias.encode()):08x}"
        return clone

    @property
    def has_request(self) -> bool:
        """Whether a request was given."""
        return self.request is not None

    def load_collection(self, name_or_id: str) -> Collection:
        """A collection by name or id (the base collection included)."""
        if name_or_id in (self.base.name, self.base.id):
            return self.base
        coll = self.collections.lookup(name_or_id) if self.collections is not None else None
        if coll is None:
            if not self.collections:
                raise FilterError(f"missing collection {go_quote(name_or_id)} (relations, back-relations and @collection "
                                  "need the resolver's collections registry)")
            raise FilterError(f"missing collection {go_quote(name_or_id)}")
        return coll

    def resolve(self, identifier: str) -> ResolvedField:
        """See :meth:`Resolver.resolve`."""
        if not any(p.fullmatch(identifier) for p in _ALLOWED_FIELD_PATTERNS):
            raise FilterError(f"failed to resolve field {go_quote(identifier)}")
        return IdentifierRunner(self, identifier).run()
