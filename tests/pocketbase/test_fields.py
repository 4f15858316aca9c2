"""Unit tests of :mod:`pbfast.pocketbase.fields`: casting, validation codes/messages, column types, API
values. The expected values were observed on the stock PocketBase 0.40.6 binary."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from dataclasses import replace

from pbfast.pocketbase import fields as F
from pbfast.pocketbase.fields import MISSING, Field, FieldError, PlainPassword, SettingsContext, decode_field, load_field
from pbfast.pocketbase.gocompat import generate_by_pattern, to_unique_strings
from pbfast.timefmt import format_datetime


def prepared(field: Field, raw: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("is_new", True)
    return field.prepare(raw, **kwargs)


def error_of(field: Field, raw: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(FieldError) as caught:
        prepared(field, raw, **kwargs)
    return dict(caught.value.to_dict())


def make(field_type: str, **options: Any) -> Field:
    return decode_field({"name": "f", "type": field_type, **options})


def definition(raw: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A submitted field definition as it is stored (PocketBase's shape)."""
    return decode_field(raw, **kwargs).to_json()


def settings_errors(field: Field, **context: Any) -> dict[str, Any]:
    return dict(field.validate_settings(SettingsContext(**context)))


# ------------------------------------------------------------------------------------------ columns


@pytest.mark.parametrize(("definition", "column"), [
    ({"type": "text"}, "TEXT DEFAULT '' NOT NULL"),
    ({"type": "text", "primaryKey": True}, "TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL"),
    ({"type": "number"}, "NUMERIC DEFAULT 0 NOT NULL"),
    ({"type": "bool"}, "BOOLEAN DEFAULT FALSE NOT NULL"),
    ({"type": "email"}, "TEXT DEFAULT '' NOT NULL"),
    ({"type": "url"}, "TEXT DEFAULT '' NOT NULL"),
    ({"type": "editor"}, "TEXT DEFAULT '' NOT NULL"),
    ({"type": "date"}, "TEXT DEFAULT '' NOT NULL"),
    ({"type": "autodate"}, "TEXT DEFAULT '' NOT NULL"),
    ({"type": "json"}, "JSON DEFAULT NULL"),
    ({"type": "password"}, "TEXT DEFAULT '' NOT NULL"),
    ({"type": "geoPoint"}, """JSON DEFAULT '{"lon":0,"lat":0}' NOT NULL"""),
    ({"type": "select", "maxSelect": 1}, "TEXT DEFAULT '' NOT NULL"),
    ({"type": "select", "maxSelect": 2}, "JSON DEFAULT '[]' NOT NULL"),
    ({"type": "relation", "maxSelect": 0}, "TEXT DEFAULT '' NOT NULL"),
    ({"type": "relation", "maxSelect": 5}, "JSON DEFAULT '[]' NOT NULL"),
    ({"type": "file", "maxSelect": 99}, "JSON DEFAULT '[]' NOT NULL"),
])
def test_column_definition(definition: dict[str, Any], column: str) -> None:
    assert load_field({"name": "f", **definition}).column_type() == column


# ------------------------------------------------------------------------------------- definitions


def test_new_field_definition_defaults_and_crc_ids() -> None:
    text = definition({"name": "title", "type": "text"})
    assert text == {"autogeneratePattern": "", "help": "", "hidden": False, "id": "text724990059", "max": 0,
                    "min": 0, "name": "title", "pattern": "", "presentable": False, "primaryKey": False,
                    "required": False, "system": False, "type": "text"}
    assert list(text) == sorted(text)
    assert definition({"name": "n", "type": "number"})["id"] == "number2013832146"
    assert definition({"name": "n", "type": "number"}, existing_ids=["number2013832146"])["id"] == \
        "number20138321462"
    number = definition({"name": "n", "type": "number", "min": 1, "extra": "dropped"})
    assert number["min"] == 1 and number["max"] is None and "extra" not in number
    assert definition({"name": "e", "type": "email", "onlyDomains": None})["onlyDomains"] == []
    assert definition({"id": "keep", "name": "d", "type": "date", "min": "2020-01-01"})["min"] == \
        "2020-01-01 00:00:00.000Z"


