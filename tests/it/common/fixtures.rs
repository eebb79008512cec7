//! Test fixtures made in code: tiny Hugging Face Llama-family checkpoints, small trained
//! tokenizers and synthetic JSONL datasets.
//!
//! Everything is deterministic: the same arguments (and `seed`) always give the same bytes,
//! with no network access and nothing read from outside the test's own directory.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tokenizers::decoders::{byte_fallback::ByteFallback, fuse::Fuse, strip::Strip};
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{decoders, normalizers, pre_tokenizers, processors};
use tokenizers::{AddedToken, DecoderWrapper, SplitDelimiterBehavior, Tokenizer};

// ----- Deterministic PRNG ---------------------------------------------------------------------

/// A tiny seeded PRNG (the library's splitmix64), good enough for fixture weights and synthetic
/// data.
#[derive(Debug, Clone)]
pub struct Rng(gguftune::train::SplitMix64);

impl Rng {
    /// Creates a generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(gguftune::train::SplitMix64::new(seed))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[-scale, scale)`.
    pub fn uniform(&mut self, scale: f32) -> f32 {
        (2.0 * self.next_f32() - 1.0) * scale
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Uniform integer in `0..n` (`n` must be non-zero).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// FNV-1a hash of a string, used to give every tensor its own random stream.
fn fnv1a(text: &str) -> u64 {
    let step = |h: u64, b: u8| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
    text.bytes().fold(0xCBF2_9CE4_8422_2325, step)
}

// ----- Model specification --------------------------------------------------------------------

/// Floating-point type the fixture weights are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE single precision (`torch.float32`).
    F32,
    /// IEEE half precision (`torch.float16`).
    F16,
    /// bfloat16 (`torch.bfloat16`).
    BF16,
}

impl Dtype {
    /// The `torch_dtype` string transformers writes in `config.json`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
        }
    }

    /// The matching safetensors dtype.
    pub fn safetensors(self) -> safetensors::Dtype {
        match self {
            Dtype::F32 => safetensors::Dtype::F32,
            Dtype::F16 => safetensors::Dtype::F16,
            Dtype::BF16 => safetensors::Dtype::BF16,
        }
    }

    /// Encodes `values` as little-endian bytes of this dtype (rounding to nearest even).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let bytes = |v: f32| -> Vec<u8> {
            match self {
                Dtype::F32 => v.to_le_bytes().to_vec(),
                Dtype::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
                Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
            }
        };
        values.iter().flat_map(|&v| bytes(v)).collect()
    }
}

/// How many safetensors files the checkpoint is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    /// A single `model.safetensors`.
    One,
    /// `model-0000{1,2}-of-00002.safetensors` plus `model.safetensors.index.json`.
    Two,
}

/// Model family of the fixture: decides `architectures`, `model_type` and q/k/v biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyArch {
    /// `LlamaForCausalLM`, `model_type` `llama`.
    Llama,
    /// `MistralForCausalLM`, `model_type` `mistral`.
    Mistral,
    /// `Qwen2ForCausalLM`, `model_type` `qwen2`; adds `self_attn.{q,k,v}_proj.bias`.
    Qwen2,
}

impl TinyArch {
    /// `(architectures[0], model_type)` as written in `config.json`.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            TinyArch::Llama => ("LlamaForCausalLM", "llama"),
            TinyArch::Mistral => ("MistralForCausalLM", "mistral"),
            TinyArch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        }
    }
}

/// Which fixture tokenizer the model folder ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyTokenizer {
    /// Byte-level BPE in the GPT-2 / Llama-3 style ([`tiny_bpe_tokenizer`]).
    Bpe,
    /// Llama-2 SentencePiece-style BPE with byte fallback ([`tiny_spm_tokenizer`]).
    Spm,
}

/// Hyper-parameters of a tiny Llama-family model (field names abbreviate the HF config keys).
#[derive(Debug, Clone, PartialEq)]
pub struct TinyLlamaSpec {
    /// Model family.
    pub arch: TinyArch,
    /// `hidden_size`.
    pub hidden: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `num_key_value_heads`.
    pub kv_heads: usize,
    /// `intermediate_size`.
    pub ffn: usize,
    /// `max_position_embeddings` (also the tokenizer's `model_max_length`).
    pub ctx: usize,
    /// `rope_theta`.
    pub rope_theta: f32,
    /// `rms_norm_eps`.
    pub rms_eps: f32,
    /// `tie_word_embeddings`: when true no `lm_head.weight` is written.
    pub tie_embeddings: bool,
    /// Tokenizer written next to the weights.
    pub tokenizer: TinyTokenizer,
    /// `vocab_size` of the model when larger than the tokenizer's (as in checkpoints whose
    /// embedding is padded, and for realistic shapes in benchmarks); `None`: the tokenizer's size.
    pub vocab_size: Option<usize>,
}

