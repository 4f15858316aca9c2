//! New files written and made durable in one call without the GIL: the local object store's
//! `create_many`, used by the early upload writers (a batch of uploads, or the crash note before them).
//!
//! Why native: in Python each step (mkdir, open, write, fsync of the file, open/fsync/close of each
//! directory) releases and takes back the GIL; with the event loop and the database thread busy, each take
//! is a context switch (~20 GIL hand-overs per upload, measured as a third of the node's CPU going to
//! scheduling on this VM). Here the whole batch is one release.
//!
//! What [`create_files`] does, in order: creates each file's missing parent directories, creates the file
//! (`O_EXCL`: never someone else's) and writes its bytes; then fsyncs every file and every directory whose
//! entries changed (each file's own, and the parent of each directory created) all at once
//! ([`crate::fsync_at_once`]: their device flushes merge), and returns once all are done. All or nothing: on
//! any failure each file created is removed (directories stay, empty).
//!
//! [`create_files_after_append`] first appends a line to an existing file and makes it durable
//! ([`crate::append_synced`]: the tenant's journal of pending early uploads, which must name the files before
//! any of them can survive a crash), then creates the files; a failed append creates nothing.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;

use crate::append_synced::append_synced;
use crate::fsync_at_once::fsync_at_once;

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

/// A failure of [`create_files`]: the error and the path it concerns.
#[derive(Debug)]
pub struct CreateError {
    pub error: io::Error,
    pub path: PathBuf,
}

/// Create each `(path, bytes)` as a new file and make the files and their directories' entries durable (see
/// the module doc). Paths must be absolute or relative to the working directory; none may exist.
pub fn create_files<D: AsRef<[u8]>>(items: &[(PathBuf, D)]) -> Result<(), CreateError> {
    let mut created: Vec<&Path> = Vec::with_capacity(items.len());
    let result = write_and_sync(items, &mut created);
    if result.is_err() {
        for path in created {
            let _ = fs::remove_file(path); // ours (O_EXCL): nothing of a failed batch stays
        }
    }
    result
}

/// [`create_files`] after appending `line` to the existing file `journal` and making it durable (see the module
/// doc); nothing is created when the append fails.
pub fn create_files_after_append<D: AsRef<[u8]>>(journal: &Path, line: &[u8], items: &[(PathBuf, D)]) -> Result<(), CreateError> {
    append_synced(journal, line).map_err(|error| CreateError { error, path: journal.to_path_buf() })?;
    create_files(items)
}

fn write_and_sync<'a, D: AsRef<[u8]>>(items: &'a [(PathBuf, D)], created: &mut Vec<&'a Path>) -> Result<(), CreateError> {
    let mut files: Vec<File> = Vec::with_capacity(items.len());
    let mut directories: Vec<PathBuf> = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for (path, data) in items {
        for directory in make_parents(path)? {
            if seen.insert(directory.clone()) {
                directories.push(directory);
            }
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(|error| CreateError { error, path: path.clone() })?;
        created.push(path);
        file.write_all(data.as_ref()).map_err(|error| CreateError { error, path: path.clone() })?;
        files.push(file);
    }
    let mut handles: Vec<File> = Vec::with_capacity(directories.len());
    for directory in &directories {
        handles.push(File::open(directory).map_err(|error| CreateError { error, path: directory.clone() })?);
    }
    // every file and directory at once: their device flushes merge (see fsync_at_once)
    let fds: Vec<RawFd> = files.iter().chain(handles.iter()).map(AsRawFd::as_raw_fd).collect();
    fsync_at_once(&fds).map_err(|(index, error)| {
        let path = match items.get(index) {
            Some((path, _)) => path.clone(),
            None => directories[index - items.len()].clone(),
        };
        CreateError { error, path }
    })
}

/// Create the missing directories above `path`; the directories whose entries a new `path` changes (its
/// own, and the parent of each one created).
fn make_parents(path: &Path) -> Result<Vec<PathBuf>, CreateError> {
    let Some(parent) = path.parent() else {
        return Ok(Vec::new());
    };
    let mut missing: Vec<&Path> = Vec::new();
    let mut directory = parent;
    loop {
        match fs::metadata(directory) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                let error = io::Error::from_raw_os_error(libc::ENOTDIR);
                return Err(CreateError { error, path: directory.to_path_buf() });
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                missing.push(directory);
                match directory.parent() {
                    Some(up) if !up.as_os_str().is_empty() => directory = up,
                    _ => break,
                }
            }
            Err(error) => return Err(CreateError { error, path: directory.to_path_buf() }),
        }
    }
    let mut changed = vec![parent.to_path_buf()];
    for created in missing.iter().rev() {
        match DirBuilder::new().mode(0o755).create(created) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && created.is_dir() => {} // a concurrent writer's
            Err(error) => return Err(CreateError { error, path: created.to_path_buf() }),
        }
        if let Some(up) = created.parent() {
            if !changed.iter().any(|known| known == up) {
                changed.push(up.to_path_buf());
            }
        }
    }
    Ok(changed)
}

