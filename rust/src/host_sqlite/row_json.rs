//! One result row as a record's JSON, the way pbfast's Python writes it (orjson: keys in the plan's order,
//! no HTML escaping, non-ASCII as UTF-8), by a plan made once per (collection, fields shown) by Python.

use libsqlite3_sys as ffi;
use std::ffi::c_int;

/// How a stored column shows in the JSON (the field types whose stored value needs no Python).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// text, editor, email, url, a date kept in PocketBase's layout, a single select or relation: a string
    /// ("" for NULL).
    Text,
    /// number: an integer when whole (PocketBase writes `5000`, not `5000.0`), 0 for NULL.
    Number,
    /// bool: true for a non-zero integer.
    Bool,
    /// json, a multiple select, relation or file (stored as JSON text): the text as it is, null for NULL.
    RawJson,
}

impl Shown {
    pub fn parse(name: &str) -> Option<Shown> {
        Some(match name {
            "text" => Shown::Text,
            "number" => Shown::Number,
            "bool" => Shown::Bool,
            "json" => Shown::RawJson,
            _ => return None,
        })
    }
}

/// A record's JSON: fixed members first (`collectionId`, `collectionName`), then one per result column.
pub struct RowPlan {
    /// `{"collectionId":"...","collectionName":"...",` (or `{` alone), made once.
    head: Vec<u8>,
    /// `"name":` and how the column at that index shows.
    columns: Vec<(Vec<u8>, Shown)>,
}

impl RowPlan {
    pub fn new(constants: &[(String, String)], columns: &[(String, Shown)]) -> RowPlan {
        let mut head = b"{".to_vec();
        for (key, value) in constants {
            write_str(&mut head, key.as_bytes());
            head.push(b':');
            write_str(&mut head, value.as_bytes());
            head.push(b',');
        }
        let columns = columns
            .iter()
            .map(|(name, shown)| {
                let mut key = Vec::with_capacity(name.len() + 3);
                write_str(&mut key, name.as_bytes());
                key.push(b':');
                (key, *shown)
            })
            .collect();
        RowPlan { head, columns }
    }

    pub fn column_count(&self) -> usize {
        self.columns.len()
    }

    /// The current row of `stmt` (after an `SQLITE_ROW`) appended to `out`.
    ///
    /// # Safety
    /// `stmt` is a statement of the host SQLite, positioned on a row, with at least `column_count` columns;
    /// the caller holds its connection's mutex.
    pub unsafe fn write_row(&self, stmt: *mut ffi::sqlite3_stmt, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        for (index, (key, shown)) in self.columns.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            // SAFETY: the caller's promise; `index` is within the statement's columns.
            unsafe { write_column(stmt, index as c_int, *shown, out) };
        }
        out.push(b'}');
    }
}

unsafe fn write_column(stmt: *mut ffi::sqlite3_stmt, index: c_int, shown: Shown, out: &mut Vec<u8>) {
    // SAFETY (every call here): the caller's promise on `stmt` and `index`.
    let kind = unsafe { ffi::sqlite3_column_type(stmt, index) };
    match shown {
        Shown::Text => match kind {
            ffi::SQLITE_NULL => out.extend_from_slice(b"\"\""),
            _ => write_str(out, unsafe { column_text(stmt, index) }),
        },
        Shown::Number => match kind {
            ffi::SQLITE_INTEGER => write_int(out, unsafe { ffi::sqlite3_column_int64(stmt, index) }),
            ffi::SQLITE_FLOAT => write_number(out, unsafe { ffi::sqlite3_column_double(stmt, index) }),
            ffi::SQLITE_NULL => out.push(b'0'),
            _ => write_number(out, unsafe { ffi::sqlite3_column_double(stmt, index) }),
        },
        Shown::Bool => {
            let on = kind != ffi::SQLITE_NULL && unsafe { ffi::sqlite3_column_int64(stmt, index) } != 0;
            out.extend_from_slice(if on { b"true" } else { b"false" });
        }
        Shown::RawJson => match kind {
            ffi::SQLITE_NULL => out.extend_from_slice(b"null"),
            _ => out.extend_from_slice(unsafe { column_text(stmt, index) }),
        },
    }
}

/// The column's text (UTF-8), valid until the statement moves on.
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

/// A JSON string: `"` and `\` escaped, control characters as orjson writes them, the rest as it is.
pub fn write_str(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (at, &byte) in text.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[start..at]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(byte >> 4) as usize]);
            out.push(HEX[(byte & 15) as usize]);
        } else {
            out.extend_from_slice(escaped);
        }
        start = at + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

fn write_int(out: &mut Vec<u8>, value: i64) {
    use std::io::Write;
    let _ = write!(out, "{value}");
}

/// A number the way PocketBase (Go's encoding/json) writes a float64: whole values below 2^53 as integers,
/// the shortest round-trip digits otherwise, with an exponent below 1e-6 and from 1e21 on (`1e+21`).
pub fn write_number(out: &mut Vec<u8>, value: f64) {
    use std::io::Write;
    if !value.is_finite() {
        out.push(b'0'); // PocketBase stores no NaN or infinity
    } else if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        write_int(out, value as i64);
    } else if value.abs() < 1e-6 || value.abs() >= 1e21 {
        let text = format!("{value:e}");
        match text.split_once('e') {
            Some((digits, exponent)) if !exponent.starts_with('-') => {
                let _ = write!(out, "{digits}e+{exponent}");
            }
            _ => out.extend_from_slice(text.as_bytes()),
        }
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(value: f64) -> String {
        let mut out = Vec::new();
        write_number(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_are_written_as_go_writes_a_float64() {
        assert_eq!(number(5000.0), "5000");
        assert_eq!(number(-3.0), "-3");
        assert_eq!(number(0.1), "0.1");
        assert_eq!(number(1.5e-7), "1.5e-7");
        assert_eq!(number(1e21), "1e+21");
        assert_eq!(number(123456.789), "123456.789");
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters_only() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é<>&".as_bytes());
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\nd\\u0001é<>&\"");
    }
}
