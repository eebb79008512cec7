//! The GGUF writer: plan every key, tensor and offset first, then stream tensor data one tensor at
//! a time into a temporary file that is renamed into place when complete.

use std::io::Write;
use std::path::Path;

use super::error::GgufWriteError;
use super::read::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, MAX_NAME_LEN};
use super::types::GgmlType;
use super::value::{MetaArray, MetaValue};
use crate::io::AtomicFile;

/// A tensor in a [`GgufPlan`]: name, type, `ne` and where its data goes.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    /// The tensor's name.
    pub name: String,
    /// Storage type.
    pub ty: GgmlType,
    /// Elements per dimension, innermost first.
    pub ne: Vec<u64>,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

/// Everything about a GGUF file except its tensor data: the metadata, the tensor table, and each
/// tensor's offset. Output is deterministic: keys and tensors are written in insertion order.
#[derive(Clone, Debug)]
pub struct GgufPlan {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PlannedTensor>,
    alignment: u64,
    data_size: u64,
}

impl Default for GgufPlan {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufPlan {
    /// An empty version-3 plan with the default alignment of 32.
    pub fn new() -> GgufPlan {
        GgufPlan { metadata: Vec::new(), tensors: Vec::new(), alignment: DEFAULT_ALIGNMENT, data_size: 0 }
    }

    /// Adds a metadata pair. Setting `general.alignment` (a u32 power of two) changes the alignment
    /// of the data section; it must be set before any tensor is added.
    pub fn add_kv(&mut self, key: &str, value: impl Into<MetaValue>) -> Result<(), GgufWriteError> {
        let value = value.into();
        if self.metadata.iter().any(|(k, _)| k == key) {
            return Err(GgufWriteError::DuplicateKey { key: key.to_owned() });
        }
        if key == ALIGNMENT_KEY {
            let MetaValue::U32(a) = value else {
                return Err(GgufWriteError::AlignmentWrongType { found: value.value_type() });
            };
            if !a.is_power_of_two() {
                return Err(GgufWriteError::BadAlignment { alignment: u64::from(a) });
            }
            self.alignment = u64::from(a);
        }
        self.metadata.push((key.to_owned(), value));
        Ok(())
    }

    /// Adds a tensor with type `ty` and dimensions `ne` (innermost first); its data comes later, in
    /// the order tensors were added.
    pub fn add_tensor(&mut self, name: &str, ty: GgmlType, ne: &[u64]) -> Result<&PlannedTensor, GgufWriteError> {
        if name.len() > MAX_NAME_LEN {
            return Err(GgufWriteError::NameTooLong { name: name.to_owned(), len: name.len(), max: MAX_NAME_LEN });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufWriteError::DuplicateTensor { name: name.to_owned() });
        }
        if ne.is_empty() || ne.len() > MAX_DIMS as usize {
            return Err(GgufWriteError::BadDims { name: name.to_owned(), n_dims: ne.len(), max: MAX_DIMS as usize });
        }
        if ne[0] % ty.block_size() != 0 {
            return Err(GgufWriteError::RowNotBlockMultiple {
                name: name.to_owned(),
                ne0: ne[0],
                ty,
                block_size: ty.block_size(),
            });
        }
        let overflow = || GgufWriteError::SizeOverflow { name: name.to_owned() };
        let n_elements = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&n| n <= i64::MAX as u64);
        let n_bytes = n_elements.ok_or_else(overflow)? / ty.block_size() * ty.type_size();
        let offset = self.data_size;
        self.data_size = offset.checked_add(n_bytes).map(|end| align_up(end, self.alignment)).ok_or_else(overflow)?;
        self.tensors.push(PlannedTensor { name: name.to_owned(), ty, ne: ne.to_vec(), offset, n_bytes });
        Ok(self.tensors.last().expect("pushed just above"))
    }

    /// The tensors in file order.
    pub fn tensors(&self) -> &[PlannedTensor] {
        &self.tensors
    }

    /// The metadata in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// Size of everything before the data section, padding included (ggml's `gguf_get_meta_size`).
    pub fn meta_size(&self) -> u64 {
        let mut n = 4 + 4 + 8 + 8;
        for (key, value) in &self.metadata {
            n += 8 + key.len() as u64 + 4 + value_size(value);
        }
        for t in &self.tensors {
            n += 8 + t.name.len() as u64 + 4 + 8 * t.ne.len() as u64 + 4 + 8;
        }
        align_up(n, self.alignment)
    }

    /// Everything before the data section, padding included: the bytes a file of this plan
    /// starts with.
    pub fn header_bytes(&self) -> Result<Vec<u8>, GgufWriteError> {
        let mut header = Vec::with_capacity(usize::try_from(self.meta_size()).unwrap_or(0));
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut header, key);
            header.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut header, value);
        }
        for t in &self.tensors {
            put_string(&mut header, &t.name);
            header.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ty.id().to_le_bytes());
            header.extend_from_slice(&t.offset.to_le_bytes());
        }
        let padded = usize::try_from(self.meta_size())
            .map_err(|_| GgufWriteError::SizeOverflow { name: "(header)".to_owned() })?;
        debug_assert!(padded >= header.len(), "meta_size() counts every byte written above");
        header.resize(padded, 0);
        Ok(header)
    }

    /// Size of the whole file this plan describes.
    pub fn file_size(&self) -> u64 {
        self.meta_size() + self.data_size
    }
}

