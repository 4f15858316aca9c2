"""The API rules of a collection being saved, checked with the filter engine as PocketBase does: each rule
must compile against the collection's fields, the tenant's other collections and an empty request."""

from __future__ import annotations

from typing import Any, Final

from pbfast.pocketbase.collections.model import Collection, CollectionMap
from pbfast.pocketbase.search import Collections, TableResolver, compile_filter

__all__ = ["check_api_rule"]

# an empty request (as PocketBase validates rules): @request.* fields resolve, with their modifiers checked
_EMPTY_REQUEST: Final[dict[str, Any]] = {"auth": None, "body": {}, "query": {}, "headers": {}, "method": "",
                                         "context": "default"}


def check_api_rule(collection: Collection, rule: str, others: CollectionMap) -> None:
    """Raises ``ValueError`` (a :class:`~pbfast.pocketbase.search.FilterError`) when ``rule`` is invalid."""
    infos = [{"id": c.id, "name": c.name, "type": c.type, "fields": c.fields, "indexes": c.indexes,
              "listRule": c.listRule} for c in {**{o.id: o for o in others.values()}, collection.id: collection}.values()]
    registry = Collections(infos)
    info = next(i for i in infos if i["id"] == collection.id)
    resolver = TableResolver.from_collection(info, _EMPTY_REQUEST, collections=registry)
    compile_filter(rule, resolver, max_length=None)  # PocketBase limits the length of client filters only
