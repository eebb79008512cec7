//! Little-endian F32, F16 and BF16 bytes to f32: the one decoder `convert` and `quantize` share.

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

/// Decodes `bytes` of type `ty` into `out` (same element count). Conversions are exact.
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
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
    }
    Ok(())
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
