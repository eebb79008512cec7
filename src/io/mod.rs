//! File output that is never half-written, and the memory map used to read inputs.

pub mod mmap;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file written under a temporary name in its destination folder, then fsynced and renamed over
/// the destination by [`AtomicFile::commit`]. Dropped without a commit, the temporary file is
/// removed, so the destination is always either absent, its previous complete content, or the new
/// complete content.
#[derive(Debug)]
pub struct AtomicFile {
    dest: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Creates the temporary file next to `dest`.
    pub fn create(dest: &Path) -> io::Result<AtomicFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        if dest.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("output path '{}' is a directory", dest.display()),
            ));
        }
        let file_name = dest.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("output path '{}' has no file name", dest.display()))
        })?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".tmp-{}-{n}", std::process::id()));
        let temp = dest.with_file_name(temp_name);
        let file = File::create(&temp)?;
        Ok(AtomicFile { dest: dest.to_owned(), temp, writer: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flushes, fsyncs and renames the temporary file over the destination, then fsyncs the folder.
    pub fn commit(mut self) -> io::Result<()> {
        let writer = self.writer.take().expect("the writer is only taken here, and commit consumes self");
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp, &self.dest)?;
        if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable; not every file system supports syncing a folder.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.as_mut().map_or(Ok(0), |w| w.write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.write_all(buf),
            None => Err(io::Error::other("write after commit")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.as_mut().map_or(Ok(()), |w| w.flush())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `dest` atomically (see [`AtomicFile`]).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(dest)?;
    file.write_all(bytes)?;
    file.commit()
}
