"""The API rules of a collection being saved, checked with the filter engine as PocketBase does: each rule
must compile against the collection's fields, the tenant's other collections and an empty request."""

from __future__ import annotations

from typing import Final

from pbfast.pocketbase.collections.model import Collection, CollectionMap
from pbfast.pocketbase.search import RequestInfo, TableResolver, compile_filter

__all__ = ["check_api_rule"]

# an empty request (as PocketBase validates rules): @request.* fields resolve, with their modifiers checked
_EMPTY_REQUEST: Final = RequestInfo(method="")


def check_api_rule(collection: Collection, rule: str, others: CollectionMap) -> None:
    """Raises ``ValueError`` (a :class:`~pbfast.pocketbase.search.FilterError`) when ``rule`` is invalid."""
    registry = CollectionMap([*(o for o in others.values() if o.id != collection.id), collection])
    resolver = TableResolver(collection, _EMPTY_REQUEST, collections=registry)
    compile_filter(rule, resolver, max_length=None)  # PocketBase limits the length of client filters only
