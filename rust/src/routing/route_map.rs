//! The routing table's map: tenant id -> route, copy-on-write and sharded.
//!
//! A snapshot's map ([`RouteMap`]) is split into about `len / 128` hash-table shards, each behind its
//! own `Arc`, so a new snapshot shares every shard a patch does not touch with the old one: a patch
//! copies the shard pointers plus the shards it touches (for one route in 10k: 128 pointers and ~80
//! routes, instead of all 10k routes), and a lookup is one hash, one shard pointer and one
//! hash-table probe.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

/// A tenant's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub address: Arc<str>,
    pub epoch: u64,
    pub active: bool,
}

/// A route plus caller-defined data kept with it (the Python wrapper keeps its cached objects).
#[derive(Debug, Clone)]
pub struct Entry<P> {
    pub route: Route,
    pub extra: P,
}

type Slot<P> = (Arc<str>, Entry<P>);
type Shard<P> = hashbrown::HashTable<Slot<P>>;

/// Routes per shard a [`RouteMap`] aims at (a shard holds between a quarter and twice as many): a
/// one-route patch copies about `len / SHARD_TARGET` shard pointers plus one shard. 128 balances
/// that copy against lookups, which touch one shard header more than a single table would.
const SHARD_TARGET: usize = 128;
/// Shard indexes come from hash bits 32..44, clear of the bits hashbrown uses inside a shard (the low
/// bits for the bucket, the top 7 for the control byte).
const MAX_SHARDS: usize = 1 << 12;
const SHARD_SHIFT: u32 = 32;

/// The shard count (a power of two) for `len` routes.
fn shard_count(len: usize) -> usize {
    (len / SHARD_TARGET).next_power_of_two().min(MAX_SHARDS)
}

/// Map tenant id -> entry whose clones share structure: the map is a power-of-two number of
/// hash-table shards behind `Arc`s, and a write through a clone copies only the shards it touches
/// (copy-on-write), so a map that was published is never changed.
///
/// Writes re-shard (O(n), amortised O(1)) when the length drifts 4x from the shard count's target.
#[derive(Clone)]
pub struct RouteMap<P> {
    hasher: foldhash::fast::RandomState,
    len: usize,
    shards: Box<[Arc<Shard<P>>]>,
}

impl<P> Default for RouteMap<P> {
    fn default() -> Self {
        Self::with_shards(Default::default(), 1)
    }
}

impl<P: fmt::Debug> fmt::Debug for RouteMap<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<P> RouteMap<P> {
    fn with_shards(hasher: foldhash::fast::RandomState, count: usize) -> Self {
        debug_assert!(count.is_power_of_two() && count <= MAX_SHARDS);
        RouteMap {
            hasher,
            len: 0,
            shards: (0..count).map(|_| Arc::new(Shard::new())).collect(),
        }
    }

