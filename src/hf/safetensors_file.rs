//! One safetensors file, memory-mapped and validated by the `safetensors` crate (header capped at
//! 100 MB, offsets covering the data exactly), with zero-copy access to each tensor's bytes.
//!
//! The header alone is read by [`header_len`] and [`parse_header`] from bytes, with the same
//! checks, so that a file on the hub can be listed from its first bytes (`hub::fetch_headers`).

use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::HfError;
use crate::io::mmap::{map_readonly, ReadOnlyMap};

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

/// The most bytes a safetensors header may have: the `safetensors` crate's own limit.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// The bytes before the header: its length, a little-endian u64.
pub const HEADER_LEN_BYTES: usize = 8;

/// A safetensors header: what the file holds, without the data.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The tensors, sorted by data offset (the order they are stored in).
    pub tensors: Vec<TensorEntry>,
    /// The `__metadata__` map, sorted by key.
    pub metadata: Vec<(String, String)>,
}

/// The header's length from the first [`HEADER_LEN_BYTES`] of a file; refused over
/// [`MAX_HEADER_BYTES`] (`HeaderTooLarge`) before anything reads that many bytes.
pub fn header_len(prefix: [u8; HEADER_LEN_BYTES]) -> Result<u64, SafeTensorError> {
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER_BYTES {
        return Err(SafeTensorError::HeaderTooLarge);
    }
    Ok(n)
}

/// Parses `json`, the header of a safetensors file of `file_len` bytes (the bytes after the
/// length prefix, as many as [`header_len`] says), with the checks `SafeTensors::deserialize`
/// makes: valid UTF-8 JSON, every tensor's offsets contiguous from 0 and matching its shape and
/// dtype, and the data ending exactly at the end of the file.
pub fn parse_header(json: &[u8], file_len: u64) -> Result<Header, SafeTensorError> {
    if json.len() as u64 > MAX_HEADER_BYTES {
        return Err(SafeTensorError::HeaderTooLarge);
    }
    let text = std::str::from_utf8(json).map_err(|_| SafeTensorError::InvalidHeader)?;
    let meta: Metadata = serde_json::from_str(text).map_err(|_| SafeTensorError::InvalidHeaderDeserialization)?;
    let mut tensors: Vec<_> = meta.tensors().into_iter().collect();
    tensors.sort_by(|(a_name, a), (b_name, b)| (a.data_offsets, a_name).cmp(&(b.data_offsets, b_name)));
    let mut end = 0usize;
    let mut entries = Vec::with_capacity(tensors.len());
    for (name, info) in tensors {
        let (start, stop) = info.data_offsets;
        if start != end || stop < start {
            return Err(SafeTensorError::InvalidOffset(name));
        }
        // Elements first, then bytes, as the crate counts (so the same shapes overflow).
        let n_bytes = info
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.size()))
            .ok_or(SafeTensorError::ValidationOverflow)?;
        if stop - start != n_bytes {
            return Err(SafeTensorError::TensorInvalidInfo);
        }
        end = stop;
        entries.push(TensorEntry { name, dtype: info.dtype, shape: info.shape.clone(), n_bytes });
    }
    let expected_len = (end as u64)
        .checked_add(HEADER_LEN_BYTES as u64 + json.len() as u64)
        .ok_or(SafeTensorError::ValidationOverflow)?;
    if expected_len != file_len {
        return Err(SafeTensorError::MetadataIncompleteBuffer);
    }
    let mut metadata: Vec<(String, String)> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    metadata.sort();
    Ok(Header { tensors: entries, metadata })
}

/// The header of `file`, the whole bytes of a safetensors file: its length prefix through
/// [`header_len`], then [`parse_header`]. Accepts exactly the files `SafeTensors::deserialize`
/// accepts.
pub fn read_header(file: &[u8]) -> Result<Header, SafeTensorError> {
    let prefix: [u8; HEADER_LEN_BYTES] =
        file.get(..HEADER_LEN_BYTES).and_then(|p| p.try_into().ok()).ok_or(SafeTensorError::HeaderTooSmall)?;
    let n = header_len(prefix)?;
    let json = usize::try_from(n)
        .ok()
        .and_then(|n| file.get(HEADER_LEN_BYTES..HEADER_LEN_BYTES.checked_add(n)?))
        .ok_or(SafeTensorError::InvalidHeaderLength)?;
    parse_header(json, file.len() as u64)
}

/// A safetensors file mapped into memory.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: ReadOnlyMap,
}

