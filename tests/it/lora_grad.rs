//! LoRA gradients from ggml's backward pass equal central finite differences of the loss, on a
//! tiny f32 model with adapters on all seven projections.

use gguftune::arch::Arch;
use gguftune::model::{Devices, LoraConfig, Model, TARGETS};
use gguftune::quant::FileType;
use gguftune::train::{loss_and_grads, loss_and_grads_on, measure_session, Activations, BatchShape};

use crate::common::fixtures::{tiny_llama, Dtype, Rng, Shards, TinyLlamaSpec};
use crate::common::{temp_dir, tiny_f32_model};

/// Step for central differences: the truncation error is O(h²) ≈ 1e-6 relative to the curvature,
/// and the f32 rounding of a loss near 6 is about 6e-7 / (2h) = 3e-5 in the difference quotient.
pub const STEP: f32 = 1e-2;
/// Allowed error of a gradient element: 2% of the largest gradient of its tensor plus 1e-4, well
/// above both error sources and far below what a wrong backward pass (a missing LoRA scale, a
/// transposed product, a dropped mask) produces.
pub const RELATIVE_TOLERANCE: f32 = 0.02;
/// Through a GELU as ggml computes it on the CPU (each input rounded to f16, 2^-11 relative, to
/// read a table) the loss is a fine staircase, whose steps add noise to a difference quotient
/// that shrinks as the step grows: 10% at a step of 1e-2, 2% at [`GELU_STEP`]. The backward pass
/// differentiates the smooth function, whose derivative
/// [`gelu_gradient_is_the_incoming_gradient_times_its_derivative`] checks to 1e-5; it agreed
/// with the gradients of the same model built from smooth differentiable ops to 1e-3. A wrong
/// backward is still off by the gradient's own size.
pub const GELU_STEP: f32 = 3e-2;
/// Allowed error at [`GELU_STEP`]: twice the 2% seen.
pub const GELU_RELATIVE_TOLERANCE: f32 = 0.04;

#[test]
fn lora_gradients_equal_finite_differences() {
    let spec = TinyLlamaSpec { hidden: 32, ffn: 64, heads: 4, kv_heads: 2, ..TinyLlamaSpec::default() };
    check_gradients_by_finite_differences(&spec, 10, 14);
}

#[test]
fn lora_gradients_equal_finite_differences_with_the_loss_in_chunks() {
    // A vocabulary of 65536 and 272 positions: the loss is computed in two chunks of 136
    // positions (64 MiB of logits at most per chunk), whose sum must be the mean over all.
    let spec = TinyLlamaSpec {
        hidden: 32,
        ffn: 64,
        heads: 4,
        kv_heads: 2,
        vocab_size: Some(65536),
        ..TinyLlamaSpec::default()
    };
    assert_eq!(gguftune::model::loss_chunk(272, 65536), 136);
    // Only the last layer's down projection (A and B): each evaluation costs 18M logits.
    check_gradients_by_finite_differences(&spec, 272, 0);
}

/// Checks the 3 largest gradients of LoRA tensors of a model of `spec` against central finite
/// differences, on `n_tokens` tokens with loss on the second half but the last position: the
/// first `first_tensors` tensors (14: every projection of layer 0) and A and B of the last
/// layer's down projection.
fn check_gradients_by_finite_differences(spec: &TinyLlamaSpec, n_tokens: usize, first_tensors: usize) {
    let root = temp_dir();
    let model = tiny_f32_model(root.path(), spec, 3);
    check_model_gradients_by_finite_differences(
        &model,
        &Devices::cpu(),
        n_tokens,
        first_tensors,
        STEP,
        RELATIVE_TOLERANCE,
    );
}

