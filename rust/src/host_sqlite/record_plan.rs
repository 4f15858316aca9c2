//! A record's JSON written from one result row, byte for byte as pbfast's Python writes it (`record_json`
//! then `orjson.dumps(..., OPT_SORT_KEYS)`), by a plan Python makes once per (collection, viewer kind).
//!
//! Correct by construction: each column kind writes only the stored values whose Python output is proven
//! here (see [`Shown`]); any other value (another storage class, a number outside the proven range, text that
//! is not UTF-8, a date not in PocketBase's layout ...) makes the whole row "not written", and the caller
//! lets Python answer the request instead.

use super::row_json::write_str;
use libsqlite3_sys as ffi;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::ffi::c_int;

/// How a stored column shows in the record's JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// text, editor, email, url, a text primary key: a TEXT value as itself, NULL as "".
    Text,
    /// a single select, relation or file: a TEXT value without `[` as itself, NULL as "".
    Single,
    /// a multiple select, relation or file: "" or NULL as `[]`; a compact JSON array of distinct, non-empty
    /// strings without escapes as it is stored.
    Multi,
    /// number: an INTEGER up to 2^53, a REAL whole up to 2^53 (as an integer) or with a fraction between
    /// 1e-5 and 1e15 in magnitude (shortest round-trip digits, as orjson).
    Number,
    /// bool: an INTEGER, true when it is 1.
    Bool,
    /// date, autodate: a TEXT already in PocketBase's layout with a day every month has (`CANONICAL_DATETIME`);
    /// "" or NULL (the zero date) as "".
    Date,
    /// password: always "" (only its hash is stored).
    Blank,
    /// an auth record's email for a non-superuser: written (as [`Shown::Text`]) when the row's
    /// `emailVisibility` (the column at `visibility`) is truthy or the column at `own` is 1 (the requester is
    /// the record); otherwise the member is left out.
    GatedEmail { visibility: c_int, own: c_int },
}

enum Entry {
    /// `"key":value`, made once.
    Constant(Vec<u8>),
    /// `"key":` and how the column at `index` shows.
    Column { key: Vec<u8>, index: c_int, shown: Shown },
}

/// The members of a record's JSON in the order written (Python sorts them: `OPT_SORT_KEYS`).
#[pyclass(frozen, module = "pbfast._native")]
pub struct RecordPlan {
    entries: Vec<Entry>,
    /// How many result columns the statement must have (members plus the email gates).
    pub columns: usize,
}

impl RecordPlan {
    /// The plan from Python's entries: `(key, kind, value)`; kind `"const"` writes the string `value`, any other
    /// kind the next result column (in order); `"email"` reads its two gates from the two columns after the
    /// last member's.
    pub fn build(entries: &[(String, String, String)]) -> Result<RecordPlan, String> {
        let members = entries.iter().filter(|(_, kind, _)| kind != "const").count();
        let mut index: c_int = 0;
        let mut gates = 0;
        let mut built = Vec::with_capacity(entries.len());
        for (name, kind, value) in entries {
            let mut key = Vec::with_capacity(name.len() + 3);
            write_str(&mut key, name.as_bytes());
            key.push(b':');
            if kind == "const" {
                write_str(&mut key, value.as_bytes());
                built.push(Entry::Constant(key));
                continue;
            }
            let shown = match kind.as_str() {
                "text" => Shown::Text,
                "single" => Shown::Single,
                "multi" => Shown::Multi,
                "number" => Shown::Number,
                "bool" => Shown::Bool,
                "date" => Shown::Date,
                "blank" => Shown::Blank,
                "email" => {
                    gates += 1;
                    let first = c_int::try_from(members).map_err(|_| "too many columns")?;
                    Shown::GatedEmail { visibility: first, own: first + 1 }
                }
                other => return Err(format!("unknown column kind {other:?}")),
            };
            built.push(Entry::Column { key, index, shown });
            index += 1;
        }
        if gates > 1 {
            return Err("at most one gated email".into());
        }
        Ok(RecordPlan { entries: built, columns: members + 2 * gates })
    }

