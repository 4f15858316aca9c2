//! Request logs as PocketBase 0.40 stores them in `auxiliary.db` `_logs`: a request's fields are queued
//! here as they are (a few string copies, no Python objects kept), and the writer thread takes the
//! queue whole and formats each row's `message`, `data` JSON and `created` text with the GIL released.
//! Built in Python each row cost ~3 µs of the request's thread (a dict, orjson, time text, a
//! dataclass that the garbage collector tracked while queued); a push here costs a fraction of that.
//!
//! Core ([`RequestLog`], [`data_json`], [`message`], [`created_text`], [`FormattedBatch`], [`LogQueue`]) is plain Rust;
//! [`RequestLogQueue`] only converts. The `data` JSON is Go's `encoding/json` of PocketBase's map:
//! keys sorted, no HTML escaping (PocketBase's logger turns it off), `\u2028`/`\u2029` escaped,
//! `execTime` a duration of whole nanoseconds in milliseconds formatted as Go formats a float64.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::log_text;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

/// PocketBase's limits (`apis/middlewares.go`): longer values are cut and end in `...`.
pub const MAX_URL_CHARS: usize = 3000;
pub const MAX_METHOD_CHARS: usize = 50;
pub const MAX_HEADER_CHARS: usize = 2000;

/// One finished request, as the tenant's `logs` settings let it be logged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestLog {
    pub level: i64,
    pub method: String,
    /// Path and `?query`, as received (percent-encoded).
    pub url: String,
    pub status: i64,
    pub exec_ms: f64,
    pub referer: String,
    pub user_agent: String,
    /// The auth record's collection name, "" for a guest.
    pub auth: String,
    pub auth_id: Option<String>,
    pub user_ip: Option<String>,
    pub remote_ip: Option<String>,
    /// A failed request's error message and its details' JSON (None: `null`).
    pub error: Option<(String, Option<Vec<u8>>)>,
    /// Unix time in seconds.
    pub created: f64,
}

/// `text` cut to `limit` characters followed by `...` when it is longer.
pub fn cut(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit {
        return text.into(); // bytes bound characters
    }
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}...", &text[..end]).into(),
        None => text.into(),
    }
}

/// `text` as a JSON string, appended to `out` (Go's `encoding/json` without HTML escaping).
pub fn json_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        let escape: Option<&[u8]> = match byte {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0x00..=0x1f => Some(b""),
            // U+2028 and U+2029 (E2 80 A8/A9): Go escapes them always.
            0xe2 if bytes.get(at + 1) == Some(&0x80) && matches!(bytes.get(at + 2), Some(0xa8 | 0xa9)) => Some(b""),
            _ => None,
        };
        let Some(escape) = escape else {
            at += 1;
            continue;
        };
        out.extend_from_slice(&bytes[start..at]);
        if !escape.is_empty() {
            out.extend_from_slice(escape);
            at += 1;
        } else if byte == 0xe2 {
            out.extend_from_slice(if bytes[at + 2] == 0xa8 { b"\\u2028" } else { b"\\u2029" });
            at += 3;
        } else {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 15)]);
            at += 1;
        }
        start = at;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A duration in milliseconds as PocketBase writes `execTime` (see [`log_text::push_exec_time`]).
pub fn exec_time_text(exec_ms: f64) -> String {
    let mut out = Vec::new();
    log_text::push_exec_time(&mut out, exec_ms);
    String::from_utf8(out).unwrap_or_default() // (ASCII digits)
}