impl SafetensorsFile {
    /// Opens, maps and validates `path`.
    pub fn open(path: &Path) -> Result<SafetensorsFile, HfError> {
        let io_err = |source| HfError::Io { path: path.to_owned(), source };
        let file = File::open(path).map_err(io_err)?;
        let map = map_readonly(&file, path).map_err(io_err)?;
        let st = SafetensorsFile { path: path.to_owned(), map };
        st.view()?;
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

    /// The header, parsed from the mapped bytes by [`read_header`].
    pub fn header(&self) -> Result<Header, HfError> {
        read_header(&self.map).map_err(|source| HfError::Safetensors { path: self.path.clone(), source })
    }

    /// The tensors, sorted by data offset (the order they are stored in).
    pub fn tensors(&self) -> Result<Vec<TensorEntry>, HfError> {
        Ok(self.header()?.tensors)
    }

    /// Lets the pages of `data` (a slice of this file's view) leave memory: see
    /// [`crate::io::mmap::ReadOnlyMap::release`]. Converters call it once a tensor is done.
    pub fn release(&self, data: &[u8]) {
        self.map.release(data);
    }

    /// The `__metadata__` map of the header, sorted by key (empty if there is none).
    pub fn metadata(&self) -> Result<Vec<(String, String)>, HfError> {
        Ok(self.header()?.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file: the length prefix, `json`, then `data_len` zero bytes.
    fn file_of(json: &str, data_len: usize) -> Vec<u8> {
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.resize(bytes.len() + data_len, 0);
        bytes
    }

    #[test]
    fn parses_a_header_in_data_order_like_the_crate() {
        let json = r#"{"__metadata__": {"format": "pt"}, "b": {"dtype": "F32", "shape": [2, 3], "data_offsets": [4, 28]}, "a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}"#;
        let file = file_of(json, 28);
        let header = read_header(&file).unwrap();
        let names: Vec<&str> = header.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            (header.tensors[1].dtype, header.tensors[1].shape.clone(), header.tensors[1].n_bytes),
            (Dtype::F32, vec![2, 3], 24)
        );
        assert_eq!(header.metadata, [("format".to_owned(), "pt".to_owned())]);
        let view = SafeTensors::deserialize(&file).unwrap();
        assert_eq!(view.tensor("b").unwrap().data().len(), header.tensors[1].n_bytes);
    }

    #[test]
    fn refuses_what_the_crate_refuses() {
        type IsExpected = fn(&SafeTensorError) -> bool;
        let cases: &[(&str, usize, IsExpected)] = &[
            // A gap before the first tensor.
            (
                r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
                8,
                |e| matches!(e, SafeTensorError::InvalidOffset(n) if n == "a"),
            ),
            // Offsets that disagree with the shape.
            (r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#, 4, |e| {
                matches!(e, SafeTensorError::TensorInvalidInfo)
            }),
            // Data past the last tensor.
            (r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, 12, |e| {
                matches!(e, SafeTensorError::MetadataIncompleteBuffer)
            }),
            // Elements that overflow.
            (r#"{"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}"#, 4, |e| {
                matches!(e, SafeTensorError::ValidationOverflow)
            }),
            // Not JSON of tensors.
            (r#"{"a": 1}"#, 0, |e| matches!(e, SafeTensorError::InvalidHeaderDeserialization)),
        ];
        for (json, data_len, is_expected) in cases {
            let file = file_of(json, *data_len);
            let err = read_header(&file).unwrap_err();
            assert!(is_expected(&err), "{json}: {err:?}");
            assert!(SafeTensors::deserialize(&file).is_err(), "the crate accepts {json}");
        }
        let mut bad_utf8 = file_of("{}", 0);
        bad_utf8[HEADER_LEN_BYTES] = 0xff;
        assert!(matches!(read_header(&bad_utf8), Err(SafeTensorError::InvalidHeader)));
    }

    #[test]
    fn refuses_a_header_length_over_the_cap_from_the_prefix_alone() {
        assert_eq!(header_len(MAX_HEADER_BYTES.to_le_bytes()).unwrap(), MAX_HEADER_BYTES);
        assert!(matches!(header_len((MAX_HEADER_BYTES + 1).to_le_bytes()), Err(SafeTensorError::HeaderTooLarge)));
        assert!(matches!(header_len(u64::MAX.to_le_bytes()), Err(SafeTensorError::HeaderTooLarge)));
    }
}
