//! LTX files made here as ltx's encoder makes them (the Python tests compare with files Litestream wrote).

use std::path::PathBuf;

use super::*;

const PAGE: u32 = 512;

/// A database's pages: (pgno, data).
type Pages = Vec<(u32, Vec<u8>)>;

/// A page whose bytes say which page and which version it is.
fn page(pgno: u32, version: u8) -> Vec<u8> {
    (0..PAGE as usize).map(|i| (i as u8).wrapping_mul(pgno as u8).wrapping_add(version)).collect()
}

/// The database checksum of `pages` (pgno, data).
fn database_checksum(pages: &[(u32, Vec<u8>)]) -> u64 {
    CHECKSUM_FLAG | pages.iter().fold(0, |sum, (pgno, data)| sum ^ page_checksum(*pgno, data))
}

struct Spec {
    min_txid: u64,
    max_txid: u64,
    commit: u32,
    pages: Pages,
    pre_apply: u64,
    post_apply: u64,
}

/// An LTX file as ltx's encoder writes it: header, LZ4-block pages, end frame, page index, trailer.
fn encode(spec: &Spec) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&0u32.to_be_bytes()); // flags
    out.extend_from_slice(&PAGE.to_be_bytes());
    out.extend_from_slice(&spec.commit.to_be_bytes());
    out.extend_from_slice(&spec.min_txid.to_be_bytes());
    out.extend_from_slice(&spec.max_txid.to_be_bytes());
    out.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
    out.extend_from_slice(&spec.pre_apply.to_be_bytes());
    out.resize(HEADER_SIZE, 0);
    let mut hash = CRC64.digest();
    hash.update(&out);
    let mut index = Vec::new();
    for (pgno, data) in &spec.pages {
        let offset = out.len();
        let compressed = lz4_flex::block::compress(data);
        let mut frame = pgno.to_be_bytes().to_vec();
        frame.extend_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        frame.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        hash.update(&frame);
        hash.update(data);
        out.extend_from_slice(&frame);
        out.extend_from_slice(&compressed);
        for value in [u64::from(*pgno), offset as u64, (out.len() - offset) as u64] {
            push_uvarint(&mut index, value);
        }
    }
    let mut tail = vec![0u8; PAGE_HEADER_SIZE];
    tail.extend_from_slice(&index);
    tail.push(0);
    tail.extend_from_slice(&(index.len() as u64 + 1).to_be_bytes());
    tail.extend_from_slice(&spec.post_apply.to_be_bytes());
    hash.update(&tail);
    tail.extend_from_slice(&(CHECKSUM_FLAG | hash.finalize()).to_be_bytes());
    out.extend_from_slice(&tail);
    out
}

fn push_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pbfast-ltx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A snapshot of pages 1-4 (version 0), then a file that changes page 2 and adds page 5, then one that
/// changes page 3 and shrinks the database to 3 pages: the states after each file.
fn history() -> (Vec<Spec>, Vec<Pages>) {
    let first: Vec<_> = (1..=4).map(|p| (p, page(p, 0))).collect();
    let mut second = first.clone();
    second[1].1 = page(2, 1);
    second.push((5, page(5, 1)));
    let mut third: Vec<_> = second[..3].to_vec();
    third[2].1 = page(3, 2);
    let specs = vec![
        Spec { min_txid: 1, max_txid: 3, commit: 4, pages: first.clone(), pre_apply: 0,
               post_apply: database_checksum(&first) },
        Spec { min_txid: 4, max_txid: 4, commit: 5, pages: vec![(2, page(2, 1)), (5, page(5, 1))],
               pre_apply: database_checksum(&first), post_apply: database_checksum(&second) },
        Spec { min_txid: 5, max_txid: 7, commit: 3, pages: vec![(3, page(3, 2))],
               pre_apply: database_checksum(&second), post_apply: database_checksum(&third) },
    ];
    (specs, vec![first, second, third])
}

fn files(dir: &Dir, specs: &[Spec]) -> Vec<PathBuf> {
    specs.iter().enumerate().map(|(i, spec)| dir.write(&format!("{i}.ltx"), &encode(spec))).collect()
}

fn flat(pages: &[(u32, Vec<u8>)]) -> Vec<u8> {
    pages.iter().flat_map(|(_, data)| data.clone()).collect()
}

#[test]
fn crc64_is_go_iso() {
    assert_eq!(CRC64.checksum(b"123456789"), 0xb909_56c7_75a4_1001);
}

#[test]
fn each_prefix_of_a_history_restores_its_state() {
    let dir = Dir::new("history");
    let (specs, states) = history();
    let paths = files(&dir, &specs);
    for n in 1..=paths.len() {
        let output = dir.0.join(format!("out-{n}.db"));
        let done = restore(&paths[..n], &output).unwrap();
        assert_eq!(std::fs::read(&output).unwrap(), flat(&states[n - 1]));
        assert_eq!(done, Restored { page_size: PAGE, pages: states[n - 1].len() as u32,
                                    max_txid: specs[n - 1].max_txid });
    }
}

#[test]
fn a_file_overlapping_the_one_before_extends_it() {
    let dir = Dir::new("overlap");
    let (mut specs, states) = history();
    specs[2].min_txid = 3; // a compacted file that covers transactions the one before had
    let output = dir.0.join("out.db");
    restore(&files(&dir, &specs), &output).unwrap();
    assert_eq!(std::fs::read(&output).unwrap(), flat(&states[2]));
}

