//! The versioned routing table: tenant id -> route, as immutable snapshots.
//!
//! The table is an immutable snapshot behind an [`ArcSwap`]: readers load it lock-free and never
//! block; writers serialise on a mutex, build a new snapshot and swap it in, so readers always see
//! either the old or the new snapshot, never a mix.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;

use super::route_map::{Entry, Route, RouteMap};
use super::tenant_id::{check_id, InvalidId};

/// One immutable version of the table.
#[derive(Debug)]
pub struct Snapshot<P> {
    pub version: u64,
    pub routes: RouteMap<P>,
}

/// A row for [`RoutingCore::replace`] / [`RoutingCore::patch`]: `(tenant_id, route, extra)`.
pub type Row<P> = (Arc<str>, Route, P);

/// Versioned tenant -> route map. Thread-safe: lock-free readers, writers serialised by a mutex.
pub struct RoutingCore<P> {
    current: ArcSwap<Snapshot<P>>,
    writer: Mutex<()>,
}

impl<P: Clone> Default for RoutingCore<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Clone> RoutingCore<P> {
    pub fn new() -> Self {
        RoutingCore {
            current: ArcSwap::from_pointee(Snapshot {
                version: 0,
                routes: RouteMap::default(),
            }),
            writer: Mutex::new(()),
        }
    }

    /// The current snapshot (lock-free; hold the guard briefly).
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot<P>>> {
        self.current.load()
    }

    /// An owned handle on the current snapshot, for long iterations (does not pin a reader slot).
    pub fn load_full_for_copy(&self) -> Arc<Snapshot<P>> {
        self.current.load_full()
    }

    pub fn version(&self) -> u64 {
        self.load().version
    }

    pub fn len(&self) -> usize {
        self.load().routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: &str) -> bool {
        self.load().routes.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<Route> {
        self.load().routes.get(id).map(|e| e.route.clone())
    }

    /// Swap in a whole new snapshot. Validates every id first; on error nothing changes.
    pub fn replace(&self, rows: Vec<Row<P>>, version: u64) -> Result<(), InvalidId> {
        for (id, _, _) in &rows {
            check_id(id)?;
        }
        let routes = RouteMap::from_rows(
            rows.into_iter()
                .map(|(id, route, extra)| (id, Entry { route, extra })),
        );
        let new = Arc::new(Snapshot { version, routes });
        let old = {
            let _w = self.writer.lock();
            self.current.swap(new)
        };
        drop(old); // outside the writer lock
        Ok(())
    }

    /// Apply upserts, then removals, as one new snapshot with `version`. Validates every upserted
    /// id first; on error nothing changes.
    ///
    /// The new snapshot shares every shard the patch does not touch with the current one; readers
    /// of the current snapshot are unaffected, since a shared shard is copied before it is written.
    pub fn patch(
        &self,
        upserts: Vec<Row<P>>,
        removals: Vec<String>,
        version: u64,
    ) -> Result<(), InvalidId> {
        for (id, _, _) in &upserts {
            check_id(id)?;
        }
        let old = {
            let _w = self.writer.lock();
            let mut routes = self.current.load().routes.clone(); // copies shard pointers only
            for (id, route, extra) in upserts {
                routes.insert(id, Entry { route, extra });
            }
            for id in &removals {
                routes.remove(id.as_str());
            }
            routes.rebalance();
            self.current.swap(Arc::new(Snapshot { version, routes }))
        };
        drop(old);
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;

    pub(in crate::routing) fn route(addr: &str, epoch: u64) -> Route {
        Route {
            address: Arc::from(addr),
            epoch,
            active: true,
        }
    }

    pub(in crate::routing) fn row(id: &str, addr: &str, epoch: u64) -> Row<()> {
        (Arc::from(id), route(addr, epoch), ())
    }

    #[test]
    fn table_replace_patch_get() {
        let c: RoutingCore<()> = RoutingCore::new();
        assert_eq!(c.version(), 0);
        assert!(c.is_empty());
        c.replace(vec![row("a", "n1", 1), row("b", "n2", 2)], 5)
            .unwrap();
        assert_eq!(c.version(), 5);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a"), Some(route("n1", 1)));
        assert!(c.contains("b"));
        assert!(!c.contains("c"));

        c.patch(
            vec![row("c", "n3", 3), row("a", "n9", 9)],
            vec!["b".into(), "zz".into()],
            3,
        )
        .unwrap();
        assert_eq!(c.version(), 3, "version is taken as given");
        assert_eq!(c.get("a"), Some(route("n9", 9)));
        assert_eq!(c.get("b"), None);
        assert_eq!(c.get("c"), Some(route("n3", 3)));

        let err = c.patch(
            vec![row("ok", "n", 1), row("Bad", "n", 1)],
            vec!["a".into()],
            9,
        );
        assert_eq!(err, Err(InvalidId("Bad".into())));
        let err = c.replace(vec![row("x", "n", 1), row("", "n", 1)], 9);
        assert_eq!(err, Err(InvalidId("".into())));
        assert_eq!(c.version(), 3, "nothing changed");
        assert_eq!(c.len(), 2);
        assert!(c.contains("a"));

        c.replace(vec![], 10).unwrap();
        assert!(c.is_empty());
        assert_eq!(c.version(), 10);
    }

    /// Readers during concurrent writers always see a consistent snapshot.
    #[test]
    fn readers_during_writes() {
        let c: Arc<RoutingCore<()>> = Arc::new(RoutingCore::new());
        let ids: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect(); // 8 shards
        let rows = |v: u64| -> Vec<Row<()>> { ids.iter().map(|id| row(id, "n", v)).collect() };
        c.replace(rows(0), 0).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let c = c.clone();
                let stop = stop.clone();
                thread::spawn(move || {
                    let mut seen = 0u64;
                    let mut last = 0u64;
                    // At least one read whatever the scheduling (a reader may first run after `stop`).
                    loop {
                        let s = c.load();
                        assert_eq!(s.routes.len(), 1000);
                        assert!(s.version >= last, "versions only grow in this test");
                        last = s.version;
                        for e in s.routes.values() {
                            assert_eq!(e.route.epoch, s.version, "snapshot mixes versions");
                        }
                        seen += 1;
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                let ids = ids.clone();
                thread::spawn(move || {
                    for i in 0..300u64 {
                        // The test's writers take turns so versions grow and every snapshot has
                        // epoch == version (the table itself requires neither).
                        let _g = WRITER_TURN.lock();
                        let nv = c.version() + 1;
                        let rows = ids.iter().map(|id| row(id, "n", nv)).collect();
                        if i % 2 == 0 {
                            c.replace(rows, nv).unwrap();
                        } else {
                            c.patch(rows, vec!["absent".into()], nv).unwrap();
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }

    static WRITER_TURN: Mutex<()> = Mutex::new(());

    /// Concurrent patches of disjoint ids are never lost (clone-modify-swap is serialised).
    #[test]
    fn concurrent_patches_not_lost() {
        let c: Arc<RoutingCore<()>> = Arc::new(RoutingCore::new());
        let hs: Vec<_> = (0..4)
            .map(|w| {
                let c = c.clone();
                thread::spawn(move || {
                    for i in 0..250 {
                        c.patch(vec![row(&format!("w{w}-{i}"), "n", 1)], vec![], 1)
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(c.len(), 1000);
    }
}