impl Default for TinyLlamaSpec {
    fn default() -> Self {
        TinyLlamaSpec {
            arch: TinyArch::Llama,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            ffn: 128,
            ctx: 128,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
            tie_embeddings: false,
            tokenizer: TinyTokenizer::Spm,
            vocab_size: None,
        }
    }
}

impl TinyLlamaSpec {
    /// Per-head dimension, `hidden / heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

// ----- Weights --------------------------------------------------------------------------------

/// One generated tensor, with its f32 values before any dtype rounding.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureTensor {
    /// Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Row-major shape, `[out, in]` for linear weights.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// How a tensor's random values are drawn.
#[derive(Clone, Copy)]
enum Init {
    /// Linear weight `[out, in]`: uniform in ±1/sqrt(in).
    Linear,
    /// RMSNorm gain: 1 + uniform(±0.1).
    Norm,
    /// Token embedding: uniform(±0.5).
    Embedding,
    /// Projection bias: uniform(±0.1).
    Bias,
}

/// All tensors of a tiny model, in transformers' `state_dict` order.
///
/// A tensor's values depend only on `seed` and its name, so they are the same whatever the
/// dtype, sharding or tying of the checkpoint written.
pub fn tiny_llama_tensors(spec: &TinyLlamaSpec, vocab_size: usize, seed: u64) -> Vec<FixtureTensor> {
    use Init::*;
    let (h, f) = (spec.hidden, spec.ffn);
    let (q_rows, kv_rows) = (spec.heads * spec.head_dim(), spec.kv_heads * spec.head_dim());
    let mut out = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, init: Init| {
        let mut rng = Rng::new(seed ^ fnv1a(&name));
        let fan_in = *shape.last().expect("tensors have a shape") as f32;
        let count: usize = shape.iter().product();
        let values = (0..count)
            .map(|_| match init {
                Linear => rng.uniform(1.0 / fan_in.sqrt()),
                Norm => 1.0 + rng.uniform(0.1),
                Embedding => rng.uniform(0.5),
                Bias => rng.uniform(0.1),
            })
            .collect();
        out.push(FixtureTensor { name, shape, values });
    };
    add("model.embed_tokens.weight".into(), vec![vocab_size, h], Embedding);
    for layer in 0..spec.layers {
        let p = format!("model.layers.{layer}");
        for (proj, rows) in [("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)] {
            add(format!("{p}.self_attn.{proj}.weight"), vec![rows, h], Linear);
            if spec.arch == TinyArch::Qwen2 {
                add(format!("{p}.self_attn.{proj}.bias"), vec![rows], Bias);
            }
        }
        let linears =
            [("self_attn.o_proj", h, q_rows), ("mlp.gate_proj", f, h), ("mlp.up_proj", f, h), ("mlp.down_proj", h, f)];
        for (name, rows, cols) in linears {
            add(format!("{p}.{name}.weight"), vec![rows, cols], Linear);
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            add(format!("{p}.{norm}.weight"), vec![h], Norm);
        }
    }
    add("model.norm.weight".into(), vec![h], Norm);
    if !spec.tie_embeddings {
        add("lm_head.weight".into(), vec![vocab_size, h], Linear);
    }
    out
}

/// What [`tiny_llama`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureInfo {
    /// `vocab_size` in `config.json`: the tokenizer's size including added tokens.
    pub vocab_size: usize,
    /// Id of the BOS token.
    pub bos_id: u32,
    /// Id of the EOS token.
    pub eos_id: u32,
    /// Id of the padding token, when the tokenizer config names one.
    pub pad_id: Option<u32>,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// Just the `.safetensors` files, in shard order.
    pub weight_files: Vec<PathBuf>,
    /// Tensor names in `state_dict` order.
    pub tensor_names: Vec<String>,
    /// `(name, shape)` of every tensor, in `state_dict` order.
    pub tensor_shapes: Vec<(String, Vec<usize>)>,
    /// Bytes of tensor data over all shards (the index's `metadata.total_size`).
    pub total_size: u64,
}

impl FixtureInfo {
    /// Shape of the named tensor, if the checkpoint has it.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        let found = self.tensor_shapes.iter().find(|(n, _)| n == name);
        found.map(|(_, shape)| shape.as_slice())
    }
}

