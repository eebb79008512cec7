//! Adapters we write load in llama.cpp (`llama_adapter_lora_init`, as `--lora` and Ollama's
//! `ADAPTER` do), and llama.cpp's logits with the adapter equal our own forward with it.

use gguftune::adapter::{write_lora_gguf, LoraTensorPair};
use gguftune::arch::Arch;
use gguftune::ggml::{LlamaAdapter, LlamaContext, LlamaModel, Runtime};
use gguftune::model::{LoraConfig, Model};
use gguftune::quant::FileType;

use crate::common::fixtures::{tiny_llama, Dtype, Shards, TinyArch, TinyLlamaSpec, TinyTokenizer};
use crate::common::reference::{max_relative_error, nmse};
use crate::common::training::random_lora_pairs;
use crate::common::{convert_to, temp_dir};

/// As in tests/it/forward.rs: same kernels on both sides, f32 attention on both.
const F32_RELATIVE_TOLERANCE: f32 = 1e-4;
/// Quantized base: ggml rounds activations to the weight's dot type at slightly different points
/// in the two graphs (the adapter's own products are f32 on both sides).
const QUANTIZED_NMSE_TOLERANCE: f64 = 1e-5;

#[test]
fn llama_cpp_with_our_adapter_computes_our_logits() {
    let root = temp_dir();
    let tokens: Vec<i32> = (0..16).map(|i| (i * 29 + 5) % 512).collect();
    for (name, spec, ft) in [
        ("llama-q4_k_m", TinyLlamaSpec { hidden: 256, ffn: 512, ..TinyLlamaSpec::default() }, FileType::Q4_K_M),
        ("llama-f32", TinyLlamaSpec::default(), FileType::F32),
        (
            "qwen2-q8_0",
            TinyLlamaSpec {
                arch: TinyArch::Qwen2,
                tokenizer: TinyTokenizer::Bpe,
                hidden: 256,
                ffn: 512,
                ..TinyLlamaSpec::default()
            },
            FileType::Q8_0,
        ),
    ] {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        tiny_llama(&dir, &spec, Dtype::F32, Shards::One, 8).unwrap();
        let base = root.path().join(format!("{name}.gguf"));
        convert_to(&dir, ft, &base).unwrap();
        let model = Model::open(&base).unwrap();
        let cfg = LoraConfig { rank: 4, alpha: 8.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
        let pairs = random_lora_pairs(&model, &cfg, 21, 0.2);
        let adapter_path = root.path().join(format!("{name}-adapter.gguf"));
        write_lora_gguf(&adapter_path, if spec.arch == TinyArch::Qwen2 { "qwen2" } else { "llama" }, cfg.alpha, &pairs)
            .unwrap();
        let values: Vec<Vec<f32>> = pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect();

        let ours = model.logits_with_lora(&tokens, Some((&cfg, &values)), 2).unwrap();
        let base_logits = model.logits(&tokens, 2).unwrap();
        let llama = LlamaModel::load(Runtime::get(), &base).unwrap();
        let adapter = LlamaAdapter::load(&llama, &adapter_path).unwrap();
        let mut ctx = LlamaContext::with_precision(&llama, 64, 2, true).unwrap();
        ctx.set_adapters(&[(&adapter, 1.0)]).unwrap();
        let theirs = ctx.logits_all(&tokens).unwrap();
        // The adapter must matter, or the comparison proves nothing.
        assert!(nmse(&ours, &base_logits) > 1e-3, "{name}: the adapter barely changes the logits");
        if ft == FileType::F32 {
            let err = max_relative_error(&ours, &theirs);
            assert!(err < F32_RELATIVE_TOLERANCE, "{name}: relative error {err}");
        } else {
            let e = nmse(&ours, &theirs);
            assert!(e < QUANTIZED_NMSE_TOLERANCE, "{name}: nmse {e}");
        }
        eprintln!(
            "{name}: adapter moves logits by nmse {:.2e}; ours vs llama.cpp nmse {:.2e}",
            nmse(&ours, &base_logits),
            nmse(&ours, &theirs)
        );
    }
}

#[test]
fn llama_cpp_refuses_an_adapter_for_another_architecture() {
    let root = temp_dir();
    let dir = root.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    tiny_llama(&dir, &TinyLlamaSpec::default(), Dtype::F32, Shards::One, 8).unwrap();
    let base = root.path().join("m.gguf");
    convert_to(&dir, FileType::F32, &base).unwrap();
    let path = root.path().join("qwen-adapter.gguf");
    let pair = LoraTensorPair {
        base: "blk.0.attn_q.weight".into(),
        n_in: 64,
        n_out: 64,
        rank: 2,
        a: vec![0.0; 128],
        b: vec![0.0; 128],
    };
    write_lora_gguf(&path, "qwen2", 2.0, &[pair]).unwrap();
    let llama = LlamaModel::load(Runtime::get(), &base).unwrap();
    let err = LlamaAdapter::load(&llama, &path).unwrap_err().to_string();
    assert!(err.contains("could not load the adapter"), "{err}");
}
