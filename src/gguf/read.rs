//! The GGUF parser: `&[u8]` in, a validated [`Gguf`] index out, with zero-copy access to metadata
//! strings and tensor data.
//!
//! Every count is checked against the bytes that remain before it is used, and every offset with
//! checked arithmetic, so a hostile file yields a [`GgufError`] naming the field and byte offset,
//! never a panic or an allocation the file's size cannot justify.

use std::collections::HashMap;

use super::error::{Field, GgufError, GgufErrorKind};
use super::types::{GgmlType, ValueType};
use super::value::{ArrayRef, Value};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// Longest tensor name ggml can hold (`GGML_MAX_NAME` is 64 including the NUL).
pub const MAX_NAME_LEN: usize = 63;
/// Deepest nesting of arrays we accept (llama.cpp accepts none; the format allows them).
pub const MAX_ARRAY_NESTING: usize = 8;

/// A parsed GGUF file: header, metadata, tensor infos, and the bytes they index.
#[derive(Clone, Debug)]
pub struct Gguf<'a> {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(&'a str, Value<'a>)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo<'a>>,
    /// Alignment of the data section and of each tensor's offset.
    pub alignment: u64,
    /// Byte offset of the data section from the start of the file.
    pub data_offset: u64,
    bytes: &'a [u8],
}

/// One tensor's entry in the index.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo<'a> {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: &'a str,
    /// Elements per dimension, innermost first (ggml's `ne`; `ne[0]` is the row length).
    pub ne: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Offset of the data, relative to the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo<'_> {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        // Cannot overflow: the parser checked that the product fits in an i64.
        self.ne.iter().product()
    }
}

impl<'a> Gguf<'a> {
    /// The value of metadata key `key`, if present.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.metadata.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The string value of `key`, if present and a string.
    pub fn get_str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(|v| v.as_str())
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo<'a>> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's data: a slice of the parsed bytes, checked to lie inside them when parsed.
    pub fn tensor_data(&self, info: &TensorInfo<'_>) -> &'a [u8] {
        let start = self.data_offset + info.offset;
        let end = start + info.n_bytes;
        // Both conversions and the range were validated by `parse` for every tensor in the index;
        // an info from another file would be a caller bug, so fall back to an empty slice.
        match (usize::try_from(start), usize::try_from(end)) {
            (Ok(s), Ok(e)) => self.bytes.get(s..e).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Size of the whole file in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// A little-endian reader over a byte slice that knows its offset.
#[derive(Clone, Debug)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the file, for error messages.
    base: u64,
}

/// What went wrong reading a primitive, before the field is known.
type Fail = (u64, GgufErrorKind);

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0, base: 0 }
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], Fail> {
        let available = self.remaining();
        let truncated = (self.offset(), GgufErrorKind::Truncated { needed: n, available });
        if n > available {
            return Err(truncated);
        }
        let n = usize::try_from(n).map_err(|_| truncated.clone())?;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Fail> {
        let bytes = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, Fail> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Fail> {
        self.array().map(u64::from_le_bytes)
    }

    /// A u64 length-prefixed UTF-8 string.
    fn string(&mut self) -> Result<&'a str, Fail> {
        let at = self.offset();
        let len = self.u64()?;
        if len > self.remaining() {
            return Err((at, GgufErrorKind::StringTooLong { len, remaining: self.remaining() }));
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|e| (at, GgufErrorKind::InvalidUtf8 { valid_up_to: e.valid_up_to() }))
    }

    /// A count of entries that each take at least `min_entry_size` bytes, checked against what remains.
    fn count(&mut self, min_entry_size: u64) -> Result<u64, Fail> {
        let at = self.offset();
        let count = self.u64()?;
        let remaining = self.remaining();
        if count.checked_mul(min_entry_size).is_none_or(|need| need > remaining) {
            return Err((at, GgufErrorKind::CountTooLarge { count, remaining, min_entry_size }));
        }
        Ok(count)
    }

    /// A value of type `ty` at nesting depth `depth` (0 for a top-level value).
    pub(crate) fn value_of_type(&mut self, ty: ValueType, depth: usize, max_depth: usize) -> Result<Value<'a>, Fail> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array()?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ValueType::Bool => Value::Bool(self.array::<1>()?[0] != 0),
            ValueType::String => Value::String(self.string()?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            ValueType::Array => {
                let depth = depth + 1;
                if depth > max_depth {
                    return Err((self.offset(), GgufErrorKind::NestingTooDeep { depth, max: max_depth }));
                }
                let elem_type = self.value_type()?;
                let len = self.count(elem_type.min_disk_size())?;
                let start = self.pos;
                for _ in 0..len {
                    self.value_of_type(elem_type, depth, max_depth)?;
                }
                Value::Array(ArrayRef { elem_type, len, bytes: &self.buf[start..self.pos], depth })
            }
        })
    }

    fn value_type(&mut self) -> Result<ValueType, Fail> {
        let at = self.offset();
        let id = self.u32()?;
        ValueType::from_id(id).ok_or((at, GgufErrorKind::UnknownValueType { id }))
    }
}