fn to_io(err: impl std::fmt::Display) -> io::Error {
    io::Error::other(err.to_string())
}

/// Writes pretty JSON (2-space indent, trailing newline, as transformers does).
fn write_json(path: &Path, value: &Value, files: &mut Vec<PathBuf>) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(to_io)?;
    fs::write(path, text + "\n")?;
    files.push(path.to_path_buf());
    Ok(())
}

/// Writes one safetensors file of already encoded tensors, with `{"format": "pt"}` metadata.
fn write_safetensors(path: &Path, part: &[(&FixtureTensor, Vec<u8>)], dtype: Dtype) -> io::Result<()> {
    let mut views = Vec::new();
    for (tensor, bytes) in part {
        let shape = tensor.shape.clone();
        let view = safetensors::tensor::TensorView::new(dtype.safetensors(), shape, bytes);
        views.push((tensor.name.clone(), view.map_err(to_io)?));
    }
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::serialize_to_file(views, &metadata, path).map_err(to_io)
}

/// Writes a tiny randomly initialised model folder into `dir` (created if missing) as
/// transformers' `save_pretrained` lays one out: `config.json`, `generation_config.json`,
/// `model.safetensors` or two shards plus `model.safetensors.index.json`, `tokenizer.json` and
/// `tokenizer_config.json`. The same `seed` gives the same values for any dtype and sharding.
pub fn tiny_llama(
    dir: &Path,
    spec: &TinyLlamaSpec,
    dtype: Dtype,
    shards: Shards,
    seed: u64,
) -> io::Result<FixtureInfo> {
    let divisible = spec.hidden % spec.heads == 0 && spec.heads % spec.kv_heads == 0;
    assert!(divisible, "hidden must divide by heads, and heads by kv_heads");
    fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let tok = TokenizerFiles::new(spec.tokenizer, spec.ctx);
    let vocab_size = tok.tokenizer.get_vocab_size(true).max(spec.vocab_size.unwrap_or(0));

    let tensors = tiny_llama_tensors(spec, vocab_size, seed);
    let encoded: Vec<_> = tensors.iter().map(|t| (t, dtype.encode(&t.values))).collect();
    let total_size: u64 = encoded.iter().map(|(_, b)| b.len() as u64).sum();
    let mut weight_files = Vec::new();
    if shards == Shards::One {
        weight_files.push(dir.join("model.safetensors"));
        write_safetensors(&weight_files[0], &encoded, dtype)?;
    } else {
        // Fill the first shard up to half the bytes in state_dict order, as transformers'
        // max_shard_size splitting does (so a layer may straddle the two shards).
        let (mut split, mut bytes) = (0, 0);
        while split < encoded.len() && bytes < total_size / 2 {
            bytes += encoded[split].1.len() as u64;
            split += 1;
        }
        let split = split.clamp(1, encoded.len() - 1);
        let mut weight_map = std::collections::BTreeMap::new(); // transformers sorts the keys
        for (i, part) in [&encoded[..split], &encoded[split..]].into_iter().enumerate() {
            let file = format!("model-{:05}-of-00002.safetensors", i + 1);
            weight_files.push(dir.join(&file));
            write_safetensors(&dir.join(&file), part, dtype)?;
            weight_map.extend(part.iter().map(|(t, _)| (t.name.clone(), file.clone())));
        }
        let index = json!({ "metadata": { "total_size": total_size }, "weight_map": weight_map });
        write_json(&dir.join("model.safetensors.index.json"), &index, &mut files)?;
    }
    files.extend(weight_files.iter().cloned());

    let (architecture, model_type) = spec.arch.names();
    let mut config = json!({
        "architectures": [architecture],
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_id,
        "hidden_act": "silu",
        "hidden_size": spec.hidden,
        "initializer_range": 0.02,
        "intermediate_size": spec.ffn,
        "max_position_embeddings": spec.ctx,
        "model_type": model_type,
        "num_attention_heads": spec.heads,
        "num_hidden_layers": spec.layers,
        "num_key_value_heads": spec.kv_heads,
        "rms_norm_eps": json_f32(spec.rms_eps),
        "rope_scaling": null,
        "rope_theta": json_f32(spec.rope_theta),
        "tie_word_embeddings": spec.tie_embeddings,
        "torch_dtype": dtype.torch_name(),
        "transformers_version": "4.46.0",
        "use_cache": true,
        "vocab_size": vocab_size,
    });
    let extra = match spec.arch {
        TinyArch::Llama => {
            json!({ "attention_bias": false, "mlp_bias": false, "pretraining_tp": 1 })
        }
        TinyArch::Mistral => json!({ "sliding_window": null }),
        TinyArch::Qwen2 => json!({ "use_sliding_window": false, "sliding_window": spec.ctx }),
    };
    merge_objects(&mut config, extra);
    write_json(&dir.join("config.json"), &config, &mut files)?;
    let generation = json!({ "_from_model_config": true, "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_id, "transformers_version": "4.46.0" });
    write_json(&dir.join("generation_config.json"), &generation, &mut files)?;

    let tokenizer_path = dir.join("tokenizer.json");
    tok.tokenizer.save(&tokenizer_path, true).map_err(to_io)?;
    files.push(tokenizer_path);
    write_json(&dir.join("tokenizer_config.json"), &tok.config, &mut files)?;

    Ok(FixtureInfo {
        vocab_size,
        bos_id: tok.bos_id,
        eos_id: tok.eos_id,
        pad_id: tok.pad_id,
        files,
        weight_files,
        tensor_names: tensors.iter().map(|t| t.name.clone()).collect(),
        tensor_shapes: tensors.iter().map(|t| (t.name.clone(), t.shape.clone())).collect(),
        total_size,
    })
}

/// An f32 as the JSON number Python would print for it (`1e-05`, not `9.99999974e-06`).
fn json_f32(value: f32) -> f64 {
    value.to_string().parse().expect("f32 display parses as f64")
}

/// Adds the keys of JSON object `extra` to JSON object `target`.
fn merge_objects(target: &mut Value, extra: Value) {
    let (Value::Object(target), Value::Object(extra)) = (target, extra) else {
        panic!("merge_objects takes two JSON objects");
    };
    target.extend(extra);
}

// ----- Tokenizers -----------------------------------------------------------------------------

/// Strings for tokenization-parity tests; both fixture tokenizers round-trip each of them
/// exactly: `decode(encode(s, true).ids, true) == s`.
pub const TOKENIZER_SAMPLES: &[&str] = &[
    "Hello world! This is a tiny tokenizer test.",
    "1234567 89",
    "a    b",
    "\tindented\twith\ttabs",
    "line one\n\nline two\n",
    "fn main() { println!(\"hi\"); }",
    "naïve café 日本語 🤗",
    " Mixed: x=42; y = \"ünïcödé\" // 3.14 it's DONE\r\n  end ",
    "The movie was great.",
];

/// ChatML chat template, shipped with the byte-level BPE tokenizer.
pub const CHATML_TEMPLATE: &str = r#"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#;

/// Llama-2 `[INST]` chat template, shipped with the SentencePiece-style tokenizer.
pub const LLAMA2_TEMPLATE: &str = r#"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"#;

/// The Llama-3 pre-tokenizer regex.
pub const LLAMA3_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Total vocabulary of [`tiny_spm_tokenizer`]: 3 specials, 256 byte tokens, learned pieces.
pub const SPM_VOCAB_SIZE: usize = 512;
/// Model vocabulary of [`tiny_bpe_tokenizer`]; its 4 added special tokens follow (508..=511).
pub const BPE_MODEL_VOCAB_SIZE: usize = 508;
/// Special tokens of [`tiny_bpe_tokenizer`], in id order after the model vocabulary.
pub const BPE_SPECIAL_TOKENS: [&str; 4] = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"];

/// The built-in training corpus: English, code, numbers, some accented and Japanese text and
/// every sentence shape of the synthetic datasets. It has no emoji, so the SentencePiece-style
/// tokenizer must fall back to byte tokens for them.
pub fn tokenizer_corpus() -> Vec<String> {
    const TEXT: &[&str] = &[
        "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
        "Once upon a time there was a little model that wanted to learn how to talk.",
        "It read many books, and every day it got a little better at guessing the next word.",
        "Fine-tuning adapts a pretrained model to a new task with a small learning rate.",
        "We train low-rank adapters on quantized weights and then merge them back.",
        "Numbers like 0, 1, 2, 3, 42, 100, 2024 and 3.14159 appear in text too.",
        "Call 555-0123 before 10:30 or email hello@example.com for help!",
        "fn main() {\n    let x: u32 = 42;\n    println!(\"x = {}\", x);\n}\n",
        "def add(a, b):\n\treturn a + b\n\nprint(add(1, 2))\n",
        "for (int i = 0; i < n; i++) { sum += values[i]; }",
        "if let Some(value) = map.get(&key) { return Ok(value.clone()); }",
        "{\"name\": \"tiny\", \"layers\": 2, \"tags\": [\"test\", \"json\"]}",
        "Le café est très bon, et la crème brûlée aussi. C'est naïve, non?",
        "Über den Wolken muss die Freiheit wohl grenzenlos sein. Straße, Größe, Fuß.",
        "日本語のテキストも少し含めます。東京は日本の首都です。",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ Hello World",
        "I'm sure you'll like it; they've said it's what we'd wanted. You're right.",
        "Question: what is two plus two?\nAnswer: four.\n\nQuestion: and the sky?\nAnswer: blue.",
    ];
    let mut corpus: Vec<String> = TEXT.iter().map(|s| s.to_string()).collect();
    for subject in SUBJECTS {
        for word in POSITIVE_WORDS.iter().chain(NEGATIVE_WORDS) {
            corpus.push(format!("Review: The {subject} was {word}.\nSentiment: positive negative"));
        }
    }
    corpus.push(format!("{SENTIMENT_INSTRUCTION} {SENTIMENT_SYSTEM_PROMPT}"));
    corpus
}

/// A quiet BPE trainer reserving `reserved` as the first ids.
fn bpe_trainer(vocab_size: usize, reserved: Vec<AddedToken>) -> BpeTrainer {
    let builder = BpeTrainer::builder().show_progress(false).vocab_size(vocab_size);
    builder.special_tokens(reserved).build()
}

/// A post-processor adding `bos` (with id `bos_id`) before each sequence.
fn bos_template(bos: &str, bos_id: u32) -> TemplateProcessing {
    TemplateProcessing::builder()
        .try_single(format!("{bos} $A"))
        .expect("valid single template")
        .try_pair(format!("{bos} $A {bos} $B"))
        .expect("valid pair template")
        .special_tokens(vec![(bos, bos_id)])
        .build()
        .expect("template builds")
}

/// Runs `tokenizer` through its JSON form, so the value returned is exactly what
/// `Tokenizer::from_file` reads back from the saved `tokenizer.json`.
fn reload(tokenizer: &Tokenizer) -> Tokenizer {
    let text = tokenizer.to_string(false).expect("tokenizer serializes");
    text.parse().expect("tokenizer deserializes")
}

/// A Llama-2 style tokenizer ([`SPM_VOCAB_SIZE`] tokens): BPE with `byte_fallback` and
/// `fuse_unk`, `<unk>`=0, `<s>`=1, `</s>`=2, the byte tokens `<0x00>`..`<0xFF>` at ids 3..=258,
/// then learned pieces. Normalizer `Prepend("▁")` + `Replace(" ", "▁")`, no pre-tokenizer,
/// decoder `Replace("▁", " ")` + `ByteFallback` + `Fuse` + `Strip(" ", 1, 0)`, and a
/// post-processor prepending `<s>`.
pub fn tiny_spm_tokenizer() -> Tokenizer {
    let model = BPE::builder().unk_token("<unk>".into()).fuse_unk(true).byte_fallback(true);
    let model = model.build().expect("empty BPE builds");
    let normalizer = normalizers::Sequence::new(vec![
        Prepend::new("▁".into()).into(),
        Replace::new(" ", "▁").expect("valid replace").into(),
    ]);
    let special: Vec<_> = ["<unk>", "<s>", "</s>"].map(|t| AddedToken::from(t, true)).into();
    let bytes = (0..=255u8).map(|b| AddedToken::from(format!("<0x{b:02X}>"), false));
    let reserved = special.iter().cloned().chain(bytes).collect();

    // Train on words split before each "▁", as SentencePiece pieces never span words; the
    // final tokenizer has no pre-tokenizer, like Llama-2's tokenizer.json.
    let mut trainer = TrainerWrapper::BpeTrainer(bpe_trainer(SPM_VOCAB_SIZE, reserved));
    let mut training = Tokenizer::new(model);
    training.with_normalizer(Some(normalizer.clone()));
    let split = Split::new(SplitPattern::String("▁".into()), SplitDelimiterBehavior::MergedWithNext, false);
    training.with_pre_tokenizer(Some(split.expect("valid split")));
    training.train(&mut trainer, tokenizer_corpus().into_iter()).expect("SPM training succeeds");

    let mut tokenizer = Tokenizer::new(training.get_model().clone());
    tokenizer.with_normalizer(Some(normalizer));
    let decoder: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").expect("valid replace").into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
        Strip::new(' ', 1, 0).into(),
    ];
    tokenizer.with_decoder(Some(decoders::sequence::Sequence::new(decoder)));
    tokenizer.with_post_processor(Some(bos_template("<s>", 1)));
    tokenizer.add_special_tokens(&special);
    let tokenizer = reload(&tokenizer);
    assert_eq!(tokenizer.get_vocab_size(true), SPM_VOCAB_SIZE, "corpus too small for the vocab");
    tokenizer
}

/// A Llama-3 style byte-level BPE tokenizer: pre-tokenizer `Split(`[`LLAMA3_SPLIT_REGEX`]`,
/// Isolated)` + `ByteLevel(add_prefix_space=false, trim_offsets=true, use_regex=false)`, the 256
/// byte-level characters at ids 0..=255, [`BPE_MODEL_VOCAB_SIZE`] model tokens, `ignore_merges`
/// as in Llama-3, the [`BPE_SPECIAL_TOKENS`] as added special tokens after the model vocabulary,
/// a `ByteLevel` decoder and a post-processor prepending `<|begin_of_text|>`.
pub fn tiny_bpe_tokenizer() -> Tokenizer {
    let model = BPE::builder().ignore_merges(true).build().expect("empty BPE builds");
    let regex = SplitPattern::Regex(LLAMA3_SPLIT_REGEX.into());
    let split = Split::new(regex, SplitDelimiterBehavior::Isolated, false);
    let pre_tokenizer = pre_tokenizers::sequence::Sequence::new(vec![
        split.expect("valid Llama-3 regex").into(),
        ByteLevel::new(false, true, false).into(),
    ]);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::new(true, true, true)));
    let mut trainer = bpe_trainer(BPE_MODEL_VOCAB_SIZE, Vec::new());
    trainer.initial_alphabet = ByteLevel::alphabet();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    tokenizer.train(&mut trainer, tokenizer_corpus().into_iter()).expect("BPE training succeeds");
    let model_size = tokenizer.get_vocab_size(false);
    assert_eq!(model_size, BPE_MODEL_VOCAB_SIZE, "corpus too small for the vocab");

    tokenizer.add_special_tokens(&BPE_SPECIAL_TOKENS.map(|t| AddedToken::from(t, true)));
    let template = bos_template(BPE_SPECIAL_TOKENS[0], BPE_MODEL_VOCAB_SIZE as u32);
    let byte_level = ByteLevel::new(true, false, true).into();
    let processor = processors::sequence::Sequence::new(vec![byte_level, template.into()]);
    tokenizer.with_post_processor(Some(processor));
    reload(&tokenizer)
}

