"""PocketBase's ``RecordFieldResolver`` over a tenant's ``data.db`` tables: which SQL an identifier of a
filter, rule or sort (``title``, ``rel.name``, ``@request.auth.id``, ``@collection.x.y``) stands for."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pbfast.pocketbase.gocompat import go_quote
from pbfast.pocketbase.search.errors import FilterError
from pbfast.pocketbase.search.runner import IdentifierRunner
from pbfast.pocketbase.search.sql import ResolvedField

__all__ = ["CollectionInfo", "Collections", "TableResolver", "superuser_only_field"]

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
class CollectionInfo:
    """The parts of a collection definition the resolver needs (fields by name, indexes, list rule)."""

    id: str
    name: str
    type: str
    fields: Mapping[str, Mapping[str, Any]]
    indexes: tuple[str, ...]
    list_rule: str | None

    @staticmethod
    def of(data: Mapping[str, Any]) -> CollectionInfo:
        """From a collection dict (``fields``/``indexes`` may be lists or their JSON text)."""
        fields = data.get("fields") or []
        if isinstance(fields, str | bytes):
            fields = json.loads(fields)
        indexes = data.get("indexes") or []
        if isinstance(indexes, str | bytes):
            indexes = json.loads(indexes)
        return CollectionInfo(
            id=str(data.get("id") or ""),
            name=str(data["name"]),
            type=str(data.get("type") or "base"),
            fields={str(f["name"]): f for f in fields},
            indexes=tuple(str(i) for i in indexes),
            list_rule=data.get("listRule"),
        )



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


class Collections:
    """A tenant's collections indexed by id and name, for relation/back-relation/``@collection`` lookups.

    Build it once per schema version and pass it to every :class:`TableResolver`.
    """

    def __init__(self, collections: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]] = ()) -> None:
        values = collections.values() if isinstance(collections, Mapping) else collections
        parsed = [CollectionInfo.of(data) for data in values]
        self.by_id: dict[str, CollectionInfo] = {c.id: c for c in parsed if c.id}
        self.by_name: dict[str, CollectionInfo] = {c.name: c for c in parsed}
        self.by_lower_name: dict[str, CollectionInfo] = {c.name.lower(): c for c in parsed}

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name_or_id: str) -> CollectionInfo | None:
        """A collection by id, exact name or case-insensitive name."""
        return self.by_id.get(name_or_id) or self.by_name.get(name_or_id) or \
            self.by_lower_name.get(name_or_id.lower())


class TableResolver:
    """Resolves identifiers of one collection's table in a PocketBase ``data.db`` (PocketBase's
    ``RecordFieldResolver``).

    Args:
        table_name: the collection's name (= its table).
        fields: the collection's field definitions (``{"name","type","maxSelect","hidden",
            "collectionId",...}``), as in ``_collections.fields``.
        request_context: values for ``@request.*``: ``{"auth": <auth record dict incl. id, collectionId,
            collectionName ...> | None, "method": "GET", "context": "default", "query": {...},
            "headers": {...}, "body": {...}}``. ``None`` makes every ``@request.*`` identifier NULL.
        collections: every collection of the tenant (a :class:`Collections`, ``id -> collection dict`` or
            an iterable of dicts with ``id``, ``name``, ``type``, ``fields``, ``indexes``, ``listRule``), needed for
            relations, back-relations, ``@collection.*`` and ``@request.auth.<non-plain field>``.
        collection_id, collection_type, indexes, list_rule: the base collection's own metadata (taken from
            ``collections`` by name when omitted).
        allow_hidden_fields: ``True`` for superusers and API rules; ``False`` for client filters of
            other users (hidden fields are refused, joined collections' list rules apply, ``email`` of
            auth records only matches where ``emailVisibility`` is on).
        table_alias: the alias of the table in the caller's ``FROM`` (default: the table name).
    """

    def __init__(
        self,
        table_name: str,
        fields: Sequence[Mapping[str, Any]],
        request_context: Mapping[str, Any] | None = None,
        *,
        collections: Collections | Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]] | None = None,
        collection_id: str | None = None,
        collection_type: str | None = None,
        indexes: Sequence[str] | None = None,
        list_rule: str | None = None,
        allow_hidden_fields: bool = True,
        table_alias: str | None = None,
    ) -> None:
        if isinstance(collections, Collections):
            self.collections = collections
        else:
            self.collections = Collections(collections or ())
        known = self.collections.by_name.get(table_name)
        self.base = CollectionInfo(
            id=collection_id if collection_id is not None else (known.id if known else ""),
            name=table_name,
            type=collection_type if collection_type is not None else (known.type if known else "base"),
            fields={str(f["name"]): f for f in fields},
            indexes=tuple(indexes) if indexes is not None else (known.indexes if known else ()),
            list_rule=list_rule if list_rule is not None else (known.list_rule if known else None),
        )
        self.request_context = request_context
        self.allow_hidden_fields = allow_hidden_fields
        self.table_alias = table_alias or table_name
        self._alias_suffix = ""
        self._static: dict[str, Any] = {}
        if request_context is not None:
            headers = request_context.get("headers") or {}
            self._static = {
                "context": request_context.get("context", "default"),
                "method": request_context.get("method", "GET"),
                "query": dict(request_context.get("query") or {}),
                "headers": {str(k).lower().replace("-", "_"): v for k, v in headers.items()},
                "body": dict(request_context.get("body") or {}),
                "auth": request_context.get("auth"),
            }

    @classmethod
    def from_collection(
        cls,
        collection: Mapping[str, Any],
        request_context: Mapping[str, Any] | None = None,
        *,
        collections: Collections | Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]] | None = None,
        allow_hidden_fields: bool = True,
        table_alias: str | None = None,
    ) -> TableResolver:
        """A resolver for a collection dict (``id``, ``name``, ``type``, ``fields``, ``indexes``, ``listRule``)."""
        coll = CollectionInfo.of(collection)
        return cls(coll.name, list(coll.fields.values()), request_context, collections=collections,
                   collection_id=coll.id, collection_type=coll.type, indexes=coll.indexes,
                   list_rule=coll.list_rule, allow_hidden_fields=allow_hidden_fields, table_alias=table_alias)

    def with_hidden_fields(self, allow: bool) -> TableResolver:
        """A copy that allows (or refuses) hidden fields."""
        clone = object.__new__(TableResolver)
        clone.__dict__.update(self.__dict__)
        clone.allow_hidden_fields = allow
        return clone

    def _for_rule_join(self, coll: CollectionInfo, alias: str) -> TableResolver:
        clone = object.__new__(TableResolver)
        clone.__dict__.update(self.__dict__)
        clone.base = coll
        clone.table_alias = alias
        clone.allow_hidden_fields = True
        clone._alias_suffix = f"_r{zlib.crc32(alias.encode()):08x}"
        return clone

    @property
    def has_request(self) -> bool:
        """Whether a request context was given."""
        return self.request_context is not None

    def load_collection(self, name_or_id: str) -> CollectionInfo:
        """A collection by name or id (the base collection included)."""
        if name_or_id in (self.base.name, self.base.id):
            return self.base
        coll = self.collections.get(name_or_id)
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
