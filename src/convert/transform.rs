//! Pure functions on tensor data: how the converter reorders rows (Llama's Q/K permutation and its
//! inverse, Falcon's and GPT-NeoX's fused QKV regrouping), applied alike to weights and to the
//! `lora_B` of adapters.

/// How a tensor's rows are reordered between the checkpoint and the GGUF, as llama.cpp's
/// converter reorders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOrder {
    /// As stored.
    AsIs,
    /// Llama's Q and K: each head's rows interleaved for ggml's rope ([`permute_rotary_rows`]).
    RotaryHeads { head_dim: usize },
    /// Falcon's and GPT-NeoX's fused QKV: all query heads, then all key heads, then all value
    /// heads ([`falcon_qkv_source_row`]).
    FalconQkv { n_head: usize, n_head_kv: usize, head_dim: usize },
}

/// The attention head counts that size a row reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

impl RowOrder {
    /// `rows` (whole heads of `row_len` values) in the GGUF's order (`to_gguf`), or back in the
    /// checkpoint's.
    pub fn reorder(self, rows: &[f32], row_len: usize, to_gguf: bool) -> Vec<f32> {
        let mut out = vec![0.0; rows.len()];
        match self {
            RowOrder::AsIs => out.copy_from_slice(rows),
            RowOrder::RotaryHeads { head_dim } if to_gguf => permute_rotary_rows(rows, &mut out, head_dim, row_len),
            RowOrder::RotaryHeads { head_dim } => unpermute_rotary_rows(rows, &mut out, head_dim, row_len),
            RowOrder::FalconQkv { n_head, n_head_kv, head_dim } => {
                for row in 0..rows.len() / row_len.max(1) {
                    let src = falcon_qkv_source_row(row, n_head, n_head_kv, head_dim);
                    let (from, to) = if to_gguf { (src, row) } else { (row, src) };
                    out[to * row_len..(to + 1) * row_len].copy_from_slice(&rows[from * row_len..(from + 1) * row_len]);
                }
            }
        }
        out
    }
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

/// The row of Falcon's fused `query_key_value` weight that becomes row `row` of llama.cpp's
/// `attn_qkv` (its converter's "jploski" layout). The checkpoint stores, per key/value head, that
/// group's `n_head / n_head_kv` query heads then its key head then its value head; llama.cpp wants
/// every query head, then every key head, then every value head, each `head_dim` rows.
pub fn falcon_qkv_source_row(row: usize, n_head: usize, n_head_kv: usize, head_dim: usize) -> usize {
    let per_group = n_head / n_head_kv;
    let (head, r) = (row / head_dim, row % head_dim);
    let (group, slot) = if head < n_head {
        (head / per_group, head % per_group)
    } else if head < n_head + n_head_kv {
        (head - n_head, per_group)
    } else {
        (head - n_head - n_head_kv, per_group + 1)
    };
    (group * (per_group + 2) + slot) * head_dim + r
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

    #[test]
    fn reorder_goes_to_the_gguf_order_and_back() {
        let rows: Vec<f32> = (0..24).map(|v| v as f32).collect();
        for order in [
            RowOrder::AsIs,
            RowOrder::RotaryHeads { head_dim: 4 },
            RowOrder::FalconQkv { n_head: 2, n_head_kv: 1, head_dim: 2 },
        ] {
            let gguf = order.reorder(&rows, 3, true);
            assert_eq!(order.reorder(&gguf, 3, false), rows, "{order:?}");
        }
        // Two heads with their own key and value (GPT-NeoX's layout), rows of 3: the checkpoint's
        // rows q0 k0 v0 q1 k1 v1 become q0 q1 k0 k1 v0 v1.
        let order = RowOrder::FalconQkv { n_head: 2, n_head_kv: 2, head_dim: 1 };
        let gguf = order.reorder(&rows[..18], 3, true);
        let firsts: Vec<f32> = gguf.chunks(3).map(|r| r[0]).collect();
        assert_eq!(firsts, [0.0, 9.0, 3.0, 12.0, 6.0, 15.0]);
    }

    #[test]
    fn falcon_qkv_rows_follow_llama_cpp_converters_view() {
        // convert_hf_to_gguf.py: view(n_head_kv, n_head // n_head_kv + 2, head_dim, -1), then
        // qkv[:, :-2], qkv[:, [-2]], qkv[:, [-1]] concatenated: all queries, all keys, all values.
        for (n_head, n_head_kv, head_dim) in [(4, 1, 2), (4, 2, 3), (6, 3, 2), (2, 2, 1)] {
            let per_group = n_head / n_head_kv;
            let index = |g: usize, s: usize, r: usize| (g * (per_group + 2) + s) * head_dim + r;
            let mut want = Vec::new();
            for g in 0..n_head_kv {
                for s in 0..per_group {
                    want.extend((0..head_dim).map(|r| index(g, s, r)));
                }
            }
            for slot in [per_group, per_group + 1] {
                for g in 0..n_head_kv {
                    want.extend((0..head_dim).map(|r| index(g, slot, r)));
                }
            }
            let got: Vec<usize> = (0..(n_head + 2 * n_head_kv) * head_dim)
                .map(|row| falcon_qkv_source_row(row, n_head, n_head_kv, head_dim))
                .collect();
            assert_eq!(got, want, "n_head {n_head}, n_head_kv {n_head_kv}, head_dim {head_dim}");
        }
    }
}
