"""One identifier's resolution (PocketBase's ``record_field_resolver_runner.go``): relations, back-relations,
``@collection.*``, ``@request.*`` and the field modifiers, as joins and an SQL operand."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.index import single_column_unique_index
from pbfast.pocketbase.dbutils.json import json_array_length, json_each, json_extract
from pbfast.pocketbase.fields import Field, GeoPointField, JsonField, MultiValueField, NumberField, RelationField
from pbfast.pocketbase.gocompat import go_quote, go_string, parse_float
from pbfast.pocketbase.search.builder import DEFAULT_FILTER_EXPR_LIMIT, FilterBuilder
from pbfast.pocketbase.search.errors import FilterError
from pbfast.pocketbase.search.parser import parse
from pbfast.pocketbase.search.sql import Join, MultiMatch, NullFallback, ResolvedField, RuleJoin, Sql, col, columnify, fmt

if TYPE_CHECKING:
    from pbfast.pocketbase.collections.model import Collection
    from pbfast.pocketbase.search.resolver import TableResolver

__all__ = ["IdentifierRunner"]

_MODIFIERS: Final = frozenset({"isset", "each", "length", "lower", "changed"})
_PLAIN_AUTH_FIELDS: Final = frozenset(
    "@request.auth." + n for n in ("id", "collectionId", "collectionName", "email", "emailVisibility", "verified"))

_VIA_RE: Final = re.compile(r"(\w+)_via_(\w+)", re.ASCII)
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")


def _split_modifier(combined: str) -> tuple[str, str]:
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


MAX_NESTED_RELS: Final = 6
"""Max relation hops in one identifier (PocketBase's ``maxNestedRels``)."""


class IdentifierRunner:
    """One identifier resolution (state of PocketBase's resolver runner)."""

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

    def run(self) -> ResolvedField:
        head = self.props[0]
        if head == "@collection":
            return self.collection_field()
        if head == "@request":
            if not self.r.has_request:
                return self.null()
            if self.name.startswith("@request.auth."):
                return self.request_auth_field()
            if self.name.startswith("@request.body.") and len(self.props) > 2:
                field_name, modifier = _split_modifier(self.props[2])
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
        return self.active_props()

    # -- @request.* ---------------------------------------------------------------------------------------

    def static_field(self, path: list[str]) -> ResolvedField:
        path = list(path)
        last, modifier = _split_modifier(path[-1])
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

    def collection_field(self) -> ResolvedField:
        if len(self.props) < 3:
            raise FilterError(f"invalid @collection field path in {go_quote(self.name)}")
        coll_ref, _, join_alias = self.props[1].partition(":")
        try:
            coll = self.r.load_collection(coll_ref)
        except FilterError as exc:
            raise FilterError(f"failed to load collection {go_quote(self.props[1])} from field path {go_quote(self.name)}") from exc
        self.coll_name = coll.name
        if join_alias:
            self.alias = columnify("__collection_alias_" + join_alias) + self.r._alias_suffix
        else:
            self.alias = columnify("__collection_" + coll.name) + self.r._alias_suffix
        self.with_mm = True
        self.register_join(Sql(quote(columnify(coll.name))), self.alias, None, coll)
        self.mm_alias = "__mm_" + self.alias
        self.mm_join(Sql(quote(columnify(coll.name))), self.mm_alias)
        self.props = self.props[2:]
        return self.active_props()

    # -- fields and relations -----------------------------------------------------------------------------

    def active_props(self) -> ResolvedField:
        total = len(self.props)
        for i, prop in enumerate(self.props):
            try:
                coll = self.r.load_collection(self.coll_name)
            except FilterError as exc:
                raise FilterError(f"failed to resolve field {go_quote(prop)}") from exc
            if i == total - 1:
                return self.finalize(coll, prop)
            field_def = coll.field(prop)
            if field_def is not None and field_def.hidden and not self.r.allow_hidden_fields:
                raise FilterError(f"non-filterable field {go_quote(prop)}")
            if isinstance(field_def, JsonField | GeoPointField):
                return self.json_path(prop, self.props[i + 1:])
            if i >= MAX_NESTED_RELS:
                raise FilterError(f"max nested relations reached for field {go_quote(prop)}")
            if field_def is None:
                back = self.back_relation(coll, prop)
                if back is not None:
                    return back
                continue
            if not isinstance(field_def, RelationField):
                raise FilterError(f"field {go_quote(prop)} is not a valid relation")
            try:
                rel_coll = self.r.load_collection(field_def.collection_id)
            except FilterError as exc:
                raise FilterError(f"failed to load field {go_quote(prop)} collection: {exc}") from exc
            multiple = field_def.is_multiple()
            if not multiple and i == total - 2 and self.props[i + 1] == "id":
                # "rel.id" is the same as "rel" for single relations (no join needed)
                return self.finalize(coll, field_def.name)
            clean = columnify(field_def.name)
            prefixed = col(self.alias, clean)
            new_alias = self.alias + "_" + clean + self.r._alias_suffix
            rel_table = Sql(quote(columnify(rel_coll.name)))
            if not multiple:
                self.register_join(rel_table, new_alias, Sql(f"{col(new_alias, 'id')} = {prefixed}"), rel_coll)
            else:
                je_alias = "__je_" + new_alias
                self.register_join(Sql(json_each(prefixed)), je_alias, None, None)
                self.register_join(rel_table, new_alias, Sql(f"{col(new_alias, 'id')} = {col(je_alias, 'value')}"),
                                   rel_coll)
            self.coll_name = rel_coll.name
            self.alias = new_alias
            if multiple:
                self.with_mm = True
            new_alias2 = self.mm_alias + "_" + clean
            prefixed2 = col(self.mm_alias, clean)
            if not multiple:
                self.mm_join(rel_table, new_alias2, Sql(f"{col(new_alias2, 'id')} = {prefixed2}"))
            else:
                je_alias2 = self.mm_alias + "_" + clean + "_je"
                self.mm_join(Sql(json_each(prefixed2)), je_alias2)
                self.mm_join(rel_table, new_alias2, Sql(f"{col(new_alias2, 'id')} = {col(je_alias2, 'value')}"))
            self.mm_alias = new_alias2
        raise FilterError(f"failed to resolve field {go_quote(self.name)}")

    def json_path(self, prop: str, rest: Sequence[str]) -> ResolvedField:
        path: list[str] = []
        for j, part in enumerate(rest):
            if _INT_RE.fullmatch(part):
                path.append("[" + columnify(part) + "]")
            else:
                if j > 0:
                    path.append(".")
                path.append(columnify(part))
        json_path = "".join(path)
        clean = columnify(prop)
        multi = None
        if self.with_mm:
            self.mm.value = Sql(json_extract(col(self.mm_alias, clean), json_path))
            multi = self.mm
        return self.result(Sql(json_extract(col(self.alias, clean), json_path)),
                           null_fallback=NullFallback.DISABLED, multi_match=multi)

    def back_relation(self, coll: Collection, prop: str) -> ResolvedField | None:
        """Join ``<collection>_via_<relField>``; returns a NULL operand if it resolves gracefully to nothing."""
        match = _VIA_RE.fullmatch(prop)
        if match is None:
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"failed to resolve field {go_quote(prop)}")
        try:
            back_coll = self.r.load_collection(match.group(1))
        except FilterError as exc:
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"failed to load back relation field {go_quote(prop)} collection") from exc
        back_field = back_coll.field(match.group(2))
        if back_field is None:
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"missing back relation field {go_quote(match.group(2))}")
        if not isinstance(back_field, RelationField):
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"invalid back relation field {go_quote(match.group(2))}")
        if back_field.hidden and not self.r.allow_hidden_fields:
            raise FilterError(f"non-filterable back relation field {go_quote(back_field.name)}")
        if back_field.collection_id != coll.id:
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"invalid collection reference of a back relation field {go_quote(back_field.name)}")

        clean_prop = columnify(prop)
        clean_back = columnify(back_field.name)
        new_alias = self.alias + "_" + clean_prop + self.r._alias_suffix
        back_table = Sql(quote(columnify(back_coll.name)))
        multiple = back_field.is_multiple()
        if not multiple:
            self.register_join(back_table, new_alias, Sql(f"{col(new_alias, clean_back)} = {col(self.alias, 'id')}"),
                               back_coll)
        else:
            je_alias = "__je_" + new_alias
            self.register_join(back_table, new_alias, Sql(
                f"{col(self.alias, 'id')} IN (SELECT {col(je_alias, 'value')} FROM "
                f"{json_each(col(new_alias, clean_back))} {quote(je_alias)})"), back_coll)
        self.coll_name = back_coll.name
        self.alias = new_alias
        if multiple:
            self.with_mm = True
        elif not self.with_mm:
            self.with_mm = single_column_unique_index(back_coll.indexes, back_field.name) is None
        new_alias2 = self.mm_alias + "_" + clean_prop + self.r._alias_suffix
        if not multiple:
            self.mm_join(back_table, new_alias2, Sql(f"{col(new_alias2, clean_back)} = {col(self.mm_alias, 'id')}"))
        else:
            je_alias2 = "__je_" + new_alias2
            self.mm_join(back_table, new_alias2, Sql(
                f"{col(self.mm_alias, 'id')} IN (SELECT {col(je_alias2, 'value')} FROM "
                f"{json_each(col(new_alias2, clean_back))} {quote(je_alias2)})"))
        self.mm_alias = new_alias2
        return None

    def finalize(self, coll: Collection, prop: str) -> ResolvedField:
        name, modifier = _split_modifier(prop)
        field_def = coll.field(name)
        if field_def is None:
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"unknown field {go_quote(name)}")
        if field_def.hidden and not self.r.allow_hidden_fields:
            raise FilterError(f"non-filterable field {go_quote(name)}")
        multivaluer = isinstance(field_def, MultiValueField)
        clean = columnify(field_def.name)
        column = col(self.alias, clean)

        if modifier == "length" and multivaluer:
            multi = None
            if self.with_mm:
                self.mm.value = Sql(json_array_length(col(self.mm_alias, clean)))
                multi = self.mm
            return self.result(Sql(json_array_length(column)), multi_match=multi)

        if modifier == "each" and multivaluer:
            je_alias = "__je_" + self.alias + "_" + clean + self.r._alias_suffix
            self.register_join(Sql(json_each(column)), je_alias, None, None)
            if field_def.is_multiple():
                self.with_mm = True
            multi = None
            if self.with_mm:
                je_alias2 = "__je_" + self.mm_alias + "_" + clean + self.r._alias_suffix
                self.mm_join(Sql(json_each(col(self.mm_alias, clean))), je_alias2)
                self.mm.value = Sql(col(je_alias2, "value"))
                multi = self.mm
            return self.result(Sql(col(je_alias, "value")), multi_match=multi)

        sql = Sql(column)
        null_fallback = NullFallback.AUTO
        multi = None
        if self.with_mm:
            self.mm.value = Sql(col(self.mm_alias, clean))
            multi = self.mm
        after_build = None
        if field_def.name == "email" and not self.r.allow_hidden_fields and coll.type == "auth":
            visibility = col(self.alias, "emailVisibility")

            def after_build(expr: Sql) -> Sql:
                return fmt("(({}) AND (" + visibility + " = TRUE))", expr)

        if isinstance(field_def, JsonField):
            null_fallback = NullFallback.DISABLED
            sql = Sql(json_extract(column, ""))
            if self.with_mm:
                self.mm.value = Sql(json_extract(col(self.mm_alias, clean), ""))
        if modifier == "lower":
            sql = fmt("LOWER({})", sql)
            if self.with_mm:
                self.mm.value = fmt("LOWER({})", self.mm.value)
        return self.result(sql, null_fallback=null_fallback, multi_match=multi, after_build=after_build)
