//! Finding a tenant's entry in the node's region by its id, lock-free, from any process.
//!
//! Open addressing with linear probing over at most [`PROBE_LIMIT`] entries from the id's hash. An
//! entry's `hash` word is 0 while it was never used (a probe stops there), [`HASH_FREE`] once freed
//! (a probe goes on past it, and an insert may reuse it), else the id's hash (never 0 or 1). The owner
//! (the main process) is the only writer of keys: it changes one under the entry's `keyseq`, odd while
//! it changes and bumped by 2 each time, so a reader that saw the same even `keyseq` before and after
//! reading the key read a whole one, and a reader that remembers the `keyseq` of its lookup can tell
//! later whether the entry still belongs to its tenant ([`same_key`]).
//!
//! Ids are tenant ids (DNS labels, at most 63 bytes); longer ones are never found or inserted.

use std::sync::atomic::{fence, Ordering};

use super::region::{Entry, Region};

pub const PROBE_LIMIT: usize = 64;
pub const HASH_EMPTY: u64 = 0;
pub const HASH_FREE: u64 = 1;
pub const MAX_KEY_BYTES: usize = 63;
/// A seqlock read that keeps finding a write in progress gives up after this many tries (the writer
/// died mid-write: the owner process is gone, and with it every reason to serve).
pub const SPIN_LIMIT: u32 = 1 << 20;

/// An id ready for lookups: its bytes as 8 little-endian words, its length and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    words: [u64; 8],
    len: u64,
    hash: u64,
}

