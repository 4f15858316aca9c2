//! The node's shared memory region: one memfd, mapped by the node's main process and its workers.
//!
//! Layout (fixed when the region is created; every process computes the same offsets from the
//! header, which [`Region::attach`] checks):
//!
//! ```text
//! [ header: 4 KiB ][ entries: capacity × 256 B ][ holds: workers × capacity × 8 B ][ counters: workers × 32 × 8 B ]
//! [ rate buckets: capacity × 4 × 16 B, 64-byte aligned ]
//! ```
//!
//! - the **header**: magic, layout version, sizes, and the node-wide words (the lease, the close
//!   sequence, entry counts);
//! - the **entries**: one per tenant id the main process knows (see [`super::keys`]); each holds the
//!   tenant's serving state ([`super::tenant_table`]), its quota counters ([`super::quotas`]) and its
//!   database load counters. Every field is an atomic, so any process may read any field at any time;
//! - the **holds**: per worker and entry, the serving generation under which that worker holds a
//!   connection to the tenant's database (0: none) ([`super::acks`]);
//! - the **counters**: per worker, 32 plain counters the main process sums for `/metrics`
//!   ([`super::counters`]);
//! - the **rate buckets**: the rate limiter's windows, one per tenant + rule + client counted by every
//!   process ([`super::rate_limits`]), [`RATE_BUCKETS_PER_ENTRY`] per entry.
//!
//! A memfd lives in memory only (no disk writeback of counters bumped on every request) and goes
//! away with the last process that maps it or holds its descriptor. The main process creates it
//! ([`Region::create`]: the *owner*, the only process that adds or removes entries) and passes the
//! descriptor to its workers, which [`Region::attach`] it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;
use portable_atomic::AtomicU128;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

pub const MAGIC: u64 = u64::from_le_bytes(*b"PBFSHM01");
pub const LAYOUT_VERSION: u64 = 2;
pub const HEADER_BYTES: usize = 4096;
pub const ENTRY_BYTES: usize = 256;
pub const COUNTER_SLOTS: usize = 32;
pub const MAX_WORKERS: usize = 256;
pub const MAX_CAPACITY: usize = 1 << 20;
/// Rate limiter windows per tenant entry (a window is one tenant + rule + client; a node with the least
/// capacity, 65,536 entries, has 262,144 of them in 4 MiB).
pub const RATE_BUCKETS_PER_ENTRY: usize = 4;
pub const RATE_BUCKET_BYTES: usize = 16;
/// The rate buckets are probed in sets of this many (two cache lines).
pub const RATE_WAYS: usize = 8;

/// The region's first page. Plain atomics: every process reads and writes it concurrently.
#[repr(C)]
pub struct Header {
    magic: AtomicU64,
    version: AtomicU64,
    capacity: AtomicU64,
    workers: AtomicU64,
    counter_slots: AtomicU64,
    window_seconds: AtomicU64,
    size: AtomicU64,
    /// [`super::tenant_table`]'s lease: how the workers may admit requests.
    pub lease_state: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds until which the lease lets the node serve.
    pub serve_until_ns: AtomicU64,
    /// Bumped whenever a tenant stops being served (workers poll it to find connections to close).
    pub close_seq: AtomicU64,
    /// Entries with a serving state / with quota counters (owner-maintained).
    pub serving_entries: AtomicU64,
    pub quota_entries: AtomicU64,
    /// The rate limiter's hash seed (random per region: clients cannot aim their keys at one set).
    pub rate_seed: AtomicU64,
    /// Requests the rate limiter let through uncounted (their set was full of live windows).
    pub rate_overflowed: AtomicU64,
}

