//! gguftune's own forward graph (the one training differentiates) against llama.cpp's logits for
//! the same GGUF.

use gguftune::ggml::{LlamaContext, LlamaModel, Runtime};
use gguftune::model::Model;
use gguftune::quant::FileType;

use crate::common::fixtures::{tiny_llama, Dtype, Shards, TinyArch, TinyLlamaSpec, TinyTokenizer};
use crate::common::reference::{max_relative_error, nmse};
use crate::common::{convert_to, temp_dir};

/// Both sides compute in f32 with the same ggml kernels (llama.cpp set to an f32 KV cache and
/// no flash attention); what differs is the order of some reductions. 1e-4 of the largest logit.
const F32_RELATIVE_TOLERANCE: f32 = 1e-4;
/// Quantized weights: both sides multiply the same quantized rows, but ggml quantizes the
/// activations to the weight's dot type (q8_0/q8_K) at slightly different points; the NMSE stays
/// far below the quantization error itself (1e-3 to 1e-2 against the f32 model). Seen: q8_0
/// identical, q4_k_m NMSE 3e-7.
const QUANTIZED_NMSE_TOLERANCE: f64 = 1e-5;

#[test]
fn our_logits_equal_llama_cpp_logits() {
    let root = temp_dir();
    let tokens: Vec<i32> = (0..20).map(|i| (i * 53 + 7) % 512).collect();
    for (name, spec) in [
        ("llama", TinyLlamaSpec { hidden: 256, ffn: 512, ..TinyLlamaSpec::default() }),
        (
            "qwen2",
            TinyLlamaSpec {
                arch: TinyArch::Qwen2,
                tokenizer: TinyTokenizer::Bpe,
                hidden: 256,
                ffn: 512,
                ..TinyLlamaSpec::default()
            },
        ),
        ("tied", TinyLlamaSpec { tie_embeddings: true, ..TinyLlamaSpec::default() }),
    ] {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        tiny_llama(&dir, &spec, Dtype::F32, Shards::One, 5).unwrap();
        for ft in [FileType::F32, FileType::Q8_0, FileType::Q4_K_M] {
            let path = root.path().join(format!("{name}-{}.gguf", ft.name()));
            convert_to(&dir, ft, &path).unwrap();
            let ours = Model::open(&path).unwrap().logits(&tokens, 2).unwrap();
            let llama = LlamaModel::load(Runtime::get(), &path).unwrap();
            let theirs = LlamaContext::with_precision(&llama, 64, 2, true).unwrap().logits_all(&tokens).unwrap();
            assert_eq!(ours.len(), theirs.len());
            eprintln!(
                "{name} {}: max relative error {:.2e}, nmse {:.2e}",
                ft.name(),
                max_relative_error(&ours, &theirs),
                nmse(&ours, &theirs)
            );
            if ft == FileType::F32 {
                let err = max_relative_error(&ours, &theirs);
                assert!(err < F32_RELATIVE_TOLERANCE, "{name} f32: relative error {err}");
            } else {
                let e = nmse(&ours, &theirs);
                assert!(e < QUANTIZED_NMSE_TOLERANCE, "{name} {}: nmse {e}", ft.name());
            }
        }
    }
}