fn align_up(n: u64, alignment: u64) -> u64 {
    n.div_ceil(alignment) * alignment
}

fn value_size(value: &MetaValue) -> u64 {
    match value {
        MetaValue::String(s) => 8 + s.len() as u64,
        MetaValue::Array(a) => array_size(a),
        other => other.value_type().min_disk_size(),
    }
}

fn array_size(array: &MetaArray) -> u64 {
    let elems = match array {
        MetaArray::String(v) => v.iter().map(|s| 8 + s.len() as u64).sum(),
        MetaArray::Array(v) => v.iter().map(array_size).sum(),
        other => other.len() as u64 * other.elem_type().min_disk_size(),
    };
    4 + 8 + elems
}

/// Streams a [`GgufPlan`]'s file: header first, then each tensor's data in plan order, then an
/// fsync and a rename. Dropped before [`GgufWriter::finish`], it leaves nothing behind.
#[derive(Debug)]
pub struct GgufWriter {
    file: AtomicFile,
    plan: GgufPlan,
    /// Index of the tensor being written (or next to write).
    current: usize,
    /// Bytes of the current tensor written so far.
    written: u64,
    /// Bytes written since the start of the data section.
    position: u64,
}

impl GgufWriter {
    /// Creates the temporary output next to `path` and writes the header and tensor table.
    pub fn create(path: &Path, plan: GgufPlan) -> Result<GgufWriter, GgufWriteError> {
        let mut file = AtomicFile::create(path)?;
        let header = plan.header_bytes()?;
        file.write_all(&header)?;
        Ok(GgufWriter { file, plan, current: 0, written: 0, position: 0 })
    }

    /// Appends a chunk of data for tensor `name`, which must be the next tensor in plan order (or
    /// the one being written). Chunks of one tensor may come in any number of calls.
    pub fn write_chunk(&mut self, name: &str, chunk: &[u8]) -> Result<(), GgufWriteError> {
        let count = self.plan.tensors.len();
        let tensor = self.plan.tensors.get(self.current).ok_or(GgufWriteError::NoOpenTensor { count })?;
        if tensor.name != name {
            return Err(GgufWriteError::OutOfOrder { expected: tensor.name.clone(), found: name.to_owned() });
        }
        let total = self.written + chunk.len() as u64;
        if total > tensor.n_bytes {
            return Err(GgufWriteError::WrongSize { name: name.to_owned(), expected: tensor.n_bytes, found: total });
        }
        self.file.write_all(chunk)?;
        self.written = total;
        self.position += chunk.len() as u64;
        if self.written == tensor.n_bytes {
            self.end_tensor()?;
        }
        Ok(())
    }

    /// Writes the whole data of tensor `name` (the next in plan order).
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufWriteError> {
        let count = self.plan.tensors.len();
        let tensor = self.plan.tensors.get(self.current).ok_or(GgufWriteError::NoOpenTensor { count })?;
        if tensor.name == name && data.len() as u64 != tensor.n_bytes - self.written {
            return Err(GgufWriteError::WrongSize {
                name: name.to_owned(),
                expected: tensor.n_bytes,
                found: self.written + data.len() as u64,
            });
        }
        if tensor.n_bytes == 0 && tensor.name == name {
            return self.end_tensor();
        }
        self.write_chunk(name, data)
    }

    fn end_tensor(&mut self) -> Result<(), GgufWriteError> {
        let padding = align_up(self.position, self.plan.alignment) - self.position;
        self.file.write_all(&vec![0u8; usize::try_from(padding).unwrap_or(0)])?;
        self.position += padding;
        self.current += 1;
        self.written = 0;
        Ok(())
    }

    /// The plan being written.
    pub fn plan(&self) -> &GgufPlan {
        &self.plan
    }

    /// Checks every tensor was written, then flushes, fsyncs and renames the file into place.
    pub fn finish(self) -> Result<(), GgufWriteError> {
        let count = self.plan.tensors.len();
        if self.current < count {
            return Err(GgufWriteError::Incomplete {
                missing: count - self.current,
                count,
                first: self.plan.tensors[self.current].name.clone(),
            });
        }
        self.file.commit()?;
        Ok(())
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.push(*v),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::String(s) => put_string(out, s),
        MetaValue::Array(a) => put_array(out, a),
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, array: &MetaArray) {
    out.extend_from_slice(&array.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    macro_rules! each_le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match array {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each_le!(v),
        MetaArray::U16(v) => each_le!(v),
        MetaArray::I16(v) => each_le!(v),
        MetaArray::U32(v) => each_le!(v),
        MetaArray::I32(v) => each_le!(v),
        MetaArray::F32(v) => each_le!(v),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| put_string(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        MetaArray::U64(v) => each_le!(v),
        MetaArray::I64(v) => each_le!(v),
        MetaArray::F64(v) => each_le!(v),
    }
}
