//! File output that is never half-written, and the memory map used to read inputs.

pub mod mmap;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file written under a temporary name in its destination folder, then fsynced and renamed over
/// the destination by [`AtomicFile::commit`]. Dropped without a commit, or when the commit fails
/// (a full disk often shows only when the buffer is flushed or the file synced), the temporary
/// file is removed, so the destination is always either absent, its previous complete content,
/// or the new complete content.
#[derive(Debug)]
pub struct AtomicFile {
    dest: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<File>>,
    /// Set once the temporary file has been renamed over the destination.
    renamed: bool,
    /// Removes the temporary file if the process is ended by an input truncated while mapped.
    _on_fault: mmap::RemoveOnFault,
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
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(file_name);
        prefix.push(".tmp-");
        remove_stale_temps(dest, &prefix);
        let mut temp_name = prefix;
        temp_name.push(format!("{}-{n}", std::process::id()));
        let temp = dest.with_file_name(temp_name);
        let on_fault = mmap::remove_on_fault(&temp);
        let file = File::create(&temp)?;
        Ok(AtomicFile {
            dest: dest.to_owned(),
            temp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
            renamed: false,
            _on_fault: on_fault,
        })
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
        self.renamed = true;
        if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable; not every file system supports syncing a folder.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Removes the temporary files of `dest` (names starting with `prefix`, then the writer's process
/// id) that runs killed before they could clean up left behind: those whose process is gone. Only
/// where `/proc` tells which processes are alive (Linux); elsewhere they stay, harmless.
fn remove_stale_temps(dest: &Path, prefix: &std::ffi::OsStr) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = fs::read_dir(dir) else { return };
    let prefix = prefix.to_string_lossy();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(pid) = name.strip_prefix(&*prefix).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_file(entry.path());
        }
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
        if let Some(writer) = self.writer.take() {
            // Close the file without flushing what is buffered: it is about to be removed.
            drop(writer.into_parts());
        }
        if !self.renamed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Checks, before long work, that `dest` can be written: creates its temporary file (as
/// [`AtomicFile`] does) and removes it again. Fails as writing would: a folder at `dest`, a missing
/// or read-only folder, no permission.
pub fn probe_writable(dest: &Path) -> io::Result<()> {
    AtomicFile::create(dest).map(drop)
}

/// Writes `bytes` to `dest` atomically (see [`AtomicFile`]).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(dest)?;
    file.write_all(bytes)?;
    file.commit()
}