@pytest.mark.parametrize("raw", [
    {"name": "x", "type": "bogus"}, {"name": "x"}, {"name": "x", "type": "text", "max": "5"},
    {"name": "x", "type": "select", "values": "a"}, {"name": "x", "type": "bool", "required": 1},
])
def test_new_field_definition_rejects_what_pocketbase_cannot_decode(raw: dict[str, Any]) -> None:
    with pytest.raises(F.FieldSettingsError) as caught:
        definition(raw)
    assert caught.value.decode_error and caught.value.data == {}


def test_validate_field_settings() -> None:
    assert settings_errors(make("text", min=5, max=2))["max"]["code"] == \
        "validation_min_greater_equal_than_required"
    assert settings_errors(make("select"))["values"] == {"code": "validation_required",
                                                                   "message": "Cannot be blank."}
    assert settings_errors(make("select", values=["a"], maxSelect=2))["maxSelect"]["code"] == \
        "validation_max_less_equal_than_required"
    assert settings_errors(replace(make("text"), name="expand"))["name"]["code"] == "validation_not_in_invalid"
    assert settings_errors(replace(make("text"), name="a b"))["name"]["code"] == "validation_match_invalid"
    assert settings_errors(replace(make("text"), name="a_via_b"))["name"]["code"] == "validation_found_via"
    assert settings_errors(make("number", onlyInt=True, min=1.5))["min"]["code"] == \
        "validation_only_int_constraint"
    assert settings_errors(make("autodate"))["onCreate"]["message"] == \
        "Either onCreate or onUpdate must be enabled."
    assert settings_errors(make("relation"))["collectionId"]["code"] == "validation_required"
    assert settings_errors(make("relation", collectionId="x"), collection_exists=lambda _: False)[
        "collectionId"]["code"] == "validation_field_relation_missing_collection"
    assert settings_errors(make("email", onlyDomains=["a.com"], exceptDomains=["b.com"]))[
        "exceptDomains"]["code"] == "validation_empty"
    assert settings_errors(make("file", thumbs=["0x0"]))["thumbs"]["0"]["code"] == "validation_not_in_invalid"
    assert settings_errors(make("text", autogeneratePattern="[a-z]{3}", max=2))[
        "autogeneratePattern"]["code"] == "validation_invalid_autogenerate_pattern_value"
    assert settings_errors(make("text", pattern="(")) ["pattern"]["code"] == "validation_invalid_regex"
    assert settings_errors(make("password", cost=40))["cost"]["code"] == \
        "validation_max_less_equal_than_required"
    assert settings_errors(make("text", min=1, max=10, autogeneratePattern="[a-z]{5}")) == {}


# ---------------------------------------------------------------------------------------- casting


@pytest.mark.parametrize(("raw", "stored"), [
    (12.5, "12.5"), (1e20, "100000000000000000000"), (1e21, "1000000000000000000000"), (True, "true"),
    ([1, 2], ""), ({"a": 1}, ""), ("  x  ", "  x  "), (None, ""), (123456789012345678, "123456789012345680"),
    (0.1, "0.1"),
])
def test_text_cast(raw: Any, stored: str) -> None:
    assert prepared(make("text"), raw) == stored


@pytest.mark.parametrize(("raw", "stored"), [
    ("12", 12.0), (" 12 ", 0.0), ("1e3", 1000.0), ("0x10", 0.0), (True, 1.0), ("abc", 0.0), ("1,5", 0.0),
    ([5], 0.0), ("12abc", 0.0), ("1_000", 1000.0), ("12.0", 12.0), (9007199254740993, 9007199254740992.0),
])
def test_number_cast(raw: Any, stored: float) -> None:
    assert prepared(make("number"), raw) == stored