    /// The current row of `stmt` appended to `out` as the record's JSON; false (and `out` as it was) when a
    /// value is not one this plan writes (Python then answers).
    ///
    /// # Safety
    /// `stmt` is a statement of the host SQLite positioned on a row, with [`RecordPlan::columns`] result
    /// columns; the caller holds its connection's mutex.
    pub unsafe fn write_row(&self, stmt: *mut ffi::sqlite3_stmt, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        out.push(b'{');
        let mut first = true;
        for entry in &self.entries {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            let written = match entry {
                Entry::Constant(member) => {
                    out.extend_from_slice(member);
                    Some(true)
                }
                Entry::Column { key, index, shown } => {
                    out.extend_from_slice(key);
                    // SAFETY: the caller's promise; `index` is within the statement's columns.
                    unsafe { write_column(stmt, *index, *shown, out) }
                }
            };
            match written {
                Some(true) => first = false,
                Some(false) => out.truncate(mark), // a member left out (a hidden email)
                None => {
                    out.truncate(start);
                    return false;
                }
            }
        }
        out.push(b'}');
        true
    }
}

#[pymethods]
impl RecordPlan {
    #[new]
    fn new(entries: Vec<(String, String, String)>) -> PyResult<RecordPlan> {
        RecordPlan::build(&entries).map_err(PyValueError::new_err)
    }

    /// How many result columns a statement read with this plan has.
    #[getter]
    fn column_count(&self) -> usize {
        self.columns
    }
}

/// Some(true): written; Some(false): the member is left out; None: a value this kind does not write.
unsafe fn write_column(stmt: *mut ffi::sqlite3_stmt, index: c_int, shown: Shown, out: &mut Vec<u8>) -> Option<bool> {
    // SAFETY (every call here): the caller's promise on `stmt` and `index`.
    let kind = unsafe { ffi::sqlite3_column_type(stmt, index) };
    match shown {
        Shown::Text => match kind {
            ffi::SQLITE_NULL => out.extend_from_slice(b"\"\""),
            ffi::SQLITE_TEXT => write_str(out, utf8(unsafe { column_text(stmt, index) })?),
            _ => return None,
        },
        Shown::Single => match kind {
            ffi::SQLITE_NULL => out.extend_from_slice(b"\"\""),
            ffi::SQLITE_TEXT => {
                let text = utf8(unsafe { column_text(stmt, index) })?;
                if text.contains(&b'[') {
                    return None; // parsed as a list by Python
                }
                write_str(out, text);
            }
            _ => return None,
        },
        Shown::Multi => match kind {
            ffi::SQLITE_NULL => out.extend_from_slice(b"[]"),
            ffi::SQLITE_TEXT => {
                let text = unsafe { column_text(stmt, index) };
                if text.is_empty() {
                    out.extend_from_slice(b"[]");
                } else if plain_distinct_strings(text) {
                    out.extend_from_slice(text);
                } else {
                    return None;
                }
            }
            _ => return None,
        },
        Shown::Number => match kind {
            ffi::SQLITE_INTEGER => {
                let value = unsafe { ffi::sqlite3_column_int64(stmt, index) };
                if value.unsigned_abs() > EXACT_INT_LIMIT {
                    return None;
                }
                write_int(out, value);
            }
            ffi::SQLITE_FLOAT => write_float(out, unsafe { ffi::sqlite3_column_double(stmt, index) })?,
            _ => return None,
        },
        Shown::Bool => match kind {
            ffi::SQLITE_INTEGER => {
                let on = unsafe { ffi::sqlite3_column_int64(stmt, index) } == 1;
                out.extend_from_slice(if on { b"true" } else { b"false" });
            }
            _ => return None,
        },
        Shown::Date => match kind {
            ffi::SQLITE_NULL => out.extend_from_slice(b"\"\""), // the zero date
            ffi::SQLITE_TEXT if unsafe { ffi::sqlite3_column_bytes(stmt, index) } == 0 => out.extend_from_slice(b"\"\""),
            ffi::SQLITE_TEXT => {
                let text = unsafe { column_text(stmt, index) };
                if !canonical_datetime(text) {
                    return None;
                }
                out.push(b'"');
                out.extend_from_slice(text);
                out.push(b'"');
            }
            _ => return None,
        },
        Shown::Blank => out.extend_from_slice(b"\"\""),
        Shown::GatedEmail { visibility, own } => {
            let shown = unsafe { truthy(stmt, visibility) }?
                || unsafe { ffi::sqlite3_column_type(stmt, own) } == ffi::SQLITE_INTEGER
                    && unsafe { ffi::sqlite3_column_int64(stmt, own) } == 1;
            if !shown {
                return Some(false);
            }
            return unsafe { write_column(stmt, index, Shown::Text, out) };
        }
    }
    Some(true)
}

