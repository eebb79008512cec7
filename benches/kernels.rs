//! The hot kernels of `convert` and of the training step's backward pass, on the shapes of the
//! models in `scripts/bench-peers.sh`, so that a regression shows as a throughput change:
//! - convert: BF16 → f32 decoding, the Q/K row permutation, and f32 → F16 / Q8_0 / Q4_K encoding
//!   (`quant::encode_rows`: F16 on the CPU's conversion instructions, the others through ggml's
//!   own routines, and F16 through ggml's scalar routine beside it), each on one 2048 × 5632 FFN
//!   weight of the 1.1B Llama shape;
//! - training: the transposed f32 copy of a frozen weight that the fast backward makes
//!   (`cont(transpose(cast(W)))` in a ggml graph) and the product `Wᵀ · dy` it feeds, on one
//!   576 × 1536 FFN weight of the SmolLM-135M shape with 1024 tokens (ctx 256 × batch 4), plus the
//!   row dequantization (`dequantize_rows`) the copy is made of, and the forward product `W · x`
//!   (ggml's quantized GEMM) it is measured against.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gguftune::convert::permute_rotary_rows;
use gguftune::ggml::{dequantize_rows, quantize_rows, Allocator, Backend, Context, Graph, MappedBuffer, Runtime};
use gguftune::gguf::GgmlType;
use gguftune::quant::{decode_to_f32, encode_rows};

/// Rows and row length of the convert benchmarks' weight (the 1.1B shape's FFN up projection).
const CONVERT_SHAPE: (usize, usize) = (5632, 2048);
/// Input and output width of the training benchmarks' weight (SmolLM-135M's FFN up projection),
/// and the tokens of one micro-batch.
const TRAIN_SHAPE: (usize, usize, usize) = (576, 1536, 1024);
/// Threads of the ggml graphs (the benchmark machine's 2 cores).
const THREADS: usize = 2;

/// Deterministic values in [-1, 1) (a xorshift sequence).
fn values(n: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `values` encoded as `ty`, rows of `row_len`.
fn encoded(ty: GgmlType, values: &[f32], row_len: usize) -> Vec<u8> {
    let row_bytes = (row_len as u64 / gguftune::ggml::block_size(ty) * gguftune::ggml::type_size(ty)) as usize;
    let mut out = vec![0u8; values.len() / row_len * row_bytes];
    quantize_rows(ty, values, row_len, &mut out).unwrap();
    out
}

fn convert_kernels(c: &mut Criterion) {
    let (rows, row_len) = CONVERT_SHAPE;
    let n = rows * row_len;
    let source = values(n);
    let bf16 = encoded(GgmlType::BF16, &source, row_len);
    let mut group = c.benchmark_group("convert");
    group.throughput(Throughput::Elements(n as u64));
    let mut f32s = vec![0f32; n];
    group.bench_function("bf16_to_f32", |b| {
        b.iter(|| decode_to_f32(GgmlType::BF16, black_box(&bf16), &mut f32s).unwrap())
    });
    let mut permuted = vec![0f32; n];
    group.bench_function("permute_rotary_rows", |b| {
        b.iter(|| permute_rotary_rows(black_box(&source), &mut permuted, 64, row_len))
    });
    for ty in [GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_K] {
        let mut out = encoded(ty, &source, row_len);
        group.bench_function(format!("f32_to_{ty}"), |b| {
            b.iter(|| encode_rows(ty, black_box(&source), row_len, &mut out).unwrap())
        });
    }
    let mut out = encoded(GgmlType::F16, &source, row_len);
    group.bench_function("f32_to_F16_ggml", |b| {
        b.iter(|| quantize_rows(GgmlType::F16, black_box(&source), row_len, &mut out).unwrap())
    });
    group.finish();
}

/// A copy of `bytes` starting at a 32-byte boundary (ggml's CPU buffers need the alignment a
/// memory map has): the storage has 32 spare bytes and the copy starts at the first boundary.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(bytes: &[u8]) -> Aligned {
        let mut storage = vec![0u8; bytes.len() + 32];
        let start = storage.as_ptr().align_offset(32);
        storage[start..start + bytes.len()].copy_from_slice(bytes);
        Aligned { storage, start, len: bytes.len() }
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

fn backward_kernels(c: &mut Criterion) {
    let rt = Runtime::get();
    let (n_in, n_out, tokens) = TRAIN_SHAPE;
    let weights = values(n_in * n_out);
    let mut group = c.benchmark_group("backward");
    // 576-wide rows take no K-quants: a q4_k_m file of this shape holds Q5_0 and Q8_0 weights.
    for ty in [GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::F16] {
        let data = Aligned::new(&encoded(ty, &weights, n_in));
        let mut f32s = vec![0f32; n_in * n_out];
        group.throughput(Throughput::Elements((n_in * n_out) as u64));
        group.bench_function(format!("dequantize_rows_{ty}"), |b| {
            b.iter(|| dequantize_rows(ty, black_box(data.bytes()), n_in, &mut f32s).unwrap())
        });

        let ctx = Context::new(rt, 16, 16).unwrap();
        let buffer = MappedBuffer::new(rt, data.bytes()).unwrap();
        let w = ctx.new_tensor(ty, &[n_in as u64, n_out as u64]).unwrap();
        buffer.bind(w, 0).unwrap();
        let dy = ctx.new_tensor(GgmlType::F32, &[n_out as u64, tokens as u64]).unwrap().set_input();
        let w_t = ctx.cont(ctx.transpose(ctx.cast_f32(w).unwrap()).unwrap()).unwrap();
        let dx = ctx.mul_mat(w_t, dy).unwrap();
        let backend = Backend::cpu(rt, THREADS).unwrap();
        let mut copy_graph = Graph::new(&ctx, 16).unwrap();
        copy_graph.build_forward_expand(w_t).unwrap();
        let mut copy_alloc = Allocator::new(&backend).unwrap();
        let copy = copy_alloc.alloc_graph(&copy_graph).unwrap();
        group.bench_function(format!("transposed_f32_copy_{ty}"), |b| b.iter(|| backend.compute(&copy).unwrap()));

        let mut product_graph = Graph::new(&ctx, 16).unwrap();
        product_graph.build_forward_expand(dx).unwrap();
        let mut product_alloc = Allocator::new(&backend).unwrap();
        let product = product_alloc.alloc_graph(&product_graph).unwrap();
        product.set_f32(dy, &values(n_out * tokens)).unwrap();
        group.throughput(Throughput::Elements((n_in * n_out * tokens) as u64));
        group.bench_function(format!("copy_and_product_{ty}"), |b| b.iter(|| backend.compute(&product).unwrap()));

        // The forward product `W · x` on the same weight: ggml's quantized (or f16) GEMM, the
        // speed the backward product is measured against.
        let x = ctx.new_tensor(GgmlType::F32, &[n_in as u64, tokens as u64]).unwrap().set_input();
        let y = ctx.mul_mat(w, x).unwrap();
        let mut forward_graph = Graph::new(&ctx, 16).unwrap();
        forward_graph.build_forward_expand(y).unwrap();
        let mut forward_alloc = Allocator::new(&backend).unwrap();
        let forward = forward_alloc.alloc_graph(&forward_graph).unwrap();
        forward.set_f32(x, &values(n_in * tokens)).unwrap();
        group.bench_function(format!("forward_product_{ty}"), |b| b.iter(|| backend.compute(&forward).unwrap()));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = convert_kernels, backward_kernels
}
criterion_main!(benches);
