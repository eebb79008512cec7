//! Errors from reading and writing GGUF files: every error names the field and the byte offset.

use std::fmt;

use super::types::{GgmlType, ValueType};

/// Which part of the file an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// The four magic bytes `GGUF`.
    Magic,
    /// The format version.
    Version,
    /// The number of tensors in the header.
    TensorCount,
    /// The number of metadata key-value pairs in the header.
    KvCount,
    /// The key of metadata pair `index`.
    KvKey { index: u64 },
    /// The value (or its type) of metadata key `key`.
    KvValue { key: String },
    /// The name of tensor info `index`.
    TensorName { index: u64 },
    /// The dimensions of tensor `name`.
    TensorDims { name: String },
    /// The ggml type of tensor `name`.
    TensorType { name: String },
    /// The data offset of tensor `name`.
    TensorOffset { name: String },
    /// The data of tensor `name`.
    TensorData { name: String },
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Magic => write!(f, "magic"),
            Field::Version => write!(f, "version"),
            Field::TensorCount => write!(f, "tensor count"),
            Field::KvCount => write!(f, "metadata count"),
            Field::KvKey { index } => write!(f, "key of metadata pair {index}"),
            Field::KvValue { key } => write!(f, "value of key '{key}'"),
            Field::TensorName { index } => write!(f, "name of tensor {index}"),
            Field::TensorDims { name } => write!(f, "dimensions of tensor '{name}'"),
            Field::TensorType { name } => write!(f, "type of tensor '{name}'"),
            Field::TensorOffset { name } => write!(f, "offset of tensor '{name}'"),
            Field::TensorData { name } => write!(f, "data of tensor '{name}'"),
        }
    }
}

/// What was wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufErrorKind {
    #[error("file ends early: needed {needed} bytes, {available} left")]
    Truncated { needed: u64, available: u64 },
    #[error("expected magic 'GGUF', found {found:?}")]
    BadMagic { found: [u8; 4] },
    #[error("version {version} is not supported (expected 2 or 3)")]
    UnsupportedVersion { version: u32 },
    #[error(
        "count {count} cannot fit in the {remaining} bytes that remain (each entry takes at least {min_entry_size})"
    )]
    CountTooLarge { count: u64, remaining: u64, min_entry_size: u64 },
    #[error("string of {len} bytes is longer than the {remaining} bytes that remain")]
    StringTooLong { len: u64, remaining: u64 },
    #[error("string is not valid UTF-8 (first bad byte at string offset {valid_up_to})")]
    InvalidUtf8 { valid_up_to: usize },
    #[error("key is empty")]
    EmptyKey,
    #[error("duplicate key '{key}'")]
    DuplicateKey { key: String },
    #[error("unknown value type id {id} (expected 0..=12)")]
    UnknownValueType { id: u32 },
    #[error("arrays nested {depth} deep (at most {max} allowed)")]
    NestingTooDeep { depth: usize, max: usize },
    #[error("'general.alignment' has type {found}, expected u32")]
    AlignmentWrongType { found: ValueType },
    #[error("alignment {alignment} is not a power of two")]
    AlignmentNotPowerOfTwo { alignment: u64 },
    #[error("name is {len} bytes long, at most {max} allowed")]
    NameTooLong { len: usize, max: usize },
    #[error("duplicate tensor name")]
    DuplicateTensorName,
    #[error("{n_dims} dimensions, at most {max} allowed")]
    TooManyDims { n_dims: u32, max: u32 },
    #[error("dimensions {ne:?} give more elements than fit in an i64")]
    ElementCountOverflow { ne: Vec<u64> },
    #[error("unknown ggml type id {id}")]
    UnknownTensorType { id: u32 },
    #[error("row length {ne0} is not a multiple of the {ty} block size {block_size}")]
    RowNotBlockMultiple { ne0: u64, ty: GgmlType, block_size: u64 },
    #[error("offset {offset} is not a multiple of alignment {alignment}")]
    OffsetMisaligned { offset: u64, alignment: u64 },
    #[error("data ends at byte {end}, past the end of the file ({file_len} bytes)")]
    DataPastEnd { end: u64, file_len: u64 },
    #[error("data overlaps tensor '{other}'")]
    DataOverlap { other: String },
}

/// An error reading a GGUF file: the byte offset where it was found, the field, and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufError {
    /// Byte offset from the start of the file.
    pub offset: u64,
    /// The field being read.
    pub field: Field,
    /// What was wrong.
    pub kind: GgufErrorKind,
}

impl GgufError {
    /// What was wrong, for matching in callers and tests.
    pub fn kind(&self) -> &GgufErrorKind {
        &self.kind
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {:#x}: {}: {}", self.offset, self.field, self.kind)
    }
}

impl std::error::Error for GgufError {}

/// An error building or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufWriteError {
    #[error("duplicate key '{key}'")]
    DuplicateKey { key: String },
    #[error("duplicate tensor name '{name}'")]
    DuplicateTensor { name: String },
    #[error("tensor name '{name}' is {len} bytes long, at most {max} allowed")]
    NameTooLong { name: String, len: usize, max: usize },
    #[error("tensor '{name}' has {n_dims} dimensions, 1..={max} allowed")]
    BadDims { name: String, n_dims: usize, max: usize },
    #[error("tensor '{name}': row length {ne0} is not a multiple of the {ty} block size {block_size}")]
    RowNotBlockMultiple { name: String, ne0: u64, ty: GgmlType, block_size: u64 },
    #[error("tensor '{name}' is too large: its size overflows")]
    SizeOverflow { name: String },
    #[error("'general.alignment' must be a power of two, found {alignment}")]
    BadAlignment { alignment: u64 },
    #[error("'general.alignment' must have type u32, found {found}")]
    AlignmentWrongType { found: ValueType },
    #[error("expected data for tensor '{expected}', got data for '{found}'")]
    OutOfOrder { expected: String, found: String },
    #[error("tensor '{name}': expected {expected} bytes of data, got {found}")]
    WrongSize { name: String, expected: u64, found: u64 },
    #[error("no tensor is open for data (all {count} tensors written, or start_tensor not called)")]
    NoOpenTensor { count: usize },
    #[error("{missing} of {count} tensors have no data yet; the first is '{first}'")]
    Incomplete { missing: usize, count: usize, first: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
