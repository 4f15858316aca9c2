"""A minimal writer of pprof's profile format (``profile.proto`` of github.com/google/pprof), gzipped.

``go tool pprof``, pprof's web UI, Pyroscope, Speedscope and most profilers' viewers read this format, so a
profile taken here opens wherever a Go service's would. Only what pbfast writes is encoded: sample types,
samples (location ids leaf first, values, string labels), locations with one line each, functions, the
string table, time, duration, period and comments. No mappings: Python code has no memory mapping, and pprof
readers accept locations without one.

The protobuf encoding is written by hand (varints, length-delimited fields, packed repeated integers); the
schema is small and stable, and a protobuf runtime would be a heavy dependency for it.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["FrameInfo", "ProfileBuilder", "ValueType"]

_VARINT = 0
_LENGTH_DELIMITED = 2
_UINT64_MASK = (1 << 64) - 1

# Field numbers of profile.proto.
_PROFILE_SAMPLE_TYPE = 1
_PROFILE_SAMPLE = 2
_PROFILE_LOCATION = 4
_PROFILE_FUNCTION = 5
_PROFILE_STRING_TABLE = 6
_PROFILE_TIME_NANOS = 9
_PROFILE_DURATION_NANOS = 10
_PROFILE_PERIOD_TYPE = 11
_PROFILE_PERIOD = 12
_PROFILE_COMMENT = 13
_PROFILE_DEFAULT_SAMPLE_TYPE = 14
_VALUE_TYPE_TYPE = 1
_VALUE_TYPE_UNIT = 2
_SAMPLE_LOCATION_ID = 1
_SAMPLE_VALUE = 2
_SAMPLE_LABEL = 3
_LABEL_KEY = 1
_LABEL_STR = 2
_LOCATION_ID = 1
_LOCATION_LINE = 4
_LINE_FUNCTION_ID = 1
_LINE_LINE = 2
_FUNCTION_ID = 1
_FUNCTION_NAME = 2
_FUNCTION_SYSTEM_NAME = 3
_FUNCTION_FILENAME = 4
_FUNCTION_START_LINE = 5


def _varint(value: int, out: bytearray) -> None:
    value &= _UINT64_MASK  # int64 negatives are ten-byte two's complement varints
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _tag(number: int, wire_type: int, out: bytearray) -> None:
    _varint(number << 3 | wire_type, out)


def _integer(number: int, value: int, out: bytearray) -> None:
    if value:  # proto3: zero is the default and is left out
        _tag(number, _VARINT, out)
        _varint(value, out)


def _length_delimited(number: int, payload: bytes | bytearray, out: bytearray) -> None:
    _tag(number, _LENGTH_DELIMITED, out)
    _varint(len(payload), out)
    out += payload


def _packed(number: int, values: Iterable[int], out: bytearray) -> None:
    payload = bytearray()
    for value in values:
        _varint(value, payload)
    if payload:
        _length_delimited(number, payload, out)


@dataclass(frozen=True, slots=True)
class ValueType:
    """What a sample value counts, e.g. ``ValueType("cpu", "nanoseconds")``."""

    type: str
    unit: str


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """One frame of a stack: the function (its display name, its bare name, file, first line) and the line."""

    name: str
    system_name: str
    filename: str
    start_line: int
    line: int


@dataclass(slots=True)
class ProfileBuilder:
    """Collects samples and writes them as a pprof profile.

    Stacks are given as sequences of :class:`FrameInfo`, leaf first; functions, locations and strings are
    deduplicated. ``sample_types`` lists what each sample's values are, in order."""

    sample_types: Sequence[ValueType]
    period_type: ValueType | None = None
    period: int = 0
    time_nanos: int = 0
    duration_nanos: int = 0
    default_sample_type: str = ""
    comments: list[str] = field(default_factory=list)
    _strings: dict[str, int] = field(default_factory=lambda: {"": 0})
    _functions: dict[tuple[str, str, str, int], int] = field(default_factory=dict)
    _locations: dict[tuple[int, int], int] = field(default_factory=dict)
    _samples: list[tuple[list[int], Sequence[int], list[tuple[int, int]]]] = field(default_factory=list)

    def string(self, text: str) -> int:
        index = self._strings.get(text)
        if index is None:
            index = self._strings[text] = len(self._strings)
        return index

    def location(self, frame: FrameInfo) -> int:
        """The id of ``frame``'s location (function and line), added on first use."""
        key = (frame.name, frame.system_name, frame.filename, frame.start_line)
        function_id = self._functions.get(key)
        if function_id is None:
            function_id = self._functions[key] = len(self._functions) + 1
        location_key = (function_id, frame.line)
        location_id = self._locations.get(location_key)
        if location_id is None:
            location_id = self._locations[location_key] = len(self._locations) + 1
        return location_id

    def add(self, stack: Sequence[FrameInfo], values: Sequence[int], labels: dict[str, str] | None = None) -> None:
        """One sample: ``stack`` leaf first, one value per sample type, optional string labels."""
        if len(values) != len(self.sample_types):
            raise ValueError(f"expected {len(self.sample_types)} values, got {len(values)}")
        locations = [self.location(frame) for frame in stack]
        pairs = [(self.string(key), self.string(value)) for key, value in (labels or {}).items()]
        self._samples.append((locations, values, pairs))

    def encode(self) -> bytes:
        """The profile as serialized protobuf (not compressed)."""
        out = bytearray()
        for value_type in self.sample_types:
            _length_delimited(_PROFILE_SAMPLE_TYPE, self._value_type(value_type), out)
        for locations, values, labels in self._samples:
            sample = bytearray()
            _packed(_SAMPLE_LOCATION_ID, locations, sample)
            _packed(_SAMPLE_VALUE, values, sample)
            for key_id, value_id in labels:
                label = bytearray()
                _integer(_LABEL_KEY, key_id, label)
                _integer(_LABEL_STR, value_id, label)
                _length_delimited(_SAMPLE_LABEL, label, sample)
            _length_delimited(_PROFILE_SAMPLE, sample, out)
        for (function_id, line), location_id in self._locations.items():
            line_message = bytearray()
            _integer(_LINE_FUNCTION_ID, function_id, line_message)
            _integer(_LINE_LINE, line, line_message)
            location = bytearray()
            _integer(_LOCATION_ID, location_id, location)
            _length_delimited(_LOCATION_LINE, line_message, location)
            _length_delimited(_PROFILE_LOCATION, location, out)
        for (name, system_name, filename, start_line), function_id in self._functions.items():
            function = bytearray()
            _integer(_FUNCTION_ID, function_id, function)
            _integer(_FUNCTION_NAME, self.string(name), function)
            _integer(_FUNCTION_SYSTEM_NAME, self.string(system_name), function)
            _integer(_FUNCTION_FILENAME, self.string(filename), function)
            _integer(_FUNCTION_START_LINE, start_line, function)
            _length_delimited(_PROFILE_FUNCTION, function, out)
        # Every string is interned before the table is written.
        comment_ids = [self.string(comment) for comment in self.comments]
        default_type = self.string(self.default_sample_type) if self.default_sample_type else 0
        period_type = self._value_type(self.period_type) if self.period_type is not None else None
        for text in self._strings:  # dicts keep insertion order: index order
            _length_delimited(_PROFILE_STRING_TABLE, text.encode("utf-8", "replace"), out)
        _integer(_PROFILE_TIME_NANOS, self.time_nanos, out)
        _integer(_PROFILE_DURATION_NANOS, self.duration_nanos, out)
        if period_type is not None:
            _length_delimited(_PROFILE_PERIOD_TYPE, period_type, out)
        _integer(_PROFILE_PERIOD, self.period, out)
        if comment_ids:
            _packed(_PROFILE_COMMENT, comment_ids, out)
        _integer(_PROFILE_DEFAULT_SAMPLE_TYPE, default_type, out)
        return bytes(out)

    def gzipped(self) -> bytes:
        """The profile as pprof serves it: gzip-compressed protobuf."""
        return gzip.compress(self.encode(), compresslevel=6, mtime=0)

    def _value_type(self, value_type: ValueType) -> bytearray:
        message = bytearray()
        _integer(_VALUE_TYPE_TYPE, self.string(value_type.type), message)
        _integer(_VALUE_TYPE_UNIT, self.string(value_type.unit), message)
        return message