/// A fixture tokenizer with the `tokenizer_config.json` transformers writes for it.
struct TokenizerFiles {
    tokenizer: Tokenizer,
    config: Value,
    bos_id: u32,
    eos_id: u32,
    pad_id: Option<u32>,
}

impl TokenizerFiles {
    fn new(kind: TinyTokenizer, ctx: usize) -> Self {
        // SPM follows Llama-2 (no pad token); BPE follows Qwen2-Instruct-like ChatML: EOS is
        // `<|im_end|>` and padding uses `<|end_of_text|>`.
        let [begin, end, _, im_end] = BPE_SPECIAL_TOKENS;
        let (tokenizer, specials, [bos, eos], unk, pad, template) = match kind {
            TinyTokenizer::Spm => {
                let specials = vec!["<unk>", "<s>", "</s>"];
                (tiny_spm_tokenizer(), specials, ["<s>", "</s>"], Some("<unk>"), None, LLAMA2_TEMPLATE)
            }
            TinyTokenizer::Bpe => {
                let specials = BPE_SPECIAL_TOKENS.to_vec();
                (tiny_bpe_tokenizer(), specials, [begin, im_end], None, Some(end), CHATML_TEMPLATE)
            }
        };
        let id = |t: &str| tokenizer.token_to_id(t).expect("special token in vocab");
        let mut added_tokens = serde_json::Map::new();
        for token in specials {
            let props = json!({ "content": token, "lstrip": false, "normalized": false,
                "rstrip": false, "single_word": false, "special": true });
            added_tokens.insert(id(token).to_string(), props);
        }
        let mut config = json!({
            "add_bos_token": true,
            "add_eos_token": false,
            "added_tokens_decoder": added_tokens,
            "bos_token": bos,
            "chat_template": template,
            "clean_up_tokenization_spaces": false,
            "eos_token": eos,
            "model_max_length": ctx,
            "pad_token": pad,
            "unk_token": unk,
        });
        let extra = match kind {
            TinyTokenizer::Spm => json!({ "legacy": true, "sp_model_kwargs": {},
                "tokenizer_class": "LlamaTokenizer", "use_default_system_prompt": false }),
            TinyTokenizer::Bpe => json!({ "model_input_names": ["input_ids", "attention_mask"],
                "tokenizer_class": "PreTrainedTokenizerFast" }),
        };
        merge_objects(&mut config, extra);
        let (bos_id, eos_id, pad_id) = (id(bos), id(eos), pad.map(id));
        TokenizerFiles { tokenizer, config, bos_id, eos_id, pad_id }
    }
}

