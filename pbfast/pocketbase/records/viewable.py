"""Related records as a requester may view them (PocketBase's ``expandFetch`` in ``apis/record_helpers.go``),
and the expansion of a list of records for that requester: what the records API and realtime events share.

Each related collection's ``viewRule`` is evaluated for the requester with ``@request.context`` set to
``expand``; a null rule drops the path for non-superusers; the emails of expanded auth records follow the
records API's visibility (superusers, the record itself, its ``manageRule``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final

import apsw

from pbfast.logs import component_logger
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.records.expand import ExpandedRecord, ExpandFailed, Expansion, expand_records, find_by_ids
from pbfast.pocketbase.records.export import Viewer, record_json
from pbfast.pocketbase.dbutils.kept_rows import KeptRow
from pbfast.pocketbase.records.find import Row, depends_on_data_only
from pbfast.pocketbase.records.rules import Condition, RuleError, compile_rule, managed_ids
from pbfast.pocketbase.search import RequestInfo, TableResolver
from pbfast.pocketbase.search.expand import normalize_expands
from pbfast.pocketbase.tenant import Tenant

__all__ = ["MAX_EXPANDED_RECORDS", "ExpandTooMany", "ViewableRecords", "expand_for_viewer"]

log = component_logger("TenantNode")

EXPAND_CONTEXT: Final = "expand"
MAX_EXPANDED_RECORDS: Final = 100_000
"""Expanded records one answer may show (a record shown under several parents counts each time): deep
paths over dense relations multiply, and the answer is built in memory."""


class ExpandTooMany(Exception):  # noqa: N818 - reads as "expand too many (records)"
    """The expansion would show more than :data:`MAX_EXPANDED_RECORDS` related records."""


class ViewableRecords:
    """PocketBase's ``expandFetch`` for one answer: related records under their collection's ``viewRule``
    for the requester. ``request_info``: what ``@request.*`` reads (called once, when a rule needs it; its
    context is replaced by ``expand``). Queries are memoised: paths sharing a prefix fetch each level once.
    Not thread-safe: one per answer, on the thread holding the tenant's connection."""

    def __init__(self, tenant: Tenant, request_info: Callable[[], RequestInfo], superuser: bool) -> None:
        self._tenant = tenant
        self._request_info = request_info
        self._superuser = superuser
        self._info: RequestInfo | None = None
        self._conditions: dict[str, Condition | None] = {}
        self._rows: dict[tuple[str, frozenset[str]], tuple[list[KeptRow], set[str]]] = {}

    def __call__(self, collection: Collection, ids: list[str]) -> list[ExpandedRecord]:
        condition = self._view_condition(collection)
        key = (collection.id, frozenset(ids))
        found = self._rows.get(key)
        if found is None:
            tenant = self._tenant
            try:
                if depends_on_data_only(tenant, collection, condition[0] if condition is not None else ""):
                    scope = (collection.id,) if condition is None else (collection.id, condition[0], *condition[1])
                    kept = tenant.related_rows.find(tenant.conn, scope, ids,
                                                    lambda wanted: find_by_ids(tenant, collection, wanted, condition))
                else:
                    kept = [KeptRow(row) for row in find_by_ids(tenant, collection, ids, condition)]
            except apsw.SQLError as err:
                raise ExpandFailed(f"viewRule of {collection.name}: {err}") from err
            found = self._rows[key] = (kept, self._managed(collection, [k.row for k in kept]))
        kept, managed = found
        if not managed:
            return [ExpandedRecord(collection, k.row, memo=k.memo) for k in kept]
        return [ExpandedRecord(collection, k.row, show_email=str(k.row.get("id")) in managed, memo=k.memo)
                for k in kept]

    def _resolver(self, collection: Collection) -> TableResolver:
        if self._info is None:
            self._info = dataclasses.replace(self._request_info(), context=EXPAND_CONTEXT)
        return TableResolver(collection, self._info, collections=self._tenant.collections)

    def _view_condition(self, collection: Collection) -> Condition | None:
        if self._superuser:
            return None
        if collection.id in self._conditions:
            return self._conditions[collection.id]
        rule = collection.viewRule
        if rule is None:
            raise ExpandFailed(f"only superusers can view collection {collection.name!r} records")
        condition = None
        if rule.strip():
            try:
                condition = compile_rule(rule, self._resolver(collection))
            except RuleError as err:
                raise ExpandFailed(f"viewRule of {collection.name}: {err}") from err
        self._conditions[collection.id] = condition
        return condition

    def _managed(self, collection: Collection, rows: list[Row]) -> set[str]:
        """Ids of auth records whose ``manageRule`` holds for the requester (their email is shown)."""
        rule = collection.rule("manageRule") if collection.type == "auth" else None
        if self._superuser or not rule or not rows:
            return set()
        try:
            return managed_ids(self._tenant, collection, [str(r.get("id")) for r in rows], rule,
                               self._resolver(collection))
        except RuleError as err:
            log.warning("tenant %s: manageRule of %s cannot be evaluated: %s", self._tenant.id, collection.name, err)
            return set()