/// [`check_gradients_by_finite_differences`] on `model`, with adapters on every projection of its
/// architecture (the last is the down projection), the loss and gradients computed on `devices`,
/// differences taken with `step`, each element within `tolerance` of its tensor's largest
/// gradient (plus 1e-4).
pub fn check_model_gradients_by_finite_differences(
    model: &Model,
    devices: &Devices,
    n_tokens: usize,
    first_tensors: usize,
    step: f32,
    tolerance: f32,
) {
    let cfg = LoraConfig { rank: 2, alpha: 4.0, targets: model.hparams().arch.projections().to_vec() };
    // Both A and B random (not B = 0 as at the start of training) so that every gradient is non-zero.
    let values = random_lora_values(model, &cfg, 11);
    let tokens: Vec<i32> = (0..n_tokens).map(|i| (i as i32 * 41 + 3) % 512).collect();
    // Loss only on the second half of the positions, predicting the next token.
    let targets: Vec<Option<i32>> =
        (0..n_tokens).map(|i| (n_tokens / 2 - 1..n_tokens - 1).contains(&i).then(|| tokens[i + 1])).collect();

    let loss_at = |values: &[Vec<f32>]| {
        let on = loss_and_grads_on(devices, model, &cfg, values, &tokens, &targets, Activations::Keep, 2).unwrap();
        (on.loss, on.grads)
    };
    let (loss, grads) = loss_at(&values);
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    assert_eq!(grads.len(), values.len());

    let n = values.len();
    let checked: Vec<usize> = (0..first_tensors).chain([n - 2, n - 1]).collect();
    let mut worst = 0f32;
    for &ti in &checked {
        let g = &grads[ti];
        let scale = g.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "tensor {ti}: all-zero gradient");
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &k in order.iter().take(3) {
            let mut plus = values.clone();
            plus[ti][k] += step;
            let mut minus = values.clone();
            minus[ti][k] -= step;
            let (lp, _) = loss_at(&plus);
            let (lm, _) = loss_at(&minus);
            let fd = (lp - lm) / (2.0 * step);
            let err = (fd - g[k]).abs();
            worst = worst.max(err / scale);
            assert!(
                err <= tolerance * scale + 1e-4,
                "tensor {ti} element {k}: backward {} vs finite difference {fd}",
                g[k]
            );
        }
    }
    eprintln!(
        "{} gradient elements checked; worst error {worst:.2e} of the tensor's largest gradient",
        checked.len() * 3
    );
}

/// ggml has no backward pass for GELU; `build_backward_expand` supplies one. The gradient it
/// gives a GELU's input is the incoming gradient times `gelu_derivative` (checked against central
/// differences of the smooth function in f64 below), element for element, also beyond ±10 where
/// ggml's forward leaves the table.
#[test]
fn gelu_gradient_is_the_incoming_gradient_times_its_derivative() {
    use gguftune::ggml::{gelu_derivative, Allocator, Backend, Context, Graph, ParamBuffer, Runtime};
    use gguftune::gguf::GgmlType;
    let rt = Runtime::get();
    let n = 64u64;
    let params = Context::new(rt, 8, 0).unwrap();
    let x = params.new_tensor(GgmlType::F32, &[n]).unwrap().set_param().unwrap();
    let x_grad = params.new_tensor(GgmlType::F32, &[n]).unwrap();
    let weights = params.new_tensor(GgmlType::F32, &[n]).unwrap();
    let loss_grad = params.new_tensor(GgmlType::F32, &[1]).unwrap();
    let backend = Backend::cpu(rt, 2).unwrap();
    let _buffer = ParamBuffer::alloc(&params, &backend).unwrap();
    let xs: Vec<f32> = (0..n).map(|i| -12.0 + 24.0 * i as f32 / (n - 1) as f32).collect();
    let mut rng = Rng::new(5);
    let ws: Vec<f32> = (0..n).map(|_| rng.uniform(1.0)).collect();
    ParamBuffer::write_f32(x, &xs).unwrap();
    ParamBuffer::write_f32(weights, &ws).unwrap();
    ParamBuffer::write_zeros(x_grad).unwrap();
    ParamBuffer::write_f32(loss_grad, &[1.0]).unwrap();

    let ctx = Context::new(rt, 64, 64).unwrap();
    let loss = ctx.sum(ctx.mul(ctx.gelu(x).unwrap(), weights).unwrap()).unwrap().set_loss().unwrap();
    let mut graph = Graph::with_grads(&ctx, 64).unwrap();
    graph.build_forward_expand(loss).unwrap();
    graph.build_backward_expand(&ctx, &[(x, x_grad), (loss, loss_grad)]).unwrap();
    let mut alloc = Allocator::new(&backend).unwrap();
    backend.compute(&alloc.alloc_graph(&graph).unwrap()).unwrap();
    let got = ParamBuffer::read_f32(x_grad).unwrap();
    for i in 0..n as usize {
        assert_eq!(got[i], ws[i] * gelu_derivative(xs[i]), "x = {}", xs[i]);
    }

    // The derivative itself, against central differences of the smooth GELU in f64.
    let gelu = |x: f64| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
    for i in -1200..=1200 {
        let x = i as f64 / 100.0;
        let h = 1e-5;
        let fd = (gelu(x + h) - gelu(x - h)) / (2.0 * h);
        assert!(
            (f64::from(gelu_derivative(x as f32)) - fd).abs() < 1e-5,
            "x = {x}: {} vs {fd}",
            gelu_derivative(x as f32)
        );
    }
}

