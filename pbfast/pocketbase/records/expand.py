"""Expanding relations of records (PocketBase's ``core/record_query_expand.go``): ``expand=author,
comments_via_post.author`` loads, for a list of records, the records their relations (or back-relations)
point at, level by level, into each record's ``expand``.

Each path is expanded on its own, as PocketBase does: a path that cannot be resolved (an unknown field, a
collection the requester may not view) is dropped as a whole and reported in the returned failures, while
the other paths are kept; paths sharing a prefix are merged (``rel.a`` and ``rel.b`` give ``rel`` with both).
Which related records a requester sees, and how they look to it, is the caller's :data:`RelatedFetch`
(the API applies each collection's ``viewRule``). Every level costs one query for all the records of that
level (plus one for a back-relation's ids), whatever their number; a fetch the caller memoises makes paths
sharing a prefix cost one query per level in all.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import apsw
import orjson

from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.json import json_each
from pbfast.pocketbase.fields import RelationField
from pbfast.pocketbase.records.find import Row
from pbfast.pocketbase.search.expand import (
    BACK_RELATION_LIMIT,
    MAX_EXPAND_DEPTH,
    ExpandPathError,
    ExpandRelation,
    resolve_expand_segment,
)
from pbfast.pocketbase.tenant import Tenant

__all__ = ["MAX_EXPAND_STEPS", "MAX_FETCHED_RECORDS", "ExpandFailed", "ExpandTooLarge", "ExpandedRecord", "Expansion",
           "RelatedFetch", "back_relation_ids", "count_expanded", "expand_records", "find_by_ids", "merge_expand"]


@dataclass(eq=False, slots=True)
class ExpandedRecord:
    """A record with what was expanded of it (PocketBase's ``Record`` with its ``expand`` data).

    ``expand`` is None until a path reached this record (then ``{}`` at least: the answer shows
    ``"expand": {}``); ``show_email``: the viewer may see the email of this auth record whatever its
    ``emailVisibility`` (it manages the record); ``via``: ids a back-relation expand found, by segment;
    ``memo``: where the record's JSON may be kept for later answers (the row's, while it is unchanged)."""

    collection: Collection
    row: Row
    show_email: bool = False
    expand: Expansion | None = None
    via: dict[str, list[str]] | None = None
    memo: dict[Hashable, Any] | None = None

    @property
    def id(self) -> str:
        return str(self.row.get("id", ""))


Expansion: TypeAlias = dict[str, "ExpandedRecord | list[ExpandedRecord]"]
"""A record's ``expand``: segment -> the expanded record (single relation) or records."""

RelatedFetch = Callable[[Collection, list[str]], list[ExpandedRecord]]
"""The records of a collection with the given ids that the requester may see, as new
:class:`ExpandedRecord` objects (raises :class:`ExpandFailed` when it may see none of that collection)."""


class ExpandFailed(Exception):
    """A path that cannot be expanded (dropped from the answer, as PocketBase does)."""


_ExpandError = (ExpandFailed, ExpandPathError, apsw.SQLError)


@dataclass(slots=True)
class _Step:
    """One segment expanded from one list of records: each record's related ids and the related records
    (or why it failed), shared by every path through it."""

    relation: ExpandRelation | None = None
    record_ids: list[list[str]] | None = None
    related: list[ExpandedRecord] | None = None
    error: Exception | None = None


MAX_EXPAND_STEPS: Final = 1000
"""Distinct steps one expand may query (a realistic one takes a few dozen): each costs a query, and the
spellings of a back-relation (``x_via_y``, ``X_via_y``, ``x(y)``, by collection id) multiply them."""
MAX_FETCHED_RECORDS: Final = 100_000
"""Related records all the steps of one expand may load (also those of paths that fail further down)."""


class ExpandTooLarge(Exception):
    """An expand whose work would pass :data:`MAX_EXPAND_STEPS` or :data:`MAX_FETCHED_RECORDS`."""


class _Steps:
    """The steps of one expand: (id of the list of records a segment is expanded from, the segment) -> its
    step (the lists are the caller's records or a cached step's related records, alive for the whole
    expand), and the work done so far."""

    __slots__ = ("by_key", "fetched", "queried")

    def __init__(self) -> None:
        self.by_key: dict[tuple[int, str], _Step] = {}
        self.queried = 0  # steps that resolved to a relation (and query it)
        self.fetched = 0