impl Key {
    /// None for an empty id or one over [`MAX_KEY_BYTES`] bytes.
    pub fn new(id: &str) -> Option<Key> {
        let bytes = id.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_KEY_BYTES {
            return None;
        }
        let mut words = [0u64; 8];
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            words[i] = u64::from_le_bytes(word);
        }
        // FNV-1a: the same in every process (no per-process seed), fine for short ids.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash ^= hash >> 29; // FNV's low bits are weak: fold the high ones in before masking
        Some(Key {
            words,
            len: bytes.len() as u64,
            hash: hash.max(2),
        })
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// Spin politely while a writer holds a seqlock.
#[inline]
pub fn pause(tries: u32) {
    if tries < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// The entry's `keyseq` if its key is `key` (read whole), else None.
fn key_matches(entry: &Entry, key: &Key) -> Option<u64> {
    for tries in 0..SPIN_LIMIT {
        let before = entry.keyseq.load(Ordering::Acquire);
        if before & 1 == 1 {
            pause(tries);
            continue;
        }
        let same = entry.hash.load(Ordering::Relaxed) == key.hash
            && entry.key_len.load(Ordering::Relaxed) == key.len
            && entry
                .key
                .iter()
                .zip(key.words.iter())
                .all(|(stored, word)| stored.load(Ordering::Relaxed) == *word);
        fence(Ordering::Acquire);
        if entry.keyseq.load(Ordering::Relaxed) == before {
            return same.then_some(before);
        }
    }
    None
}

/// The id stored in an entry (read whole), or None when it is unused or freed.
pub fn read_key(entry: &Entry) -> Option<String> {
    for tries in 0..SPIN_LIMIT {
        let before = entry.keyseq.load(Ordering::Acquire);
        if before & 1 == 1 {
            pause(tries);
            continue;
        }
        let hash = entry.hash.load(Ordering::Relaxed);
        let len = (entry.key_len.load(Ordering::Relaxed) as usize).min(MAX_KEY_BYTES);
        let mut bytes = [0u8; 64];
        for (i, word) in entry.key.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        fence(Ordering::Acquire);
        if entry.keyseq.load(Ordering::Relaxed) != before {
            continue;
        }
        if hash == HASH_EMPTY || hash == HASH_FREE {
            return None;
        }
        return String::from_utf8(bytes[..len].to_vec()).ok();
    }
    None
}

/// Whether entry `index` still holds the key it held when its `keyseq` was `keyseq`.
#[inline]
pub fn same_key(region: &Region, index: usize, keyseq: u64) -> bool {
    region.entry(index).keyseq.load(Ordering::Acquire) == keyseq
}

/// The index of `key`'s entry and the `keyseq` it was found under.
pub fn find(region: &Region, key: &Key) -> Option<(usize, u64)> {
    let mask = region.capacity() - 1;
    let start = key.hash as usize & mask;
    for step in 0..PROBE_LIMIT.min(region.capacity()) {
        let index = (start + step) & mask;
        let entry = region.entry(index);
        let hash = entry.hash.load(Ordering::Acquire);
        if hash == HASH_EMPTY {
            return None;
        }
        if hash == key.hash {
            if let Some(keyseq) = key_matches(entry, key) {
                return Some((index, keyseq));
            }
        }
    }
    None
}

/// No entry left for a new id within its probe window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Owner only, holding `region.writer`: the index of `key`'s entry, made (with `init` run on it
/// while its key is being written, so no reader sees the new key before its fields are set) when
/// absent. `(index, created)`.
pub fn insert(region: &Region, key: &Key, init: impl FnOnce(&Entry)) -> Result<(usize, bool), Full> {
    debug_assert!(region.owner());
    if let Some((index, _)) = find(region, key) {
        return Ok((index, false));
    }
    let mask = region.capacity() - 1;
    let start = key.hash as usize & mask;
    for step in 0..PROBE_LIMIT.min(region.capacity()) {
        let index = (start + step) & mask;
        let entry = region.entry(index);
        let hash = entry.hash.load(Ordering::Acquire);
        if hash != HASH_EMPTY && hash != HASH_FREE {
            continue;
        }
        let seq = entry.keyseq.load(Ordering::Relaxed);
        entry.keyseq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        init(entry);
        for (stored, word) in entry.key.iter().zip(key.words.iter()) {
            stored.store(*word, Ordering::Relaxed);
        }
        entry.key_len.store(key.len, Ordering::Relaxed);
        entry.presence.store(0, Ordering::Relaxed);
        entry.hash.store(key.hash, Ordering::Release);
        entry.keyseq.store(seq + 2, Ordering::Release);
        return Ok((index, true));
    }
    Err(Full)
}

/// Owner only, holding `region.writer`: free entry `index` (its counters keep their values until
/// the entry is reused; its `generation` is never reset, so a stale hold never matches a new tenant).
pub fn free(region: &Region, index: usize) {
    debug_assert!(region.owner());
    let entry = region.entry(index);
    let seq = entry.keyseq.load(Ordering::Relaxed);
    entry.keyseq.store(seq + 1, Ordering::Relaxed);
    fence(Ordering::Release);
    entry.hash.store(HASH_FREE, Ordering::Relaxed);
    entry.key_len.store(0, Ordering::Relaxed);
    for word in &entry.key {
        word.store(0, Ordering::Relaxed);
    }
    entry.presence.store(0, Ordering::Relaxed);
    entry.keyseq.store(seq + 2, Ordering::Release);
}

/// The indexes of every entry in use, with their ids.
pub fn all(region: &Region) -> Vec<(usize, String)> {
    (0..region.capacity())
        .filter_map(|index| {
            let hash = region.entry(index).hash.load(Ordering::Acquire);
            if hash == HASH_EMPTY || hash == HASH_FREE {
                return None;
            }
            read_key(region.entry(index)).map(|id| (index, id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(capacity: usize) -> Region {
        Region::create(capacity, 1, 86400).unwrap()
    }

    #[test]
    fn keys() {
        assert!(Key::new("").is_none());
        assert!(Key::new(&"x".repeat(64)).is_none());
        let a = Key::new(&"x".repeat(63)).unwrap();
        assert!(a.hash() >= 2);
        assert_ne!(Key::new("acme").unwrap(), Key::new("acmf").unwrap());
        assert_eq!(Key::new("acme").unwrap(), Key::new("acme").unwrap());
    }

    #[test]
    fn insert_find_free_reuse() {
        let r = region(64);
        let acme = Key::new("acme").unwrap();
        assert_eq!(find(&r, &acme), None);
        let (i, created) = insert(&r, &acme, |_| {}).unwrap();
        assert!(created);
        let (j, created) = insert(&r, &acme, |_| {}).unwrap();
        assert_eq!((j, created), (i, false));
        let (found, keyseq) = find(&r, &acme).unwrap();
        assert_eq!(found, i);
        assert!(same_key(&r, i, keyseq));
        assert_eq!(read_key(r.entry(i)).as_deref(), Some("acme"));
        free(&r, i);
        assert!(!same_key(&r, i, keyseq), "a freed entry is no longer the lookup's");
        assert_eq!(find(&r, &acme), None);
        assert_eq!(read_key(r.entry(i)), None);
        let (k, created) = insert(&r, &acme, |_| {}).unwrap();
        assert!(created);
        assert_eq!(k, i, "the freed entry is reused");
        assert_eq!(all(&r), vec![(i, "acme".to_string())]);
    }

    #[test]
    fn collisions_probe_past_freed_entries() {
        let r = region(64);
        let ids: Vec<String> = (0..40).map(|n| format!("tenant-{n}")).collect();
        let mut at = Vec::new();
        for id in &ids {
            at.push(insert(&r, &Key::new(id).unwrap(), |_| {}).unwrap().0);
        }
        for (n, index) in at.iter().enumerate() {
            if n % 3 == 0 {
                free(&r, *index);
            }
        }
        for (n, id) in ids.iter().enumerate() {
            let found = find(&r, &Key::new(id).unwrap()).map(|(i, _)| i);
            assert_eq!(found, (n % 3 != 0).then_some(at[n]), "{id}");
        }
        assert_eq!(all(&r).len(), ids.len() - ids.len().div_ceil(3));
    }

    #[test]
    fn a_full_window_refuses() {
        let r = region(4);
        for n in 0..4 {
            insert(&r, &Key::new(&format!("t{n}")).unwrap(), |_| {}).unwrap();
        }
        assert_eq!(insert(&r, &Key::new("t4").unwrap(), |_| {}), Err(Full));
        assert!(
            find(&r, &Key::new("t4").unwrap()).is_none(),
            "a full table is probed to its end"
        );
    }

    #[test]
    fn readers_see_whole_keys_while_the_owner_rewrites() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let owner = Arc::new(region(8));
        let reader = Region::attach(owner.fd()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let owner = owner.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let a = Key::new("aaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
                let b = Key::new("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb").unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = if n % 2 == 0 { &a } else { &b };
                    let (i, _) = insert(&owner, key, |_| {}).unwrap();
                    free(&owner, i);
                    n += 1;
                }
            })
        };
        for _ in 0..200_000 {
            for index in 0..8 {
                if let Some(id) = read_key(reader.entry(index)) {
                    assert!(
                        id == "aaaaaaaaaaaaaaaaaaaaaaaa" || id == "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                        "{id}"
                    );
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }
}