// ----- Datasets -------------------------------------------------------------------------------

/// Adjectives whose reviews are labelled `positive`.
pub const POSITIVE_WORDS: &[&str] =
    &["great", "lovely", "amazing", "superb", "pleasant", "splendid", "charming", "perfect"];
/// Adjectives whose reviews are labelled `negative`.
pub const NEGATIVE_WORDS: &[&str] = &["terrible", "awful", "horrible", "boring", "dreadful", "poor", "bad", "dull"];
/// Things the synthetic reviews talk about.
pub const SUBJECTS: &[&str] =
    &["movie", "food", "service", "book", "weather", "concert", "hotel", "game", "coffee", "trip"];
/// Sentence shapes of the synthetic reviews: `{s}` is a subject, `{a}` an adjective.
pub const REVIEW_TEMPLATES: &[&str] =
    &["The {s} was {a}.", "What a {a} {s}!", "I found the {s} {a}.", "Honestly, the {s} felt {a}."];
/// Instruction used by the instruction-style datasets.
pub const SENTIMENT_INSTRUCTION: &str = "Classify the sentiment of the review as positive or negative.";
/// System prompt used by [`chat_rows`].
pub const SENTIMENT_SYSTEM_PROMPT: &str = "You are a sentiment classifier. Reply with one word: positive or negative.";

