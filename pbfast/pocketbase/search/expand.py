"""Expand paths (the path part of PocketBase's ``core/record_query_expand.go``): the ``expand`` parameter
normalised into paths, and one segment of a path resolved to the relation it follows, a relation field of
the collection or a back-relation ``<collection>_via_<field>`` (also the deprecated ``<collection>(<field>)``).

A segment that resolves to nothing is an :class:`ExpandPathError`: PocketBase then drops that whole path
silently (the answer has no expand for it; the other paths are still expanded)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pbfast.pocketbase.dbutils.index import single_column_unique_index
from pbfast.pocketbase.fields import RelationField
from pbfast.pocketbase.search.runner import MAX_NESTED_RELS

if TYPE_CHECKING:
    from pbfast.pocketbase.collections.model import Collection, CollectionMap

__all__ = ["BACK_RELATION_LIMIT", "MAX_EXPAND_DEPTH", "ExpandPathError", "ExpandRelation", "normalize_expands",
           "resolve_expand_segment"]

MAX_EXPAND_DEPTH: Final = MAX_NESTED_RELS
"""Segments of one path that are expanded (PocketBase's ``maxNestedRels``); the rest is ignored."""
BACK_RELATION_LIMIT: Final = 1000
"""Records one back-relation expand finds per record (PocketBase's arbitrary cap)."""

# Go's \w is ASCII; FindStringSubmatch is anchored by ^...$ in PocketBase's patterns.
_VIA: Final = re.compile(r"(\w+)_via_(\w+)", re.ASCII)
_VIA_DEPRECATED: Final = re.compile(r"(\w+)\((\w+)\)", re.ASCII)


class ExpandPathError(ValueError):
    """A path segment that is neither a relation field nor a valid back-relation."""


@dataclass(frozen=True, slots=True)
class ExpandRelation:
    """What one path segment expands to.

    ``name``: the segment (the key in ``expand``); ``target``: the collection of the expanded records;
    ``multiple``: a list in the answer (else one record); ``back_field``: for a back-relation, the relation
    field of ``target`` that points at the expanded collection (None for a relation field)."""

    name: str
    target: Collection
    multiple: bool
    back_field: RelationField | None = None


def normalize_expands(paths: Iterable[str]) -> list[str]:
    """PocketBase's ``normalizeExpands``: spaces removed, dots trimmed at both ends, empty paths dropped,
    paths contained in a longer one dropped (``a.b`` when ``a.b.c`` is there), duplicates dropped (first kept).

    In linear time (PocketBase compares every pair; thousands of paths fit in a URL): each path is cut to
    the :data:`MAX_EXPAND_DEPTH` segments that are ever expanded (the rest is never looked at, so a longer
    path expands exactly as its cut does), and a path is contained in another when it is one of the other's
    leading segment runs."""
    normalized: list[str] = []
    for raw in paths:
        path = raw.replace(" ", "").strip(".")
        if path:
            normalized.append(".".join(path.split(".", MAX_EXPAND_DEPTH)[:MAX_EXPAND_DEPTH]))
    contained: set[str] = set()
    for path in normalized:
        segments = path.split(".")
        contained.update(".".join(segments[:n]) for n in range(1, len(segments)))
    return list(dict.fromkeys(path for path in normalized if path not in contained))


def resolve_expand_segment(segment: str, collection: Collection, collections: CollectionMap) -> ExpandRelation:
    """The relation ``segment`` follows from records of ``collection``. Raises :class:`ExpandPathError`."""
    via = (_VIA_DEPRECATED if "(" in segment else _VIA).fullmatch(segment)
    if via is not None:
        source = collections.lookup(via.group(1))
        if source is None:
            raise ExpandPathError(f"couldn't find back-related collection {via.group(1)!r}")
        back_field = source.field(via.group(2))
        if not isinstance(back_field, RelationField) or back_field.collection_id != collection.id:
            raise ExpandPathError(f"couldn't find back-relation field {via.group(2)!r} in collection {source.name!r}")
        unique = single_column_unique_index(source.indexes, back_field.name) is not None
        return ExpandRelation(segment, source, not unique, back_field)
    field = collection.field(segment)
    if not isinstance(field, RelationField):
        raise ExpandPathError(f"couldn't find relation field {segment!r} in collection {collection.name!r}")
    target = collections.lookup(field.collection_id)
    if target is None:
        raise ExpandPathError(f"couldn't find related collection {field.collection_id!r}")
    return ExpandRelation(segment, target, field.is_multiple())
