//! Batching and packing change the layout, not the math: the loss of examples evaluated side by
//! side in rows of one micro-batch, or packed into one row, equals the loss of each evaluated
//! alone (weighted by their positions with loss), and so do the gradients.

use gguftune::arch::Arch;
use gguftune::model::{Batch, LoraConfig, Model};
use gguftune::train::{with_session, Activations, BatchShape, OptimizerState, TrainError};

use crate::common::fixtures::{Rng, TinyLlamaSpec};
use crate::common::{temp_dir, tiny_f32_model};

/// f32 sums in a different order (softmax over a longer padded row, the loss reduction over more
/// rows): a few ulps of a loss near 6 and of each gradient, far below what a leak of attention
/// between examples or a wrong head mapping produces (those change the loss in the first digits).
const TOLERANCE: f32 = 1e-4;

fn example(rng: &mut Rng, len: usize, first_target: usize) -> (Vec<i32>, Vec<Option<i32>>) {
    let tokens: Vec<i32> = (0..len).map(|_| (rng.uniform(1.0).abs() * 500.0) as i32 + 1).collect();
    let targets = (0..len).map(|i| (i >= first_target && i + 1 < len).then(|| tokens[i + 1])).collect();
    (tokens, targets)
}

fn eval(
    model: &Model,
    cfg: &LoraConfig,
    values: &[Vec<f32>],
    shape: BatchShape,
    place: &dyn Fn(&mut Batch),
) -> Result<(f32, usize, Vec<Vec<f32>>), TrainError> {
    with_session(model, cfg, shape, Activations::Keep, 2, |s| {
        s.set_state(&OptimizerState::new(values.to_vec()))?;
        let mut batch = Batch::new(shape.seq_len, shape.n_seq);
        place(&mut batch);
        let (loss, n) = s.accumulate(&batch, true)?;
        Ok((loss, n, s.grads()?))
    })
}

#[test]
fn rows_and_packing_give_the_losses_and_gradients_of_separate_examples() {
    let root = temp_dir();
    let spec = TinyLlamaSpec { hidden: 32, ffn: 64, heads: 4, kv_heads: 2, ..TinyLlamaSpec::default() };
    let model = tiny_f32_model(root.path(), &spec, 3);
    let cfg = LoraConfig { rank: 2, alpha: 4.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
    let mut rng = Rng::new(5);
    let mut values = gguftune::train::init_lora(&model, &cfg, 1).unwrap();
    // B random too, so that every gradient is non-zero.
    values.iter_mut().skip(1).step_by(2).for_each(|b| b.iter_mut().for_each(|x| *x = rng.uniform(0.3)));

    let (t1, g1) = example(&mut rng, 7, 2);
    let (t2, g2) = example(&mut rng, 5, 1);
    let alone = |t: &[i32], g: &[Option<i32>]| {
        eval(&model, &cfg, &values, BatchShape { seq_len: t.len(), n_seq: 1 }, &|b| b.place(0, 0, t, g).unwrap())
            .unwrap()
    };
    let (l1, n1, grad1) = alone(&t1, &g1);
    let (l2, n2, grad2) = alone(&t2, &g2);
    let expected = (l1 * n1 as f32 + l2 * n2 as f32) / (n1 + n2) as f32;
    let expected_grads: Vec<Vec<f32>> = grad1
        .iter()
        .zip(&grad2)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x * n1 as f32 + y * n2 as f32) / (n1 + n2) as f32).collect())
        .collect();

    let side_by_side = eval(&model, &cfg, &values, BatchShape { seq_len: 8, n_seq: 2 }, &|b| {
        b.place(0, 0, &t1, &g1).unwrap();
        b.place(1, 0, &t2, &g2).unwrap();
    })
    .unwrap();
    let packed = eval(&model, &cfg, &values, BatchShape { seq_len: 13, n_seq: 1 }, &|b| {
        b.place(0, 0, &t2, &g2).unwrap();
        b.place(0, 5, &t1, &g1).unwrap();
    })
    .unwrap();
    for (name, (loss, n, grads)) in [("rows", side_by_side), ("packed", packed)] {
        assert_eq!(n, n1 + n2, "{name}");
        assert!((loss - expected).abs() <= TOLERANCE * expected, "{name}: loss {loss}, expected {expected}");
        for (i, (got, want)) in grads.iter().zip(&expected_grads).enumerate() {
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= TOLERANCE * scale + 1e-7, "{name}: tensor {i}: error {worst} of {scale}");
        }
    }
}