const EXACT_INT_LIMIT: u64 = 1 << 53;

/// Python's truth of the value apsw would give (`row.get("emailVisibility")`); None for a blob.
unsafe fn truthy(stmt: *mut ffi::sqlite3_stmt, index: c_int) -> Option<bool> {
    // SAFETY: the caller's promise.
    unsafe {
        match ffi::sqlite3_column_type(stmt, index) {
            ffi::SQLITE_NULL => Some(false),
            ffi::SQLITE_INTEGER => Some(ffi::sqlite3_column_int64(stmt, index) != 0),
            ffi::SQLITE_FLOAT => Some(ffi::sqlite3_column_double(stmt, index) != 0.0),
            ffi::SQLITE_TEXT => Some(!column_text(stmt, index).is_empty()),
            _ => None,
        }
    }
}

/// The column's text (UTF-8 as SQLite holds it, not checked), valid until the statement moves on.
unsafe fn column_text<'a>(stmt: *mut ffi::sqlite3_stmt, index: c_int) -> &'a [u8] {
    // SAFETY: the caller's promise; text first, then its length (SQLite's documented order).
    unsafe {
        let text = ffi::sqlite3_column_text(stmt, index);
        if text.is_null() {
            return b"";
        }
        let len = ffi::sqlite3_column_bytes(stmt, index);
        std::slice::from_raw_parts(text, len.max(0) as usize)
    }
}

fn utf8(text: &[u8]) -> Option<&[u8]> {
    std::str::from_utf8(text).is_ok().then_some(text)
}

fn write_int(out: &mut Vec<u8>, value: i64) {
    use std::io::Write;
    let _ = write!(out, "{value}");
}

/// A REAL as Python shows a number field's float64 (`json_number`, then orjson): whole values up to 2^53 as
/// integers, fractions between 1e-5 and 1e15 in shortest round-trip digits (where orjson writes no exponent,
/// as Rust's `Display`) when they have at most 15 significant digits; None otherwise (exponents, Go's whole
/// floats past 2^53, and 16-17 digits, where orjson may pick another of two shortest forms).
pub fn write_float(out: &mut Vec<u8>, value: f64) -> Option<()> {
    use std::io::Write;
    let magnitude = value.abs();
    if !value.is_finite() {
        return None;
    }
    if value.fract() == 0.0 {
        if magnitude > EXACT_INT_LIMIT as f64 {
            return None;
        }
        write_int(out, value as i64);
    } else if (1e-5..1e15).contains(&magnitude) {
        let start = out.len();
        let _ = write!(out, "{value}");
        // Past 15 significant digits two shortest forms may round-trip (Rust's and orjson's pick differs):
        // within 15 the shortest form is the only one.
        let significant = out[start..].iter().skip_while(|&&c| !matches!(c, b'1'..=b'9')).filter(|c| c.is_ascii_digit());
        if significant.count() > 15 {
            out.truncate(start);
            return None;
        }
    } else {
        return None;
    }
    Some(())
}

/// PocketBase's stored date layout with a day every month has: `[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])
/// ([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z` (what Python shows unchanged, `CANONICAL_DATETIME`).
pub fn canonical_datetime(text: &[u8]) -> bool {
    let [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2, b' ', h1, h2, b':', n1, n2, b':', s1, s2, b'.', f1, f2, f3, b'Z'] =
        *text
    else {
        return false;
    };
    let digit = |c: u8| c.is_ascii_digit();
    let month = matches!((m1, m2), (b'0', b'1'..=b'9') | (b'1', b'0'..=b'2'));
    let day = matches!((d1, d2), (b'0', b'1'..=b'9') | (b'1', b'0'..=b'9') | (b'2', b'0'..=b'8'));
    let hour = matches!((h1, h2), (b'0' | b'1', b'0'..=b'9') | (b'2', b'0'..=b'3'));
    (b'1'..=b'9').contains(&y1)
        && [y2, y3, y4, n2, s2, f1, f2, f3].into_iter().all(digit)
        && month
        && day
        && hour
        && (b'0'..=b'5').contains(&n1)
        && (b'0'..=b'5').contains(&s1)
}

