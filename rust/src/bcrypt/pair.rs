//! Two bcrypt checks made together on one thread, their Blowfish rounds interleaved.
//!
//! A bcrypt check is one long chain of dependent Blowfish rounds: each round waits for the S-box loads of the one
//! before (~10 cycles of latency, most of the core's execution units idle meanwhile), which is why no
//! implementation of a single check is much faster than another (this one is Go's within a few %). Two checks
//! share nothing, so their rounds interleaved on one core fill each other's waits: in a scratch benchmark the
//! pair took about the time of one check (cost 10: ~51 ms for both against ~51 ms for one). A node with several
//! logins waiting makes them two at a time (`pbfast.pocketbase.password_checks`), so a core serves nearly twice
//! the logins a second; each login still costs its full bcrypt work, only the core's idle cycles are used.
//!
//! Core ([`check_pair`]) is plain Rust; [`py_bcrypt_check_pair`] converts arguments and lets go of the GIL.

use pyo3::prelude::*;
use subtle::ConstantTimeEq;

use super::{check, encode, key_words, raw_bytes, standard_form, stream_words, Blowfish, MAGIC};

#[inline(always)]
fn f(s: &[[u32; 256]; 4], x: u32) -> u32 {
    (s[0][(x >> 24) as usize].wrapping_add(s[1][((x >> 16) & 0xff) as usize]) ^ s[2][((x >> 8) & 0xff) as usize])
        .wrapping_add(s[3][(x & 0xff) as usize])
}

/// [`Blowfish::encrypt`] of one block under each of two states, the rounds interleaved.
#[inline(always)]
fn encrypt2(a: &Blowfish, b: &Blowfish, blocks: [u32; 4]) -> [u32; 4] {
    let [mut la, mut ra, mut lb, mut rb] = blocks;
    let (pa, pb) = (&a.p, &b.p);
    la ^= pa[0];
    lb ^= pb[0];
    let mut i = 1;
    while i < 17 {
        ra ^= f(&a.s, la) ^ pa[i];
        rb ^= f(&b.s, lb) ^ pb[i];
        la ^= f(&a.s, ra) ^ pa[i + 1];
        lb ^= f(&b.s, rb) ^ pb[i + 1];
        i += 2;
    }
    [ra ^ pa[17], la, rb ^ pb[17], lb]
}

/// [`Blowfish::expand`] of two states, each with its own key words.
fn expand2(a: &mut Blowfish, b: &mut Blowfish, key_a: &[u32; 18], key_b: &[u32; 18]) {
    for i in 0..18 {
        a.p[i] ^= key_a[i];
        b.p[i] ^= key_b[i];
    }
    let mut blocks = [0u32; 4];
    for i in (0..18).step_by(2) {
        blocks = encrypt2(a, b, blocks);
        (a.p[i], a.p[i + 1], b.p[i], b.p[i + 1]) = (blocks[0], blocks[1], blocks[2], blocks[3]);
    }
    for box_index in 0..4 {
        for k in (0..256).step_by(2) {
            blocks = encrypt2(a, b, blocks);
            a.s[box_index][k] = blocks[0];
            a.s[box_index][k + 1] = blocks[1];
            b.s[box_index][k] = blocks[2];
            b.s[box_index][k + 1] = blocks[3];
        }
    }
}

