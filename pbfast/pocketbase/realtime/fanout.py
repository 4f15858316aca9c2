"""Which clients receive a record change, and what each receives (PocketBase's ``realtimeBroadcastRecord``).

Runs on the database thread that holds the tenant's connection, right after the change was committed (in
the writer's turn, so the rules are checked against the state the change left, and the tenant's changes are
evaluated in commit order). For each client subscribed to a matching topic:

- ``<collection>/<id>`` topics need the collection's ``viewRule``, ``<collection>/*`` and ``<collection>``
  (PocketBase's deprecated form) its ``listRule``, evaluated for the client's auth as it is now (the auth
  record read again; a deleted one makes the client a guest), with the topic's ``options`` as
  ``@request.query``/``@request.headers`` and ``@request.context = "realtime"``; superusers pass (a client
  whose auth record was deleted or got a new ``tokenKey`` since is a guest);
- then the topic's own ``filter`` option, if any (not for guests and users when it or ``sort`` mention
  ``@collection.`` or ``@request.``);
- the record is sent as the client may see it (hidden fields, email visibility for the record itself and its
  managers), with the topic's ``expand`` option applied (each related collection's ``viewRule`` for the
  client), trimmed by its ``fields`` option.

A deleted record is checked against its last stored values (a one-row table standing in for the deleted
row), since it is gone once committed; PocketBase checks before the delete, which differs only for a rule
that looks the record up again through ``@collection``. Rule checks and record JSON are shared between
clients with the same auth and options, so a thousand guests on ``posts/*`` cost one check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import apsw
import orjson

from pbfast.logs import component_logger
from pbfast.pocketbase import gocompat, records, search
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.realtime.subscriptions import Client, ClientAuth, Subscription, SubscriptionOptions
from pbfast.pocketbase.records import RuleError, Viewer
from pbfast.pocketbase.records.viewable import ExpandTooMany, ViewableRecords, expand_for_viewer
from pbfast.pocketbase.search import FilterError, RequestInfo, TableResolver, superuser_only_field
from pbfast.pocketbase.tenant import Tenant

__all__ = ["ACTIONS", "Delivery", "RecordChange", "evaluate"]

log = component_logger("Realtime")

ACTIONS: Final = ("create", "update", "delete")
SUPERUSERS: Final = "_superusers"
REALTIME_CONTEXT: Final = "realtime"
_DELETED_ALIAS: Final = "__pb_realtime__"
# Sentinels of the lookups' own types (compared by identity): a base that is not one of the event's topics, a
# payload not made yet.
_NOT_A_TOPIC: Final = "\0not a topic"
_NOT_MADE: Final = b"\0not made"

# One frame to send: the client, the subscription it is for and the event's data as the client sees it (the
# frame is ``record_frame`` of them; the stream holder joins the parts itself).
Delivery = tuple[Client, Subscription, bytes]


@dataclass(frozen=True, slots=True)
class RecordChange:
    """A committed change of one record: the action, the collection's id and the record's stored row
    (after the change; for a delete, before it). Plain data, so it can cross a process boundary."""

    action: str
    collection_id: str
    row: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Requester:
    """A client's auth as it is at this event."""

    collection: Collection | None
    row: dict[str, Any] | None

    @property
    def superuser(self) -> bool:
        return self.collection is not None and self.collection.name == SUPERUSERS

    def auth_data(self) -> dict[str, Any] | None:
        if self.collection is None or self.row is None:
            return None
        return {**self.row, "collectionId": self.collection.id, "collectionName": self.collection.name}

    def viewer(self) -> Viewer:
        if self.collection is None or self.row is None:
            return Viewer()
        return Viewer(self.superuser, self.collection.id, str(self.row.get("id", "")))


_GUEST: Final = _Requester(None, None)