fn refused(specs: &[Spec], name: &str, damage: impl Fn(&mut Vec<u8>, usize)) -> RestoreError {
    let dir = Dir::new(name);
    let paths: Vec<_> = specs.iter().enumerate().map(|(i, spec)| {
        let mut bytes = encode(spec);
        damage(&mut bytes, i);
        dir.write(&format!("{i}.ltx"), &bytes)
    }).collect();
    let output = dir.0.join("out.db");
    let err = restore(&paths, &output).unwrap_err();
    assert!(!output.exists(), "a refused restore leaves no output");
    err
}

#[test]
fn a_flipped_byte_anywhere_fails_the_file_checksum() {
    let (specs, _) = history();
    let length = encode(&specs[1]).len();
    for at in [HEADER_SIZE + 2, HEADER_SIZE + 20, length - 12] {
        let err = refused(&specs, "flip", |bytes, i| if i == 1 { bytes[at] ^= 0x40 });
        assert!(matches!(err, RestoreError::Corrupt(_)), "byte {at}: {err}");
    }
}

#[test]
fn truncated_files_are_refused() {
    let (specs, _) = history();
    for keep in [50, HEADER_SIZE + 3, HEADER_SIZE + 40] {
        let err = refused(&specs, "short", |bytes, i| if i == 2 { bytes.truncate(keep) });
        assert!(matches!(err, RestoreError::Corrupt(_)), "{keep} bytes: {err}");
    }
}

#[test]
fn unknown_versions_flags_and_encodings_are_unsupported() {
    let (specs, _) = history();
    let magic = refused(&specs, "magic", |bytes, i| if i == 1 { bytes[3] = b'2' });
    let flags = refused(&specs, "flags", |bytes, i| if i == 1 { bytes[7] |= 0x08 });
    let frame = refused(&specs, "frame", |bytes, i| if i == 1 { bytes[HEADER_SIZE + 5] = 0 });
    for err in [magic, flags, frame] {
        assert!(matches!(err, RestoreError::Unsupported(_)), "{err}");
    }
}

#[test]
fn a_gap_between_files_is_refused() {
    let (mut specs, _) = history();
    specs[2].min_txid = 6; // transaction 5 is missing
    assert!(matches!(refused(&specs, "gap", |_, _| {}), RestoreError::Corrupt(_)));
    let (specs, _) = history();
    assert!(matches!(refused(&specs[1..], "nosnapshot", |_, _| {}), RestoreError::Corrupt(_)));
}

#[test]
fn a_wrong_post_apply_checksum_is_refused() {
    // Well-formed files whose pages do not make the state their checksum says (a file lost in between).
    let (mut specs, _) = history();
    specs[2].post_apply ^= 1;
    let err = refused(&specs, "postapply", |_, _| {});
    assert!(matches!(&err, RestoreError::Corrupt(why) if why.contains("post-apply")), "{err}");
    let (mut specs, _) = history();
    specs[0].post_apply ^= 1;
    assert!(matches!(refused(&specs[..1], "snapshot", |_, _| {}), RestoreError::Corrupt(_)));
}

#[test]
fn a_missing_page_is_refused() {
    let (mut specs, _) = history();
    specs[0].pages.remove(2);
    specs[0].post_apply = database_checksum(&specs[0].pages);
    let err = refused(&specs[..1], "missing", |_, _| {});
    assert!(matches!(&err, RestoreError::Corrupt(why) if why.contains("1 of the database's 4 pages")), "{err}");
}

#[test]
fn an_existing_output_is_not_overwritten() {
    let dir = Dir::new("exists");
    let (specs, _) = history();
    let output = dir.write("out.db", b"keep");
    assert!(matches!(restore(&files(&dir, &specs), &output), Err(RestoreError::Io(_))));
    assert_eq!(std::fs::read(&output).unwrap(), b"keep");
}

#[test]
fn a_plan_of_thousands_of_files_is_read_one_file_at_a_time() {
    // More files than a process may usually hold open (1,024): each is open only while it is read.
    let dir = Dir::new("thousands");
    let mut state: Pages = vec![(1, page(1, 0)), (2, page(2, 0))];
    let mut specs = vec![Spec { min_txid: 1, max_txid: 1, commit: 2, pages: state.clone(), pre_apply: 0,
                                post_apply: database_checksum(&state) }];
    for txid in 2..=1500u64 {
        let pre_apply = database_checksum(&state);
        state[1].1 = page(2, txid as u8);
        specs.push(Spec { min_txid: txid, max_txid: txid, commit: 2, pages: vec![state[1].clone()], pre_apply,
                          post_apply: database_checksum(&state) });
    }
    let output = dir.0.join("out.db");
    let done = restore(&files(&dir, &specs), &output).unwrap();
    assert_eq!(done.max_txid, 1500);
    assert_eq!(std::fs::read(&output).unwrap(), flat(&state));
}

#[test]
fn a_header_claiming_billions_of_pages_takes_no_room_for_them() {
    let (mut specs, _) = history();
    specs[0].commit = u32::MAX; // its pages are still the four it holds
    let err = refused(&specs[..1], "billions", |_, _| {});
    assert!(matches!(&err, RestoreError::Corrupt(why) if why.contains("pages are in none")), "{err}");
}

#[test]
fn data_appended_after_the_trailer_is_refused_without_being_read() {
    let (specs, _) = history();
    let err = refused(&specs, "tail", |bytes, i| if i == 1 { bytes.extend(std::iter::repeat_n(0u8, 1 << 20)) });
    assert!(matches!(err, RestoreError::Corrupt(ref why) if why.contains("after the page index")), "{err}");
}