@pytest.mark.parametrize(("raw", "stored"), [
    ("yes", 0), ("TRUE", 1), ("t", 1), ("1", 1), ("0", 0), (2, 1), (0.5, 1), ("on", 0), ("true ", 0), ([1], 0),
])
def test_bool_cast(raw: Any, stored: int) -> None:
    assert prepared(make("bool"), raw) == stored


@pytest.mark.parametrize(("raw", "stored"), [
    ("2024-01-02", "2024-01-02 00:00:00.000Z"),
    ("2024-01-02 03:04:05", "2024-01-02 03:04:05.000Z"),
    ("2024-01-02T03:04:05Z", "2024-01-02 03:04:05.000Z"),
    ("2024-01-02T03:04:05.123456+02:00", "2024-01-02 01:04:05.123Z"),
    ("2024-01-02 03:04:05.1Z", "2024-01-02 03:04:05.100Z"),
    ("2024-01-02T03:04:05", "2024-01-02 03:04:05.000Z"),
    ("2024-01-02 03:04:05 +0200", "2024-01-02 01:04:05.000Z"),
    ("02 Jan 2024", "2024-01-02 00:00:00.000Z"),
    ("Tue, 02 Jan 2024 03:04:05 GMT", "2024-01-02 03:04:05.000Z"),
    (1700000000, ""), ("1700000000", ""), ("garbage", ""), (True, ""), ("2024-13-45", ""), ("2024-01-02 03:04", ""),
])
def test_date_cast(raw: Any, stored: str) -> None:
    assert prepared(make("date"), raw) == stored


@pytest.mark.parametrize(("raw", "single", "multi"), [
    ("a", "a", ["a"]), (["a", "b"], "b", ["a", "b"]), ("12", "12", ["12"]), (12, "12", ["12"]),
    (["a", "a"], "a", ["a"]), ([], "", []), ("", "", []), (["", ""], "", []), (None, "", []),
    (["b", "a", "b"], "a", ["b", "a"]), ('["a","b"]', "b", ["a", "b"]),
])
def test_select_cast(raw: Any, single: str, multi: list[str]) -> None:
    values = ["a", "b", "12"]
    assert prepared(make("select", values=values, maxSelect=1), raw) == single
    assert orjson.loads(prepared(make("select", values=values, maxSelect=3), raw)) == multi


@pytest.mark.parametrize(("raw", "stored"), [
    ({"z": 1, "a": [1.0, 2.50, "<x>"], "m": {"k": None}}, '{"a":[1,2.5,"<x>"],"m":{"k":null},"z":1}'),
    ("  spaced  ", '"  spaced  "'), ("123", "123"), ("[1,2]", "[1,2]"), ("{bad", '"{bad"'), ("true", "true"),
    ("", '""'), (None, None), (12345678901234567890, "12345678901234567000"), ("null", "null"),
])
def test_json_cast(raw: Any, stored: str | None) -> None:
    assert prepared(make("json"), raw) == stored


def test_defaults_for_absent_values_on_create() -> None:
    assert prepared(make("text"), MISSING) == ""
    assert prepared(make("number"), MISSING) == 0
    assert prepared(make("bool"), MISSING) == 0
    assert prepared(make("json"), MISSING) is None
    assert prepared(make("geoPoint"), MISSING) == '{"lon":0,"lat":0}'
    assert prepared(make("select", values=["a"], maxSelect=2), MISSING) == "[]"
    generated = prepared(make("text", autogeneratePattern="users[0-9]{5}"), MISSING)
    assert len(generated) == 10 and generated.startswith("users") and generated[5:].isdigit()


def test_unchanged_values_are_revalidated_on_update() -> None:
    required = make("text", required=True)
    assert prepared(required, MISSING, current="kept", is_new=False) == "kept"
    assert error_of(required, MISSING, current="", is_new=False)["code"] == "validation_required"
    assert prepared(make("number"), MISSING, current=3.5, is_new=False) == 3.5
    assert prepared(make("select", values=["a", "b"], maxSelect=2), MISSING, current='["a"]', is_new=False) == '["a"]'


