//! `convert` checked against independent judges: llama.cpp loads every output type and its
//! logits match a plain-Rust forward pass of the Hugging Face weights; llama.cpp tokenizes like
//! the `tokenizers` crate; quantized bytes equal `llama_model_quantize`'s.

use std::fs;
use std::path::{Path, PathBuf};

use gguftune::ggml::{self, LlamaContext, LlamaModel, Runtime};
use gguftune::gguf::GgufFile;
use gguftune::quant::FileType;

use crate::common::fixtures::{
    tiny_bpe_tokenizer, tiny_llama, tiny_spm_tokenizer, Dtype, Shards, TinyArch, TinyLlamaSpec, TinyTokenizer,
    TOKENIZER_SAMPLES,
};
use crate::common::reference::{max_relative_error, nmse, HfWeights};
use crate::common::{convert_to, gguftune, temp_dir, transformers_checkpoint};

/// f32 GGUF logits vs the reference: both compute in f32, but in different orders (ggml's
/// blocked dot products and fused softmax); 1e-3 of the largest logit is far above that rounding
/// (about 1e-6 here) and far below any real mistake (a wrong permutation gives errors near 1).
const F32_RELATIVE_TOLERANCE: f32 = 1e-3;
/// q8_0 keeps 8 bits per weight with one f16 scale per 32, and ggml rounds activations to the
/// weight's dot-product type (q8_0, f16, bf16): ggml's test-quantize-fns allows 0.002 RMSE per dot
/// product; through a 2-layer model the NMSE of the logits stays below 1e-3 (seen: 1.1e-4 for q8_0).
const Q8_0_NMSE_TOLERANCE: f64 = 1e-3;

fn tokens_for(vocab: usize) -> Vec<i32> {
    (0..24).map(|i| ((i * 37 + 11) % vocab) as i32).collect()
}

fn llama_logits(path: &Path, tokens: &[i32]) -> Vec<Vec<f32>> {
    let model = LlamaModel::load(Runtime::get(), path).unwrap();
    let mut ctx = LlamaContext::new(&model, 64, 2).unwrap();
    ctx.logits_all(tokens).unwrap()
}

fn model_dir(root: &Path, name: &str, spec: &TinyLlamaSpec, dtype: Dtype, shards: Shards) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    tiny_llama(&dir, spec, dtype, shards, 17).unwrap();
    dir
}

#[test]
fn f32_logits_match_the_reference_for_every_architecture() {
    let root = temp_dir();
    let cases = [
        ("llama", TinyLlamaSpec::default()),
        ("mistral", TinyLlamaSpec { arch: TinyArch::Mistral, ..TinyLlamaSpec::default() }),
        ("qwen2", TinyLlamaSpec { arch: TinyArch::Qwen2, tokenizer: TinyTokenizer::Bpe, ..TinyLlamaSpec::default() }),
        ("tied", TinyLlamaSpec { tie_embeddings: true, ..TinyLlamaSpec::default() }),
        ("mha", TinyLlamaSpec { kv_heads: 4, ..TinyLlamaSpec::default() }),
        ("padded-vocab", TinyLlamaSpec { vocab_size: Some(640), ..TinyLlamaSpec::default() }),
    ];
    for (name, spec) in cases {
        let dir = model_dir(root.path(), name, &spec, Dtype::F32, Shards::One);
        let out = root.path().join(format!("{name}.gguf"));
        convert_to(&dir, FileType::F32, &out).unwrap();
        let tokens = tokens_for(512);
        let want = HfWeights::load(&dir).forward(&tokens);
        let got = llama_logits(&out, &tokens);
        let err = max_relative_error(&got, &want);
        assert!(err < F32_RELATIVE_TOLERANCE, "{name}: relative error {err}");
    }
}

