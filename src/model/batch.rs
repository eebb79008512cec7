//! Token sequences laid out for one evaluation of the graph: `n_seq` rows of `seq_len`
//! positions. A row holds one example, several packed examples, or padding; each example is a
//! segment with its own positions from 0, and attention never crosses a segment boundary.

/// The inputs of one graph evaluation, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    seq_len: usize,
    n_seq: usize,
    /// Token of every position (row after row); padding holds token 0.
    pub(super) tokens: Vec<i32>,
    /// Position of each token inside its segment.
    pub(super) positions: Vec<i32>,
    /// Segment of each token; `PADDING` for padding, which attends only to itself.
    segments: Vec<u32>,
    /// The token each position must predict, where loss is taken.
    pub(super) targets: Vec<Option<i32>>,
    next_segment: u32,
}

const PADDING: u32 = u32::MAX;

/// Why a sequence cannot be placed in a batch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a sequence of {len} tokens at {offset} does not fit row {row} of a {n_seq} x {seq_len} batch")]
pub struct BatchOverflow {
    pub row: usize,
    pub offset: usize,
    pub len: usize,
    pub n_seq: usize,
    pub seq_len: usize,
}

impl Batch {
    /// A batch of `n_seq` rows of `seq_len` positions, all padding.
    pub fn new(seq_len: usize, n_seq: usize) -> Batch {
        let n = seq_len * n_seq;
        Batch {
            seq_len,
            n_seq,
            tokens: vec![0; n],
            positions: (0..n).map(|i| (i % seq_len.max(1)) as i32).collect(),
            segments: vec![PADDING; n],
            targets: vec![None; n],
            next_segment: 0,
        }
    }

    /// One row holding exactly `tokens`, with loss where `targets` has a token.
    pub fn single(tokens: &[i32], targets: &[Option<i32>]) -> Batch {
        let mut batch = Batch::new(tokens.len(), 1);
        // Cannot overflow: the row is exactly as long as the tokens.
        let _ = batch.place(0, 0, tokens, targets);
        batch
    }

    /// Positions per row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Rows.
    pub fn n_seq(&self) -> usize {
        self.n_seq
    }

    /// Puts one example (its tokens and per-position targets) into `row` from position `offset`
    /// as a new segment.
    pub fn place(
        &mut self,
        row: usize,
        offset: usize,
        tokens: &[i32],
        targets: &[Option<i32>],
    ) -> Result<(), BatchOverflow> {
        let len = tokens.len();
        if row >= self.n_seq || offset + len > self.seq_len || targets.len() != len {
            return Err(BatchOverflow { row, offset, len, n_seq: self.n_seq, seq_len: self.seq_len });
        }
        let start = row * self.seq_len + offset;
        let segment = self.next_segment;
        self.next_segment += 1;
        for (i, (&token, &target)) in tokens.iter().zip(targets).enumerate() {
            self.tokens[start + i] = token;
            self.positions[start + i] = i as i32;
            self.segments[start + i] = segment;
            self.targets[start + i] = target;
        }
        Ok(())
    }

    /// Positions that carry loss.
    pub fn n_targets(&self) -> usize {
        self.targets.iter().flatten().count()
    }

    /// Positions that hold tokens of an example (not padding).
    pub fn n_tokens(&self) -> usize {
        self.segments.iter().filter(|&&s| s != PADDING).count()
    }

    /// The attention mask, `[seq_len keys, seq_len queries, 1, n_seq]` as ggml lays it out: 0
    /// where a query may see a key (an earlier or the same position of its own segment; padding
    /// sees only itself, so no row is empty), -inf elsewhere. With a sliding `window`, a query
    /// also sees no key `window` or more positions before it (llama.cpp's
    /// `LLAMA_SWA_TYPE_STANDARD`: masked when `p_query - p_key >= window`).
    pub(super) fn mask(&self, window: Option<u64>) -> Vec<f32> {
        let window = window.map_or(usize::MAX, |w| usize::try_from(w).unwrap_or(usize::MAX));
        let l = self.seq_len;
        let mut mask = vec![f32::NEG_INFINITY; l * l * self.n_seq];
        for row in 0..self.n_seq {
            let seg = &self.segments[row * l..(row + 1) * l];
            for q in 0..l {
                let out = &mut mask[(row * l + q) * l..(row * l + q + 1) * l];
                if seg[q] == PADDING {
                    out[q] = 0.0;
                    continue;
                }
                for k in (q + 1).saturating_sub(window)..=q {
                    if seg[k] == seg[q] {
                        out[k] = 0.0;
                    }
                }
            }
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_segments_do_not_see_each_other() {
        let mut b = Batch::new(5, 1);
        b.place(0, 0, &[7, 8], &[Some(8), None]).unwrap();
        b.place(0, 2, &[9, 10], &[Some(10), None]).unwrap();
        assert_eq!(b.positions, vec![0, 1, 0, 1, 4]);
        let m = b.mask(None);
        let visible = |q: usize| (0..5).filter(|&k| m[q * 5 + k] == 0.0).collect::<Vec<_>>();
        assert_eq!(visible(1), vec![0, 1]);
        assert_eq!(visible(3), vec![2, 3]);
        assert_eq!(visible(4), vec![4]);
        assert_eq!((b.n_targets(), b.n_tokens()), (2, 4));
        assert!(b.place(0, 4, &[1, 2], &[None, None]).is_err());
    }

    #[test]
    fn a_sliding_window_hides_keys_window_or_more_positions_back() {
        let mut b = Batch::new(6, 1);
        b.place(0, 0, &[1, 2, 3, 4, 5, 6], &[None; 6]).unwrap();
        let m = b.mask(Some(3));
        let visible = |q: usize| (0..6).filter(|&k| m[q * 6 + k] == 0.0).collect::<Vec<_>>();
        assert_eq!(visible(0), vec![0]);
        assert_eq!(visible(2), vec![0, 1, 2]);
        assert_eq!(visible(5), vec![3, 4, 5]);
        assert_eq!(b.mask(Some(100)), b.mask(None));
    }
}