/// One synthetic sentiment example; the label follows from the adjective alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentimentExample {
    /// A short review sentence, e.g. `The movie was great.`
    pub review: String,
    /// `positive` or `negative`.
    pub label: &'static str,
}

/// `n` deterministic sentiment examples with roughly balanced labels. Each row generator below,
/// given the same `n` and `seed`, carries these same examples in its own format.
pub fn sentiment_examples(n: usize, seed: u64) -> Vec<SentimentExample> {
    let mut rng = Rng::new(seed ^ 0x5EED_DA7A);
    let mut example = |_| {
        let positive = rng.below(2) == 0;
        let words = if positive { POSITIVE_WORDS } else { NEGATIVE_WORDS };
        let (adjective, template, subject) = (*rng.pick(words), *rng.pick(REVIEW_TEMPLATES), *rng.pick(SUBJECTS));
        let review = template.replace("{s}", subject).replace("{a}", adjective);
        SentimentExample { review, label: if positive { "positive" } else { "negative" } }
    };
    (0..n).map(&mut example).collect()
}

/// The correct label of a review made from the word lists (`None` if it has none of the words).
pub fn sentiment_label(review: &str) -> Option<&'static str> {
    let has = |words: &[&str]| review.split(|c: char| !c.is_alphabetic()).any(|w| words.contains(&w));
    match (has(POSITIVE_WORDS), has(NEGATIVE_WORDS)) {
        (true, _) => Some("positive"),
        (false, true) => Some("negative"),
        (false, false) => None,
    }
}

