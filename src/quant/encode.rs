//! f32 rows to the bytes of a ggml type: the one encoder `convert`, `quantize` and `merge` share.
//!
//! F16 is converted here, eight values at a time with the CPU's conversion instructions where it
//! has them (F16C on x86-64, through the `half` crate), because ggml's own f32 -> f16 row
//! conversion is a scalar loop: on a bf16 -> f16 conversion it was a quarter of the time. The
//! bytes are the ones ggml writes (round to nearest even, and every NaN as ggml writes it);
//! a test compares the two on every class of value. Every other type goes through ggml's own
//! quantizer, so the bytes are llama-quantize's.

use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::VALUES_PER_TASK;
use crate::ggml;
use crate::gguf::GgmlType;

/// Encodes `src`, rows of `n_per_row` f32 values, as `ty` into `dst`, which holds exactly the
/// encoded rows; in parallel. The bytes equal what ggml's `ggml_quantize_chunk` writes.
pub fn encode_rows(ty: GgmlType, src: &[f32], n_per_row: usize, dst: &mut [u8]) -> Result<(), ggml::Error> {
    if ty != GgmlType::F16 {
        return ggml::quantize_rows(ty, src, n_per_row, dst);
    }
    if n_per_row == 0 || src.len() % n_per_row != 0 {
        return Err(ggml::Error::PartialRow { len: src.len(), n_per_row });
    }
    if dst.len() != 2 * src.len() {
        return Err(ggml::Error::BufferSize { expected: 2 * src.len(), found: dst.len() });
    }
    src.par_chunks(VALUES_PER_TASK).zip(dst.par_chunks_mut(2 * VALUES_PER_TASK)).for_each(|(src, dst)| {
        let mut halves = [half::f16::ZERO; VALUES_PER_TASK];
        let halves = &mut halves[..src.len()];
        halves.convert_from_f32_slice(src);
        for (h, out) in halves.iter().zip(dst.chunks_exact_mut(2)) {
            out.copy_from_slice(&ggml_f16_bits(*h).to_le_bytes());
        }
    });
    Ok(())
}

/// The bits ggml writes for `h`: the same for every number and infinity; a NaN keeps its sign and
/// becomes the quiet NaN 0x7E00 (the conversion instructions keep part of its payload instead).
fn ggml_f16_bits(h: half::f16) -> u16 {
    let bits = h.to_bits();
    if h.is_nan() {
        (bits & 0x8000) | 0x7E00
    } else {
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every class of f32: zeros, f32 subnormals, values that round to f16 subnormals, to zero and
    /// to infinity, ties at every scale, the largest finite values, infinities, NaNs with payloads,
    /// and a sweep of bit patterns over the whole range.
    fn hard_values() -> Vec<f32> {
        let mut bits: Vec<u32> = vec![
            0,
            0x8000_0000,
            1,
            0x007F_FFFF,
            0x0080_0000,
            0x3380_0000, // 2^-24: the smallest f16 subnormal
            0x3300_0000, // 2^-25: ties to zero
            0x3300_0001,
            0x387F_E000, // just below the smallest f16 normal
            0x477F_E000, // 65504: the largest f16
            0x477F_EFFF,
            0x477F_F000, // ties to infinity
            0x4780_0000,
            0x7F7F_FFFF,
            0x7F80_0000,
            0xFF80_0000,
            0x7FC0_0000,
            0xFFC0_0000,
            0x7F80_0001,
            0x7FBF_FFFF,
            0xFFFF_FFFF,
            0x7FC1_2345,
        ];
        // Ties and near-ties: the 13 bits f16 drops, at and around the half-way point.
        for exponent in [0x2000_0000u32, 0x3000_0000, 0x3800_0000, 0x3F80_0000, 0x4600_0000] {
            for low in [0x0FFF, 0x1000, 0x1001, 0x2FFF, 0x3000, 0x3001, 0x1FFF] {
                bits.push(exponent | low);
                bits.push(exponent | 0x0040_0000 | low);
            }
        }
        bits.extend((0..200_000u32).map(|i| i.wrapping_mul(0x9E37_79B9)));
        bits.into_iter().map(f32::from_bits).collect()
    }

    #[test]
    fn f16_bytes_equal_ggmls_for_every_kind_of_value() {
        let values = hard_values();
        let n = values.len() - values.len() % 64;
        let values = &values[..n];
        let mut ours = vec![0u8; 2 * n];
        let mut theirs = vec![0u8; 2 * n];
        encode_rows(GgmlType::F16, values, 64, &mut ours).unwrap();
        ggml::quantize_rows(GgmlType::F16, values, 64, &mut theirs).unwrap();
        for (i, (a, b)) in ours.chunks_exact(2).zip(theirs.chunks_exact(2)).enumerate() {
            assert_eq!(a, b, "value {} (bits {:#010x})", values[i], values[i].to_bits());
        }
    }

    #[test]
    fn refuses_partial_rows_and_wrong_buffers() {
        let values = [1.0f32; 10];
        let mut out = vec![0u8; 20];
        assert!(matches!(encode_rows(GgmlType::F16, &values, 4, &mut out), Err(ggml::Error::PartialRow { .. })));
        let mut short = vec![0u8; 18];
        assert!(matches!(encode_rows(GgmlType::F16, &values, 5, &mut short), Err(ggml::Error::BufferSize { .. })));
        encode_rows(GgmlType::F16, &values, 5, &mut out).unwrap();
        assert_eq!(&out[..2], &half::f16::ONE.to_bits().to_le_bytes());
    }
}
