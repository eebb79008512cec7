//! Little-endian F32, F16 and BF16 bytes to f32: the one decoder `convert` and `quantize` share.

use rayon::prelude::*;

use super::VALUES_PER_TASK;
use crate::gguf::GgmlType;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("type {ty} cannot be decoded to f32 here (expected F32, F16 or BF16)")]
    UnsupportedType { ty: GgmlType },
    #[error("{found} bytes of data, expected {expected}")]
    SizeMismatch { expected: usize, found: usize },
}

/// Decodes `bytes` of type `ty` into `out` (same element count), in parallel. Conversions are
/// exact.
pub fn decode_to_f32(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), DecodeError> {
    let width = match ty {
        GgmlType::F32 => 4,
        GgmlType::F16 | GgmlType::BF16 => 2,
        other => return Err(DecodeError::UnsupportedType { ty: other }),
    };
    if bytes.len() != out.len() * width {
        return Err(DecodeError::SizeMismatch { expected: out.len() * width, found: bytes.len() });
    }
    match ty {
        GgmlType::F32 => decode_in_parallel(bytes, out, f32::from_le_bytes),
        GgmlType::F16 => decode_in_parallel(bytes, out, |b| half::f16::from_le_bytes(b).to_f32()),
        _ => decode_in_parallel(bytes, out, |b| half::bf16::from_le_bytes(b).to_f32()),
    }
    Ok(())
}

/// `out[i] = value(bytes of element i)` for elements of `W` bytes, in tasks of
/// [`VALUES_PER_TASK`] values.
fn decode_in_parallel<const W: usize>(bytes: &[u8], out: &mut [f32], value: impl Fn([u8; W]) -> f32 + Sync) {
    out.par_chunks_mut(VALUES_PER_TASK).zip(bytes.par_chunks(VALUES_PER_TASK * W)).for_each(|(out, bytes)| {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(W)) {
            let mut element = [0u8; W];
            element.copy_from_slice(c);
            *o = value(element);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_float_type() {
        let mut out = [0.0f32; 2];
        decode_to_f32(GgmlType::BF16, &[0x80, 0x3f, 0x00, 0xc0], &mut out).unwrap();
        assert_eq!(out, [1.0, -2.0]);
        decode_to_f32(GgmlType::F16, &[0x00, 0x3c, 0x00, 0x38], &mut out).unwrap();
        assert_eq!(out, [1.0, 0.5]);
        assert!(matches!(decode_to_f32(GgmlType::F32, &[0; 7], &mut out), Err(DecodeError::SizeMismatch { .. })));
        assert!(matches!(decode_to_f32(GgmlType::Q8_0, &[0; 34], &mut out), Err(DecodeError::UnsupportedType { .. })));
    }
}
