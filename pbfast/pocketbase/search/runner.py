"""One identifier's resolution (PocketBase's ``record_field_resolver_runner.go``): fields, relations,
back-relations, ``@collection.*`` and the field modifiers, as joins and an SQL operand (the ``@request.*``
part is in :mod:`.request_fields`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.index import single_column_unique_index
from pbfast.pocketbase.dbutils.json import json_array_length, json_each, json_extract
from pbfast.pocketbase.fields import GeoPointField, JsonField, MultiValueField, RelationField
from pbfast.pocketbase.gocompat import go_quote
from pbfast.pocketbase.search.errors import FilterError
from pbfast.pocketbase.search.request_fields import RequestRunner, split_modifier
from pbfast.pocketbase.search.sql import NullFallback, ResolvedField, Sql, col, columnify, fmt

if TYPE_CHECKING:
    from pbfast.pocketbase.collections.model import Collection

__all__ = ["IdentifierRunner"]

_VIA_RE: Final = re.compile(r"(\w+)_via_(\w+)", re.ASCII)
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")

MAX_NESTED_RELS: Final = 6
"""Max relation hops in one identifier (PocketBase's ``maxNestedRels``)."""


class IdentifierRunner(RequestRunner):
    """One identifier resolution (state of PocketBase's resolver runner)."""

    def run(self) -> ResolvedField:
        head = self.props[0]
        if head == "@collection":
            return self.collection_field()
        if head == "@request":
            return self.run_request()
        return self.active_props()


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
        name, modifier = split_modifier(prop)
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