def expand_records(tenant: Tenant, records: list[ExpandedRecord], paths: list[str],
                   fetch: RelatedFetch) -> dict[str, str]:
    """Expand normalised ``paths`` (:func:`~pbfast.pocketbase.search.expand.normalize_expands`) into
    ``records`` (all of one collection). Returns the failed paths with the reason (PocketBase logs them).

    Paths sharing a prefix share its steps (a segment from the same records is resolved and fetched once,
    also when it fails), so the cost grows with the distinct steps, not with the number of paths. Raises
    :class:`ExpandTooLarge` past :data:`MAX_EXPAND_STEPS` steps or :data:`MAX_FETCHED_RECORDS` records."""
    failures: dict[str, str] = {}
    steps = _Steps()
    for path in paths:
        try:
            _expand(tenant, records, path, fetch, 1, steps)
        except _ExpandError as err:
            failures[path] = str(err)
    return failures


def _step(tenant: Tenant, records: list[ExpandedRecord], segment: str, fetch: RelatedFetch, steps: _Steps) -> _Step:
    key = (id(records), segment)
    step = steps.by_key.get(key)
    if step is None:
        step = steps.by_key[key] = _Step()
        try:
            step.relation = resolve_expand_segment(segment, records[0].collection, tenant.collections)
            # a segment that resolves to nothing costs no query; one that does is counted
            steps.queried += 1
            if steps.queried > MAX_EXPAND_STEPS:
                raise ExpandTooLarge(f"more than {MAX_EXPAND_STEPS} distinct relation steps")
            ids_of = _ids_getter(tenant, step.relation, records)
            step.record_ids = [ids_of(record) for record in records]  # a relation's value is parsed once
            step.related = fetch(step.relation.target, [i for ids in step.record_ids for i in ids])
        except _ExpandError as err:
            step.error = err
        steps.fetched += len(step.related or ())
        if steps.fetched > MAX_FETCHED_RECORDS:
            raise ExpandTooLarge(f"more than {MAX_FETCHED_RECORDS} related records")
    if step.error is not None:
        raise step.error
    return step


def _expand(tenant: Tenant, records: list[ExpandedRecord], path: str, fetch: RelatedFetch, level: int,
            steps: _Steps) -> None:
    if not path or level > MAX_EXPAND_DEPTH or not records:
        return
    segment, _, rest = path.partition(".")
    step = _step(tenant, records, segment, fetch, steps)
    assert step.relation is not None and step.record_ids is not None and step.related is not None
    if rest:
        _expand(tenant, step.related, rest, fetch, level + 1, steps)
    by_id = {rel.id: rel for rel in step.related}
    multiple = step.relation.multiple
    for record, ids in zip(records, step.record_ids, strict=True):
        expand = record.expand
        if expand is None:
            expand = record.expand = {}
        if len(ids) == 1:  # (a single relation's one id: no list to build)
            one = by_id.get(ids[0])
            if one is None:
                continue
            found = [one]
        else:
            found = [by_id[i] for i in ids if i in by_id]
            if not found:
                continue
        previous = expand.get(segment)
        if previous is not None:
            for old in _as_list(previous):
                for rel in found:
                    if rel.id == old.id and rel is not old:  # the same step's records are already merged
                        merge_expand(rel, old.expand or {})
        expand[segment] = found if multiple else found[0]


def _as_list(value: ExpandedRecord | list[ExpandedRecord] | None) -> list[ExpandedRecord]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _ids_getter(tenant: Tenant, relation: ExpandRelation,
                records: list[ExpandedRecord]) -> Callable[[ExpandedRecord], list[str]]:
    """How to read a record's related ids: its relation field, or (back-relation) the ids found for it now."""
    back_field = relation.back_field
    name = relation.name
    if back_field is None:
        field = records[0].collection.field(name)
        assert isinstance(field, RelationField)  # resolved as a relation field of this collection
        def field_ids(record: ExpandedRecord) -> list[str]:
            if record.via and name in record.via:  # a back-relation of an earlier path set under this name
                return record.via[name]
            return field.typed(record.row.get(name))
        return field_ids
    found = back_relation_ids(tenant, relation.target, back_field.name, back_field.is_multiple(),
                              [record.id for record in records])
    for record in records:
        ids = found.get(record.id)
        if ids:
            if record.via is None:
                record.via = {}
            record.via[name] = ids
    return lambda record: record.via.get(name, []) if record.via else []


