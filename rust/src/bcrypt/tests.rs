//! Checked against hashes made by the `bcrypt` Python package (pyca/bcrypt 5.0.0) and two of Openwall's
//! crypt_blowfish test vectors.

use super::{check, decode_salt, hash, hash_raw, pi, Blowfish};

/// (password, hash) pairs that match.
const MATCHING: &[(&[u8], &[u8])] = &[
    (b"U*U", b"$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"),
    (b"", b"$2a$05$CCCCCCCCCCCCCCCCCCCCC.7uG0VCzI2bS7j6ymqJi9CdcdxiRTWNy"),
    (b"", b"$2b$04$BuoBk/FP.I3T65LuWoPaBOl4Yk5.a8SmgZq/4FqQfrXm7ZwRP/K.S"),
    (b"reader-password-1", b"$2b$04$43GGFVAzyIRPIQFuh/a0J.2UDo.dHdL29olnjEw5wo3hstMUEQa7e"),
    (b"reader-password-1", b"$2a$05$eH.1v9Yn5s4KQCOhR8id5.oaQDE7YfmelHCb6P6xZCh2q5maxOEjC"),
    (b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", b"$2b$04$z6MbeoeqP0131NgLmGYweOrSSuYyVFFqaGcb/7y8Tksn9GdRSer7C"),
    (b"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy", b"$2b$04$TbdwuL17XYIVBTDHPkshHOOaX17PQKsnDMc3x6snSRnBBBuMKwVS2"),
    (b"p\xc3\xa4ssw\xc3\xb6rd \xe2\x82\xac", b"$2a$04$Ac3zCZlrn5s8okbiPLMTb.xD4JANISn7NS7xKdp2YOFVeO9WNJ9i."),
    (b"nul\x00inside", b"$2b$04$jYYS/l97G7MYai6Se2NsvunEdWwXZEt6xeyfFfI1JHoNVc0KKG7FO"),
    (b"abc", b"$2b$06$GzWPmFRr9QWOvUJnKMm67OLe.ZcDlr4uQtdUqOb5bFZ3H3EnwiXiG"),
    (b"why", b"$2y$04$PdrFnSr7sOXKQli6vLUlhu0wEifhFfQLhM4OnU1DGkNgeQslnriOG"),
];

#[test]
fn pi_words_are_blowfish_initial_state() {
    assert_eq!(pi::P[0], 0x243f_6a88);
    assert_eq!(pi::P[17], 0x8979_fb1b);
    assert_eq!(pi::S[0][0], 0xd131_0ba6);
    assert_eq!(pi::S[3][255], 0x3ac3_72e6);
}

#[test]
fn blowfish_encrypts_the_published_vector() {
    // Schneier's test vector: the all-zero key (8 bytes) and block encrypt to 4ef997456198dd78.
    let mut state = Blowfish::initial();
    state.expand(&super::stream_words(&[0u8; 8]));
    assert_eq!(state.encrypt(0, 0), (0x4ef9_9745, 0x6198_dd78));
}

#[test]
fn matching_passwords_match() {
    for (password, hashed) in MATCHING {
        assert_eq!(check(password, hashed), Some(true), "{}", String::from_utf8_lossy(hashed));
    }
}

#[test]
fn other_passwords_do_not() {
    for (password, hashed) in MATCHING {
        let mut other = password.to_vec();
        other.push(b'!');
        // a 72-byte password with one more byte is over the limit: not answered (None), never a match
        assert_ne!(check(&other, hashed), Some(true), "{}", String::from_utf8_lossy(hashed));
        let mut changed = hashed.to_vec();
        changed[40] = if changed[40] == b'a' { b'b' } else { b'a' };
        assert_eq!(check(password, &changed), Some(false));
    }
}

#[test]
fn only_the_standard_form_is_answered() {
    let good: &[u8] = b"$2b$04$43GGFVAzyIRPIQFuh/a0J.2UDo.dHdL29olnjEw5wo3hstMUEQa7e";
    let password: &[u8] = b"reader-password-1";
    let with = |index: usize, byte: u8| {
        let mut hashed = good.to_vec();
        hashed[index] = byte;
        hashed
    };
    assert_eq!(check(password, &good[..59]), None);
    assert_eq!(check(password, &with(2, b'x')), None); // $2x$: left to the library
    assert_eq!(check(password, &with(5, b'3')), None); // cost 3
    assert_eq!(check(password, &with(4, b'4')), None); // cost 44
    assert_eq!(check(password, &with(28, b'/')), None); // the salt's unused bits set
    assert_eq!(check(password, &with(10, b'*')), None); // not in the alphabet
    assert_eq!(check(&[b'p'; 73], good), None);
}

#[test]
fn salt_decodes_as_bcrypt_base64() {
    assert_eq!(decode_salt(b"......................"), Some([0; 16]));
    let salt = decode_salt(b"CCCCCCCCCCCCCCCCCCCCC.").expect("canonical");
    assert_eq!(hash_raw(b"U*U", 5, &salt).len(), 23);
}

#[test]
fn a_new_hash_checks_and_reads_back_its_salt() {
    let salt: [u8; 16] = core::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
    let hashed = hash(b"reader-password-1", 4, &salt).expect("in range");
    assert_eq!(hashed.len(), 60);
    assert!(hashed.starts_with("$2b$04$"));
    assert_eq!(decode_salt(&hashed.as_bytes()[7..29]), Some(salt));
    assert_eq!(check(b"reader-password-1", hashed.as_bytes()), Some(true));
    assert_eq!(check(b"reader-password-2", hashed.as_bytes()), Some(false));
    assert_eq!(hash(&[b'p'; 73], 4, &salt), None);
    assert_eq!(hash(b"p", 3, &salt), None);
    assert_eq!(hash(b"p", 32, &salt), None);
}