#[test]
fn every_output_type_loads_in_llama_cpp_and_q8_0_stays_close() {
    let root = temp_dir();
    let spec = TinyLlamaSpec { hidden: 256, ffn: 512, heads: 4, kv_heads: 2, ..TinyLlamaSpec::default() };
    let dir = model_dir(root.path(), "m", &spec, Dtype::BF16, Shards::Two);
    let tokens = tokens_for(512);
    let want = HfWeights::load(&dir).forward(&tokens);
    for ft in [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q4_0,
        FileType::Q4_K_M,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ] {
        let out = root.path().join(format!("{}.gguf", ft.name()));
        let summary = convert_to(&dir, ft, &out).unwrap();
        assert_eq!(summary.output_bytes, fs::metadata(&out).unwrap().len(), "{}", ft.name());
        let got = llama_logits(&out, &tokens);
        assert!(got.iter().flatten().all(|v| v.is_finite()), "{}", ft.name());
        let e = nmse(&got, &want);
        eprintln!("{}: nmse of logits against the reference {e:.2e}", ft.name());
        match ft {
            // The bf16 source weights, exactly, computed in f32.
            FileType::F32 => assert!(max_relative_error(&got, &want) < F32_RELATIVE_TOLERANCE, "{}", ft.name()),
            // ggml's CPU matmul rounds the activations to the weight's f16/bf16/q8 dot-product
            // type, so these carry an 8-bit-mantissa (or coarser) rounding per product.
            FileType::F16 | FileType::BF16 | FileType::Q8_0 => {
                assert!(e < Q8_0_NMSE_TOLERANCE, "{}: nmse {e}", ft.name())
            }
            // 4-6 bit types: a sanity bound only; bytes are checked exactly against llama.cpp below.
            _ => assert!(e < 0.05, "{}: nmse {e}", ft.name()),
        }
    }
}

#[test]
fn quantized_bytes_equal_llama_model_quantize() {
    let root = temp_dir();
    for (name, spec) in [
        ("k256", TinyLlamaSpec { hidden: 256, ffn: 512, heads: 4, kv_heads: 2, layers: 4, ..TinyLlamaSpec::default() }),
        ("odd-rows", TinyLlamaSpec { hidden: 64, ffn: 128, ..TinyLlamaSpec::default() }),
        ("tied", TinyLlamaSpec { hidden: 256, ffn: 512, tie_embeddings: true, ..TinyLlamaSpec::default() }),
    ] {
        let dir = model_dir(root.path(), name, &spec, Dtype::F32, Shards::One);
        let f32_path = root.path().join(format!("{name}-f32.gguf"));
        convert_to(&dir, FileType::F32, &f32_path).unwrap();
        for ft in [FileType::Q8_0, FileType::Q4_K_M, FileType::Q6_K, FileType::Q5_K_M, FileType::Q4_0] {
            convert_like_llama_quantize(&dir, &f32_path, ft, &root.path().join(name));
        }
    }
}

/// Converts `dir` to `ft` at `<stem>-<type>.gguf` and checks that every tensor's type, shape and
/// bytes equal what llama-quantize makes of our f32 conversion `f32_path`; returns our file.
pub fn convert_like_llama_quantize(dir: &Path, f32_path: &Path, ft: FileType, stem: &Path) -> PathBuf {
    let name = stem.file_name().unwrap().to_string_lossy();
    let ours = stem.with_file_name(format!("{name}-{}.gguf", ft.name()));
    let theirs = stem.with_file_name(format!("{name}-{}-llama.gguf", ft.name()));
    convert_to(dir, ft, &ours).unwrap();
    ggml::llama_model_quantize(Runtime::get(), f32_path, &theirs, ft.llama_ftype(), 2).unwrap();
    let (a, b) = (GgufFile::open(&ours).unwrap(), GgufFile::open(&theirs).unwrap());
    let (a, b) = (a.gguf().unwrap(), b.gguf().unwrap());
    assert_eq!(a.tensors.len(), b.tensors.len());
    for tb in &b.tensors {
        let ta = a.tensor(tb.name).unwrap_or_else(|| panic!("{name} {}: {} missing", ft.name(), tb.name));
        assert_eq!((ta.ty, &ta.ne), (tb.ty, &tb.ne), "{name} {}: type of {}", ft.name(), tb.name);
        assert!(a.tensor_data(ta) == b.tensor_data(tb), "{name} {}: bytes of {}", ft.name(), tb.name);
    }
    ours
}

