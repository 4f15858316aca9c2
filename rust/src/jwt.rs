//! HS256 JSON Web Tokens as PocketBase signs them: a token is `header.payload.signature`, each part
//! base64url without padding, the signature HMAC-SHA256 of `header.payload` keyed by the record's
//! `tokenKey` followed by the collection's secret.
//!
//! Core ([`sign`], [`segments`], [`verify`], [`b64url_encode`], [`b64url_decode`]) is plain Rust;
//! the Python functions below only convert arguments. Every auth-refresh and every request with a
//! token checks one signature and an auth-refresh makes one: in Python (OpenSSL's HMAC) each cost
//! ~7 µs, most of it OpenSSL's per-call set-up; here well under 1 µs.
//!
//! Decoding is strict as Go's `base64.RawURLEncoding` (PocketBase's JWT library): no padding, no
//! characters outside the alphabet.

use hmac::{Hmac, Mac};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sha2::Sha256;

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

/// `{"alg":"HS256","typ":"JWT"}` base64url-encoded: the header of every token made here.
pub const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `data` as base64url without padding, appended to `out`.
pub fn b64url_encode(data: &[u8], out: &mut String) {
    out.reserve(data.len().div_ceil(3) * 4);
    let mut chunks = data.chunks_exact(3);
    for chunk in &mut chunks {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[(n >> shift) as usize & 63] as char);
        }
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.push(ALPHABET[(n >> 18) as usize & 63] as char);
            out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            for shift in [18, 12, 6] {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            }
        }
        _ => {}
    }
}

fn sextet(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// The bytes of unpadded base64url `text`; None for a character outside the alphabet or an impossible
/// length (one character left over).
pub fn b64url_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    let mut chunks = text.chunks(4);
    for chunk in &mut chunks {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= sextet(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac
}

/// A token of `payload` (the claims' JSON) signed with `key`.
pub fn sign(payload: &[u8], key: &[u8]) -> String {
    let mut token = String::with_capacity(HEADER.len() + payload.len() * 4 / 3 + 48);
    token.push_str(HEADER);
    token.push('.');
    b64url_encode(payload, &mut token);
    let signature = mac(key, token.as_bytes()).finalize().into_bytes();
    token.push('.');
    b64url_encode(&signature, &mut token);
    token
}

/// The decoded header and payload of a token of three parts, signature unchecked; None when it is not one.
pub fn segments(token: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut parts = token.split('.');
    let (header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((b64url_decode(header.as_bytes())?, b64url_decode(payload.as_bytes())?))
}

/// Whether the token's last part is the HMAC-SHA256 under `key` of what precedes it (compared in
/// constant time).
pub fn verify(token: &str, key: &[u8]) -> bool {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    match b64url_decode(signature.as_bytes()) {
        Some(signature) => mac(key, signing_input.as_bytes()).verify_slice(&signature).is_ok(),
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Python
// ---------------------------------------------------------------------------------------------

/// An HS256 token of ``payload`` (the claims' JSON bytes) signed with ``key``.
#[pyfunction]
#[pyo3(name = "hs256_sign")]
pub fn py_hs256_sign(payload: &[u8], key: &[u8]) -> String {
    sign(payload, key)
}

/// ``(header, payload)`` decoded from a token of three base64url parts (signature unchecked); None when
/// it is not one.
#[pyfunction]
#[pyo3(name = "jwt_segments")]
pub fn py_jwt_segments<'py>(py: Python<'py>, token: &str) -> Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let (header, payload) = segments(token)?;
    Some((PyBytes::new(py, &header), PyBytes::new(py, &payload)))
}

/// Whether ``token``'s signature is its HMAC-SHA256 under ``key`` (constant-time).
#[pyfunction]
#[pyo3(name = "hs256_verify")]
pub fn py_hs256_verify(token: &str, key: &[u8]) -> bool {
    verify(token, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(data: &[u8]) -> String {
        let mut out = String::new();
        b64url_encode(data, &mut out);
        out
    }

    #[test]
    fn base64url_round_trips_every_length_without_padding() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..40 {
            let text = encode(&data[200 - len..200]);
            assert!(!text.contains('='));
            assert_eq!(b64url_decode(text.as_bytes()).unwrap(), &data[200 - len..200]);
        }
        assert_eq!(encode(b"\xfb\xff"), "-_8");
        assert_eq!(encode(br#"{"alg":"HS256","typ":"JWT"}"#), HEADER);
    }

    #[test]
    fn base64url_refuses_padding_foreign_characters_and_a_lone_character() {
        assert_eq!(b64url_decode(b"YQ=="), None);
        assert_eq!(b64url_decode(b"a+b/"), None);
        assert_eq!(b64url_decode(b"abcde"), None);
        assert_eq!(b64url_decode(b"").unwrap(), b"");
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let tag = mac(b"Jefe", b"what do ya want for nothing?").finalize().into_bytes();
        assert_eq!(
            tag.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_signed_token_verifies_with_its_key_only_and_reads_back() {
        let payload = br#"{"collectionId":"c","exp":1,"id":"r","refreshable":true,"type":"auth"}"#;
        let token = sign(payload, b"tokenKeysecret");
        assert!(verify(&token, b"tokenKeysecret"));
        assert!(!verify(&token, b"tokenKeysecreT"));
        let (header, read) = segments(&token).unwrap();
        assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
        assert_eq!(read, payload);
        let mut tampered = token.clone();
        tampered.insert(HEADER.len() + 3, 'A');
        assert!(!verify(&tampered, b"tokenKeysecret"));
        assert!(!verify("no-dots", b"k"));
        assert_eq!(segments("a.b"), None);
        assert_eq!(segments("a.b.c.d"), None);
    }
}