#[test]
fn masked_positions_contribute_no_gradient() {
    let root = temp_dir();
    let model = tiny_f32_model(root.path(), &TinyLlamaSpec { hidden: 32, ffn: 64, ..TinyLlamaSpec::default() }, 4);
    let h = model.hparams().clone();
    let cfg = LoraConfig { rank: 1, alpha: 1.0, targets: vec![TARGETS[0].1] };
    let mut rng = Rng::new(5);
    let mut values = Vec::new();
    for _ in 0..h.n_layer {
        values.push((0..h.n_embd).map(|_| rng.uniform(0.3)).collect::<Vec<f32>>());
        values.push((0..h.n_head * h.head_dim).map(|_| rng.uniform(0.3)).collect::<Vec<f32>>());
    }
    let tokens: Vec<i32> = (0..6).map(|i| i * 7 + 1).collect();
    // Loss on positions 0 and 1 only: later tokens are neither seen (causal mask) nor scored
    // (loss mask), so changing them may change nothing, gradients included.
    let a: Vec<Option<i32>> = vec![Some(5), Some(9), None, None, None, None];
    let mut other_tokens = tokens.clone();
    other_tokens[3] = 100;
    other_tokens[5] = 200;
    let (la, ga) = loss_and_grads(&model, &cfg, &values, &tokens, &a, Activations::Keep, 1).unwrap();
    let (lb, gb) = loss_and_grads(&model, &cfg, &values, &other_tokens, &a, Activations::Keep, 1).unwrap();
    assert_eq!(la, lb);
    assert_eq!(ga, gb);
    // And an unmasked target does change the loss.
    let c: Vec<Option<i32>> = vec![Some(5), Some(9), None, None, None, Some(3)];
    let (lc, _) = loss_and_grads(&model, &cfg, &values, &tokens, &c, Activations::Keep, 1).unwrap();
    assert_ne!(la, lc);
}

/// Difference allowed between gradients through f16/bf16 weights and through the same values in
/// f32: ggml multiplies f16 and bf16 weights with activations rounded to that type (relative
/// error 2^-11 and 2^-8 per element), which moves each gradient by well under 2% of its tensor's
/// largest; a wrong transposition or a missing term in the rewritten backward changes it by the
/// gradient's own size.
const HALF_PRECISION_TOLERANCE: f32 = 0.02;

#[test]
fn gradients_through_f16_and_bf16_weights_equal_those_through_f32() {
    // Weights made in BF16 are exactly representable in f32, f16 and bf16, so the three GGUFs
    // hold the same values; the f16/bf16 ones take the rewritten backward (mul_mat with a
    // transposed f32 copy of each weight), the f32 one ggml's own out_prod.
    let root = temp_dir();
    let dir = root.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    let spec = TinyLlamaSpec { hidden: 64, ffn: 128, heads: 4, kv_heads: 2, ..TinyLlamaSpec::default() };
    tiny_llama(&dir, &spec, Dtype::BF16, Shards::One, 8).unwrap();
    let cfg = LoraConfig { rank: 2, alpha: 4.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
    let tokens: Vec<i32> = (0..12).map(|i| (i * 37 + 5) % 512).collect();
    let targets: Vec<Option<i32>> = (0..12).map(|i| (3..11).contains(&i).then(|| tokens[i + 1])).collect();
    let mut results = Vec::new();
    for ty in [FileType::F32, FileType::F16, FileType::BF16] {
        let path = root.path().join(format!("{ty:?}.gguf"));
        crate::common::convert_to(&dir, ty, &path).unwrap();
        let model = Model::open(&path).unwrap();
        let values = random_lora_values(&model, &cfg, 2);
        results.push(loss_and_grads(&model, &cfg, &values, &tokens, &targets, Activations::Keep, 2).unwrap());
    }
    let (loss32, grads32) = &results[0];
    for (name, (loss, grads)) in ["f16", "bf16"].iter().zip(&results[1..]) {
        assert!((loss - loss32).abs() < 0.01 * loss32, "{name}: loss {loss} vs {loss32}");
        for (i, (g, g32)) in grads.iter().zip(grads32).enumerate() {
            let scale = g32.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = g.iter().zip(g32).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= HALF_PRECISION_TOLERANCE * scale, "{name}: tensor {i}: error {worst} of {scale}");
        }
    }
}

