"""The geoPoint field (PocketBase's ``core/field_geo_point.go``): ``{"lon", "lat"}`` JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from pbfast.pocketbase.fields.base import Field, Kind, Missing, Stored, option
from pbfast.pocketbase.fields.errors import FieldError, required
from pbfast.pocketbase.gocompat import json_number, stored_to_string

__all__ = ["GeoPointField", "GeoPointJson"]

Point = tuple[float, float]  # (lon, lat)


@dataclass(frozen=True, slots=True)
class GeoPointJson:
    """A geoPoint in a record's JSON: PocketBase's ``GeoPoint`` struct, ``lon`` before ``lat`` (orjson writes
    a dataclass's fields in their order, also where it sorts the keys of the record around it)."""

    lon: float | int
    lat: float | int


def _point(raw: object) -> Point | None:
    """A submitted/stored geoPoint as (lon, lat); None when it cannot be decoded."""
    if raw is None or isinstance(raw, Missing):
        return (0.0, 0.0)
    if isinstance(raw, bytes | bytearray):
        raw = bytes(raw).decode("utf-8", errors="replace")
    if isinstance(raw, str):
        if raw == "":
            return (0.0, 0.0)
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(raw, Mapping):
        return None
    point = [0.0, 0.0]
    for index, key in enumerate(("lon", "lat")):
        value = raw.get(key, 0)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        point[index] = float(value)
    return (point[0], point[1])


def _dumps(point: Point) -> str:
    lon, lat = point
    return orjson.dumps({"lon": json_number(lon), "lat": json_number(lat)}).decode()


@dataclass(eq=True, kw_only=True)
class GeoPointField(Field):
    TYPE = "geoPoint"

    help: str = option("help", Kind.STR)
    required: bool = option("required", Kind.BOOL)

    def column_type(self) -> str:
        return """JSON DEFAULT '{"lon":0,"lat":0}' NOT NULL"""

    def typed(self, stored: Stored) -> Point:
        return _point(stored_to_string(stored)) or (0.0, 0.0)

    def storage(self, typed: Point) -> Stored:
        return _dumps(typed)

    def cast_raw(self, raw: object) -> Stored:
        return _dumps(_point(raw) or (0.0, 0.0))

    def typed_input(self, raw: object) -> Point:
        return _point(raw) or (0.0, 0.0)

    def finish(self, value: Point) -> Stored:
        lon, lat = value
        if lat == 0 and lon == 0:
            if self.required:
                raise required()
        elif lat < -90 or lat > 90:
            raise FieldError("validation_invalid_latitude", "Latitude must be between -90 and 90 degrees.")
        elif lon < -180 or lon > 180:
            raise FieldError("validation_invalid_longitude", "Longitude must be between -180 and 180 degrees.")
        return _dumps(value)

    def to_api(self, stored: Stored) -> object:
        lon, lat = self.typed(stored)
        return {"lon": json_number(lon), "lat": json_number(lat)}

    def to_record_json(self, stored: Stored) -> GeoPointJson:
        """The value in an answer's record (:func:`to_api` is the value rules and forms read)."""
        lon, lat = self.typed(stored)
        return GeoPointJson(json_number(lon), json_number(lat))
