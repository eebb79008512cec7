//! One safetensors file, memory-mapped and validated by the `safetensors` crate (header capped at
//! 100 MB, offsets covering the data exactly), with zero-copy access to each tensor's bytes.

use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::HfError;
use crate::io::mmap::{map_readonly, Mmap};

/// A tensor's entry in a safetensors header. `shape` is outermost first (PyTorch order).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    /// The tensor's name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Size of the data in bytes.
    pub n_bytes: usize,
}

/// A safetensors file mapped into memory.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: Mmap,
}

impl SafetensorsFile {
    /// Opens, maps and validates `path`.
    pub fn open(path: &Path) -> Result<SafetensorsFile, HfError> {
        let io_err = |source| HfError::Io { path: path.to_owned(), source };
        let file = File::open(path).map_err(io_err)?;
        let map = map_readonly(&file).map_err(io_err)?;
        let st = SafetensorsFile { path: path.to_owned(), map };
        st.tensors()?;
        Ok(st)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated view of the file.
    pub fn view(&self) -> Result<SafeTensors<'_>, HfError> {
        SafeTensors::deserialize(&self.map).map_err(|source| HfError::Safetensors { path: self.path.clone(), source })
    }

    /// The tensors, sorted by data offset (the order they are stored in).
    pub fn tensors(&self) -> Result<Vec<TensorEntry>, HfError> {
        let view = self.view()?;
        let mut entries: Vec<(usize, TensorEntry)> = Vec::new();
        let base = self.map.as_ptr() as usize;
        for (name, t) in view.tensors() {
            let start = t.data().as_ptr() as usize - base;
            entries.push((
                start,
                TensorEntry { name, dtype: t.dtype(), shape: t.shape().to_vec(), n_bytes: t.data().len() },
            ));
        }
        entries.sort_by_key(|(start, _)| *start);
        Ok(entries.into_iter().map(|(_, e)| e).collect())
    }

    /// Lets the pages of `data` (a slice of this file's view) leave memory: see
    /// [`crate::io::mmap::release`]. Converters call it once a tensor is done.
    pub fn release(&self, data: &[u8]) {
        crate::io::mmap::release(&self.map, data);
    }

    /// The `__metadata__` map of the header, if any.
    pub fn metadata(&self) -> Result<Vec<(String, String)>, HfError> {
        let (_, meta) = SafeTensors::read_metadata(&self.map)
            .map_err(|source| HfError::Safetensors { path: self.path.clone(), source })?;
        let mut out: Vec<(String, String)> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
        out.sort();
        Ok(out)
    }
}