/// The row's `data`: PocketBase's request attributes as JSON, keys sorted.
pub fn data_json(log: &RequestLog, out: &mut Vec<u8>) {
    let cut_url = cut(&log.url, MAX_URL_CHARS);
    let method = method_text(&log.method);
    out.extend_from_slice(b"{\"auth\":");
    json_string(&log.auth, out);
    if let Some(auth_id) = &log.auth_id {
        out.extend_from_slice(b",\"authId\":");
        json_string(auth_id, out);
    }
    if let Some((error, details)) = &log.error {
        out.extend_from_slice(b",\"details\":");
        out.extend_from_slice(details.as_deref().unwrap_or(b"null"));
        out.extend_from_slice(b",\"error\":");
        json_string(error, out);
    }
    out.extend_from_slice(b",\"execTime\":");
    log_text::push_exec_time(out, log.exec_ms);
    out.extend_from_slice(b",\"method\":");
    json_string(&method, out);
    out.extend_from_slice(b",\"referer\":");
    json_string(&cut(&log.referer, MAX_HEADER_CHARS), out);
    if let Some(remote_ip) = &log.remote_ip {
        out.extend_from_slice(b",\"remoteIP\":");
        json_string(remote_ip, out);
    }
    out.extend_from_slice(b",\"status\":");
    log_text::push_signed(out, log.status);
    out.extend_from_slice(b",\"type\":\"request\",\"url\":");
    json_string(&cut_url, out);
    out.extend_from_slice(b",\"userAgent\":");
    json_string(&cut(&log.user_agent, MAX_HEADER_CHARS), out);
    if let Some(user_ip) = &log.user_ip {
        out.extend_from_slice(b",\"userIP\":");
        json_string(user_ip, out);
    }
    out.push(b'}');
}

fn method_text(method: &str) -> std::borrow::Cow<'_, str> {
    if method.bytes().any(|byte| byte.is_ascii_lowercase()) {
        cut(&method.to_uppercase(), MAX_METHOD_CHARS).into_owned().into()
    } else {
        cut(method, MAX_METHOD_CHARS)
    }
}

/// The row's `message`: `METHOD url`, the url percent-decoded (invalid UTF-8 replaced, as Python's
/// `urllib.parse.unquote` does).
pub fn message(log: &RequestLog) -> String {
    let url = cut(&log.url, MAX_URL_CHARS);
    let mut text = String::with_capacity(log.method.len() + 1 + url.len());
    text.push_str(&method_text(&log.method));
    text.push(' ');
    if !url.contains('%') {
        text.push_str(&url);
        return text;
    }
    let bytes = url.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' && at + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex_value(bytes[at + 1]), hex_value(bytes[at + 2])) {
                decoded.push(high << 4 | low);
                at += 3;
                continue;
            }
        }
        decoded.push(bytes[at]);
        at += 1;
    }
    text.push_str(&String::from_utf8_lossy(&decoded));
    text
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// PocketBase's datetime text (`2006-01-02 15:04:05.000Z`) of a Unix time in seconds (see
/// [`log_text::push_created`]).
pub fn created_text(unix_seconds: f64) -> String {
    let mut out = Vec::with_capacity(CREATED_LEN);
    log_text::push_created(&mut out, unix_seconds);
    String::from_utf8(out).unwrap_or_default() // (ASCII)
}

/// A bounded queue of request logs, each with its tenant's key and retention: pushed by any thread,
/// taken whole by the writer. A push to a full queue drops the log and counts it.
pub struct LogQueue<K> {
    entries: Mutex<Vec<(K, i64, RequestLog)>>,
    capacity: usize,
    dropped: AtomicU64,
}

impl<K> LogQueue<K> {
    pub fn new(capacity: usize) -> LogQueue<K> {
        LogQueue { entries: Mutex::new(Vec::new()), capacity, dropped: AtomicU64::new(0) }
    }