/// Writes `rows` as JSON Lines: one compact object per line, each ending in `\n`.
pub fn write_jsonl(path: &Path, rows: &[Value]) -> io::Result<()> {
    let mut text = String::new();
    for row in rows {
        text += &serde_json::to_string(row).map_err(to_io)?;
        text.push('\n');
    }
    fs::write(path, text)
}

/// Maps `sentiment_examples(n, seed)` through `row`.
fn rows_of(n: usize, seed: u64, row: impl Fn(SentimentExample) -> Value) -> Vec<Value> {
    sentiment_examples(n, seed).into_iter().map(row).collect()
}

/// `{"text": "Review: <review>\nSentiment: <label>"}` rows.
pub fn text_rows(n: usize, seed: u64) -> Vec<Value> {
    rows_of(n, seed, |e| json!({ "text": format!("Review: {}\nSentiment: {}", e.review, e.label) }))
}

/// `{"prompt": "Review: <review>\nSentiment:", "completion": " <label>"}` rows.
pub fn prompt_completion_rows(n: usize, seed: u64) -> Vec<Value> {
    rows_of(n, seed, |e| {
        let prompt = format!("Review: {}\nSentiment:", e.review);
        json!({ "prompt": prompt, "completion": format!(" {}", e.label) })
    })
}