/// Attaches the field to a failure.
fn at(field: Field) -> impl FnOnce(Fail) -> GgufError {
    move |(offset, kind)| GgufError { offset, field, kind }
}

/// Parses and validates a whole GGUF file held in memory (usually a memory map).
///
/// Validation covers: magic and version (2 or 3), counts against the remaining bytes, UTF-8 of every
/// string, unique non-empty keys, value types, array nesting, `general.alignment` (a u32 power of
/// two), unique tensor names of at most 63 bytes, 1..=4 dimensions whose product fits an i64, known
/// tensor types, rows that are whole blocks, aligned offsets, data inside the file, and no two
/// tensors' data overlapping.
pub fn parse(bytes: &[u8]) -> Result<Gguf<'_>, GgufError> {
    let mut c = Cursor::new(bytes);

    let magic: [u8; 4] = c.array().map_err(at(Field::Magic))?;
    if magic != MAGIC {
        return Err(GgufError { offset: 0, field: Field::Magic, kind: GgufErrorKind::BadMagic { found: magic } });
    }
    let version = c.u32().map_err(at(Field::Version))?;
    if !(2..=3).contains(&version) {
        return Err(GgufError {
            offset: 4,
            field: Field::Version,
            kind: GgufErrorKind::UnsupportedVersion { version },
        });
    }
    // A tensor info takes at least: name length (8), n_dims (4), one dim (8), type (4), offset (8).
    let tensor_count = c.count(32).map_err(at(Field::TensorCount))?;
    // A key-value pair takes at least: key length (8) + one key byte + value type (4) + a u8.
    let kv_count = c.count(14).map_err(at(Field::KvCount))?;

    let mut metadata: Vec<(&str, Value<'_>)> = Vec::new();
    let mut seen_keys: HashMap<&str, ()> = HashMap::new();
    for index in 0..kv_count {
        let key_at = c.offset();
        let key = c.string().map_err(at(Field::KvKey { index }))?;
        let key_field = || Field::KvKey { index };
        if key.is_empty() {
            return Err(GgufError { offset: key_at, field: key_field(), kind: GgufErrorKind::EmptyKey });
        }
        if seen_keys.insert(key, ()).is_some() {
            return Err(GgufError {
                offset: key_at,
                field: key_field(),
                kind: GgufErrorKind::DuplicateKey { key: key.to_owned() },
            });
        }
        let value_field = || Field::KvValue { key: key.to_owned() };
        let ty = c.value_type().map_err(|e| at(value_field())(e))?;
        let value = c.value_of_type(ty, 0, MAX_ARRAY_NESTING).map_err(|e| at(value_field())(e))?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| *k == ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) => u64::from(*a),
        Some((_, other)) => {
            return Err(GgufError {
                offset: c.offset(),
                field: Field::KvValue { key: ALIGNMENT_KEY.to_owned() },
                kind: GgufErrorKind::AlignmentWrongType { found: other.value_type() },
            })
        }
    };
    if !alignment.is_power_of_two() {
        return Err(GgufError {
            offset: c.offset(),
            field: Field::KvValue { key: ALIGNMENT_KEY.to_owned() },
            kind: GgufErrorKind::AlignmentNotPowerOfTwo { alignment },
        });
    }

    let mut tensors = Vec::new();
    let mut seen_names: HashMap<&str, ()> = HashMap::new();
    for index in 0..tensor_count {
        tensors.push(parse_tensor_info(&mut c, index, alignment, &mut seen_names)?);
    }

    // The data section starts at the next multiple of the alignment.
    let header_end = c.offset();
    let data_offset = header_end.div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    if !tensors.is_empty() && data_offset > file_len {
        return Err(GgufError {
            offset: header_end,
            field: Field::TensorData { name: tensors[0].name.to_owned() },
            kind: GgufErrorKind::Truncated { needed: data_offset - header_end, available: file_len - header_end },
        });
    }
    check_data_ranges(&tensors, data_offset, file_len)?;

    Ok(Gguf { version, metadata, tensors, alignment, data_offset, bytes })
}