/// [`super::hash_raw`] of two passwords with two salts at one cost, made together.
fn hash_raw_pair(passwords: [&[u8]; 2], cost: u32, salts: [&[u8; 16]; 2]) -> [[u8; 23]; 2] {
    assert!((4..=31).contains(&cost), "bcrypt cost out of range: {cost}");
    let keys = [key_words(passwords[0]), key_words(passwords[1])];
    let salt_words = [stream_words(salts[0]), stream_words(salts[1])];
    let mut a = Box::new(Blowfish::initial());
    let mut b = Box::new(Blowfish::initial());
    let salt4 = |words: &[u32; 18]| [words[0], words[1], words[2], words[3]];
    a.expand_with_salt(&keys[0], &salt4(&salt_words[0]));
    b.expand_with_salt(&keys[1], &salt4(&salt_words[1]));
    for _ in 0..1u64 << cost {
        expand2(&mut a, &mut b, &keys[0], &keys[1]);
        expand2(&mut a, &mut b, &salt_words[0], &salt_words[1]);
    }
    let (mut text_a, mut text_b) = (MAGIC, MAGIC);
    for _ in 0..64 {
        for j in (0..6).step_by(2) {
            let out = encrypt2(&a, &b, [text_a[j], text_a[j + 1], text_b[j], text_b[j + 1]]);
            (text_a[j], text_a[j + 1], text_b[j], text_b[j + 1]) = (out[0], out[1], out[2], out[3]);
        }
    }
    [raw_bytes(&text_a), raw_bytes(&text_b)]
}

/// [`check`] of two passwords against two hashes: made together when both are in the standard form at the same
/// cost, else one after the other. Each answer as [`check`]'s (None: not answered here).
pub fn check_pair(first: (&[u8], &[u8]), second: (&[u8], &[u8])) -> [Option<bool>; 2] {
    match (standard_form(first.0, first.1), standard_form(second.0, second.1)) {
        (Some((cost_a, salt_a)), Some((cost_b, salt_b))) if cost_a == cost_b => {
            let raw = hash_raw_pair([first.0, second.0], cost_a, [&salt_a, &salt_b]);
            let answer = |raw: &[u8; 23], hashed: &[u8]| {
                let mut expected = Vec::with_capacity(31);
                encode(raw, &mut expected);
                Some(expected.as_slice().ct_eq(&hashed[29..]).into())
            };
            [answer(&raw[0], first.1), answer(&raw[1], second.1)]
        }
        _ => [check(first.0, first.1), check(second.0, second.1)],
    }
}

/// `bcrypt_check_pair(password_a, hashed_a, password_b, hashed_b)`: [`check_pair`], the GIL released while it runs.
#[pyfunction]
#[pyo3(name = "bcrypt_check_pair")]
pub fn py_bcrypt_check_pair(
    py: Python<'_>,
    password_a: &[u8],
    hashed_a: &[u8],
    password_b: &[u8],
    hashed_b: &[u8],
) -> (Option<bool>, Option<bool>) {
    let [a, b] = py.detach(|| check_pair((password_a, hashed_a), (password_b, hashed_b)));
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_answers_as_two_single_checks() {
        let salt_a = [7u8; 16];
        let salt_b = [42u8; 16];
        for cost in [4, 5] {
            let hash_a = super::super::hash(b"first password", cost, &salt_a).unwrap();
            let hash_b = super::super::hash(b"another one, longer than the first", cost, &salt_b).unwrap();
            let pair = |pa: &[u8], pb: &[u8]| check_pair((pa, hash_a.as_bytes()), (pb, hash_b.as_bytes()));
            assert_eq!(pair(b"first password", b"another one, longer than the first"), [Some(true), Some(true)]);
            assert_eq!(pair(b"first passwore", b"another one, longer than the first"), [Some(false), Some(true)]);
            assert_eq!(pair(b"first password", b""), [Some(true), Some(false)]);
            let raw = hash_raw_pair([b"x", b"y"], cost, [&salt_a, &salt_b]);
            assert_eq!(raw, [super::super::hash_raw(b"x", cost, &salt_a), super::super::hash_raw(b"y", cost, &salt_b)]);
        }
        // different costs, or a hash not in the standard form: one after the other, as check answers
        let cost4 = super::super::hash(b"pw", 4, &salt_a).unwrap();
        let cost5 = super::super::hash(b"pw", 5, &salt_b).unwrap();
        assert_eq!(check_pair((b"pw", cost4.as_bytes()), (b"pw", cost5.as_bytes())), [Some(true), Some(true)]);
        assert_eq!(check_pair((b"pw", cost4.as_bytes()), (b"pw", b"$2b$04$short")), [Some(true), None]);
    }
}
