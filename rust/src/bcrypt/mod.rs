//! bcrypt password checks, as a login makes them (`$2a$`, `$2b$`, `$2y$` hashes, cost 4-31), and new `$2b$` hashes.
//!
//! A login's check is almost all of its CPU (cost 10: ~50 ms), and the `bcrypt` package's check took
//! ~7 % more CPU than Go's `x/crypto/bcrypt` (PocketBase's) on this project's machines, the one part of a
//! login where pbfast was slower than PocketBase. This is the same algorithm (Provos and Mazières'
//! EksBlowfish, OpenBSD's `bcrypt.c`): the key and salt turned into Blowfish subkey words once, not
//! byte by byte in every expansion, and Blowfish's 16 rounds unrolled over fixed-size tables.
//!
//! Core ([`hash_raw`], [`check`], [`hash`]) is plain Rust; [`py_bcrypt_check`] and [`py_bcrypt_hash`] convert
//! arguments and let go of the GIL while they run. [`check`] answers only for the one form every bcrypt library writes
//! (60 characters, canonical base64); for anything else it answers `None` and the caller keeps its
//! own library's answer, so odd hashes and passwords over 72 bytes are judged exactly as before.

pub mod pair;
mod pi;
#[cfg(test)]
mod tests;

use pyo3::prelude::*;
use subtle::ConstantTimeEq;

/// bcrypt's base64 alphabet (not RFC 4648's order).
const ALPHABET: &[u8; 64] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// "OrpheanBeholderScryDoubt": the 24 bytes bcrypt encrypts 64 times with the expanded key.
pub(crate) const MAGIC: [u32; 6] = [0x4f72_7068, 0x6561_6e42, 0x6568_6f6c, 0x6465_7253, 0x6372_7944, 0x6f75_6274];

/// Length of a hash in the standard form: `$2b$10$` + 22 characters of salt + 31 of hash.
const HASH_LEN: usize = 60;

pub(crate) struct Blowfish {
    pub(crate) p: [u32; 18],
    pub(crate) s: [[u32; 256]; 4],
}

impl Blowfish {
    pub(crate) fn initial() -> Self {
        Blowfish { p: pi::P, s: pi::S }
    }

    #[inline(always)]
    fn f(&self, x: u32) -> u32 {
        let s = &self.s;
        (s[0][(x >> 24) as usize].wrapping_add(s[1][((x >> 16) & 0xff) as usize]) ^ s[2][((x >> 8) & 0xff) as usize])
            .wrapping_add(s[3][(x & 0xff) as usize])
    }

    #[inline(always)]
    pub(crate) fn encrypt(&self, mut l: u32, mut r: u32) -> (u32, u32) {
        let p = &self.p;
        l ^= p[0];
        r ^= self.f(l) ^ p[1];
        l ^= self.f(r) ^ p[2];
        r ^= self.f(l) ^ p[3];
        l ^= self.f(r) ^ p[4];
        r ^= self.f(l) ^ p[5];
        l ^= self.f(r) ^ p[6];
        r ^= self.f(l) ^ p[7];
        l ^= self.f(r) ^ p[8];
        r ^= self.f(l) ^ p[9];
        l ^= self.f(r) ^ p[10];
        r ^= self.f(l) ^ p[11];
        l ^= self.f(r) ^ p[12];
        r ^= self.f(l) ^ p[13];
        l ^= self.f(r) ^ p[14];
        r ^= self.f(l) ^ p[15];
        l ^= self.f(r) ^ p[16];
        (r ^ p[17], l)
    }

    /// Blowfish's key schedule with a salt (OpenBSD's `Blowfish_expandstate`): the key's words into the
    /// P-array, then every subkey pair replaced by the encryption of the previous pair xored with the next
    /// two salt words (the salt's 4 words, cycled).
    pub(crate) fn expand_with_salt(&mut self, key: &[u32; 18], salt: &[u32; 4]) {
        for (word, key_word) in self.p.iter_mut().zip(key) {
            *word ^= key_word;
        }
        let (mut l, mut r) = (0u32, 0u32);
        let mut next = 0;
        for i in (0..18).step_by(2) {
            (l, r) = self.encrypt(l ^ salt[next], r ^ salt[next + 1]);
            next ^= 2;
            self.p[i] = l;
            self.p[i + 1] = r;
        }
        for b in 0..4 {
            for k in (0..256).step_by(2) {
                (l, r) = self.encrypt(l ^ salt[next], r ^ salt[next + 1]);
                next ^= 2;
                self.s[b][k] = l;
                self.s[b][k + 1] = r;
            }
        }
    }

