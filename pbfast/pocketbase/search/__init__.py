"""PocketBase's search engine (``tools/search``, ``tools/picker`` and the record field resolver): filters,
API rules and sorts compiled to SQLite, and the list query parameters.

* :mod:`.scanner`, :mod:`.parser` - fexpr: a filter's text as tokens, then as expression groups;
* :mod:`.sql` - SQL fragments with bound values, and what an identifier resolves to;
* :mod:`.builder` - a parsed filter compiled to a ``WHERE`` expression (:func:`compile_filter`);
* :mod:`.resolver`, :mod:`.runner`, :mod:`.request_fields` - identifiers of a collection's table (fields,
  relations, back-relations, ``@collection.*``, ``@request.*``) as SQL (:class:`TableResolver`);
* :mod:`.sort`, :mod:`.provider` - ``sort``, and a list query's filters, sort and paging together;
* :mod:`.picker`, :mod:`.excerpt` - the ``fields`` parameter and its ``:excerpt`` modifier.

Identifiers only ever become SQL through the resolver (quoted names from the collection definitions); every
value from the filter text or the request is a bound parameter.
"""

from pbfast.pocketbase.search.builder import (
    DEFAULT_FILTER_EXPR_LIMIT,
    MAX_FILTER_LENGTH,
    compile_filter,
    compile_filters,
    compile_operand,
)
from pbfast.pocketbase.search.errors import FilterError, QueryParamError
from pbfast.pocketbase.search.excerpt import excerpt
from pbfast.pocketbase.search.parser import Expr, ExprGroup, parse
from pbfast.pocketbase.search.picker import ExcerptModifier, FieldsSpec, apply_fields, apply_fields_many, parse_fields
from pbfast.pocketbase.search.provider import (
    ListQuery,
    Page,
    compile_list_query,
    fetch_page,
    parse_paging,
    parse_skip_total,
)
from pbfast.pocketbase.search.resolver import RequestInfo, TableResolver, superuser_only_field
from pbfast.pocketbase.search.scanner import Token, tokenize
from pbfast.pocketbase.search.sort import SortField, compile_sort, parse_sort
from pbfast.pocketbase.search.sql import ResolvedField, Resolver, Sql

__all__ = [
    "DEFAULT_FILTER_EXPR_LIMIT",
    "MAX_FILTER_LENGTH",
    "ExcerptModifier",
    "Expr",
    "ExprGroup",
    "FieldsSpec",
    "FilterError",
    "ListQuery",
    "Page",
    "QueryParamError",
    "RequestInfo",
    "ResolvedField",
    "Resolver",
    "SortField",
    "Sql",
    "TableResolver",
    "Token",
    "apply_fields",
    "apply_fields_many",
    "compile_filter",
    "compile_filters",
    "compile_list_query",
    "compile_operand",
    "compile_sort",
    "excerpt",
    "fetch_page",
    "parse",
    "parse_fields",
    "parse_paging",
    "parse_skip_total",
    "parse_sort",
    "superuser_only_field",
    "tokenize",
]
