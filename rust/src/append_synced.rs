//! Bytes appended to an existing file and made durable: a line of a tenant's journal of pending early uploads
//! (`pbfast/pocketbase/apis/upload_journal.py`), appended before the batch's files are created
//! ([`crate::create_files`], which takes it as its first step so that the batch costs one GIL release).
//!
//! Why an append rather than a new note file per batch: the file and its directory entry are durable already
//! (made so once, when the journal was created), so the line costs one `fdatasync` (the data and the size it
//! grew to) instead of a new file's `fsync` plus its directory's, and no create or unlink of a note per batch.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// Append `data` to the existing file at `path` (never created here: a missing journal is an error, not a
/// new file whose directory entry nobody made durable) and `fdatasync` it.
pub fn append_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().append(true).open(path)?;
    file.write_all(data)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn appends_to_an_existing_file_and_never_creates_one() {
        let base = std::env::temp_dir().join(format!("pbfast-append-synced-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        let journal = base.join("journal");
        let missing = append_synced(&journal, b"one\n").unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(!journal.exists());
        fs::write(&journal, b"").unwrap();
        append_synced(&journal, b"one\n").unwrap();
        append_synced(&journal, b"two\n").unwrap();
        assert_eq!(fs::read(&journal).unwrap(), b"one\ntwo\n");
        fs::remove_dir_all(&base).unwrap();
    }
}
