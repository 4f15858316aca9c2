//! JSON pieces written the way pbfast's Python writes them (orjson: no HTML escaping, non-ASCII as UTF-8;
//! numbers as Go writes a float64).


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
