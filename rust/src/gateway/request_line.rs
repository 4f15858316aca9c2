//! One request line judged as Go's net/http judges it (see [`super::target`] for why): kept as it is
//! when hyper takes it too, rewritten with the bytes Go takes unencoded and the `http` crate refuses
//! percent-encoded, or malformed when Go refuses it as well.

/// What to do with one request line (without its line ending).
#[derive(Debug, PartialEq, Eq)]
pub enum LineVerdict {
    /// hyper accepts it as it is.
    Keep,
    /// The same request with the bytes hyper refuses percent-encoded.
    Rewrite(Vec<u8>),
    /// Go refuses it too.
    Malformed,
}

fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

// What a byte of a request target is, for the one pass over it.
const PLAIN: u8 = 0;
/// A control byte: Go refuses the line.
const CONTROL: u8 = 1;
/// Go takes it unencoded, the `http` crate refuses it (or cuts at it, for `#`): percent-encoded.
const ENCODE: u8 = 2;
/// From 0x80: encoded only when the target is not UTF-8 (the `http` crate takes UTF-8).
const HIGH: u8 = 3;
const PERCENT: u8 = 4;
const QUESTION: u8 = 5;

const fn byte_classes() -> [u8; 256] {
    let mut classes = [PLAIN; 256];
    let mut i = 0;
    while i < 256 {
        classes[i] = match i as u8 {
            0x00..=0x1f | 0x7f => CONTROL,
            b'"' | b'#' | b'<' | b'>' | b'`' => ENCODE,
            0x80..=0xff => HIGH,
            b'%' => PERCENT,
            b'?' => QUESTION,
            _ => PLAIN,
        };
        i += 1;
    }
    classes
}

static BYTE_CLASSES: [u8; 256] = byte_classes();

fn push_encoded(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]]);
}

/// The verdict on `line` (`METHOD SP TARGET SP VERSION`, without CR LF), as Go's net/http judges it.
pub fn classify_request_line(line: &[u8]) -> LineVerdict {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return LineVerdict::Malformed;
    };
    // Go splits at the first two spaces: a space in the target leaves junk before the version.
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) || target.is_empty() || !version.starts_with(b"HTTP/") {
        return LineVerdict::Malformed;
    }
    // Only the path and query of origin-form and absolute-form targets; `*` and authority-form as they are.
    let path_start = if target[0] == b'/' {
        0
    } else {
        if target.iter().any(|&b| BYTE_CLASSES[usize::from(b)] == CONTROL) {
            return LineVerdict::Malformed;
        }
        let Some(after_scheme) = find(target, b"://") else {
            return LineVerdict::Keep;
        };
        match target[after_scheme + 3..].iter().position(|&b| b == b'/' || b == b'?') {
            Some(offset) => after_scheme + 3 + offset,
            None => return LineVerdict::Keep,
        }
    };
    let path_and_query = &target[path_start..];
    let (mut in_path, mut encode, mut high) = (true, false, false);
    for (i, &byte) in path_and_query.iter().enumerate() {
        match BYTE_CLASSES[usize::from(byte)] {
            CONTROL => return LineVerdict::Malformed,
            ENCODE => encode = true,
            HIGH => high = true,
            PERCENT if in_path => {
                // Go: "invalid URL escape" in the path (the query's are the query parser's business).
                let escape = path_and_query.get(i + 1..i + 3);
                if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                    return LineVerdict::Malformed;
                }
            }
            QUESTION => in_path = false,
            _ => {}
        }
    }
    let encode_high = high && std::str::from_utf8(path_and_query).is_err();
    if !encode && !encode_high {
        return LineVerdict::Keep;
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(&target[..path_start]);
    for &byte in path_and_query {
        match BYTE_CLASSES[usize::from(byte)] {
            ENCODE => push_encoded(&mut out, byte),
            HIGH if encode_high => push_encoded(&mut out, byte),
            _ => out.push(byte),
        }
    }
    out.push(b' ');
    out.extend_from_slice(version);
    LineVerdict::Rewrite(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(line: &str) -> LineVerdict {
        classify_request_line(line.as_bytes())
    }

    fn rewritten(line: &[u8]) -> String {
        match classify_request_line(line) {
            LineVerdict::Rewrite(out) => String::from_utf8(out).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_hyper_takes_are_kept() {
        for line in ["GET / HTTP/1.1", "GET /t/acme/api/x?filter=(a%3E1)&b={c}|^\\ HTTP/1.1", "OPTIONS * HTTP/1.1",
                     "CONNECT host:443 HTTP/1.1", "GET /caf\u{e9} HTTP/1.1", "GET /a?b=%zz HTTP/1.0"] {
            assert_eq!(rewrite(line), LineVerdict::Keep, "{line}");
        }
    }

    #[test]
    fn bytes_go_takes_are_percent_encoded() {
        assert_eq!(rewritten(b"GET /r?filter=(views>100) HTTP/1.1"), "GET /r?filter=(views%3E100) HTTP/1.1");
        assert_eq!(rewritten(b"GET /a<b>`c\"#d?e=\"<#> HTTP/1.1"), "GET /a%3Cb%3E%60c%22%23d?e=%22%3C%23%3E HTTP/1.1");
        assert_eq!(rewritten(b"GET /a\x80\xff?b=\xc3 HTTP/1.1"), "GET /a%80%FF?b=%C3 HTTP/1.1");
        assert_eq!(rewritten(b"GET http://h:1/p?q=> HTTP/1.1"), "GET http://h:1/p?q=%3E HTTP/1.1");
    }

    #[test]
    fn lines_go_refuses_are_malformed() {
        for line in [&b"GET /a b HTTP/1.1"[..], b"GET /a\tb HTTP/1.1", b"GET /a\x7f HTTP/1.1", b"GET /a\x00 HTTP/1.1",
                     b"GET /a%zz HTTP/1.1", b"GET /a% HTTP/1.1", b"GET /a%4 HTTP/1.1", b"GET /", b"GET  / HTTP/1.1",
                     b"G(T / HTTP/1.1", b"GET / FOO/1.1", b" / HTTP/1.1"] {
            assert_eq!(classify_request_line(line), LineVerdict::Malformed, "{}", String::from_utf8_lossy(line));
        }
    }
}
