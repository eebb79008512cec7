//! GGUF parsing speed: the header and index of a file with thousands of tensors and a 32k-token
//! vocabulary, and reading tensor data through the memory map (MB/s).

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gguftune::gguf::{self, GgmlType, GgufFile, GgufPlan, GgufWriter, MetaArray, MetaValue};

/// Tensors in the index benchmark: about what a 100-layer model has.
const N_TENSORS: usize = 4096;
/// Bytes of tensor data in the read benchmark.
const DATA_BYTES: u64 = 64 << 20;

fn write_many_tensors(path: &Path) {
    let mut plan = GgufPlan::new();
    plan.add_kv("general.architecture", "llama").unwrap();
    let tokens: Vec<String> = (0..32_000).map(|i| format!("▁tok{i}")).collect();
    plan.add_kv("tokenizer.ggml.tokens", MetaValue::Array(MetaArray::String(tokens))).unwrap();
    plan.add_kv("tokenizer.ggml.scores", MetaValue::Array(MetaArray::F32(vec![0.0; 32_000]))).unwrap();
    for i in 0..N_TENSORS {
        plan.add_tensor(&format!("blk.{}.t{}.weight", i / 9, i % 9), GgmlType::Q4_K, &[256, 4]).unwrap();
    }
    let names: Vec<String> = plan.tensors().iter().map(|t| t.name.clone()).collect();
    let mut w = GgufWriter::create(path, plan).unwrap();
    for name in names {
        w.write_tensor(&name, &[0u8; 4 * 144]).unwrap();
    }
    w.finish().unwrap();
}

fn write_large_data(path: &Path) {
    let mut plan = GgufPlan::new();
    let per_tensor = 4 << 20;
    let n = DATA_BYTES / per_tensor;
    for i in 0..n {
        plan.add_tensor(&format!("t{i}"), GgmlType::F32, &[per_tensor / 4]).unwrap();
    }
    let mut w = GgufWriter::create(path, plan).unwrap();
    let chunk = vec![1u8; per_tensor as usize];
    for i in 0..n {
        w.write_tensor(&format!("t{i}"), &chunk).unwrap();
    }
    w.finish().unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let index_path = dir.path().join("index.gguf");
    write_many_tensors(&index_path);
    let bytes = std::fs::read(&index_path).unwrap();
    let mut group = c.benchmark_group("gguf");
    group.throughput(Throughput::Elements(N_TENSORS as u64));
    group.bench_function("parse_index_4096_tensors_32k_vocab", |b| {
        b.iter(|| black_box(gguf::parse(black_box(&bytes)).unwrap().tensors.len()))
    });

    let data_path = dir.path().join("data.gguf");
    write_large_data(&data_path);
    let file = GgufFile::open(&data_path).unwrap();
    group.throughput(Throughput::Bytes(DATA_BYTES));
    group.bench_function("read_tensor_data_64MiB", |b| {
        b.iter(|| {
            let g = file.gguf().unwrap();
            let mut acc = 0u64;
            for t in &g.tensors {
                let data = g.tensor_data(t);
                acc = data.chunks_exact(8).fold(acc, |a, c| a ^ u64::from_le_bytes(c.try_into().unwrap()));
            }
            black_box(acc)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
