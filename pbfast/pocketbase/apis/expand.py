"""The ``expand`` query parameter of the records API (list, view, create, update) and of auth answers
(PocketBase's ``EnrichRecords`` and ``expandFetch`` in ``apis/record_helpers.go``).

Related records are those the requester may view: each collection's ``viewRule`` is evaluated for it
(``@request.context`` is ``expand``), a null rule drops the path for non-superusers, and the emails of
expanded auth records follow the same visibility as on the records API (superusers, the record itself,
its ``manageRule``). Paths that cannot be expanded are dropped silently, as PocketBase does (logged at
debug level)."""

from __future__ import annotations

from typing import Any, Final, Literal

import apsw

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase import records
from pbfast.pocketbase.apis.request import Auth, TenantRequest, request_info
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.records import Condition, ExpandedRecord, ExpandFailed, Row, RuleError, Viewer
from pbfast.pocketbase.search import RequestInfo, TableResolver
from pbfast.pocketbase.search.expand import normalize_expands

__all__ = ["MAX_EXPANDED_RECORDS", "expand_items"]

log = component_logger("TenantNode")

MAX_EXPANDED_RECORDS: Final = 100_000
"""Expanded records one answer may show (a record shown under several parents counts each time): deep
paths over dense relations multiply, and the answer is built in memory. Past it: 400."""
TOO_LARGE: Final = "The expand would show more than {limit} related records; expand less or page smaller."
TOO_MUCH_WORK: Final = "The expand would take {reason}; expand less or page smaller."


def expand_items(request: TenantRequest, collection: Collection, rows: list[Row], items: list[dict[str, Any]], *,
                 body: dict[str, Any] | None = None, auth_state: Auth | None | Literal[False] = False) -> None:
    """Add ``expand`` to ``items`` (the record JSON of ``rows``, in order) as the request's ``expand``
    parameter asks. ``body``: what ``@request.body`` reads in the rules; ``auth_state``: the requester if not
    the request's own (an auth answer expands as the record it authenticates)."""
    param = request.query("expand")
    if not param or not rows:
        return
    paths = normalize_expands(param.split(","))
    if not paths:
        return
    requester = request.auth if auth_state is False else auth_state
    fetch = _ViewableRecords(request, body, requester)
    expanded = [ExpandedRecord(collection, row) for row in rows]
    try:
        failures = records.expand_records(request.tenant, expanded, paths, fetch)
    except records.ExpandTooLarge as err:
        raise ApiError(400, TOO_MUCH_WORK.format(reason=err)) from err
    if failures:
        log.debug("tenant %s: expand of %s skipped: %s", request.tenant.id, collection.name, failures)
    if records.count_expanded(expanded) > MAX_EXPANDED_RECORDS:
        raise ApiError(400, TOO_LARGE.format(limit=MAX_EXPANDED_RECORDS))
    viewer = requester.viewer() if requester is not None else Viewer()
    for item, expand in zip(items, records.expansion_json([e.expand for e in expanded], viewer), strict=True):
        if expand is not None:
            item["expand"] = expand


class _ViewableRecords:
    """PocketBase's ``expandFetch`` for one answer: related records under their collection's ``viewRule``
    for the requester. Queries are memoised: paths sharing a prefix fetch each level once."""

    def __init__(self, request: TenantRequest, body: dict[str, Any] | None, requester: Auth | None) -> None:
        self._request = request
        self._body = body
        self._requester = requester
        self._superuser = requester is not None and requester.superuser
        self._info: RequestInfo | None = None
        self._conditions: dict[str, Condition | None] = {}
        self._rows: dict[tuple[str, frozenset[str]], tuple[list[Row], set[str]]] = {}

    def __call__(self, collection: Collection, ids: list[str]) -> list[ExpandedRecord]:
        condition = self._view_condition(collection)
        key = (collection.id, frozenset(ids))
        found = self._rows.get(key)
        if found is None:
            try:
                rows = records.find_by_ids(self._request.tenant, collection, ids, condition)
            except apsw.SQLError as err:
                raise ExpandFailed(f"viewRule of {collection.name}: {err}") from err
            found = self._rows[key] = (rows, self._managed(collection, rows))
        rows, managed = found
        return [ExpandedRecord(collection, row, show_email=str(row.get("id")) in managed) for row in rows]

    def _resolver(self, collection: Collection) -> TableResolver:
        if self._info is None:
            self._info = request_info(self._request, self._body, context="expand", auth_state=self._requester)
        return TableResolver(collection, self._info, collections=self._request.tenant.collections)

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
                condition = records.compile_rule(rule, self._resolver(collection))
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
            return records.managed_ids(self._request.tenant, collection, [str(r.get("id")) for r in rows], rule,
                                       self._resolver(collection))
        except RuleError as err:
            log.warning("tenant %s: manageRule of %s cannot be evaluated: %s", self._request.tenant.id,
                        collection.name, err)
            return set()