fn parse_tensor_info<'a>(
    c: &mut Cursor<'a>,
    index: u64,
    alignment: u64,
    seen_names: &mut HashMap<&'a str, ()>,
) -> Result<TensorInfo<'a>, GgufError> {
    let name_at = c.offset();
    let name = c.string().map_err(at(Field::TensorName { index }))?;
    if name.len() > MAX_NAME_LEN {
        return Err(GgufError {
            offset: name_at,
            field: Field::TensorName { index },
            kind: GgufErrorKind::NameTooLong { len: name.len(), max: MAX_NAME_LEN },
        });
    }
    if seen_names.insert(name, ()).is_some() {
        return Err(GgufError {
            offset: name_at,
            field: Field::TensorName { index },
            kind: GgufErrorKind::DuplicateTensorName,
        });
    }

    let dims_field = || Field::TensorDims { name: name.to_owned() };
    let dims_at = c.offset();
    let n_dims = c.u32().map_err(|e| at(dims_field())(e))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError {
            offset: dims_at,
            field: dims_field(),
            kind: GgufErrorKind::TooManyDims { n_dims, max: MAX_DIMS },
        });
    }
    let mut ne = Vec::with_capacity(MAX_DIMS as usize);
    for _ in 0..n_dims {
        ne.push(c.u64().map_err(|e| at(dims_field())(e))?);
    }
    let n_elements = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= i64::MAX as u64);
    let Some(n_elements) = n_elements else {
        return Err(GgufError {
            offset: dims_at,
            field: dims_field(),
            kind: GgufErrorKind::ElementCountOverflow { ne },
        });
    };

    let type_field = || Field::TensorType { name: name.to_owned() };
    let type_at = c.offset();
    let type_id = c.u32().map_err(|e| at(type_field())(e))?;
    let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError {
        offset: type_at,
        field: type_field(),
        kind: GgufErrorKind::UnknownTensorType { id: type_id },
    })?;
    if ne[0] % ty.block_size() != 0 {
        return Err(GgufError {
            offset: type_at,
            field: type_field(),
            kind: GgufErrorKind::RowNotBlockMultiple { ne0: ne[0], ty, block_size: ty.block_size() },
        });
    }
    // n_elements <= i64::MAX and type_size <= 292, so this cannot overflow a u64... but check anyway.
    let n_bytes = (n_elements / ty.block_size()).checked_mul(ty.type_size()).ok_or_else(|| GgufError {
        offset: dims_at,
        field: dims_field(),
        kind: GgufErrorKind::ElementCountOverflow { ne: ne.clone() },
    })?;

    let offset_field = || Field::TensorOffset { name: name.to_owned() };
    let offset_at = c.offset();
    let offset = c.u64().map_err(|e| at(offset_field())(e))?;
    if offset % alignment != 0 {
        return Err(GgufError {
            offset: offset_at,
            field: offset_field(),
            kind: GgufErrorKind::OffsetMisaligned { offset, alignment },
        });
    }
    Ok(TensorInfo { name, ne, ty, offset, n_bytes })
}

/// Checks that every tensor's data lies inside the file and that no two overlap.
fn check_data_ranges(tensors: &[TensorInfo<'_>], data_offset: u64, file_len: u64) -> Result<(), GgufError> {
    for t in tensors {
        let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(GgufError {
                    offset: data_offset.saturating_add(t.offset),
                    field: Field::TensorData { name: t.name.to_owned() },
                    kind: GgufErrorKind::DataPastEnd { end: end.unwrap_or(u64::MAX), file_len },
                })
            }
        }
    }
    let mut by_offset: Vec<&TensorInfo<'_>> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset + a.n_bytes > b.offset {
            return Err(GgufError {
                offset: data_offset + b.offset,
                field: Field::TensorData { name: b.name.to_owned() },
                kind: GgufErrorKind::DataOverlap { other: a.name.to_owned() },
            });
        }
    }
    Ok(())
}
