//! The sha256 check of downloaded weights, which hf-hub does not make.
//!
//! For a file stored with Git LFS (every `.safetensors` file on the hub), the hub's etag
//! (`x-linked-etag`) is the sha256 of the content, and hf-hub names the blob after it:
//! `blobs/<etag>`, linked from `snapshots/<commit>/<file>`. After a download the blob is hashed
//! (streamed, never read whole into memory) and compared with its name. A mismatch removes the
//! blob and its link, so that the next run downloads the file again.
//!
//! The check is skipped when the etag is not 64 hex digits: small files kept in git itself have
//! the git blob sha1 as their etag, which is not a hash of the bytes alone; and where the snapshot
//! file is not a link to its blob (hf-hub renames instead of linking only where links cannot be
//! made, never on Unix), the etag is not known.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{HubError, RepoId};

/// Bytes hashed per read.
const CHUNK_BYTES: usize = 1 << 20;

/// Checks the blob behind `snapshot_file` (the snapshot's link for `file`) against the sha256
/// its name promises; on a mismatch removes the blob and the link.
pub(super) fn check_blob(repo: &RepoId, file: &str, snapshot_file: &Path) -> Result<(), HubError> {
    let Ok(link) = std::fs::read_link(snapshot_file) else {
        return Ok(());
    };
    let Some(expected) = link.file_name().and_then(|n| n.to_str()).filter(|n| is_sha256(n)) else {
        return Ok(());
    };
    let blob = snapshot_file.parent().map_or_else(|| link.clone(), |dir| dir.join(&link));
    let found = sha256_of_file(&blob).map_err(|source| HubError::Cache { path: blob.clone(), source })?;
    if found == expected {
        return Ok(());
    }
    let expected = expected.into();
    for path in [&blob, snapshot_file] {
        std::fs::remove_file(path).map_err(|source| HubError::Cache { path: path.to_owned(), source })?;
    }
    Err(HubError::Sha256Mismatch { repo: repo.clone(), file: file.to_owned(), expected, found: found.into() })
}

/// Whether `etag` is a sha256 in hex (64 lowercase hex digits), as the hub gives for LFS files.
fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The sha256 of the file at `path` in lowercase hex, read in chunks.
fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256sum_and_knows_a_sha256_etag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        // FIPS 180-2, appendix B.1.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_of_file(&path).unwrap(), abc);
        assert!(is_sha256(abc));
        assert!(!is_sha256(&abc[..40]), "a git sha1 etag is not checked");
        assert!(!is_sha256(&abc.to_uppercase()));
    }

    #[cfg(unix)]
    #[test]
    fn a_mismatch_removes_the_blob_and_its_link() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        let snapshot = dir.path().join("snapshots").join("c");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(&snapshot).unwrap();
        let etag = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        std::fs::write(blobs.join(etag), b"abd").unwrap();
        let link = snapshot.join("model.safetensors");
        std::os::unix::fs::symlink(Path::new("../..").join("blobs").join(etag), &link).unwrap();
        let repo = RepoId::parse("o/n").unwrap();
        let err = check_blob(&repo, "model.safetensors", &link).unwrap_err();
        assert!(matches!(&err, HubError::Sha256Mismatch { expected, .. } if &**expected == etag), "{err}");
        assert!(!blobs.join(etag).exists() && std::fs::symlink_metadata(&link).is_err());
    }
}
