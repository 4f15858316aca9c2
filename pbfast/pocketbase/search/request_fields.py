"""The ``@request.*`` identifiers of a filter or rule (PocketBase's ``record_field_resolver_runner.go``, its
request part): the request's static values, ``@request.auth.<field>`` joined to the auth record, and
``@request.body.<field>`` with the ``:each``/``:length``/``:lower``/``:changed`` modifiers; and the state
every identifier resolution keeps (joins, the multi-match subquery)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.fields import Field, MultiValueField, NumberField, RelationField
from pbfast.pocketbase.gocompat import go_quote, go_string, parse_float
from pbfast.pocketbase.search.builder import DEFAULT_FILTER_EXPR_LIMIT, FilterBuilder
from pbfast.pocketbase.search.errors import FilterError
from pbfast.pocketbase.search.parser import parse
from pbfast.pocketbase.search.sql import Join, MultiMatch, NullFallback, ResolvedField, RuleJoin, Sql, col, columnify, fmt

if TYPE_CHECKING:
    from pbfast.pocketbase.collections.model import Collection
    from pbfast.pocketbase.search.resolver import TableResolver

__all__ = ["RequestRunner", "split_modifier"]

_MODIFIERS: Final = frozenset({"isset", "each", "length", "lower", "changed"})
_PLAIN_AUTH_FIELDS: Final = frozenset(
    "@request.auth." + n for n in ("id", "collectionId", "collectionName", "email", "emailVisibility", "verified"))

_VIA_RE: Final = re.compile(r"(\w+)_via_(\w+)", re.ASCII)
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")


def split_modifier(combined: str) -> tuple[str, str]:
    parts = combined.split(":")
    if len(parts) != 2:
        return combined, ""
    if parts[1] in _MODIFIERS:
        return parts[0], parts[1]
    raise FilterError(f"unknown modifier in {go_quote(combined)}")


class _Missing(Exception):
    """A @request.* path that doesn't exist (resolved gracefully)."""


def _extract_nested(data: Any, keys: Sequence[str]) -> Any:
    if isinstance(data, bytes | bytearray):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise _Missing from exc
    key = keys[0]
    if isinstance(data, Mapping):
        if key not in data:
            raise _Missing
        value = data[key]
    elif isinstance(data, list | tuple):
        if not _INT_RE.fullmatch(key):
            raise _Missing
        idx = int(key)
        if idx < 0 or idx >= len(data):
            raise _Missing
        value = data[idx]
    else:
        raise _Missing
    return value if len(keys) == 1 else _extract_nested(value, keys[1:])


def _to_slice(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _unique_strings(value: Any) -> list[str]:
    items: list[str]
    if value is None:
        items = []
    elif isinstance(value, str):
        if value == "":
            items = []
        elif "[" in value:
            try:
                decoded = json.loads(value)
                items = [str(v) for v in decoded] if isinstance(decoded, list) else [value]
            except ValueError:
                items = [value]
        else:
            items = [value]
    elif isinstance(value, list | tuple):
        items = [go_string(v) for v in value]
    else:
        items = [go_string(value)]
    seen: dict[str, None] = {}
    for item in items:
        if item != "":
            seen.setdefault(item, None)
    return list(seen)


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)