    /// The queue's length with this log in it; 0 when it was full (the log dropped).
    pub fn push(&self, key: K, max_days: i64, log: RequestLog) -> usize {
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity {
            drop(entries);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        entries.push((key, max_days, log));
        entries.len()
    }

    /// Everything queued, oldest first; the queue is empty after.
    pub fn take(&self) -> Vec<(K, i64, RequestLog)> {
        std::mem::take(&mut *self.entries.lock())
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The length of every `created` text.
pub const CREATED_LEN: usize = 24;

/// Bits of a packed row (see [`FormattedBatch`]): its start in the blob, its message's length, its level + 128,
/// its data's length (all ones: the data runs to the end of the blob).
pub const START_BITS: u32 = 24;
pub const MESSAGE_BITS: u32 = 14;
pub const LEVEL_BITS: u32 = 8;
pub const DATA_BITS: u32 = 64 - START_BITS - MESSAGE_BITS - LEVEL_BITS;
/// A row's data length meaning "to the end of the blob": a row whose data is this long or longer ends its batch.
pub const DATA_TO_END: i64 = (1 << DATA_BITS) - 1;
/// A batch's blob grows to about this many bytes at most (a row starts below it, so its start fits its bits).
pub const MAX_BATCH_BLOB: usize = 1 << START_BITS;

/// A tenant's rows formatted for one insert: `blob` holds each row's `created`, `message` and `data`
/// back to back; `packed` one integer per row: its start in `blob` (bits 0-23), its message's length
/// (bits 24-37), its level + 128 (bits 38-45) and its data's length (bits 46-63; [`DATA_TO_END`]: up to the
/// blob's end, for a row that ends its batch). Two buffers for SQLite to read (`carray` and `substr`) instead of
/// four Python objects per row, each row's fields found from its own integer (no window over the rows).
#[derive(Debug, Default)]
pub struct FormattedBatch {
    pub blob: Vec<u8>,
    pub packed: Vec<i64>,
    /// No row may follow (the last one's data is read up to the blob's end, or the blob is full).
    pub closed: bool,
}

impl FormattedBatch {
    pub fn add(&mut self, log: &RequestLog) {
        debug_assert!(!self.closed && self.blob.len() < MAX_BATCH_BLOB);
        let start = self.blob.len();
        let message = message(log);
        log_text::push_created(&mut self.blob, log.created);
        self.blob.extend_from_slice(message.as_bytes());
        let data_start = self.blob.len();
        data_json(log, &mut self.blob);
        let level = log.level.clamp(-128, 127) + 128;
        // (a message is at most ~12.2 KB: 3,000 characters of url and 50 of method, 4 bytes each at most)
        let message_len = message.len().min((1 << MESSAGE_BITS) - 1) as i64;
        let mut data_len = (self.blob.len() - data_start) as i64;
        if data_len >= DATA_TO_END {
            data_len = DATA_TO_END;
            self.closed = true;
        }
        self.closed |= self.blob.len() >= MAX_BATCH_BLOB;
        self.packed.push(
            start as i64 | message_len << START_BITS | level << (START_BITS + MESSAGE_BITS)
                | data_len << (START_BITS + MESSAGE_BITS + LEVEL_BITS),
        );
    }

    pub fn len(&self) -> usize {
        self.packed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// The fields of row `index`: `(level, message, data, created)` (for tests; SQLite reads them itself, as
    /// `pbfast/pocketbase/request_logs.py` says).
    pub fn row(&self, index: usize) -> (i64, &[u8], &[u8], &[u8]) {
        let packed = self.packed[index];
        let start = (packed & ((1 << START_BITS) - 1)) as usize;
        let message_len = (packed >> START_BITS & ((1 << MESSAGE_BITS) - 1)) as usize;
        let level = (packed >> (START_BITS + MESSAGE_BITS) & ((1 << LEVEL_BITS) - 1)) - 128;
        let data_len = packed >> (START_BITS + MESSAGE_BITS + LEVEL_BITS) & DATA_TO_END;
        let message_at = start + CREATED_LEN;
        let data_at = message_at + message_len;
        let stop = if data_len == DATA_TO_END { self.blob.len() } else { data_at + data_len as usize };
        (level, &self.blob[message_at..data_at], &self.blob[data_at..stop], &self.blob[start..message_at])
    }
}

/// `logs` formatted into batches (a new one when the last is [`FormattedBatch::closed`]).
pub fn format_batches<'a>(logs: impl IntoIterator<Item = &'a RequestLog>) -> Vec<FormattedBatch> {
    let mut batches: Vec<FormattedBatch> = Vec::new();
    for log in logs {
        match batches.last_mut() {
            Some(batch) if !batch.closed => batch.add(log),
            _ => {
                let mut batch = FormattedBatch::default();
                batch.add(log);
                batches.push(batch);
            }
        }
    }
    batches
}

// ---------------------------------------------------------------------------------------------
// Python
// ---------------------------------------------------------------------------------------------

fn text(value: &Bound<'_, PyString>) -> String {
    value.to_string_lossy().into_owned() // (a lone surrogate becomes U+FFFD rather than failing the log)
}

fn optional_text(value: Option<&Bound<'_, PyString>>) -> Option<String> {
    value.map(text)
}

/// The Python face: see `pbfast/_native.pyi`.
#[pyclass(module = "pbfast._native", name = "RequestLogQueue", frozen)]
pub struct RequestLogQueue {
    core: LogQueue<Py<PyAny>>,
}

#[pymethods]
impl RequestLogQueue {
    #[new]
    #[pyo3(signature = (capacity = 20_000))]
    fn py_new(capacity: usize) -> RequestLogQueue {
        RequestLogQueue { core: LogQueue::new(capacity) }
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (tenant, max_days, level, method, url, status, exec_ms, referer, user_agent, auth, auth_id,
                        user_ip, remote_ip, error, details, created))]
    fn push(
        &self,
        tenant: Py<PyAny>,
        max_days: i64,
        level: i64,
        method: &Bound<'_, PyString>,
        url: &Bound<'_, PyString>,
        status: i64,
        exec_ms: f64,
        referer: &Bound<'_, PyString>,
        user_agent: &Bound<'_, PyString>,
        auth: &Bound<'_, PyString>,
        auth_id: Option<&Bound<'_, PyString>>,
        user_ip: Option<&Bound<'_, PyString>>,
        remote_ip: Option<&Bound<'_, PyString>>,
        error: Option<&Bound<'_, PyString>>,
        details: Option<&[u8]>,
        created: f64,
    ) -> usize {
        let log = RequestLog {
            level,
            method: text(method),
            url: text(url),
            status,
            exec_ms,
            referer: text(referer),
            user_agent: text(user_agent),
            auth: text(auth),
            auth_id: optional_text(auth_id),
            user_ip: optional_text(user_ip),
            remote_ip: optional_text(remote_ip),
            error: error.map(|message| (text(message), details.map(<[u8]>::to_vec))),
            created,
        };
        self.core.push(tenant, max_days, log)
    }

    /// Everything queued, taken off and formatted: per tenant key (by identity, in order of its first log),
    /// one or more `(tenant, max_days of its last log, rows, blob, packed)`, its rows in order (see
    /// [`FormattedBatch`]: a batch ends after a row whose data is 256 KiB or more, or at 16 MiB of blob; `packed`
    /// as the bytes of native-endian 64-bit integers).
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let entries = self.core.take();
        let mut tenants: Vec<(Py<PyAny>, i64)> = Vec::new();
        let mut group_of: HashMap<usize, usize> = HashMap::new();
        let mut logs = Vec::with_capacity(entries.len());
        for (key, max_days, log) in entries {
            let group = *group_of.entry(key.as_ptr() as usize).or_insert(tenants.len());
            if group == tenants.len() {
                tenants.push((key, max_days));
            } else {
                tenants[group].1 = max_days;
            }
            logs.push((group, log));
        }
        let count = tenants.len();
        let batches = py.detach(move || {
            let mut by_group: Vec<Vec<&RequestLog>> = vec![Vec::new(); count];
            for (group, log) in &logs {
                by_group[*group].push(log);
            }
            by_group
                .into_iter()
                .map(|group| {
                    format_batches(group)
                        .into_iter()
                        .map(|batch| {
                            let packed: Vec<u8> = batch.packed.iter().flat_map(|value| value.to_ne_bytes()).collect();
                            (batch.len(), batch.blob, packed)
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        });
        let mut parts = Vec::new();
        for ((key, max_days), group) in tenants.into_iter().zip(batches) {
            let key = key.into_bound(py);
            for (rows, blob, packed) in group {
                parts.push(PyTuple::new(
                    py,
                    [
                        key.clone(),
                        max_days.into_pyobject(py)?.into_any(),
                        rows.into_pyobject(py)?.into_any(),
                        PyBytes::new(py, &blob).into_any(),
                        PyBytes::new(py, &packed).into_any(),
                    ],
                )?);
            }
        }
        Ok(parts)
    }

    #[getter]
    fn dropped(&self) -> u64 {
        self.core.dropped()
    }

    fn __len__(&self) -> usize {
        self.core.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> String {
        let mut out = Vec::new();
        json_string(text, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn view() -> RequestLog {
        RequestLog {
            level: 0,
            method: "GET".into(),
            url: "/api/collections/posts/records/abc?a=1&b=%3Cx%3E".into(),
            status: 200,
            exec_ms: 0.290_230_000_1,
            referer: "".into(),
            user_agent: "ua<&>\"é".into(),
            auth: "_superusers".into(),
            auth_id: Some("u1".into()),
            user_ip: Some("127.0.0.1".into()),
            remote_ip: Some("127.0.0.1".into()),
            error: None,
            created: 1_796_601_600.250_4,
        }
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them_without_html_escaping() {
        assert_eq!(json("plain é <&>"), "\"plain é <&>\"");
        assert_eq!(json("q\"b\\n\nr\rt\tb\u{8}f\u{c}"), "\"q\\\"b\\\\n\\nr\\rt\\tb\\bf\\f\"");
        assert_eq!(json("\u{1}\u{1f}\u{7f}"), "\"\\u0001\\u001f\u{7f}\"");
        assert_eq!(json("a\u{2028}b\u{2029}c\u{2027}"), "\"a\\u2028b\\u2029c\u{2027}\"");
    }

    #[test]
    fn a_rows_data_has_pocketbases_keys_in_order() {
        let mut out = Vec::new();
        data_json(&view(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"auth\":\"_superusers\",\"authId\":\"u1\",\"execTime\":0.29023,\"method\":\"GET\",\"referer\":\"\",\
             \"remoteIP\":\"127.0.0.1\",\"status\":200,\"type\":\"request\",\
             \"url\":\"/api/collections/posts/records/abc?a=1&b=%3Cx%3E\",\"userAgent\":\"ua<&>\\\"é\",\
             \"userIP\":\"127.0.0.1\"}"
        );
        let failed = RequestLog {
            level: 8,
            status: 404,
            auth_id: None,
            user_ip: None,
            remote_ip: None,
            exec_ms: 5.0,
            error: Some(("Missing collection context.".into(), None)),
            ..view()
        };
        let mut out = Vec::new();
        data_json(&failed, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("{\"auth\":\"_superusers\",\"details\":null,\"error\":\"Missing collection context.\",\"execTime\":5,"), "{text}");
        assert!(text.ends_with("\"userAgent\":\"ua<&>\\\"é\"}"), "{text}");
        let detailed = RequestLog { error: Some(("x".into(), Some(b"{\"a\":1}".to_vec()))), ..failed };
        let mut out = Vec::new();
        data_json(&detailed, &mut out);
        assert!(String::from_utf8(out).unwrap().contains("\"details\":{\"a\":1},\"error\":\"x\""));
    }

    #[test]
    fn exec_time_is_whole_nanoseconds_in_go_float_text() {
        assert_eq!(exec_time_text(0.290_230_4), "0.29023");
        assert_eq!(exec_time_text(12.0), "12");
        assert_eq!(exec_time_text(0.000_001), "0.000001");
        assert_eq!(exec_time_text(0.0), "0");
        assert_eq!(exec_time_text(1_234.567_890_1), "1234.56789");
    }

    #[test]
    fn long_values_are_cut_by_characters() {
        let long = "é".repeat(2001);
        assert_eq!(cut(&long, MAX_HEADER_CHARS), format!("{}...", "é".repeat(2000)));
        assert_eq!(cut(&"é".repeat(2000), MAX_HEADER_CHARS), "é".repeat(2000));
        let log = RequestLog { url: format!("/{}", "a".repeat(3000)), method: "x".repeat(60), ..view() };
        let message = message(&log);
        assert_eq!(message, format!("{}... /{}...", "X".repeat(50), "a".repeat(2999)));
    }

    #[test]
    fn the_message_is_the_method_and_the_decoded_url() {
        let log = |url: &str| message(&RequestLog { url: url.into(), ..view() });
        assert_eq!(log("/api/health?a=1&b=%3Cx%3E&c=%E2%80%A8é"), "GET /api/health?a=1&b=<x>&c=\u{2028}é");
        assert_eq!(log("/a%2"), "GET /a%2");
        assert_eq!(log("/a%zz%41"), "GET /a%zzA");
        assert_eq!(log("/a%FF%E2%80"), "GET /a\u{fffd}\u{fffd}");
        assert_eq!(log("/plain"), "GET /plain");
    }

    #[test]
    fn created_is_pocketbases_datetime_text() {
        assert_eq!(created_text(1_796_601_600.250_4), "2026-12-07 00:00:00.250Z");
        assert_eq!(created_text(0.0), "1970-01-01 00:00:00.000Z");
        assert_eq!(created_text(951_782_400.999_9), "2000-02-29 00:00:00.999Z");
        assert_eq!(created_text(1_709_251_199.5), "2024-02-29 23:59:59.500Z");
        assert_eq!(created_text(-5.0), "1970-01-01 00:00:00.000Z");
    }

    #[test]
    fn a_batch_keeps_each_rows_fields_apart() {
        let mut batch = FormattedBatch::default();
        let failed = RequestLog { level: -4, error: Some(("e".into(), None)), url: "/%41".into(), ..view() };
        for log in [view(), failed.clone(), view()] {
            batch.add(&log);
        }
        assert_eq!(batch.len(), 3);
        for (index, log) in [view(), failed, view()].iter().enumerate() {
            let mut data = Vec::new();
            data_json(log, &mut data);
            let (level, message_text, data_text, created) = batch.row(index);
            assert_eq!(level, log.level);
            assert_eq!(message_text, message(log).as_bytes());
            assert_eq!(data_text, &data[..]);
            assert_eq!(created, created_text(log.created).as_bytes());
        }
        assert_eq!(created_text(1e12).len(), CREATED_LEN); // (clamped below year 10000)
    }

    #[test]
    fn a_row_with_long_data_ends_its_batch_and_is_read_to_the_blobs_end() {
        let long = RequestLog { user_agent: "\u{1}".repeat(MAX_HEADER_CHARS), referer: "\u{1}".repeat(MAX_HEADER_CHARS), ..view() };
        let huge = RequestLog { error: Some(("e".into(), Some(vec![b'1'; 300_000]))), level: 8, ..view() };
        let logs = [view(), long.clone(), huge.clone(), view(), huge.clone(), huge.clone()];
        let batches = format_batches(&logs);
        // long data (24 KB of escapes) fits its bits; each huge row ends its batch
        assert_eq!(batches.iter().map(FormattedBatch::len).collect::<Vec<_>>(), [3, 2, 1]);
        let rows: Vec<_> = batches.iter().flat_map(|batch| (0..batch.len()).map(move |index| batch.row(index))).collect();
        for (log, (level, message_text, data_text, created)) in logs.iter().zip(rows) {
            let mut data = Vec::new();
            data_json(log, &mut data);
            assert_eq!(level, log.level);
            assert_eq!(message_text, message(log).as_bytes());
            assert_eq!(data_text, &data[..]);
            assert_eq!(created, created_text(log.created).as_bytes());
        }
        let longest_message = RequestLog { method: "é".repeat(60), url: format!("/{}", "😀".repeat(3000)), ..view() };
        assert!(message(&longest_message).len() < 1 << MESSAGE_BITS);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let queue = LogQueue::new(2);
        assert_eq!(queue.push(1, 5, view()), 1);
        assert_eq!(queue.push(2, 5, view()), 2);
        assert_eq!(queue.push(3, 5, view()), 0);
        assert_eq!(queue.dropped(), 1);
        let taken = queue.take();
        assert_eq!(taken.iter().map(|(key, _, _)| *key).collect::<Vec<_>>(), [1, 2]);
        assert!(queue.is_empty());
        assert_eq!(queue.push(4, 5, view()), 1);
    }
}