/// A compact JSON array of distinct, non-empty strings with no escapes or control characters, valid UTF-8
/// (`["a","b"]`, `[]`): what Python's `to_unique_strings` gives back item for item and orjson writes the same.
pub fn plain_distinct_strings(text: &[u8]) -> bool {
    let Some(inner) = text.strip_prefix(b"[").and_then(|rest| rest.strip_suffix(b"]")) else {
        return false;
    };
    if std::str::from_utf8(inner).is_err() {
        return false;
    }
    if inner.is_empty() {
        return true;
    }
    let Some(body) = inner.strip_prefix(b"\"").and_then(|rest| rest.strip_suffix(b"\"")) else {
        return false;
    };
    let items: Vec<&[u8]> = body.split(|&c| c == b'"').collect();
    // between items the separator is exactly `","`: the split gives item, ",", item, ",", item ...
    let mut seen: Vec<&[u8]> = Vec::new();
    for (position, piece) in items.iter().enumerate() {
        if position % 2 == 1 {
            if *piece != b"," {
                return false;
            }
            continue;
        }
        if piece.is_empty() || piece.iter().any(|&c| c == b'\\' || c < 0x20) || seen.contains(piece) {
            return false;
        }
        seen.push(piece);
    }
    items.len() % 2 == 1 && seen.len() <= 256
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(value: f64) -> Option<String> {
        let mut out = Vec::new();
        write_float(&mut out, value).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn floats_are_written_as_python_shows_them_or_not_at_all() {
        assert_eq!(float(5000.0).as_deref(), Some("5000"));
        assert_eq!(float(-3.0).as_deref(), Some("-3"));
        assert_eq!(float(0.1).as_deref(), Some("0.1"));
        assert_eq!(float(0.000015).as_deref(), Some("0.000015"));
        assert_eq!(float(123456.789).as_deref(), Some("123456.789"));
        assert_eq!(float(1.5e-7), None); // orjson: 1.5e-7
        assert_eq!(float(1e16 + 2.0), None); // past 2^53: Go's whole float
        assert_eq!(float(f64::NAN), None);
        assert_eq!(float(72625842669685.12), None); // orjson: ...85.12, Rust's Display: ...85.13
        assert_eq!(float(0.1 + 0.2), None);
    }

    #[test]
    fn only_canonical_dates_are_written() {
        assert!(canonical_datetime(b"2024-01-28 23:59:59.123Z"));
        assert!(!canonical_datetime(b"2024-01-29 23:59:59.123Z")); // 29-31: Python takes the long way
        assert!(!canonical_datetime(b"2024-13-01 00:00:00.000Z"));
        assert!(!canonical_datetime(b"0999-01-01 00:00:00.000Z"));
        assert!(!canonical_datetime(b"2024-01-01 24:00:00.000Z"));
        assert!(!canonical_datetime(b"2024-01-01 00:00:00.000"));
        assert!(!canonical_datetime(b""));
    }

    #[test]
    fn only_plain_distinct_string_arrays_are_kept() {
        assert!(plain_distinct_strings(b"[]"));
        assert!(plain_distinct_strings(b"[\"a\"]"));
        assert!(plain_distinct_strings("[\"a\",\"bé\"]".as_bytes()));
        assert!(!plain_distinct_strings(b"[\"a\",\"a\"]"));
        assert!(!plain_distinct_strings(b"[\"a\", \"b\"]"));
        assert!(!plain_distinct_strings(b"[\"\"]"));
        assert!(!plain_distinct_strings(b"[\"a\\\"b\"]"));
        assert!(!plain_distinct_strings(b"[1]"));
        assert!(!plain_distinct_strings(b"[\"a\"")); // not closed
        assert!(!plain_distinct_strings(b"[\"a\"\"b\"]"));
    }

    #[test]
    fn plans_count_their_columns_and_refuse_unknown_kinds() {
        let entry = |key: &str, kind: &str| (key.to_string(), kind.to_string(), String::new());
        let plan = RecordPlan::build(&[entry("a", "const"), entry("b", "text"), entry("email", "email")]).unwrap();
        assert_eq!(plan.columns, 4);
        assert!(RecordPlan::build(&[entry("a", "geo")]).is_err());
    }
}