def test_primary_key_rules() -> None:
    pk = decode_field({"name": "id", "type": "text", "primaryKey": True, "required": True, "min": 15,
                       "max": 15, "pattern": "^[a-z0-9]+$"})
    assert prepared(pk, "abcdefghijklmno") == "abcdefghijklmno"
    assert error_of(pk, "short")["code"] == "validation_min_text_constraint"
    assert error_of(pk, "abcdefghijklmn!")["code"] == "validation_invalid_format"
    assert error_of(pk, "abcdefghijklmnp", current="abcdefghijklmno", is_new=False)["code"] == "validation_pk_change"
    custom = replace(pk, pattern="", min=0, max=0)
    assert error_of(custom, "a/b") == {"code": "validation_forbidden_pk_character",
                                       "message": "'/' is not a valid primary key character.", "params": {"ch": "/"}}
    assert error_of(custom, "con")["code"] == "validation_reserved_pk"


# --------------------------------------------------------------------------------------- validation


VALIDATION_CASES: list[tuple[Field, Any, dict[str, Any]]] = [
    (make("text", min=3, max=5), "ab", {"code": "validation_min_text_constraint",
                                        "message": "Must be at least 3 character(s).", "params": {"min": 3}}),
    (make("text", min=3, max=5), "abcdef", {"code": "validation_max_text_constraint",
                                            "message": "Must be no more than 5 character(s).", "params": {"max": 5}}),
    (make("text", pattern="^[a-z]+$"), "ABC", {"code": "validation_invalid_format", "message": "Invalid value format."}),
    (make("text", required=True), "", {"code": "validation_required", "message": "Cannot be blank."}),
    (make("text"), "x" * 5001, {"code": "validation_max_text_constraint",
                                "message": "Must be no more than 5000 character(s).", "params": {"max": 5000}}),
    (make("number", onlyInt=True), 1.5, {"code": "validation_only_int_constraint",
                                         "message": "Decimal numbers are not allowed."}),
    (make("number", max=10), 11, {"code": "validation_max_number_constraint", "message": "Must be less or equal than 10.",
                                  "params": {"max": 10}}),
    (make("number", min=1.5), 1, {"code": "validation_min_number_constraint",
                                  "message": "Must be greater or equal than 1.5.", "params": {"min": 1.5}}),
    (make("number"), "NaN", {"code": "validation_not_a_number",
                             "message": "The submitted number is not properly formatted."}),
    (make("number", required=True), 0, {"code": "validation_required", "message": "Cannot be blank."}),
    (make("bool", required=True), False, {"code": "validation_required", "message": "Cannot be blank."}),
    (make("email"), "notanemail", {"code": "validation_is_email", "message": "Must be a valid email address."}),
    (make("email", onlyDomains=["example.com"]), "x@other.com", {"code": "validation_email_domain_not_allowed",
                                                                  "message": "Email domain is not allowed."}),
    (make("url"), "notaurl", {"code": "validation_invalid_url", "message": "Must be a valid url."}),
    (make("url", exceptDomains=["bad.com"]), "http://bad.com/x", {"code": "validation_url_domain_not_allowed",
                                                                  "message": "Url domain is not allowed."}),
    (make("editor", maxSize=10), "12345678901", {"code": "validation_content_size_limit",
                                                 "message": "The maximum allowed content size is 10 bytes.",
                                                 "params": {"maxSize": 10}}),
    (make("date", min="2020-01-01 00:00:00.000Z"), "2010-01-01", {
        "code": "validation_min_greater_equal_than_required",
        "message": "Must be no less than 2020-01-01 00:00:00 +0000 UTC.", "params": {"threshold": "2020-01-01T00:00:00Z"}}),
    (make("date", max="2030-01-01 00:00:00.000Z"), "2031-01-01 00:00:00Z", {
        "code": "validation_max_less_equal_than_required",
        "message": "Must be no greater than 2030-01-01 00:00:00 +0000 UTC.",
        "params": {"threshold": "2030-01-01T00:00:00Z"}}),
    (make("date", required=True), "garbage", {"code": "validation_required", "message": "Cannot be blank."}),
    (make("select", values=["a", "b", "c"]), "z", {"code": "validation_invalid_value", "message": "Invalid value z.",
                                                   "params": {"value": "z"}}),
    (make("select", values=["a", "b", "c"], maxSelect=2), ["a", "b", "c"], {
        "code": "validation_too_many_values", "message": "Select no more than 2.", "params": {"maxSelect": 2}}),
    (make("json", maxSize=20), {"aaaaaaaaaaaaa": "bbbbbbbbbbbbbbbbbbb"}, {
        "code": "validation_json_size_limit", "message": "The maximum allowed JSON size is 20 bytes.",
        "params": {"maxSize": 20}}),
    (make("json", required=True), [], {"code": "validation_required", "message": "Cannot be blank."}),
    (make("relation", collectionId="x", maxSelect=3, minSelect=2), ["x"], {
        "code": "validation_not_enough_values", "message": "Select at least 2.", "params": {"minSelect": 2}}),
    (make("relation", collectionId="x", maxSelect=3, minSelect=2), ["a", "b", "c", "d"], {
        "code": "validation_too_many_values", "message": "Select no more than 3.", "params": {"maxSelect": 3}}),
    (make("geoPoint"), {"lat": 100, "lon": 0}, {"code": "validation_invalid_latitude",
                                                "message": "Latitude must be between -90 and 90 degrees."}),
    (make("geoPoint"), {"lat": 1, "lon": 200}, {"code": "validation_invalid_longitude",
                                                "message": "Longitude must be between -180 and 180 degrees."}),
    (make("password", min=3, max=6, pattern="^[0-9]+$"), "ab", {"code": "validation_min_text_constraint",
                                                                 "message": "Must be at least 3 character(s)."}),
    (make("password", min=3, max=6, pattern="^[0-9]+$"), "1234567", {"code": "validation_max_text_constraint",
                                                                      "message": "Must be less than 6 character(s)."}),
    (make("password", min=3, max=6, pattern="^[0-9]+$"), "abcd", {"code": "validation_invalid_format",
                                                                   "message": "Invalid value format."}),
    (make("file", maxSelect=1), "new.txt", {"code": "validation_invalid_file", "message": "Invalid new files: [new.txt].",
                                            "params": {"invalidFiles": ["new.txt"]}}),
    (make("file", maxSelect=2, required=True), [], {"code": "validation_required", "message": "Cannot be blank."}),
]


