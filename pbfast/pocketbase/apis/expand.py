"""The ``expand`` query parameter of the records API (list, view, create, update) and of auth answers
(PocketBase's ``EnrichRecords`` and ``expandFetch`` in ``apis/record_helpers.go``).

Related records are those the requester may view: each collection's ``viewRule`` is evaluated for it
(``@request.context`` is ``expand``), a null rule drops the path for non-superusers, and the emails of
expanded auth records follow the same visibility as on the records API (superusers, the record itself,
its ``manageRule``). Paths that cannot be expanded are dropped silently, as PocketBase does (logged at
debug level)."""

from __future__ import annotations

from typing import Any, Final, Literal

from pbfast.http import ApiError
from pbfast.pocketbase import records
from pbfast.pocketbase.apis.request import Auth, TenantRequest, request_info
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.records import Row, Viewer
from pbfast.pocketbase.records.viewable import MAX_EXPANDED_RECORDS, ExpandTooMany, ViewableRecords, expand_for_viewer

__all__ = ["MAX_EXPANDED_RECORDS", "expand_items"]

TOO_LARGE: Final = "The expand would show more than {limit} related records; expand less or page smaller."
TOO_MUCH_WORK: Final = "The expand would take {reason}; expand less or page smaller."


def expand_items(request: TenantRequest, collection: Collection, rows: list[Row], items: list[dict[str, Any]], *,
                 body: dict[str, Any] | None = None, auth_state: Auth | None | Literal[False] = False) -> None:
    """Add ``expand`` to ``items`` (the record JSON of ``rows``, in order) as the request's ``expand``
    parameter asks (400 past the limits). ``body``: what ``@request.body`` reads in the rules;
    ``auth_state``: the requester if not the request's own (an auth answer expands as the record it
    authenticates)."""
    param = request.query("expand")
    if not param or not rows:
        return
    requester = request.auth if auth_state is False else auth_state
    fetch = ViewableRecords(request.tenant, lambda: request_info(request, body, auth_state=requester),
                            superuser=requester is not None and requester.superuser)
    viewer = requester.viewer() if requester is not None else Viewer()
    try:
        expansions = expand_for_viewer(request.tenant, collection, rows, param, fetch, viewer)
    except records.ExpandTooLarge as err:
        raise ApiError(400, TOO_MUCH_WORK.format(reason=err)) from err
    except ExpandTooMany as err:
        raise ApiError(400, TOO_LARGE.format(limit=MAX_EXPANDED_RECORDS)) from err
    for item, expand in zip(items, expansions, strict=True):
        if expand is not None:
            item["expand"] = expand