def expand_for_viewer(tenant: Tenant, collection: Collection, rows: list[Row], expand_param: str,
                      fetch: ViewableRecords, viewer: Viewer) -> list[dict[str, Any] | None]:
    """The ``expand`` JSON of each of ``rows`` (in order; None: nothing reached it) for the comma list
    ``expand_param``. Paths that cannot be expanded are dropped, as PocketBase does (logged at debug
    level). Raises :class:`~pbfast.pocketbase.records.ExpandTooLarge` (too much work) and
    :class:`ExpandTooMany` (too large an answer)."""
    paths = normalize_expands(expand_param.split(","))
    if not paths or not rows:
        return [None] * len(rows)
    expanded = [ExpandedRecord(collection, row) for row in rows]
    failures = expand_records(tenant, expanded, paths, fetch)
    if failures:
        log.debug("tenant %s: expand of %s skipped: %s", tenant.id, collection.name, failures)
    answers, shown = _expansion_json([e.expand for e in expanded], viewer)
    if shown > MAX_EXPANDED_RECORDS:
        raise ExpandTooMany(MAX_EXPANDED_RECORDS)
    return answers


def _expansion_json(expands: list[Expansion | None], viewer: Viewer) -> tuple[list[dict[str, Any] | None], int]:
    """Records' ``expand`` as the answer shows it (:func:`~pbfast.pocketbase.records.export.expansion_json`),
    and how many expanded records it shows (:func:`~pbfast.pocketbase.records.expand.count_expanded`), in one
    walk. Each distinct record's JSON is built once, however many parents show it, so building before the
    check costs no more than the records fetched (bounded by the expand's own limits)."""
    built: dict[int, tuple[dict[str, Any], int]] = {}
    superuser = viewer.superuser  # what a base or view record's JSON depends on (its hidden fields)

    def export(value: Expansion) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        total = 0
        for key, related in value.items():
            if isinstance(related, list):
                items = []
                for node in related:
                    data, size = built.get(id(node)) or one(node)
                    items.append(data)
                    total += size
                out[key] = items
            else:
                out[key], size = built.get(id(related)) or one(related)
                total += size
        return out, total

    def one(node: ExpandedRecord) -> tuple[dict[str, Any], int]:
        memo, collection = node.memo, node.collection
        if memo is not None and collection.type != "auth":  # (an auth record's JSON depends on who views it)
            shown = memo.get(superuser)
            if shown is None or shown[0] is not collection:
                shown = memo[superuser] = (collection, record_json(collection, node.row, viewer))
            data = dict(shown[1])  # this answer's own (its "expand" is added)
        else:
            data = record_json(collection, node.row, viewer, show_email=node.show_email)
        size = 1
        if node.expand is not None:
            data["expand"], inner = export(node.expand)
            size += inner
        known = built[id(node)] = (data, size)
        return known

    answers: list[dict[str, Any] | None] = []
    shown = 0
    for expand in expands:
        if expand is None:
            answers.append(None)
        else:
            data, size = export(expand)
            answers.append(data)
            shown += size
    return answers, shown