@pytest.mark.parametrize(("field", "raw", "expected"), VALIDATION_CASES,
                         ids=[f"{c[0].TYPE}-{i}" for i, c in enumerate(VALIDATION_CASES)])
def test_validation_errors_match_pocketbase(field: Field, raw: Any, expected: dict[str, Any]) -> None:
    assert error_of(field, raw) == expected


def test_valid_values_pass() -> None:
    assert prepared(make("email", onlyDomains=["example.com"]), "a@example.com") == "a@example.com"
    assert prepared(make("url"), "https://example.com/x?y=1") == "https://example.com/x?y=1"
    assert prepared(make("geoPoint"), {"lon": 23.5, "lat": 42}) == '{"lon":23.5,"lat":42}'
    assert prepared(make("relation", collectionId="x", maxSelect=5), ["a", "b"]) == '["a","b"]'
    assert prepared(make("relation", collectionId="x"), ["a", "b"]) == "b"
    assert prepared(make("file", maxSelect=2), ["a.txt", "b.png"], current='["a.txt"]', uploaded=["b.png"]) == \
        '["a.txt","b.png"]'
    assert prepared(make("editor"), "<p>x</p>") == "<p>x</p>"


def test_password_flag_and_current_hash() -> None:
    field = make("password", min=8, required=True)
    plain = prepared(field, "secret123")
    assert isinstance(plain, PlainPassword) and plain == "secret123"
    kept = prepared(field, MISSING, current="$2a$10$hash", is_new=False)
    assert kept == "$2a$10$hash" and not isinstance(kept, PlainPassword)
    assert error_of(field, "", current="$2a$10$hash", is_new=False)["code"] == "validation_required"
    assert error_of(field, MISSING)["code"] == "validation_required"
    assert field.bcrypt_cost() == 10 and make("password", cost=8).bcrypt_cost() == 8  # type: ignore[attr-defined]


