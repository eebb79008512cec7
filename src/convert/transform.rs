//! Pure functions on tensor data: the Q/K row permutation and its inverse.

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

/// The inverse of [`permute_rotary_rows`]: ggml's interleaved rows back to Hugging Face's layout
/// (per head, rows `[h, i, j]` become rows `[h, j, i]`).
pub fn unpermute_rotary_rows(src: &[f32], dst: &mut [f32], head_dim: usize, row_len: usize) {
    let half = head_dim / 2;
    let head_len = head_dim * row_len;
    for (src_head, dst_head) in src.chunks_exact(head_len).zip(dst.chunks_exact_mut(head_len)) {
        for i in 0..half {
            for j in 0..2 {
                let from = (i * 2 + j) * row_len;
                let to = (j * half + i) * row_len;
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
        let mut back = [0.0; 8];
        unpermute_rotary_rows(&dst, &mut back, 4, 1);
        assert_eq!(back, src);
    }
}