// ---------------------------------------------------------------------------------------------
// Python
// ---------------------------------------------------------------------------------------------

/// `create_files(items, append=None)`: see [`create_files`] (with `append=(journal, line)`:
/// [`create_files_after_append`]); raises `OSError(errno, message, path)` on a failure.
#[pyfunction]
#[pyo3(name = "create_files", signature = (items, append=None))]
pub fn py_create_files(
    py: Python<'_>,
    items: Vec<(PathBuf, PyBackedBytes)>,
    append: Option<(PathBuf, PyBackedBytes)>,
) -> PyResult<()> {
    py.detach(|| match &append {
        Some((journal, line)) => create_files_after_append(journal, line, &items),
        None => create_files(&items),
    })
    .map_err(|failure| {
        let errno = failure.error.raw_os_error().unwrap_or(libc::EIO);
        PyOSError::new_err((errno, failure.error.to_string(), failure.path.to_string_lossy().into_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let base = std::env::temp_dir().join(format!("pbfast-create-files-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        base
    }

    #[test]
    fn creates_files_and_their_missing_directories() {
        let base = scratch("creates");
        let items = vec![
            (base.join("c/r1/a.png"), b"one".to_vec()),
            (base.join("c/r1/b.png"), b"two".to_vec()),
            (base.join("c/r2/x/y.txt"), b"three".to_vec()),
        ];
        create_files(&items).unwrap();
        assert_eq!(fs::read(base.join("c/r1/a.png")).unwrap(), b"one");
        assert_eq!(fs::read(base.join("c/r1/b.png")).unwrap(), b"two");
        assert_eq!(fs::read(base.join("c/r2/x/y.txt")).unwrap(), b"three");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_file_in_use_fails_the_batch_and_nothing_of_it_stays() {
        let base = scratch("in-use");
        fs::create_dir_all(base.join("c/r1")).unwrap();
        fs::write(base.join("c/r1/b.png"), b"someone else's").unwrap();
        let items = vec![(base.join("c/r1/a.png"), b"one".to_vec()), (base.join("c/r1/b.png"), b"two".to_vec())];
        let failure = create_files(&items).unwrap_err();
        assert_eq!(failure.error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(failure.path, base.join("c/r1/b.png"));
        assert!(!base.join("c/r1/a.png").exists());
        assert_eq!(fs::read(base.join("c/r1/b.png")).unwrap(), b"someone else's");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_file_where_a_directory_should_be_fails() {
        let base = scratch("not-dir");
        fs::write(base.join("c"), b"a file").unwrap();
        let failure = create_files(&[(base.join("c/r1/a.png"), b"one".to_vec())]).unwrap_err();
        assert_eq!(failure.error.raw_os_error(), Some(libc::ENOTDIR));
        assert_eq!(fs::read(base.join("c")).unwrap(), b"a file");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_failed_append_creates_nothing_and_a_good_one_comes_first() {
        let base = scratch("after-append");
        let items = vec![(base.join("c/r1/a.png"), b"one".to_vec())];
        let failure = create_files_after_append(&base.join("journal"), b"[\"c/r1/a.png\"]\n", &items).unwrap_err();
        assert_eq!(failure.error.kind(), io::ErrorKind::NotFound);
        assert_eq!(failure.path, base.join("journal"));
        assert!(!base.join("c").exists());
        fs::write(base.join("journal"), b"").unwrap();
        create_files_after_append(&base.join("journal"), b"[\"c/r1/a.png\"]\n", &items).unwrap();
        assert_eq!(fs::read(base.join("journal")).unwrap(), b"[\"c/r1/a.png\"]\n");
        assert_eq!(fs::read(base.join("c/r1/a.png")).unwrap(), b"one");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_changed_directories_are_the_files_own_and_the_parents_of_those_created() {
        let base = scratch("changed");
        fs::create_dir_all(base.join("c")).unwrap();
        assert_eq!(make_parents(&base.join("c/r1/a.png")).unwrap(), vec![base.join("c/r1"), base.join("c")]);
        assert_eq!(make_parents(&base.join("c/r1/b.png")).unwrap(), vec![base.join("c/r1")]);
        assert_eq!(
            make_parents(&base.join("d/e/f.png")).unwrap(),
            vec![base.join("d/e"), base.to_path_buf(), base.join("d")]
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