/// transformers' Falcon and GPT-NeoX against llama.cpp on our conversion: both f32 on the same
/// bf16-rounded weights. Besides kernel and rope differences (see [`F32_RELATIVE_TOLERANCE`]),
/// transformers' "gelu" is the exact erf GELU and ggml's the tanh approximation, which differ by
/// up to 3e-4 per activation; 1e-3 of the largest logit still separates that from a wrong QKV
/// layout, rope or norm (errors near 1).
const GELU_MODELS_RELATIVE_TOLERANCE: f32 = 1e-3;

/// Checkpoints made by transformers convert to GGUFs whose logits in llama.cpp are transformers'
/// logits, and whose quantized tensors are byte for byte what llama-quantize makes of our f32
/// conversion (the fallback types of rows that are not a multiple of 256 included): Falcon in
/// Falcon-7B's multi-query layout (tied embeddings) and Falcon-40B's grouped layout with two
/// norms per layer (untied); GPT-NeoX with Pythia's parallel residual and rope on a quarter of
/// each head, and sequential with full rope (QKV and MLP biases in both).
#[test]
fn falcon_and_gpt_neox_checkpoints_made_by_transformers_run_in_llama_cpp_as_in_pytorch() {
    let root = temp_dir();
    for (family, variant) in [("falcon", "mqa"), ("falcon", "gqa"), ("gptneox", "parallel"), ("gptneox", "sequential")]
    {
        let (dir, tokens, want) = transformers_checkpoint(root.path(), family, variant);
        let variant = format!("{family}-{variant}");
        let f32_path = root.path().join(format!("{variant}-f32.gguf"));
        convert_to(&dir, FileType::F32, &f32_path).unwrap();
        let err = max_relative_error(&llama_logits(&f32_path, &tokens), &want);
        assert!(err < GELU_MODELS_RELATIVE_TOLERANCE, "{variant}: llama.cpp vs transformers: relative error {err}");
        eprintln!("{variant}: llama.cpp vs transformers: max relative error {err:.2e}");
        for ft in [FileType::Q8_0, FileType::Q4_K_M] {
            let ours = convert_like_llama_quantize(&dir, &f32_path, ft, &root.path().join(&variant));
            let e = nmse(&llama_logits(&ours, &tokens), &want);
            assert!(e < 0.05, "{variant} {}: nmse {e}", ft.name());
        }
    }
}

#[test]
fn llama_cpp_tokenizes_like_the_hugging_face_tokenizer() {
    let root = temp_dir();
    for (name, tok, spec) in [
        ("spm", tiny_spm_tokenizer(), TinyLlamaSpec::default()),
        ("bpe", tiny_bpe_tokenizer(), TinyLlamaSpec { tokenizer: TinyTokenizer::Bpe, ..TinyLlamaSpec::default() }),
    ] {
        let dir = model_dir(root.path(), name, &spec, Dtype::F32, Shards::One);
        let out = root.path().join(format!("{name}.gguf"));
        convert_to(&dir, FileType::F32, &out).unwrap();
        let model = LlamaModel::load(Runtime::get(), &out).unwrap();
        for text in TOKENIZER_SAMPLES {
            let want: Vec<i32> = tok.encode(*text, true).unwrap().get_ids().iter().map(|&i| i as i32).collect();
            let got = model.tokenize(text, true, false).unwrap();
            assert_eq!(got, want, "{name}: {text:?}");
        }
    }
}