/// One tenant's entry (256 bytes, all atomics). The key part is written only by the owner, under
/// `keyseq` (odd while it changes); the serving part only by the owner, under `seq` (a seqlock);
/// counters by anyone with atomic read-modify-writes.
#[repr(C, align(64))]
pub struct Entry {
    // key (super::keys)
    pub keyseq: AtomicU64,
    pub hash: AtomicU64,
    pub key_len: AtomicU64,
    pub key: [AtomicU64; 8],
    pub presence: AtomicU64,
    // serving state (super::tenant_table)
    pub seq: AtomicU64,
    pub flags: AtomicU64,
    pub epoch: AtomicU64,
    pub released: AtomicU64,
    pub generation: AtomicU64,
    pub time_limit_ms: AtomicI64,
    pub max_bytes: AtomicI64,
    pub last_used: AtomicU64,
    // quota counters (super::quotas)
    pub api_limit: AtomicI64,
    pub storage_limit: AtomicI64,
    pub window: AtomicU64,
    pub unreported: AtomicU64,
    pub storage: AtomicU64,
    // database load, summed over the processes that ran the tenant's jobs
    pub load: [AtomicU64; 5],
}

const _: () = assert!(std::mem::size_of::<Entry>() == ENTRY_BYTES);

/// [`Entry::presence`] bits: which primitives use the entry (it is freed when none does).
pub const PRESENT_SERVING: u64 = 1;
pub const PRESENT_QUOTA: u64 = 2;

impl Entry {
    /// The state of a new entry (its key being written): not serving, unlimited quota, no counts. The
    /// `generation` is kept: it only ever grows, so a hold left from an earlier tenant never matches.
    pub fn reset_payload(&self) {
        for word in [
            &self.flags,
            &self.epoch,
            &self.released,
            &self.last_used,
            &self.window,
            &self.unreported,
            &self.storage,
        ] {
            word.store(0, Ordering::Relaxed);
        }
        for word in [
            &self.time_limit_ms,
            &self.max_bytes,
            &self.api_limit,
            &self.storage_limit,
        ] {
            word.store(-1, Ordering::Relaxed);
        }
        for word in &self.load {
            word.store(0, Ordering::Relaxed);
        }
    }
}
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);

/// Where each part of a region lies, from its sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub capacity: usize,
    pub workers: usize,
    pub entries: usize,
    pub holds: usize,
    pub counters: usize,
    pub rates: usize,
    pub rate_buckets: usize,
    pub size: usize,
}

impl Layout {
    /// The layout for `capacity` entries (a power of two) and `workers` workers, or why not.
    pub fn new(capacity: usize, workers: usize) -> Result<Layout, String> {
        if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
            return Err(format!(
                "capacity must be a power of two up to {MAX_CAPACITY}, got {capacity}"
            ));
        }
        if workers == 0 || workers > MAX_WORKERS {
            return Err(format!("workers must be 1-{MAX_WORKERS}, got {workers}"));
        }
        let entries = HEADER_BYTES;
        let holds = entries + capacity * ENTRY_BYTES;
        let counters = holds + workers * capacity * 8;
        let rates = (counters + workers * COUNTER_SLOTS * 8).next_multiple_of(64);
        let rate_buckets = (capacity * RATE_BUCKETS_PER_ENTRY).max(RATE_WAYS);
        let size = rates + rate_buckets * RATE_BUCKET_BYTES;
        Ok(Layout {
            capacity,
            workers,
            entries,
            holds,
            counters,
            rates,
            rate_buckets,
            size,
        })
    }
}

/// A mapping of the node's region. Send + Sync: everything in it is atomic.
pub struct Region {
    base: *mut u8,
    layout: Layout,
    fd: OwnedFd,
    owner: bool,
    window_seconds: u64,
    /// Serialises the owner's changes to keys and serving states within its process.
    pub(crate) writer: Mutex<()>,
}

// SAFETY: the mapping is only reached through `&Header`, `&Entry` and `&AtomicU64`, all of which are
// made of atomics; the pointer itself never changes while the region lives.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

fn os_error(what: &str) -> io::Error {
    let err = io::Error::last_os_error();
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// Map `size` bytes of `fd` shared, read-write.
fn map(fd: &OwnedFd, size: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of a descriptor we hold; checked for MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(os_error("mmap"));
    }
    Ok(base.cast())
}