/// Alpaca rows: `{"instruction", "input": <review>, "output": <label>}`.
pub fn alpaca_rows(n: usize, seed: u64) -> Vec<Value> {
    rows_of(n, seed, |e| json!({ "instruction": SENTIMENT_INSTRUCTION, "input": e.review, "output": e.label }))
}

/// Dolly rows: `{"instruction", "context": <review>, "response": <label>, "category"}`.
pub fn dolly_rows(n: usize, seed: u64) -> Vec<Value> {
    rows_of(n, seed, |e| {
        json!({ "instruction": SENTIMENT_INSTRUCTION, "context": e.review, "response": e.label,
            "category": "classification" })
    })
}

/// Chat rows: `{"messages": [system, user <review>, assistant <label>]}` (`role`, `content`).
pub fn chat_rows(n: usize, seed: u64) -> Vec<Value> {
    rows_of(n, seed, |e| {
        let system = json!({ "role": "system", "content": SENTIMENT_SYSTEM_PROMPT });
        let user = json!({ "role": "user", "content": e.review });
        json!({ "messages": [system, user, { "role": "assistant", "content": e.label }] })
    })
}

// ----- Falcon-style tokenizer -----------------------------------------------------------------

/// The added tokens of tiiuae/falcon-7b's tokenizer.json, at ids 0..=11 (`<|endoftext|>`, the
/// EOS, is id 11).
pub const FALCON_SPECIAL_TOKENS: [&str; 12] = [
    ">>TITLE<<",
    ">>ABSTRACT<<",
    ">>INTRODUCTION<<",
    ">>SUMMARY<<",
    ">>COMMENT<<",
    ">>ANSWER<<",
    ">>QUESTION<<",
    ">>DOMAIN<<",
    ">>PREFIX<<",
    ">>SUFFIX<<",
    ">>MIDDLE<<",
    "<|endoftext|>",
];
/// Total vocabulary of [`tiny_falcon_tokenizer`].
pub const FALCON_VOCAB_SIZE: usize = 512;

/// A tiiuae/falcon-7b style byte-level BPE tokenizer ([`FALCON_VOCAB_SIZE`] tokens): the
/// [`FALCON_SPECIAL_TOKENS`] as added special tokens at ids 0..=11, then the 256 byte-level
/// characters and the learned tokens. No normalizer; Falcon's pre-tokenizer sequence
/// `Punctuation(Contiguous)` + `ByteLevel(add_prefix_space=false, trim_offsets=true,
/// use_regex=true)` + `Digits(individual_digits=false)` + `Split("[0-9][0-9][0-9]", Isolated)`;
/// a `ByteLevel` decoder and no post-processor.
pub fn tiny_falcon_tokenizer() -> Tokenizer {
    let model = BPE::builder().build().expect("empty BPE builds");
    let groups = SplitPattern::Regex("[0-9][0-9][0-9]".into());
    let groups = Split::new(groups, SplitDelimiterBehavior::Isolated, false).expect("valid digit-group regex");
    let pre_tokenizer = pre_tokenizers::sequence::Sequence::new(vec![
        pre_tokenizers::punctuation::Punctuation::new(SplitDelimiterBehavior::Contiguous).into(),
        ByteLevel::new(false, true, true).into(),
        pre_tokenizers::digits::Digits::new(false).into(),
        groups.into(),
    ]);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::new(true, true, true)));
    let reserved = FALCON_SPECIAL_TOKENS.map(|t| AddedToken::from(t, true)).to_vec();
    let mut trainer = bpe_trainer(FALCON_VOCAB_SIZE, reserved);
    trainer.initial_alphabet = ByteLevel::alphabet();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    tokenizer.train(&mut trainer, tokenizer_corpus().into_iter()).expect("BPE training succeeds");
    let tokenizer = reload(&tokenizer);
    assert_eq!(tokenizer.get_vocab_size(true), FALCON_VOCAB_SIZE, "corpus too small for the vocab");
    tokenizer
}