class _Event:
    """One change being evaluated, with what its clients share."""

    def __init__(self, tenant: Tenant, collection: Collection, change: RecordChange) -> None:
        self.tenant = tenant
        self.collection = collection
        self.change = change
        self.record_id = str(change.row.get("id", ""))
        self._requesters: dict[ClientAuth, _Requester] = {}
        self.payloads: dict[tuple[object, ...], bytes | None] = {}  # by (auth, rule, options key)

    def requester(self, auth: ClientAuth | None) -> _Requester:
        if auth is None:
            return _GUEST
        found = self._requesters.get(auth)
        if found is None:
            collection = self.tenant.collection_by_id(auth.collection_id)
            row = records.load_row(self.tenant, collection, auth.record_id) \
                if collection is not None and collection.type == "auth" else None
            valid = row is not None and str(row.get("tokenKey") or "") == auth.token_key
            found = self._requesters[auth] = _Requester(collection, row) if valid else _GUEST
        return found

    def payload(self, auth: ClientAuth | None, rule: str | None, options: SubscriptionOptions,
                options_key: tuple[object, ...]) -> bytes | None:
        """The event's ``data`` for a client with ``auth`` on a topic needing ``rule`` (None: not for it)."""
        key = (auth, rule, options_key)
        if key not in self.payloads:
            requester = self.requester(auth)
            self.payloads[key] = self._payload(requester, options) \
                if self._can_access(requester, rule, options) else None
        return self.payloads[key]

    def _request_info(self, requester: _Requester, options: SubscriptionOptions) -> RequestInfo:
        return RequestInfo(auth=requester.auth_data(), query=options.query, headers=options.headers, method="GET",
                           context=REALTIME_CONTEXT)

    def _holds(self, expression: str, resolver: TableResolver) -> bool:
        """Whether a filter expression holds for the changed record (False when it cannot be evaluated)."""
        try:
            if self.change.action == "delete":
                return records.draft_matches(self.tenant, self.change.row, expression, resolver)
            return records.rule_holds(self.tenant, self.collection, self.record_id, expression, resolver)
        except (RuleError, FilterError) as err:
            log.debug("tenant %s: realtime check on %s not evaluated: %s", self.tenant.id, self.collection.name, err)
            return False

    def _resolver(self, requester: _Requester, options: SubscriptionOptions, hidden: bool) -> TableResolver:
        alias = _DELETED_ALIAS + self.collection.name if self.change.action == "delete" else None
        return TableResolver(self.collection, self._request_info(requester, options),
                             collections=self.tenant.collections, allow_hidden_fields=hidden, table_alias=alias)

    def _can_access(self, requester: _Requester, rule: str | None, options: SubscriptionOptions) -> bool:
        if not requester.superuser:
            if rule is None:
                return False
            if rule.strip() and not self._holds(rule, self._resolver(requester, options, hidden=True)):
                return False
        client_filter = options.query.get("filter", "")
        if not client_filter:
            return True
        if not requester.superuser and any(superuser_only_field(options.query.get(name, ""))
                                           for name in ("filter", "sort")):
            return False
        return self._holds(client_filter, self._resolver(requester, options, hidden=False))

    def _payload(self, requester: _Requester, options: SubscriptionOptions) -> bytes:
        collection, row = self.collection, self.change.row
        show_email = False
        if collection.type == "auth" and not requester.superuser:
            viewer = requester.viewer()
            same = viewer.auth_collection_id == collection.id and viewer.auth_record_id == self.record_id
            manage_rule = collection.rule("manageRule")
            show_email = same or bool(manage_rule and requester.row is not None
                                      and self._holds(manage_rule, self._resolver(requester, options, hidden=True)))
        record: dict[str, Any] = records.record_json(collection, row, requester.viewer(), show_email=show_email)
        expand = options.query.get("expand", "")
        if expand:
            self._expand(record, requester, options, expand)
        fields = options.query.get("fields", "")
        if fields:
            try:
                record = search.apply_fields(record, search.parse_fields(fields))
            except ValueError as err:  # PocketBase logs it and sends the record whole
                log.debug("tenant %s: realtime fields %r: %s", self.tenant.id, fields, err)
        body = orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=gocompat.go_json_default)
        return b'{"record":%b,"action":"%b"}' % (body, self.change.action.encode())

    def _expand(self, record: dict[str, Any], requester: _Requester, options: SubscriptionOptions,
                expand: str) -> None:
        """Add the topic's ``expand`` option to the record as the client may view it; what cannot be
        expanded is left out (PocketBase logs it and sends the event)."""
        fetch = ViewableRecords(self.tenant, lambda: self._request_info(requester, options), requester.superuser)
        try:
            expansion = expand_for_viewer(self.tenant, self.collection, [self.change.row], expand, fetch,
                                          requester.viewer())[0]
        except (records.ExpandTooLarge, ExpandTooMany, apsw.Error) as err:
            log.debug("tenant %s: realtime expand %r of %s: %s", self.tenant.id, expand, self.collection.name, err)
            return
        if expansion is not None:
            record["expand"] = expansion


def evaluate(tenant: Tenant, clients: tuple[Client, ...], change: RecordChange) -> list[Delivery]:
    """What ``change`` sends, client by client, in the order of each client's subscriptions. Call on the
    thread holding the tenant's connection, in its turn. Clients with the same auth and topic options share one
    rule check and one serialised record (:meth:`_Event.payload`): per client, this is a lookup."""
    collection = tenant.collection_by_id(change.collection_id)
    if collection is None or change.action not in ACTIONS:
        return []
    event = _Event(tenant, collection, change)
    record_id = event.record_id
    rules: dict[str, str | None] = {
        f"{collection.name}/{record_id}": collection.viewRule,
        f"{collection.id}/{record_id}": collection.viewRule,
        f"{collection.name}/*": collection.listRule,
        f"{collection.id}/*": collection.listRule,
        collection.name: collection.listRule,
        collection.id: collection.listRule,
    }
    shared = event.payloads
    deliveries: list[Delivery] = []
    for client in clients:
        state = client.state
        for subscription in state.subscriptions:
            rule = rules.get(subscription.base, _NOT_A_TOPIC)
            if rule is _NOT_A_TOPIC or client.closed_reason is not None:
                continue
            data = shared.get((state.auth, rule, subscription.options_key), _NOT_MADE)
            if data is _NOT_MADE:
                data = event.payload(state.auth, rule, subscription.options, subscription.options_key)
            if data is not None:
                deliveries.append((client, subscription, data))
    return deliveries