impl Region {
    /// A new region (zeroed: every entry unused) for `capacity` entries and `workers` workers, with
    /// quota windows of `window_seconds`. The caller is its owner.
    pub fn create(capacity: usize, workers: usize, window_seconds: u64) -> io::Result<Region> {
        let layout = Layout::new(capacity, workers).map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?;
        if window_seconds == 0 || window_seconds > u32::MAX as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("window_seconds must be 1-{}, got {window_seconds}", u32::MAX),
            ));
        }
        // SAFETY: a C string literal; the returned descriptor is checked and owned below.
        let raw = unsafe { libc::memfd_create(c"pbfast-node".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(os_error("memfd_create"));
        }
        // SAFETY: `raw` is a descriptor we just opened and nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain system call on our descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), layout.size as libc::off_t) } != 0 {
            return Err(os_error("ftruncate"));
        }
        let base = map(&fd, layout.size)?;
        let region = Region {
            base,
            layout,
            fd,
            owner: true,
            window_seconds,
            writer: Mutex::new(()),
        };
        let h = region.header();
        h.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.capacity.store(capacity as u64, Ordering::Relaxed);
        h.workers.store(workers as u64, Ordering::Relaxed);
        h.counter_slots.store(COUNTER_SLOTS as u64, Ordering::Relaxed);
        h.window_seconds.store(window_seconds, Ordering::Relaxed);
        h.size.store(layout.size as u64, Ordering::Relaxed);
        h.rate_seed.store(random_seed()?, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(region)
    }

    /// Map the region behind `fd` (a descriptor of a region made by [`Region::create`], e.g. inherited
    /// from the main process). The descriptor is duplicated: the caller keeps its own.
    pub fn attach(fd: RawFd) -> io::Result<Region> {
        // SAFETY: F_DUPFD_CLOEXEC on a caller-given descriptor; the result is checked and owned.
        let raw = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os_error("dup"));
        }
        // SAFETY: `raw` is our own duplicate.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: fstat into a zeroed struct.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
            return Err(os_error("fstat"));
        }
        let file_size = stat.st_size as usize;
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
        if file_size < HEADER_BYTES {
            return Err(invalid(format!("not a node region: {file_size} bytes")));
        }
        let head = map(&fd, HEADER_BYTES)?;
        // SAFETY: the first page is mapped and holds a Header (all atomics).
        let header = unsafe { &*(head as *const Header) };
        let checked = (|| {
            if header.magic.load(Ordering::Acquire) != MAGIC {
                return Err(invalid("not a node region: bad magic".into()));
            }
            let version = header.version.load(Ordering::Relaxed);
            if version != LAYOUT_VERSION {
                return Err(invalid(format!(
                    "node region layout {version}, this build reads {LAYOUT_VERSION}"
                )));
            }
            let layout = Layout::new(
                header.capacity.load(Ordering::Relaxed) as usize,
                header.workers.load(Ordering::Relaxed) as usize,
            )
            .map_err(invalid)?;
            if header.counter_slots.load(Ordering::Relaxed) != COUNTER_SLOTS as u64
                || header.size.load(Ordering::Relaxed) != layout.size as u64
                || file_size < layout.size
            {
                return Err(invalid("node region sizes do not match its header".into()));
            }
            Ok((layout, header.window_seconds.load(Ordering::Relaxed)))
        })();
        // SAFETY: unmapping the probe mapping made above.
        unsafe { libc::munmap(head.cast(), HEADER_BYTES) };
        let (layout, window_seconds) = checked?;
        let base = map(&fd, layout.size)?;
        Ok(Region {
            base,
            layout,
            fd,
            owner: false,
            window_seconds,
            writer: Mutex::new(()),
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn capacity(&self) -> usize {
        self.layout.capacity
    }

    pub fn workers(&self) -> usize {
        self.layout.workers
    }

    pub fn window_seconds(&self) -> u64 {
        self.window_seconds
    }

    /// Whether this process created the region (only the owner adds and removes entries).
    pub fn owner(&self) -> bool {
        self.owner
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the header page is mapped for the region's life and made of atomics.
        unsafe { &*(self.base as *const Header) }
    }

    /// Entry `index` (< capacity).
    pub fn entry(&self, index: usize) -> &Entry {
        assert!(index < self.layout.capacity);
        // SAFETY: in bounds (checked), 64-byte aligned (page-aligned base + multiples of 256).
        unsafe { &*(self.base.add(self.layout.entries + index * ENTRY_BYTES) as *const Entry) }
    }

    /// Worker `worker`'s hold word for entry `index`.
    pub fn hold(&self, worker: usize, index: usize) -> &AtomicU64 {
        assert!(worker < self.layout.workers && index < self.layout.capacity);
        let offset = self.layout.holds + (worker * self.layout.capacity + index) * 8;
        // SAFETY: in bounds (checked), 8-byte aligned.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }

    /// Rate bucket `index` (< rate_buckets): a 16-byte word changed whole by compare-and-swap.
    pub fn rate_bucket(&self, index: usize) -> &AtomicU128 {
        assert!(index < self.layout.rate_buckets);
        // SAFETY: in bounds (checked), 16-byte aligned (page-aligned base + a 64-byte aligned offset
        // + multiples of 16); AtomicU128 has the size and alignment of u128.
        unsafe { &*(self.base.add(self.layout.rates + index * RATE_BUCKET_BYTES) as *const AtomicU128) }
    }

    /// Worker `worker`'s counter `slot`.
    pub fn counter(&self, worker: usize, slot: usize) -> &AtomicU64 {
        assert!(worker < self.layout.workers && slot < COUNTER_SLOTS);
        let offset = self.layout.counters + (worker * COUNTER_SLOTS + slot) * 8;
        // SAFETY: in bounds (checked), 8-byte aligned.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in create/attach, of this size; nothing borrows it any more.
        unsafe { libc::munmap(self.base.cast(), self.layout.size) };
    }
}

/// 64 random bits from the kernel.
fn random_seed() -> io::Result<u64> {
    let mut seed = [0u8; 8];
    // SAFETY: getrandom into a local buffer of the length given.
    let read = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if read != seed.len() as isize {
        return Err(os_error("getrandom"));
    }
    Ok(u64::from_le_bytes(seed))
}

/// CLOCK_MONOTONIC (the clock of Python's `time.monotonic()`, shared by every process of the host) in
/// nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime into a local struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds (a float, e.g. from `time.monotonic()`) as nanoseconds, clamped to the u64 range.
pub fn seconds_to_ns(seconds: f64) -> u64 {
    if seconds.is_nan() || seconds <= 0.0 {
        0
    } else if seconds >= u64::MAX as f64 / 1e9 {
        u64::MAX
    } else {
        (seconds * 1e9) as u64
    }
}

// ---------------------------------------------------------------------------------------------
// Python wrapper
// ---------------------------------------------------------------------------------------------

/// A tenant node's shared memory: a memfd the main process creates and its workers attach to.
#[pyclass(module = "pbfast._native", name = "NodeSharedMemory", frozen)]
pub struct NodeSharedMemory {
    pub(crate) region: std::sync::Arc<Region>,
}

fn io_to_py(err: io::Error) -> PyErr {
    match err.kind() {
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => PyValueError::new_err(err.to_string()),
        _ => PyOSError::new_err(err.to_string()),
    }
}

#[pymethods]
impl NodeSharedMemory {
    #[new]
    #[pyo3(signature = (capacity, workers, window_seconds = 86400))]
    fn py_new(capacity: i64, workers: i64, window_seconds: i64) -> PyResult<Self> {
        let (Ok(capacity), Ok(workers), Ok(window)) = (
            usize::try_from(capacity),
            usize::try_from(workers),
            u64::try_from(window_seconds),
        ) else {
            return Err(PyValueError::new_err(
                "capacity, workers and window_seconds must not be negative",
            ));
        };
        let region = Region::create(capacity, workers, window).map_err(io_to_py)?;
        Ok(NodeSharedMemory {
            region: std::sync::Arc::new(region),
        })
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    /// Map the region behind an inherited descriptor (duplicated: the caller keeps ``fd``).
    #[staticmethod]
    fn attach(fd: i32) -> PyResult<NodeSharedMemory> {
        let region = Region::attach(fd).map_err(io_to_py)?;
        Ok(NodeSharedMemory {
            region: std::sync::Arc::new(region),
        })
    }

    /// This process's descriptor of the region (close-on-exec: pass it explicitly to a child).
    #[getter]
    fn fd(&self) -> i32 {
        self.region.fd()
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.region.capacity()
    }

    #[getter]
    fn workers(&self) -> usize {
        self.region.workers()
    }

    #[getter]
    fn window_seconds(&self) -> u64 {
        self.region.window_seconds()
    }

    #[getter]
    fn size_bytes(&self) -> usize {
        self.region.layout().size
    }

    #[getter]
    fn owner(&self) -> bool {
        self.region.owner()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests (pure Rust)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_checks_sizes() {
        assert!(Layout::new(1000, 2).is_err());
        assert!(Layout::new(1024, 0).is_err());
        assert!(Layout::new(1024, MAX_WORKERS + 1).is_err());
        assert!(Layout::new(MAX_CAPACITY * 2, 1).is_err());
        let layout = Layout::new(1024, 2).unwrap();
        assert_eq!(layout.entries, HEADER_BYTES);
        assert_eq!(layout.holds, HEADER_BYTES + 1024 * ENTRY_BYTES);
        assert_eq!(layout.rates, (layout.counters + 2 * COUNTER_SLOTS * 8).next_multiple_of(64));
        assert_eq!(layout.rate_buckets, 4096);
        assert_eq!(layout.size, layout.rates + 4096 * RATE_BUCKET_BYTES);
        assert_eq!(Layout::new(1, 1).unwrap().rate_buckets, RATE_WAYS);
    }

    #[test]
    fn two_mappings_share_memory() {
        let owner = Region::create(64, 2, 86400).unwrap();
        assert!(owner.owner());
        let other = Region::attach(owner.fd()).unwrap();
        assert!(!other.owner());
        assert_eq!(other.layout(), owner.layout());
        assert_eq!(other.window_seconds(), 86400);
        owner.counter(1, 3).fetch_add(5, Ordering::Relaxed);
        assert_eq!(other.counter(1, 3).load(Ordering::Relaxed), 5);
        other.entry(63).epoch.store(9, Ordering::Relaxed);
        assert_eq!(owner.entry(63).epoch.load(Ordering::Relaxed), 9);
        other.rate_bucket(255).store(7 << 64 | 3, Ordering::SeqCst);
        assert_eq!(owner.rate_bucket(255).load(Ordering::SeqCst), 7 << 64 | 3);
        assert_eq!(other.header().rate_seed.load(Ordering::Relaxed), owner.header().rate_seed.load(Ordering::Relaxed));
        other.hold(0, 7).store(4, Ordering::Relaxed);
        assert_eq!(owner.hold(0, 7).load(Ordering::Relaxed), 4);
        assert_eq!(owner.hold(1, 7).load(Ordering::Relaxed), 0);
        // The attached mapping outlives the owner's.
        drop(owner);
        assert_eq!(other.counter(1, 3).load(Ordering::Relaxed), 5);
    }

    #[test]
    fn attach_refuses_what_is_not_a_region() {
        // SAFETY: a fresh memfd, owned below.
        let raw = unsafe { libc::memfd_create(c"not-a-region".as_ptr(), libc::MFD_CLOEXEC) };
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        assert!(Region::attach(fd.as_raw_fd()).is_err(), "empty");
        unsafe { libc::ftruncate(fd.as_raw_fd(), 1 << 20) };
        let err = Region::attach(fd.as_raw_fd()).err().unwrap();
        assert!(err.to_string().contains("magic"), "{err}");
        assert!(Region::attach(-1).is_err());
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Region::create(100, 1, 86400).is_err());
        assert!(Region::create(64, 1, 0).is_err());
    }
}
