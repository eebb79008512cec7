//! GGUF, the file format of llama.cpp and Ollama, in pure Rust (no ggml needed).
//!
//! Layout (little-endian): magic `GGUF`, version u32 (2 or 3), tensor count u64, metadata count
//! u64, the metadata pairs (key string, value type u32, value), the tensor infos (name, n_dims
//! u32, `ne` u64 × n_dims, ggml type u32, data offset u64), padding to `general.alignment`
//! (default 32), then the data section, each tensor at an aligned offset. Strings are a u64 length
//! and UTF-8 bytes; arrays are an element type u32, a count u64 and the elements.
//!
//! [`parse`] validates a file held in memory; [`GgufFile`] maps one from disk. [`GgufPlan`] and
//! [`GgufWriter`] write one, streaming tensor data and renaming the file into place when complete.

mod error;
mod read;
mod types;
mod value;
mod write;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::{Field, GgufError, GgufErrorKind, GgufWriteError};
pub use read::{
    parse, Gguf, TensorInfo, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_NESTING, MAX_DIMS, MAX_NAME_LEN,
};
pub use types::{GgmlType, ValueType};
pub use value::{ArrayIter, ArrayRef, MetaArray, MetaValue, Value};
pub use write::{GgufPlan, GgufWriter, PlannedTensor};

use crate::io::mmap::{map_readonly, ReadOnlyMap};

/// An error opening a GGUF file: which file, and what went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufFileError {
    #[error("{}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}", path.display())]
    Format { path: PathBuf, source: GgufError },
}

/// A GGUF file mapped into memory and validated once; [`GgufFile::gguf`] hands out the index.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: ReadOnlyMap,
    /// A plan's stand-in ([`GgufFile::planned`]), not a file: its pages must never be released.
    planned: bool,
}

impl GgufFile {
    /// Opens, maps and validates `path`.
    pub fn open(path: &Path) -> Result<GgufFile, GgufFileError> {
        let io_err = |source| GgufFileError::Io { path: path.to_owned(), source };
        let file = File::open(path).map_err(io_err)?;
        let map = map_readonly(&file, path).map_err(io_err)?;
        let gguf_file = GgufFile { path: path.to_owned(), map, planned: false };
        gguf_file.gguf()?;
        Ok(gguf_file)
    }

    /// The file `plan` describes, with zeros for every tensor's data, held in memory without
    /// costing any (see [`crate::io::mmap::map_zeroed_with_prefix`]) and labelled `label` in
    /// messages. Graphs can be built and their memory measured on it before the real file exists.
    pub fn planned(plan: &GgufPlan, label: &str) -> Result<GgufFile, GgufFileError> {
        let path = PathBuf::from(label);
        let io_err = |source| GgufFileError::Io { path: path.clone(), source };
        let too_big = || io_err(std::io::Error::new(std::io::ErrorKind::OutOfMemory, "larger than the address space"));
        let header = plan.header_bytes().map_err(|_| too_big())?;
        let len = usize::try_from(plan.file_size()).map_err(|_| too_big())?;
        let map = crate::io::mmap::map_zeroed_with_prefix(&header, len).map_err(io_err)?;
        let gguf_file = GgufFile { path, map, planned: true };
        gguf_file.gguf()?;
        Ok(gguf_file)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets the pages of `data`, a slice of this file (a tensor's data), leave memory once used.
    pub fn release(&self, data: &[u8]) {
        if !self.planned {
            self.map.release(data);
        }
    }

    /// The whole file's bytes (the mapping).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The parsed index, borrowing the mapped bytes.
    pub fn gguf(&self) -> Result<Gguf<'_>, GgufFileError> {
        parse(&self.map).map_err(|source| GgufFileError::Format { path: self.path.clone(), source })
    }
}
