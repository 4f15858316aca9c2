"""Go's behaviour, emulated in one place: what PocketBase (Go) does that Python does differently.

* :mod:`.json_numbers`: ``strconv.FormatFloat`` (:func:`go_format_float`), how ``encoding/json`` writes a
  float64 (:func:`json_number`, :class:`GoWholeFloat`) and values nested deeper than orjson writes
  (:class:`DeepJson`), and the number hooks of the slow JSON readers (:func:`decoded_int`,
  :func:`decoded_float`);
* :mod:`.cast` (``spf13/cast`` as PocketBase uses it on decoded JSON): :func:`cast_to_string`,
  :func:`cast_to_float`, :func:`cast_to_bool`, ``list.ToUniqueStringSlice`` (:func:`to_unique_strings`), and
  how ``database/sql`` scans a column into a string (:func:`stored_to_string`);
* :mod:`.strconv`: :func:`atoi`, :func:`cast_to_int`, :func:`parse_bool`, :func:`parse_float`, ``%q``
  (:func:`go_quote`), ``strings.TrimSpace`` (:func:`trim_space`);
* :mod:`.datetimes`: ``types.ParseDateTime``/``cast.ToTime`` (:func:`parse_datetime`), PocketBase's datetime
  layout (:func:`format_datetime_value`), ``time.Time.String()`` and its JSON form;
* :mod:`.regexp`: RE2-like matching of field patterns (:func:`regex_search`, :func:`regex_error`) and
  ``security.RandomStringByRegex`` (:func:`generate_by_pattern`).

Pure functions (caches are thread-safe): safe from any thread.
"""

from pbfast.pocketbase.gocompat.cast import (
    as_float64,
    cast_to_bool,
    cast_to_float,
    cast_to_string,
    go_string,
    stored_to_string,
    to_unique_strings,
)
from pbfast.pocketbase.gocompat.datetimes import (
    format_datetime_value,
    parse_datetime,
    stored_datetime_text,
    time_json,
    time_string,
)
from pbfast.pocketbase.gocompat.json_numbers import (
    ORJSON_MAX_DEPTH,
    DeepJson,
    GoWholeFloat,
    decoded_float,
    decoded_int,
    format_float_f,
    go_format_float,
    go_json_default,
    json_depth,
    json_number,
)
from pbfast.pocketbase.gocompat.regexp import generate_by_pattern, regex_error, regex_search
from pbfast.pocketbase.gocompat.strconv import atoi, cast_to_int, go_quote, parse_bool, parse_float, trim_space

__all__ = [
    "ORJSON_MAX_DEPTH",
    "DeepJson",
    "GoWholeFloat",
    "as_float64",
    "atoi",
    "cast_to_bool",
    "cast_to_float",
    "cast_to_int",
    "cast_to_string",
    "decoded_float",
    "decoded_int",
    "format_datetime_value",
    "format_float_f",
    "generate_by_pattern",
    "go_format_float",
    "go_json_default",
    "go_quote",
    "go_string",
    "json_depth",
    "json_number",
    "parse_bool",
    "parse_datetime",
    "parse_float",
    "regex_error",
    "regex_search",
    "stored_datetime_text",
    "stored_to_string",
    "time_json",
    "time_string",
    "to_unique_strings",
    "trim_space",
]
