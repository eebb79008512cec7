//! Pure functions on tensor data: source dtype to f32, and the Q/K row permutation.

use safetensors::Dtype;

use super::ConvertError;

/// Decodes little-endian `F32`, `F16` or `BF16` bytes into `out` (same element count).
pub fn decode_to_f32(name: &str, dtype: Dtype, bytes: &[u8], out: &mut [f32]) -> Result<(), ConvertError> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => return Err(ConvertError::UnsupportedDtype { tensor: name.to_owned(), dtype: format!("{other:?}") }),
    };
    if bytes.len() != out.len() * width {
        return Err(ConvertError::SizeMismatch { tensor: name.to_owned(), expected: out.len() * width, found: bytes.len() });
    }
    match dtype {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::F16 => {
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

/// Reorders the rows of one attention projection from Hugging Face's rotary layout (the two
/// halves of each head's dimensions apart) to ggml's interleaved one, as llama.cpp's converter
/// does for Llama-family Q and K: per head, rows `[h, j, i]` (j in 0..2, i in 0..head_dim/2)
/// become rows `[h, i, j]`. `src` holds whole heads of `head_dim` rows of `row_len` values.
pub fn permute_rotary_rows(src: &[f32], dst: &mut [f32], head_dim: usize, row_len: usize) {
    let half = head_dim / 2;
    let head_len = head_dim * row_len;
    for (src_head, dst_head) in src.chunks_exact(head_len).zip(dst.chunks_exact_mut(head_len)) {
        for i in 0..half {
            for j in 0..2 {
                let from = (j * half + i) * row_len;
                let to = (i * 2 + j) * row_len;
                dst_head[to..to + row_len].copy_from_slice(&src_head[from..from + row_len]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_the_two_halves_of_each_head() {
        // Two heads of head_dim 4, rows of length 1: head rows [a0 a1 b0 b1] -> [a0 b0 a1 b1].
        let src = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
        let mut dst = [0.0; 8];
        permute_rotary_rows(&src, &mut dst, 4, 1);
        assert_eq!(dst, [0.0, 2.0, 1.0, 3.0, 10.0, 12.0, 11.0, 13.0]);
    }

    #[test]
    fn decodes_every_source_dtype() {
        let mut out = [0.0f32; 2];
        decode_to_f32("t", Dtype::BF16, &[0x80, 0x3f, 0x00, 0xc0], &mut out).unwrap();
        assert_eq!(out, [1.0, -2.0]);
        decode_to_f32("t", Dtype::F16, &[0x00, 0x3c, 0x00, 0x38], &mut out).unwrap();
        assert_eq!(out, [1.0, 0.5]);
        assert!(matches!(decode_to_f32("t", Dtype::F32, &[0; 7], &mut out), Err(ConvertError::SizeMismatch { .. })));
        assert!(matches!(decode_to_f32("t", Dtype::I64, &[0; 16], &mut out), Err(ConvertError::UnsupportedDtype { .. })));
    }
}