#[test]
fn bad_inputs_are_named_and_leave_no_output() {
    let root = temp_dir();
    let spec = TinyLlamaSpec::default();
    let fresh = |name: &str, shards: Shards| model_dir(root.path(), name, &spec, Dtype::F32, shards);
    let out = root.path().join("out.gguf");
    let check = |dir: &Path, needle: &str| {
        let err = convert_to(dir, FileType::Q8_0, &out).unwrap_err().to_string();
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(!out.exists());
        let leftovers: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    };

    let dir = fresh("missing-key", Shards::One);
    let cfg =
        fs::read_to_string(dir.join("config.json")).unwrap().replace("\"intermediate_size\"", "\"intermediate_sizes\"");
    fs::write(dir.join("config.json"), cfg).unwrap();
    check(&dir, "missing key 'intermediate_size'");

    let dir = fresh("shape", Shards::One);
    let cfg = fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
    fs::write(dir.join("config.json"), cfg).unwrap();
    check(&dir, "expected [96, 64] from config.json");

    let dir = fresh("shard", Shards::Two);
    fs::remove_file(dir.join("model-00001-of-00002.safetensors")).unwrap();
    check(&dir, "shard 'model-00001-of-00002.safetensors' is listed in the index but missing");

    let dir = fresh("truncated", Shards::One);
    let bytes = fs::read(dir.join("model.safetensors")).unwrap();
    fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    check(&dir, "not a valid safetensors file");

    let dir = fresh("lying-header", Shards::One);
    let mut bytes = fs::read(dir.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    let lying = header.replacen("[128,64]", "[129,64]", 1);
    assert_ne!(header, lying, "the fixture header has a [128,64] shape to lie about");
    bytes.splice(8..8 + header_len, lying.into_bytes());
    fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    check(&dir, "not a valid safetensors file");

    let dir = fresh("arch", Shards::One);
    let cfg = fs::read_to_string(dir.join("config.json")).unwrap().replace("LlamaForCausalLM", "GPT2LMHeadModel");
    fs::write(dir.join("config.json"), cfg).unwrap();
    let supported = gguftune::arch::Arch::hf_class_list();
    assert!(
        supported.starts_with("LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM")
            && supported.contains("Gemma3ForCausalLM")
    );
    check(&dir, &format!("architecture 'GPT2LMHeadModel' is not supported (supported: {supported})"));
}

#[test]
fn cli_convert_dry_run_and_summary() {
    let root = temp_dir();
    model_dir(root.path(), "m", &TinyLlamaSpec::default(), Dtype::BF16, Shards::Two);
    let out = gguftune(root.path(), &["convert", "m", "-o", "m.gguf", "--type", "q8_0", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("blk.0.attn_q.weight") && text.contains("Q8_0"), "{text}");
    assert!(!root.path().join("m.gguf").exists());
    let out = gguftune(root.path(), &["convert", "m", "-o", "m.gguf", "--type", "q8_0", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output_bytes"].as_u64(), Some(fs::metadata(root.path().join("m.gguf")).unwrap().len()));
    let out = gguftune(root.path(), &["convert", "m", "-o", "x.gguf", "--type", "q3_x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown type 'q3_x'"));
}

#[test]
fn quantize_requantizes_like_llama_quantize_and_refuses_quantized_sources() {
    let root = temp_dir();
    let spec = TinyLlamaSpec { hidden: 256, ffn: 512, heads: 4, kv_heads: 2, ..TinyLlamaSpec::default() };
    let dir = model_dir(root.path(), "m", &spec, Dtype::BF16, Shards::One);
    convert_to(&dir, FileType::F16, &root.path().join("f16.gguf")).unwrap();
    for ft in [FileType::Q4_K_M, FileType::Q8_0] {
        let ours = format!("ours-{}.gguf", ft.name());
        let out = gguftune(root.path(), &["quantize", "f16.gguf", &ours, ft.name()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let theirs = root.path().join(format!("llama-{}.gguf", ft.name()));
        ggml::llama_model_quantize(Runtime::get(), &root.path().join("f16.gguf"), &theirs, ft.llama_ftype(), 2)
            .unwrap();
        let (a, b) = (GgufFile::open(&root.path().join(&ours)).unwrap(), GgufFile::open(&theirs).unwrap());
        let (a, b) = (a.gguf().unwrap(), b.gguf().unwrap());
        assert_eq!(a.get("general.file_type").and_then(|v| v.as_u64()), Some(u64::from(ft.llama_ftype())));
        // llama-quantize writes tensors sorted by layer and name; we keep the converter's order.
        assert_eq!(a.tensors.len(), b.tensors.len());
        for tb in &b.tensors {
            let ta = a.tensor(tb.name).unwrap();
            assert_eq!(ta.ty, tb.ty, "{}: type of {}", ft.name(), tb.name);
            assert!(a.tensor_data(ta) == b.tensor_data(tb), "{}: bytes of {}", ft.name(), ta.name);
        }
    }
    let out = gguftune(root.path(), &["quantize", "ours-q8_0.gguf", "again.gguf", "q4_0"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only F32, F16 and BF16 sources can be quantized"));
    assert!(!root.path().join("again.gguf").exists());
}