class RequestRunner:
    """The state of one identifier's resolution, and its ``@request.*`` part; :class:`~.runner.
    IdentifierRunner` adds collections, fields and relations."""

    def __init__(self, resolver: TableResolver, name: str) -> None:
        self.r = resolver
        self.name = name
        self.props = name.split(".")
        self.coll_name = resolver.base.name
        self.alias = resolver.table_alias
        self.nullify_missing = self.props[0] == "@request"
        self.mm = MultiMatch(target_alias=self.alias, from_table=columnify(self.coll_name),
                             from_alias="__mm_" + self.alias)
        self.mm_alias = self.mm.from_alias
        self.with_mm = False
        self.joins: list[Join] = []
        self.rule_joins: list[RuleJoin] = []

    # -- helpers ------------------------------------------------------------------------------------------

    def result(self, sql: Sql, **kwargs: Any) -> ResolvedField:
        return ResolvedField(sql, joins=tuple(self.joins), rule_joins=tuple(self.rule_joins), **kwargs)

    def null(self) -> ResolvedField:
        return self.result(Sql("NULL"))

    def register_join(self, table: Sql, alias: str, on: Sql | None, coll: Collection | None) -> None:
        if not self.r.allow_hidden_fields and coll is not None:
            if coll.listRule is None:
                raise FilterError(f"{go_quote(coll.name)} fields can be accessed only when allowHiddenFields is "
                                  "enabled or by superusers")
            if coll.listRule != "":
                self.rule_joins = [j for j in self.rule_joins if j.alias != alias]
                self.rule_joins.append(RuleJoin(alias, coll.listRule, self.r._for_rule_join(coll, alias)))
        self.joins = [j for j in self.joins if j.alias != alias]
        self.joins.append(Join(table, alias, on))

    def mm_join(self, table: Sql, alias: str, on: Sql | None = None) -> None:
        self.mm.joins.append(Join(table, alias, on))

    # -- entry --------------------------------------------------------------------------------------------

    def active_props(self) -> ResolvedField:
        """The identifier's remaining path resolved against the current collection (see the subclass)."""
        raise NotImplementedError

    def run_request(self) -> ResolvedField:
        """An ``@request.*`` identifier."""
        if not self.r.has_request:
            return self.null()
        if self.name.startswith("@request.auth."):
            return self.request_auth_field()
        if self.name.startswith("@request.body.") and len(self.props) > 2:
            field_name, modifier = split_modifier(self.props[2])
            body_field = self.r.base.field(field_name)
            if body_field is None:
                return self.static_field(self.props[1:])
            if isinstance(body_field, RelationField) and len(self.props) > 3:
                return self.body_relation_field(body_field)
            if len(self.props) == 3:
                if modifier == "each":
                    return self.body_each(body_field)
                if modifier == "length":
                    return self.body_length(body_field)
                if modifier == "lower":
                    return self.body_lower(body_field)
                if modifier == "changed":
                    return self.body_changed(body_field)
        return self.static_field(self.props[1:])

    def static_field(self, path: list[str]) -> ResolvedField:
        path = list(path)
        last, modifier = split_modifier(path[-1])
        path[-1] = last
        try:
            value = _extract_nested(self.r._static, path)
            missing = False
        except _Missing:
            value, missing = None, True
        if modifier == "isset":
            return self.result(Sql("FALSE" if missing else "TRUE"))
        if isinstance(value, str):
            field_def = self.r.base.field(path[-1])
            if isinstance(field_def, NumberField):
                number = parse_float(value)
                if number is not None:
                    value = number
        elif value is None or isinstance(value, bool | int | float):
            pass
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        else:
            value = _json_dumps(value)
        if modifier not in ("", "lower"):
            raise FilterError(f"invalid modifier sequence {last}:{modifier}")
        if value is None:
            return self.null()
        if modifier == "lower":
            return self.result(fmt("LOWER({})", Sql.param(value)))
        return self.result(Sql.param(value))

    def auth_collection(self) -> Collection | None:
        auth = self.r._static.get("auth")
        if not isinstance(auth, Mapping):
            return None
        for key in ("collectionId", "collectionName"):
            ref = auth.get(key)
            if ref:
                try:
                    return self.r.load_collection(str(ref))
                except FilterError:
                    continue
        return None

    def request_auth_field(self) -> ResolvedField:
        auth = self.r._static.get("auth")
        if not isinstance(auth, Mapping) or not auth.get("collectionId") and not auth.get("collectionName"):
            return self.null()
        if self.name in _PLAIN_AUTH_FIELDS:
            return self.static_field(self.props[1:])
        coll = self.auth_collection()
        if coll is None:
            return self.null()
        auth_id = auth.get("id")
        self.coll_name = coll.name
        self.alias = "__auth_" + columnify(coll.name) + self.r._alias_suffix
        self.register_join(Sql(quote(columnify(coll.name))), self.alias,
                           fmt(col(self.alias, "id") + " = {}", Sql.param(auth_id)), coll)
        self.mm_alias = "__mm_" + self.alias
        self.mm_join(Sql(quote(columnify(coll.name))), self.mm_alias,
                     fmt(col(self.mm_alias, "id") + " = {}", Sql.param(auth_id)))
        self.props = self.props[2:]
        return self.active_props()

    def body_value(self, field_def: Field) -> Any:
        return self.r._static.get("body", {}).get(field_def.name)

    def body_changed(self, field_def: Field) -> ResolvedField:
        name = field_def.name
        inner = f"@request.body.{name}:isset = true && @request.body.{name} != {name}"
        build = FilterBuilder(self.r, DEFAULT_FILTER_EXPR_LIMIT, None)
        expr = build.groups(parse(inner))
        return ResolvedField(
            "(" + expr + ")", null_fallback=NullFallback.DISABLED,
            joins=tuple(self.joins) + tuple(build.joins.values()),
            rule_joins=tuple(self.rule_joins) + tuple(build.rule_joins.values()), params=())

    def body_lower(self, field_def: Field) -> ResolvedField:
        value = self.body_value(field_def)
        text = "" if isinstance(value, list | tuple | dict) else go_string(value)
        return self.result(fmt("LOWER({})", Sql.param(text)))

    def body_length(self, field_def: Field) -> ResolvedField:
        if not isinstance(field_def, MultiValueField):
            raise FilterError(f"field {go_quote(field_def.name)} doesn't support multivalue operations")
        return self.result(Sql(str(len(_to_slice(self.body_value(field_def))))))

    def body_each(self, field_def: Field) -> ResolvedField:
        if not isinstance(field_def, MultiValueField):
            raise FilterError(f"field {go_quote(field_def.name)} doesn't support multivalue operations")
        raw = _json_dumps(_to_slice(self.body_value(field_def)))
        clean = columnify(field_def.name)
        je_alias = "__dataEach_je_" + clean + self.r._alias_suffix
        self.register_join(fmt("json_each({})", Sql.param(raw)), je_alias, None, None)
        multi = None
        if field_def.is_multiple():
            self.with_mm = True
        if self.with_mm:
            je_alias2 = "__mm_" + je_alias
            self.mm_join(fmt("json_each({})", Sql.param(raw)), je_alias2)
            self.mm.value = Sql(col(je_alias2, "value"))
            multi = self.mm
        return self.result(Sql(col(je_alias, "value")), multi_match=multi, params=(raw,))

    def body_relation_field(self, field_def: RelationField) -> ResolvedField:
        try:
            rel_coll = self.r.load_collection(field_def.collection_id)
        except FilterError as exc:
            raise FilterError(f"failed to load collection {go_quote(field_def.collection_id)} from data field "
                              f"{go_quote(field_def.name)}") from exc
        ids = _unique_strings(self.body_value(field_def))
        if not ids:
            return self.null()
        self.coll_name = rel_coll.name
        self.alias = columnify(f"__data_{rel_coll.name}_{field_def.name}") + self.r._alias_suffix

        def in_ids(alias: str) -> Sql:
            if len(ids) == 1:
                return fmt(col(alias, "id") + " = {}", Sql.param(ids[0]))
            return fmt(col(alias, "id") + " IN ({})", Sql.join(", ", (Sql.param(i) for i in ids)))

        self.register_join(Sql(quote(rel_coll.name)), self.alias, in_ids(self.alias), rel_coll)
        if field_def.is_multiple():
            self.with_mm = True
        self.mm_alias = "__mm_" + self.alias
        self.mm_join(Sql(quote(rel_coll.name)), self.mm_alias, in_ids(self.mm_alias))
        self.props = self.props[3:]
        return self.active_props()

    # -- @collection.* ------------------------------------------------------------------------------------