def merge_expand(record: ExpandedRecord, expand: Expansion) -> None:
    """PocketBase's ``Record.MergeExpand``: ``expand`` merged into the record's, recursively by record id;
    where either side is a list the result is a list (the old records first, new ones appended)."""
    if not expand:
        return
    if record.expand is None:
        record.expand = dict(expand)
        return
    merged = record.expand
    for key, new in expand.items():
        old = merged.get(key)
        if old is None:
            merged[key] = new
            continue
        old_list = list(old) if isinstance(old, list) else [old]
        new_list = new if isinstance(new, list) else [new]
        old_by_id = {o.id: o for o in old_list}
        for item in new_list:
            existing = old_by_id.get(item.id)
            if existing is not None:
                merge_expand(existing, item.expand or {})
            else:
                old_list.append(item)
        merged[key] = old_list if isinstance(old, list) or isinstance(new, list) or not old_list else old_list[0]


def back_relation_ids(tenant: Tenant, source: Collection, field: str, multiple: bool,
                      targets: list[str]) -> dict[str, list[str]]:
    """For each id of ``targets``: the ids of the ``source`` records whose relation ``field`` holds it, the
    first :data:`BACK_RELATION_LIMIT` in table order (what PocketBase's query per record returns), all
    targets in one query."""
    if not targets:
        return {}
    table, column = quote(source.name), f"{quote(source.name)}.{quote(field)}"
    # a view has no rowid: its rows come in the order its query gives them
    order = "" if source.type == "view" else f"ORDER BY {table}.rowid"
    if multiple:
        found = (f"SELECT {table}.id AS id, je.value AS target, ROW_NUMBER() OVER (PARTITION BY je.value {order}) "
                 f"AS n FROM {table}, {json_each(column)} je WHERE je.value IN (SELECT value FROM json_each(?)) "
                 f"GROUP BY {table}.id, je.value")
    else:
        found = (f"SELECT {table}.id AS id, {column} AS target, ROW_NUMBER() OVER (PARTITION BY {column} {order}) AS n "
                 f"FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))")
    result: dict[str, list[str]] = {}
    for record_id, target, _ in tenant.conn.execute(f"SELECT * FROM ({found}) WHERE n <= ? ORDER BY target, n",
                                                    (orjson.dumps(targets).decode(), BACK_RELATION_LIMIT)):
        result.setdefault(str(target), []).append(str(record_id))
    return result


def find_by_ids(tenant: Tenant, collection: Collection, ids: list[str],
                condition: tuple[str, list[object]] | None) -> list[Row]:
    """The records of ``collection`` among ``ids`` that satisfy ``condition`` (a compiled API rule; None:
    no condition), in one query. Raises ``apsw.SQLError`` when SQLite refuses the rule's SQL."""
    if not ids:
        return []
    table = quote(collection.name)
    sql = f"SELECT {table}.* FROM {table} WHERE {table}.id IN (SELECT value FROM json_each(?))"
    params: list[object] = [orjson.dumps(list(dict.fromkeys(ids))).decode()]
    if condition is not None:
        sql += f" AND ({condition[0]})"
        params += condition[1]
    cursor = tenant.conn.execute(sql, params)
    names: list[str] | None = None
    rows: list[Row] = []
    for values in cursor:
        names = names or [d[0] for d in cursor.getdescription()]
        rows.append(dict(zip(names, values)))
    return rows


def count_expanded(records: list[ExpandedRecord]) -> int:
    """How many expanded records the answer for ``records`` holds (a record expanded under several
    parents counts each time it is shown): what a size limit on the answer checks before building it."""
    sizes: dict[int, int] = {}

    def size(expand: Expansion | None) -> int:
        total = 0
        for value in (expand or {}).values():
            for node in value if isinstance(value, list) else [value]:
                known = sizes.get(id(node))
                if known is None:
                    known = sizes[id(node)] = 1 + size(node.expand)
                total += known
        return total

    return sum(size(record.expand) for record in records)
