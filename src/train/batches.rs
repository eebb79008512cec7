//! What each micro-batch holds: examples grouped into sequences (one example each, or several
//! packed into one), the validation split, and the order of the sequences in each epoch.

use crate::model::{Batch, ModelError};

use super::{BatchShape, Example, SplitMix64};

/// One row of a micro-batch: the indices of the examples it holds, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub examples: Vec<usize>,
    /// Tokens of all its examples.
    pub len: usize,
}

/// Groups `indices` (into `examples`) into sequences of at most `seq_len` tokens: one example
/// per sequence, or, with `pack`, as many consecutive examples as fit (attention stays inside
/// each example). Every example must already fit in `seq_len`.
pub fn pack_examples(examples: &[Example], indices: &[usize], seq_len: usize, pack: bool) -> Vec<Sequence> {
    let mut sequences: Vec<Sequence> = Vec::new();
    for &i in indices {
        let len = examples[i].tokens.len();
        match sequences.last_mut() {
            Some(last) if pack && last.len + len <= seq_len => {
                last.examples.push(i);
                last.len += len;
            }
            _ => sequences.push(Sequence { examples: vec![i], len }),
        }
    }
    sequences
}

/// Splits `0..n` into training and validation indices: `round(fraction · n)` examples, picked
/// at random from `seed`, validate (at least one when `fraction > 0` and `n >= 2`; never all).
/// Both lists keep dataset order.
pub fn split_validation(n: usize, fraction: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut n_val = (f64::from(fraction.clamp(0.0, 1.0)) * n as f64).round() as usize;
    if fraction > 0.0 && n >= 2 {
        n_val = n_val.clamp(1, n - 1);
    } else if n < 2 {
        n_val = 0;
    }
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut SplitMix64::new(seed ^ 0x5641_4c49_4441_5445));
    let mut val: Vec<usize> = order[..n_val].to_vec();
    val.sort_unstable();
    let mut is_val = vec![false; n];
    val.iter().for_each(|&i| is_val[i] = true);
    ((0..n).filter(|&i| !is_val[i]).collect(), val)
}

/// The order of `n` training sequences in `epoch`: a shuffle determined by the seed and the
/// epoch alone, so a resumed run sees the same order.
pub(super) fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut SplitMix64::new(seed.wrapping_add(epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15))));
    order
}

fn shuffle(items: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

/// A micro-batch of `shape` holding `sequences` (at most `shape.n_seq`), one per row; the rest
/// is padding.
pub(super) fn make_batch<'a>(
    shape: BatchShape,
    examples: &[Example],
    sequences: impl Iterator<Item = &'a Sequence>,
) -> Result<Batch, ModelError> {
    let mut batch = Batch::new(shape.seq_len, shape.n_seq);
    for (row, seq) in sequences.enumerate() {
        let mut offset = 0;
        for &i in &seq.examples {
            let ex = &examples[i];
            batch
                .place(row, offset, &ex.tokens, &ex.targets)
                .map_err(|e| ModelError::Inconsistent { what: e.to_string() })?;
            offset += ex.tokens.len();
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: usize) -> Example {
        Example { tokens: vec![1; n], targets: vec![Some(1); n] }
    }

    #[test]
    fn packing_fills_sequences_in_order() {
        let examples = [ex(3), ex(4), ex(2), ex(6)];
        let packed = pack_examples(&examples, &[0, 1, 2, 3], 8, true);
        let groups: Vec<_> = packed.iter().map(|s| s.examples.clone()).collect();
        assert_eq!(groups, vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(pack_examples(&examples, &[0, 1, 2, 3], 8, false).len(), 4);
    }

    #[test]
    fn validation_split_is_seeded_and_never_takes_everything() {
        let (train, val) = split_validation(20, 0.1, 7);
        assert_eq!((train.len(), val.len()), (18, 2));
        assert_eq!(split_validation(20, 0.1, 7), (train, val));
        assert_eq!(split_validation(2, 0.9, 1).1.len(), 1);
        assert_eq!(split_validation(1, 0.5, 1), (vec![0], vec![]));
        assert_eq!(split_validation(10, 0.0, 1).1.len(), 0);
    }

    #[test]
    fn epoch_orders_are_permutations_that_differ_between_epochs() {
        let a = epoch_order(50, 3, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, epoch_order(50, 3, 1));
        assert_eq!(a, epoch_order(50, 3, 0));
    }
}