    #[inline]
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        (hash >> SHARD_SHIFT) as usize & (self.shards.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, id: &str) -> Option<&Entry<P>> {
        let hash = self.hash(id);
        self.shards[self.shard_index(hash)]
            .find(hash, |(k, _)| **k == *id)
            .map(|(_, e)| e)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Every `(id, entry)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Entry<P>)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, e)| (k, e)))
    }

    pub fn values(&self) -> impl Iterator<Item = &Entry<P>> {
        self.shards.iter().flat_map(|s| s.iter().map(|(_, e)| e))
    }
}

impl<P: Clone> RouteMap<P> {
    /// A map of `rows` (a later row for the same id wins), sharded for their number.
    pub fn from_rows(rows: impl ExactSizeIterator<Item = (Arc<str>, Entry<P>)>) -> Self {
        Self::build(Default::default(), rows.len(), rows)
    }

    fn build(
        hasher: foldhash::fast::RandomState,
        len_hint: usize,
        rows: impl Iterator<Item = (Arc<str>, Entry<P>)>,
    ) -> Self {
        let count = shard_count(len_hint);
        let per_shard = len_hint / count + len_hint / count / 4 + 1;
        let mut shards: Vec<Shard<P>> = (0..count)
            .map(|_| Shard::with_capacity(per_shard))
            .collect();
        let mut map = RouteMap {
            hasher,
            len: 0,
            shards: Box::new([]),
        };
        for (id, entry) in rows {
            let hash = map.hasher.hash_one(&*id);
            let shard = &mut shards[(hash >> SHARD_SHIFT) as usize & (count - 1)];
            if Self::put(&map.hasher, shard, hash, id, entry).is_none() {
                map.len += 1;
            }
        }
        map.shards = shards.into_iter().map(Arc::new).collect();
        map
    }

    fn put(
        hasher: &foldhash::fast::RandomState,
        shard: &mut Shard<P>,
        hash: u64,
        id: Arc<str>,
        entry: Entry<P>,
    ) -> Option<Entry<P>> {
        match shard.find_mut(hash, |(k, _)| *k == id) {
            Some((_, old)) => Some(std::mem::replace(old, entry)),
            None => {
                shard.insert_unique(hash, (id, entry), |(k, _)| hasher.hash_one(&**k));
                None
            }
        }
    }

    /// Insert or replace; copies the id's shard first when another map shares it.
    pub fn insert(&mut self, id: Arc<str>, entry: Entry<P>) -> Option<Entry<P>> {
        let hash = self.hash(&id);
        let i = self.shard_index(hash);
        let shard = Arc::make_mut(&mut self.shards[i]);
        let old = Self::put(&self.hasher, shard, hash, id, entry);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Remove; copies the id's shard first when another map shares it (not when the id is absent).
    pub fn remove(&mut self, id: &str) -> Option<Entry<P>> {
        let hash = self.hash(id);
        let i = self.shard_index(hash);
        let eq = |(k, _): &Slot<P>| **k == *id;
        self.shards[i].find(hash, eq)?;
        let shard = Arc::make_mut(&mut self.shards[i]);
        let ((_, old), _) = shard.find_entry(hash, eq).ok()?.remove();
        self.len -= 1;
        Some(old)
    }

    /// Re-shard when the length has drifted 4x away from what the shard count is sized for.
    pub fn rebalance(&mut self) {
        let (want, have) = (shard_count(self.len), self.shards.len());
        if want >= have * 4 || want * 4 <= have {
            let rows = self.iter().map(|(k, e)| (k.clone(), e.clone()));
            *self = Self::build(self.hasher.clone(), self.len, rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::table::tests::{route, row};
    use crate::routing::table::RoutingCore;

    /// Patches match a plain `HashMap` model through growth (re-sharding up from one shard) and
    /// shrinkage, and a snapshot taken before a patch never changes (the new snapshot shares shards
    /// with it but copies one before writing it).
    #[test]
    fn patch_matches_model_and_old_snapshots_are_isolated() {
        use std::collections::HashMap;

        let c: RoutingCore<u64> = RoutingCore::new();
        let id = |i: u64| format!("t{i}");
        let entry = |i: u64, v: u64| (Arc::<str>::from(id(i)), route(&format!("n{v}"), v), v);
        let mut model: HashMap<String, u64> = HashMap::new();
        let mut held = Vec::new(); // (snapshot, model at its version)
        let mut rng = 0x2545_f491_4f6c_dd1du64; // xorshift: deterministic, no dev-dependency
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut shard_counts = Vec::new();
        let mut max_len = 0;
        for v in 1..1500u64 {
            // Grow to ~2500 routes, then shrink to a few dozen: both directions re-shard.
            let (ups, rms) = if v < 1000 {
                (1 + next() % 8, next() % 3)
            } else {
                (next() % 2, 30)
            };
            let upserts: Vec<_> = (0..ups).map(|_| entry(next() % 4000, v)).collect();
            let removals: Vec<String> = (0..rms).map(|_| id(next() % 4000)).collect();
            for (k, _, _) in &upserts {
                model.insert(k.to_string(), v);
            }
            for k in &removals {
                model.remove(k);
            }
            c.patch(upserts, removals, v).unwrap();

            let snap = c.load_full_for_copy();
            assert_eq!(snap.version, v);
            assert_eq!(snap.routes.len(), model.len());
            shard_counts.push(snap.routes.shards.len());
            max_len = max_len.max(snap.routes.len());
            if v % 50 == 0 {
                held.push((snap, model.clone()));
            }
        }
        let check = |routes: &RouteMap<u64>, model: &HashMap<String, u64>| {
            assert_eq!(routes.len(), model.len());
            assert_eq!(routes.iter().count(), model.len());
            for (k, e) in routes.iter() {
                assert_eq!(model.get(&**k), Some(&e.extra), "{k}");
                assert_eq!(e.route, route(&format!("n{}", e.extra), e.extra));
            }
            for i in 0..4000 {
                let k = id(i);
                assert_eq!(routes.contains_key(&k), model.contains_key(&k), "{k}");
            }
        };
        check(&c.load().routes, &model);
        assert!(held.len() > 20);
        for (snap, at) in &held {
            check(&snap.routes, at);
        }
        for (k, v) in &model {
            assert_eq!(c.get(k), Some(route(&format!("n{v}"), *v)));
        }
        let peak = *shard_counts.iter().max().unwrap();
        assert!(max_len > 2000 && peak >= 16, "grew from 1 shard to {peak}");
        assert!(*shard_counts.last().unwrap() < peak, "shrank again");
    }

    /// `replace` shards for its row count, ids spread evenly, and a one-route patch shares all
    /// shards but one with the previous snapshot.
    #[test]
    fn replace_shards_and_patch_shares_untouched_shards() {
        let c: RoutingCore<()> = RoutingCore::new();
        let ids: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
        c.replace(ids.iter().map(|i| row(i, "n", 1)).collect(), 1)
            .unwrap();
        let before = c.load_full_for_copy();
        let n = before.routes.shards.len();
        assert_eq!(n, shard_count(10_000));
        assert!(n >= 64);
        let sizes: Vec<usize> = before.routes.shards.iter().map(|s| s.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 10_000);
        let mean = 10_000 / n;
        assert!(sizes.iter().all(|&s| s > 0 && s < 4 * mean), "{sizes:?}");

        c.patch(vec![row("tenant-5", "m", 2)], vec![], 2).unwrap();
        let after = c.load_full_for_copy();
        let shared = (before.routes.shards.iter())
            .zip(after.routes.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, n - 1);
        assert_eq!(before.routes.get("tenant-5").unwrap().route, route("n", 1));
        assert_eq!(after.routes.get("tenant-5").unwrap().route.epoch, 2);

        // Removing an absent id copies nothing; duplicate rows in `replace`: the last one wins.
        c.patch(vec![], vec!["nope".into()], 3).unwrap();
        let same = c.load_full_for_copy();
        assert!((after.routes.shards.iter())
            .zip(same.routes.shards.iter())
            .all(|(a, b)| Arc::ptr_eq(a, b)));
        c.replace(vec![row("a", "x", 1), row("a", "y", 2)], 4)
            .unwrap();
        assert_eq!((c.len(), c.get("a")), (1, Some(route("y", 2))));
    }
}