#[test]
fn gradients_do_not_depend_on_the_thread_count() {
    // The backward pass's outer products run as blocked matrix products split by columns across
    // ggml's threads (`Tensor::make_out_prod_gemm`): 1, 2 and 3 threads (uneven splits, one of
    // them empty for the rank-2 LoRA matrices) must give the same gradients up to f32 rounding.
    let root = temp_dir();
    let spec = TinyLlamaSpec { hidden: 64, ffn: 128, heads: 4, kv_heads: 2, ..TinyLlamaSpec::default() };
    let model = tiny_f32_model(root.path(), &spec, 8);
    let cfg = LoraConfig { rank: 2, alpha: 4.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
    let tokens: Vec<i32> = (0..13).map(|i| (i * 37 + 5) % 512).collect();
    let targets: Vec<Option<i32>> = (0..13).map(|i| (2..12).contains(&i).then(|| tokens[i + 1])).collect();
    let values = random_lora_values(&model, &cfg, 3);
    let one = loss_and_grads(&model, &cfg, &values, &tokens, &targets, Activations::Keep, 1).unwrap();
    for threads in [2, 3] {
        let (loss, grads) =
            loss_and_grads(&model, &cfg, &values, &tokens, &targets, Activations::Keep, threads).unwrap();
        assert!((loss - one.0).abs() <= 1e-5 * one.0.abs(), "{threads} threads: loss {loss} vs {}", one.0);
        for (i, (g, g1)) in grads.iter().zip(&one.1).enumerate() {
            let scale = g1.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = g.iter().zip(g1).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // Only the summation order differs: a few f32 roundings of the largest element.
            assert!(worst <= 1e-4 * scale + 1e-9, "{threads} threads: tensor {i}: difference {worst} of {scale}");
        }
    }
}

#[test]
fn recomputed_activations_give_the_same_loss_and_gradients() {
    // The backward pass with recomputation runs copies of the same forward ops on the same values
    // in the same order, so the loss and every gradient must be bit-identical on the CPU: any
    // difference is a copy that reads the wrong source. Two layers, so a recomputed layer reads
    // a kept input made by another; q4_k_m and f32 weights, so both backward paths (the
    // transposed-copy rewrite and ggml's own) are covered.
    let root = temp_dir();
    let dir = root.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    let spec = TinyLlamaSpec { hidden: 256, ffn: 512, heads: 4, kv_heads: 2, ..TinyLlamaSpec::default() };
    tiny_llama(&dir, &spec, Dtype::BF16, Shards::One, 9).unwrap();
    let cfg = LoraConfig { rank: 2, alpha: 4.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
    let tokens: Vec<i32> = (0..16).map(|i| (i * 29 + 7) % 512).collect();
    let targets: Vec<Option<i32>> = (0..16).map(|i| (2..15).contains(&i).then(|| tokens[i + 1])).collect();
    for ty in [FileType::F32, FileType::Q4_K_M] {
        let path = root.path().join(format!("{ty:?}.gguf"));
        crate::common::convert_to(&dir, ty, &path).unwrap();
        let model = Model::open(&path).unwrap();
        let values = random_lora_values(&model, &cfg, 4);
        let kept = loss_and_grads(&model, &cfg, &values, &tokens, &targets, Activations::Keep, 1).unwrap();
        let recomputed = loss_and_grads(&model, &cfg, &values, &tokens, &targets, Activations::Recompute, 1).unwrap();
        assert_eq!(kept.0, recomputed.0, "{ty:?}: loss");
        for (i, (a, b)) in kept.1.iter().zip(&recomputed.1).enumerate() {
            assert!(a.iter().any(|v| *v != 0.0), "{ty:?}: tensor {i} has an all-zero gradient");
            assert_eq!(a, b, "{ty:?}: gradient of tensor {i}");
        }
    }
}

/// Relative difference allowed between the training loss and the cross-entropy computed here from
/// the forward logits: both come from the same f32 logits (one graph keeps them per chunk, the
/// other returns them), and the softmax, log and sums in f32 agree with the f64 ones here to
/// about 1e-6 relative; a wrong target, weight or chunk offset moves the loss by far more.
const LOSS_TOLERANCE: f64 = 1e-4;

#[test]
fn the_training_loss_is_the_mean_cross_entropy_of_the_scored_positions() {
    // Once in one chunk (vocabulary 512), once in two (65536 tokens over 272 positions, as in
    // the chunked finite-difference test), with scored positions in both chunks.
    for (vocab_size, n_tokens) in [(None, 24usize), (Some(65536), 272)] {
        let root = temp_dir();
        let dir = root.path().join("m");
        std::fs::create_dir(&dir).unwrap();
        let spec = TinyLlamaSpec { hidden: 32, ffn: 64, heads: 4, kv_heads: 2, vocab_size, ..TinyLlamaSpec::default() };
        tiny_llama(&dir, &spec, Dtype::F32, Shards::One, 6).unwrap();
        let path = root.path().join("m.gguf");
        crate::common::convert_to(&dir, FileType::F32, &path).unwrap();
        let model = Model::open(&path).unwrap();
        let cfg = LoraConfig { rank: 2, alpha: 4.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
        let values = random_lora_values(&model, &cfg, 8);
        let tokens: Vec<i32> = (0..n_tokens).map(|i| (i as i32 * 37 + 5) % 512).collect();
        // Every third position scored, with a target that is not the next token.
        let targets: Vec<Option<i32>> =
            (0..n_tokens).map(|i| (i % 3 == 1).then(|| (i as i32 * 13 + 2) % 500)).collect();

        let (loss, _) = loss_and_grads(&model, &cfg, &values, &tokens, &targets, Activations::Keep, 2).unwrap();
        let logits = model.logits_with_lora(&tokens, Some((&cfg, &values)), 2).unwrap();
        let (mut sum, mut count) = (0f64, 0usize);
        for (row, target) in logits.iter().zip(&targets) {
            let Some(t) = *target else { continue };
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let log_sum_exp = max + row.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln();
            sum += log_sum_exp - f64::from(row[t as usize]);
            count += 1;
        }
        let expected = sum / count as f64;
        let error = (f64::from(loss) - expected).abs() / expected;
        assert!(error < LOSS_TOLERANCE, "vocabulary {vocab_size:?}: loss {loss} vs cross-entropy {expected}");
    }
}

#[test]
fn with_recomputation_each_layer_adds_little_more_than_its_kept_input() {
    // With recomputation the backward pass holds each layer's input (one residual of
    // `hidden × tokens` f32) and one layer's values at a time: the compute buffer of a 6-layer
    // model exceeds a 2-layer one's by about 4 residuals. A value the allocator cannot free (a
    // rewrite leaving a view of a gradient unread kept every frozen weight's input gradient, 8
    // residuals' worth per layer here) shows as many times that.
    let root = temp_dir();
    let cfg = LoraConfig { rank: 2, alpha: 4.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
    let shape = BatchShape { seq_len: 64, n_seq: 2 };
    let compute_bytes = |layers: usize| {
        let dir = root.path().join(format!("m{layers}"));
        std::fs::create_dir(&dir).unwrap();
        let spec = TinyLlamaSpec { hidden: 64, ffn: 128, heads: 4, kv_heads: 2, layers, ..TinyLlamaSpec::default() };
        tiny_llama(&dir, &spec, Dtype::F32, Shards::One, 2).unwrap();
        // Q8_0: the frozen weights take the rewritten backward pass.
        let path = root.path().join(format!("m{layers}.gguf"));
        crate::common::convert_to(&dir, FileType::Q8_0, &path).unwrap();
        let model = Model::open(&path).unwrap();
        measure_session(&model, &cfg, shape, Activations::Recompute, 1).unwrap().compute_bytes
    };
    let residual = 64 * shape.seq_len * shape.n_seq * 4;
    let per_layer = (compute_bytes(6) - compute_bytes(2)) / 4;
    assert!(per_layer <= 2 * residual, "{per_layer} bytes per layer, a residual is {residual}");
}

/// LoRA tensors of `cfg`'s shapes on `model`, every value uniform in ±0.3 from `seed` (B not zero,
/// as it is at the start of training, so that every gradient is non-zero).
fn random_lora_values(model: &Model, cfg: &LoraConfig, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    gguftune::train::init_lora(model, cfg, 3)
        .unwrap()
        .into_iter()
        .map(|v| v.into_iter().map(|_| rng.uniform(0.3)).collect())
        .collect()
}