def test_autodate() -> None:
    created = make("autodate", onCreate=True)
    updated = make("autodate", onCreate=True, onUpdate=True)
    now = "2026-01-02 03:04:05.678Z"
    assert created.stamp(True, now) == now
    assert created.stamp(False, now) is None
    assert updated.stamp(False, now) == now
    assert prepared(created, "2000-01-01 00:00:00.000Z", current="2020-01-01 00:00:00.000Z", is_new=False) == \
        "2020-01-01 00:00:00.000Z"
    stamped = prepared(updated, None)  # a new record's "now", in PocketBase's layout
    assert abs(datetime.strptime(stamped, "%Y-%m-%d %H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp() - time.time()) < 5
    assert prepared(make("autodate", onUpdate=True), None) == ""  # not stamped on create


def test_format_datetime_as_datetime_formats() -> None:
    """The "now" stamp, which keeps the text of its last second, is what datetime's own formatting gives,
    also where the microseconds round up into the next second."""
    def by_datetime(seconds: float) -> str:
        moment = datetime.fromtimestamp(seconds, UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    rng = random.Random(7)
    moments = [rng.uniform(-1e9, 4e9) for _ in range(20_000)] + [0.0, -0.5, 1e-7, -1e-7, 0.9999995, 59.9999996]
    moments += [second + fraction for second in (rng.randrange(4_000_000_000) for _ in range(2_000))
                for fraction in (0.0, 0.0005, 0.9994995, 0.9999994, 0.9999995, 0.99999951)]
    for seconds in moments:
        assert format_datetime(seconds) == by_datetime(seconds), seconds


def test_relation_ids() -> None:
    many = make("relation", collectionId="x", maxSelect=5)
    assert to_unique_strings('["a","b","a"]') == ["a", "b"]
    assert to_unique_strings("a") == ["a"]
    assert to_unique_strings("") == []
    assert many.stored_from_list(["a", "b"]) == '["a","b"]'


# ---------------------------------------------------------------------------------------- API values


@pytest.mark.parametrize(("definition", "stored", "shown"), [
    ({"type": "bool"}, 1, True), ({"type": "bool"}, 0, False), ({"type": "bool"}, "true", True),
    ({"type": "number"}, 123456.0, 123456), ({"type": "number"}, 455.99999999999999999, 456),
    ({"type": "number"}, 2.5, 2.5), ({"type": "number"}, "abc", 0), ({"type": "number"}, 1234567.0, 1234567),
    ({"type": "text"}, None, ""), ({"type": "text"}, "x", "x"),
    ({"type": "date"}, "2022-10-01 12:00:00.000Z", "2022-10-01 12:00:00.000Z"), ({"type": "date"}, "", ""),
    ({"type": "select", "maxSelect": 3}, '["optionB","optionC"]', ["optionB", "optionC"]),
    ({"type": "select", "maxSelect": 1}, "optionB", "optionB"),
    ({"type": "select", "maxSelect": 1}, '["a","b"]', "b"),
    ({"type": "relation", "maxSelect": 1}, "", ""),
    ({"type": "relation", "maxSelect": 9999}, "[]", []),
    ({"type": "file", "maxSelect": 99}, '["a.txt"]', ["a.txt"]),
    ({"type": "json"}, "[\r\n  1,\r\n  2,\r\n  3\r\n]", [1, 2, 3]), ({"type": "json"}, "null", None),
    ({"type": "json"}, None, None), ({"type": "json"}, 123, 123), ({"type": "json"}, '"x"', "x"),
    ({"type": "json"}, "not json", "not json"),
    ({"type": "geoPoint"}, '{"lat":0,"lon":0}', {"lon": 0, "lat": 0}),
    ({"type": "geoPoint"}, '{"lon":23.333157,"lat":42.654318}', {"lon": 23.333157, "lat": 42.654318}),
    ({"type": "autodate"}, "2022-10-14 10:13:12.397Z", "2022-10-14 10:13:12.397Z"),
    # the stored forms each field's short way takes, and neighbours that take the long way (as it answered)
    ({"type": "bool"}, 2, False), ({"type": "bool"}, -1, False), ({"type": "bool"}, 1.0, True),
    ({"type": "number"}, 7, 7), ({"type": "number"}, -0.0, 0), ({"type": "number"}, 1e21, 1e21),
    ({"type": "number"}, float("inf"), 0), ({"type": "number"}, 9007199254740993, 9007199254740992),
    ({"type": "text"}, 12, "12"), ({"type": "text"}, 1.5, "1.5"),
    ({"type": "date"}, "2024-02-29 23:59:59.999Z", "2024-02-29 23:59:59.999Z"),
    ({"type": "date"}, "2023-02-29 00:00:00.000Z", ""), ({"type": "date"}, "0000-01-01 00:00:00.000Z", ""),
    ({"type": "date"}, "2022-10-01T12:00:00Z", "2022-10-01 12:00:00.000Z"),
    ({"type": "date"}, "2022-10-01 12:00:00.000+02:00", "2022-10-01 10:00:00.000Z"),
    ({"type": "autodate"}, "2022-13-14 10:13:12.397Z", ""), ({"type": "autodate"}, None, ""),
])
def test_to_api_value(definition: dict[str, Any], stored: Any, shown: Any) -> None:
    value = load_field({"name": "f", **definition}).to_api(stored)
    assert value == shown and type(value) is type(shown)


# --------------------------------------------------------------------------------- helpers/validators


@pytest.mark.parametrize(("url", "valid"), [
    ("example.com", True), ("http://example.com", True), ("https://a.b.c/path?q=1#x", False), ("ftp://x.org", True),
    ("http://localhost:8090", True), ("http://127.0.0.1", True), ("notaurl", False), ("http://", False),
    ("mailto:a@b.com", True), ("http://exa mple.com", False), ("https://例子.测试", True), ("http://a_b.com", True),
    ("x.y", False), ("//example.com", False), ("http://example", True), ("javascript:alert(1)", False),
    ("http://[::1]:80/", True), ("https://example.com:99999", True),
])
def test_is_url_matches_pocketbase(url: str, valid: bool) -> None:
    assert F.is_url(url) is valid


@pytest.mark.parametrize(("email", "valid"), [
    ("test@example.com", True), ("a@b", False), ("a@b.c", True), ("a@b.c1", False), ('"q"@ex.com', True),
    ("A.B@EX.COM", True), ("a..b@ex.com", False), ("a@ex..com", False), ("a@-ex.com", False), ("a@ex.com.", True),
    ("notanemail", False), ("x@例子.测试", True),
])
def test_is_email(email: str, valid: bool) -> None:
    assert F.is_email(email) is valid


def test_validators_have_no_catastrophic_backtracking() -> None:
    started = time.monotonic()
    for value in ("a" * 2000 + "!", "a-" * 1000, "a.a-" * 500 + "!", "www." + "a" * 2000 + "1.1", ("a" * 30 + "-") * 60):
        F.is_url(value)
    for value in ("a" * 200 + "@" + "a." * 100 + "!", "x@" + "a-" * 120 + ".c1"):
        F.is_email(value)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("pattern", ["[a-z0-9]{15}", "[a-zA-Z0-9]{50}", "users[0-9]{5}", "[a-zA-Z0-9_]{50}",
                                     "(ab|cd)x?\\d+"])
def test_generate_by_pattern(pattern: str) -> None:
    import re  # noqa: PLC0415
    for _ in range(20):
        assert re.fullmatch(pattern, generate_by_pattern(pattern))


def test_field_error_message_is_sentenized() -> None:
    error = FieldError("validation_x", "cannot be blank")
    assert error.message == "Cannot be blank." and error.to_dict() == {"code": "validation_x",
                                                                       "message": "Cannot be blank."}