    /// Blowfish's plain key schedule (OpenBSD's `Blowfish_expand0state`), the key given as its 18 words.
    fn expand(&mut self, key: &[u32; 18]) {
        for (word, key_word) in self.p.iter_mut().zip(key) {
            *word ^= key_word;
        }
        let (mut l, mut r) = (0u32, 0u32);
        for i in (0..18).step_by(2) {
            (l, r) = self.encrypt(l, r);
            self.p[i] = l;
            self.p[i + 1] = r;
        }
        for b in 0..4 {
            for k in (0..256).step_by(2) {
                (l, r) = self.encrypt(l, r);
                self.s[b][k] = l;
                self.s[b][k + 1] = r;
            }
        }
    }
}

/// The first 18 big-endian words of `data` repeated end to end (how Blowfish reads a key of any length).
pub(crate) fn stream_words(data: &[u8]) -> [u32; 18] {
    let mut words = [0u32; 18];
    let mut pos = 0;
    for word in &mut words {
        for _ in 0..4 {
            *word = (*word << 8) | u32::from(data[pos]);
            pos = if pos + 1 == data.len() { 0 } else { pos + 1 };
        }
    }
    words
}

/// The password as Blowfish key words: at most 72 bytes, a NUL appended first (as every implementation does).
pub(crate) fn key_words(password: &[u8]) -> [u32; 18] {
    let mut key = Vec::with_capacity(password.len() + 1);
    key.extend_from_slice(password);
    key.push(0);
    key.truncate(72);
    stream_words(&key)
}

/// bcrypt's 23 output bytes for a password (at most 72 bytes are used, with a NUL appended first, as every
/// implementation does), `cost` (4-31: 2^cost rounds of key expansion) and a 16-byte salt.
pub fn hash_raw(password: &[u8], cost: u32, salt: &[u8; 16]) -> [u8; 23] {
    assert!((4..=31).contains(&cost), "bcrypt cost out of range: {cost}");
    let key_words = key_words(password);
    let salt_words = stream_words(salt);
    let salt4 = [salt_words[0], salt_words[1], salt_words[2], salt_words[3]];
    let mut state = Box::new(Blowfish::initial());
    state.expand_with_salt(&key_words, &salt4);
    for _ in 0..1u64 << cost {
        state.expand(&key_words);
        state.expand(&salt_words);
    }
    let mut text = MAGIC;
    for _ in 0..64 {
        for pair in text.chunks_exact_mut(2) {
            (pair[0], pair[1]) = state.encrypt(pair[0], pair[1]);
        }
    }
    raw_bytes(&text)
}

/// The encrypted magic text's first 23 bytes, big-endian: bcrypt's raw output (the 24th byte is dropped).
pub(crate) fn raw_bytes(text: &[u32; 6]) -> [u8; 23] {
    let mut out = [0u8; 24];
    for (bytes, word) in out.chunks_exact_mut(4).zip(text) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    let mut hash = [0u8; 23];
    hash.copy_from_slice(&out[..23]);
    hash
}

/// `data` in bcrypt's base64, without padding.
pub(crate) fn encode(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]);
        }
    }
}

fn sextet(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'.' => 0,
        b'/' => 1,
        b'A'..=b'Z' => c - b'A' + 2,
        b'a'..=b'z' => c - b'a' + 28,
        b'0'..=b'9' => c - b'0' + 54,
        _ => return None,
    }))
}

