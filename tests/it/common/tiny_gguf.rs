//! Small GGUF files written with our own writer: a file with every metadata type, and a tiny
//! Llama model (no vocabulary) that llama.cpp can load.

use std::path::Path;

use gguftune::gguf::{GgmlType, GgufPlan, GgufWriter, MetaArray, MetaValue};

pub use super::fixtures::Rng;

/// Metadata with one value of each of the 13 types, nested arrays and an empty array.
pub fn every_value_type() -> Vec<(String, MetaValue)> {
    vec![
        ("test.u8".into(), MetaValue::U8(200)),
        ("test.i8".into(), MetaValue::I8(-100)),
        ("test.u16".into(), MetaValue::U16(60000)),
        ("test.i16".into(), MetaValue::I16(-30000)),
        ("test.u32".into(), MetaValue::U32(4_000_000_000)),
        ("test.i32".into(), MetaValue::I32(-2_000_000_000)),
        ("test.f32".into(), MetaValue::F32(3.5)),
        ("test.bool".into(), MetaValue::Bool(true)),
        ("test.string".into(), MetaValue::String("naïve 日本語 🤗\n\t".into())),
        ("test.u64".into(), MetaValue::U64(u64::MAX)),
        ("test.i64".into(), MetaValue::I64(i64::MIN)),
        ("test.f64".into(), MetaValue::F64(-1.25e300)),
        ("test.array.f32".into(), MetaValue::Array(MetaArray::F32(vec![0.5, -1.0, 2.25]))),
        ("test.array.string".into(), MetaValue::Array(MetaArray::String(vec!["a".into(), "".into(), "ü".into()]))),
        ("test.array.empty".into(), MetaValue::Array(MetaArray::I32(vec![]))),
        ("test.array.bool".into(), MetaValue::Array(MetaArray::Bool(vec![true, false]))),
        (
            "test.array.nested".into(),
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::U8(vec![1, 2, 3]),
                MetaArray::String(vec!["x".into()]),
                MetaArray::Array(vec![MetaArray::I64(vec![-1])]),
            ])),
        ),
    ]
}

/// Writes a file with [`every_value_type`] metadata and tensors of several types (random bytes).
/// Returns the tensor data written, in order.
pub fn write_sample(path: &Path, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut plan = GgufPlan::new();
    plan.add_kv("general.architecture", "sample").unwrap();
    for (k, v) in every_value_type() {
        plan.add_kv(&k, v).unwrap();
    }
    let shapes: &[(&str, GgmlType, &[u64])] = &[
        ("f32.weight", GgmlType::F32, &[7, 3]),
        ("f16.weight", GgmlType::F16, &[5]),
        ("q8_0.weight", GgmlType::Q8_0, &[64, 2]),
        ("q4_k.weight", GgmlType::Q4_K, &[256, 1, 2]),
        ("bf16.weight", GgmlType::BF16, &[3, 1, 1, 2]),
    ];
    for (name, ty, ne) in shapes {
        plan.add_tensor(name, *ty, ne).unwrap();
    }
    let mut rng = Rng::new(seed);
    let data: Vec<(String, Vec<u8>)> =
        plan.tensors().iter().map(|t| (t.name.clone(), rng.bytes(t.n_bytes as usize))).collect();
    let mut w = GgufWriter::create(path, plan).unwrap();
    for (name, bytes) in &data {
        // Write in two chunks to exercise streaming.
        let half = bytes.len() / 2;
        w.write_chunk(name, &bytes[..half]).unwrap();
        w.write_chunk(name, &bytes[half..]).unwrap();
    }
    w.finish().unwrap();
    data
}

/// Hyper-parameters of [`write_tiny_llama`].
pub struct TinyLlamaGguf {
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ff: u64,
    pub n_vocab: u64,
    pub n_ctx: u64,
}

impl Default for TinyLlamaGguf {
    fn default() -> Self {
        TinyLlamaGguf { n_embd: 64, n_layer: 2, n_head: 4, n_head_kv: 2, n_ff: 128, n_vocab: 96, n_ctx: 128 }
    }
}

/// Writes an F32 Llama model GGUF with random weights and no vocabulary
/// (`tokenizer.ggml.model = "none"`), complete enough for `llama_model_load_from_file`.
pub fn write_tiny_llama(path: &Path, h: &TinyLlamaGguf, seed: u64) {
    let mut plan = GgufPlan::new();
    let head_dim = h.n_embd / h.n_head;
    let kvs: Vec<(&str, MetaValue)> = vec![
        ("general.architecture", "llama".into()),
        ("general.name", "tiny".into()),
        ("general.file_type", MetaValue::U32(0)),
        ("llama.context_length", MetaValue::U32(h.n_ctx as u32)),
        ("llama.embedding_length", MetaValue::U32(h.n_embd as u32)),
        ("llama.block_count", MetaValue::U32(h.n_layer as u32)),
        ("llama.feed_forward_length", MetaValue::U32(h.n_ff as u32)),
        ("llama.attention.head_count", MetaValue::U32(h.n_head as u32)),
        ("llama.attention.head_count_kv", MetaValue::U32(h.n_head_kv as u32)),
        ("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5)),
        ("llama.rope.freq_base", MetaValue::F32(10000.0)),
        ("llama.rope.dimension_count", MetaValue::U32(head_dim as u32)),
        ("llama.vocab_size", MetaValue::U32(h.n_vocab as u32)),
        ("tokenizer.ggml.model", "none".into()),
    ];
    for (k, v) in kvs {
        plan.add_kv(k, v).unwrap();
    }
    let kv_dim = head_dim * h.n_head_kv;
    let mut tensors: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![h.n_embd, h.n_vocab])];
    for i in 0..h.n_layer {
        let blk = |s: &str| format!("blk.{i}.{s}.weight");
        tensors.push((blk("attn_norm"), vec![h.n_embd]));
        tensors.push((blk("attn_q"), vec![h.n_embd, h.n_embd]));
        tensors.push((blk("attn_k"), vec![h.n_embd, kv_dim]));
        tensors.push((blk("attn_v"), vec![h.n_embd, kv_dim]));
        tensors.push((blk("attn_output"), vec![h.n_embd, h.n_embd]));
        tensors.push((blk("ffn_norm"), vec![h.n_embd]));
        tensors.push((blk("ffn_gate"), vec![h.n_embd, h.n_ff]));
        tensors.push((blk("ffn_up"), vec![h.n_embd, h.n_ff]));
        tensors.push((blk("ffn_down"), vec![h.n_ff, h.n_embd]));
    }
    tensors.push(("output_norm.weight".into(), vec![h.n_embd]));
    tensors.push(("output.weight".into(), vec![h.n_embd, h.n_vocab]));
    for (name, ne) in &tensors {
        plan.add_tensor(name, GgmlType::F32, ne).unwrap();
    }
    let mut rng = Rng::new(seed);
    let mut w = GgufWriter::create(path, plan).unwrap();
    for (name, ne) in &tensors {
        let n: u64 = ne.iter().product();
        let is_norm = ne.len() == 1;
        let scale = 1.0 / (ne[0] as f32).sqrt();
        let bytes: Vec<u8> = (0..n)
            .flat_map(|_| if is_norm { 1.0 + rng.uniform(0.1) } else { rng.uniform(scale) }.to_le_bytes())
            .collect();
        w.write_tensor(name, &bytes).unwrap();
    }
    w.finish().unwrap();
}