/// The 16 salt bytes of 22 characters, None unless canonical (the last character's 4 unused bits zero).
pub(crate) fn decode_salt(chars: &[u8]) -> Option<[u8; 16]> {
    let (last, first) = chars.split_last()?;
    if first.len() != 21 {
        return None;
    }
    // 21 characters: 126 bits; the last gives its 2 high bits, and its 4 low bits are unused (must be zero)
    let mut bits = 0u128;
    for &c in first {
        bits = (bits << 6) | u128::from(sextet(c)?);
    }
    let last = sextet(*last)?;
    if last & 0xf != 0 {
        return None;
    }
    Some(((bits << 2) | u128::from(last >> 4)).to_be_bytes())
}

/// Whether `password` matches `hashed` (a whole bcrypt hash, e.g. `$2b$10$...`); None when the hash is not
/// in the standard form (see the module's docs) or the password is over 72 bytes: not answered here.
pub fn check(password: &[u8], hashed: &[u8]) -> Option<bool> {
    let (cost, salt) = standard_form(password, hashed)?;
    let mut expected = Vec::with_capacity(31);
    encode(&hash_raw(password, cost, &salt), &mut expected);
    Some(expected.as_slice().ct_eq(&hashed[29..]).into())
}

/// The cost and salt of `hashed` when [`check`] answers for it and `password`; None otherwise.
pub(crate) fn standard_form(password: &[u8], hashed: &[u8]) -> Option<(u32, [u8; 16])> {
    if password.len() > 72 || hashed.len() != HASH_LEN {
        return None;
    }
    let standard_prefix = hashed[0] == b'$'
        && hashed[1] == b'2'
        && matches!(hashed[2], b'a' | b'b' | b'y')
        && hashed[3] == b'$'
        && hashed[6] == b'$'
        && hashed[4].is_ascii_digit()
        && hashed[5].is_ascii_digit();
    if !standard_prefix {
        return None;
    }
    let cost = u32::from(hashed[4] - b'0') * 10 + u32::from(hashed[5] - b'0');
    if !(4..=31).contains(&cost) {
        return None;
    }
    Some((cost, decode_salt(&hashed[7..29])?))
}

/// A new hash of `password` in the standard form (`$2b$`, as the `bcrypt` package and PocketBase write them) with
/// the caller's 16 random salt bytes; None for a password over 72 bytes or a cost outside 4-31 (the caller's
/// library refuses those with its own error).
pub fn hash(password: &[u8], cost: u32, salt: &[u8; 16]) -> Option<String> {
    if password.len() > 72 || !(4..=31).contains(&cost) {
        return None;
    }
    let mut out = format!("$2b${cost:02}$").into_bytes();
    let mut salt_bits = 0u128;
    for &byte in salt {
        salt_bits = (salt_bits << 8) | u128::from(byte);
    }
    // 16 bytes: 21 characters of 6 bits and one of the last 2 bits (then 4 zero bits)
    for i in 0..21 {
        out.push(ALPHABET[(salt_bits >> (122 - 6 * i)) as usize & 63]);
    }
    out.push(ALPHABET[((salt_bits & 3) << 4) as usize]);
    encode(&hash_raw(password, cost, salt), &mut out);
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------------------------
// Python
// ---------------------------------------------------------------------------------------------

/// `bcrypt_check(password, hashed)`: [`check`], the GIL released while it runs.
#[pyfunction]
#[pyo3(name = "bcrypt_check")]
pub fn py_bcrypt_check(py: Python<'_>, password: &[u8], hashed: &[u8]) -> Option<bool> {
    py.detach(|| check(password, hashed))
}

/// `bcrypt_hash(password, cost, salt)`: [`hash`] (`salt`: 16 random bytes), the GIL released while it runs.
#[pyfunction]
#[pyo3(name = "bcrypt_hash")]
pub fn py_bcrypt_hash(py: Python<'_>, password: &[u8], cost: u32, salt: &[u8]) -> PyResult<Option<String>> {
    let salt: &[u8; 16] = salt
        .try_into()
        .map_err(|_| pyo3::exceptions::PyValueError::new_err("the salt must be 16 bytes"))?;
    Ok(py.detach(|| hash(password, cost, salt)))
}
