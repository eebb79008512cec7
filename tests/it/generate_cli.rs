//! `gguftune generate`: greedy output equal to argmax decoding by hand through llama.cpp (with and
//! without an adapter), reproducible seeded sampling, chat prompts through the model's template,
//! and clear errors.

use std::path::{Path, PathBuf};

use gguftune::adapter::{pairs_from_values, write_lora_gguf};
use gguftune::arch::Arch;
use gguftune::ggml::{self, LlamaAdapter, LlamaContext, LlamaModel, Runtime, Sampler, SamplerParams};
use gguftune::model::{lora_layout, LoraConfig, Model};
use serde_json::Value;

use crate::common::fixtures::{tiny_llama, Dtype, Rng, Shards, TinyLlamaSpec, TinyTokenizer};
use crate::common::{gguftune, temp_dir};

/// Context of every run here (small: the hand-made greedy loop uses the same size).
const CTX: &str = "64";

fn base_model(root: &Path, spec: &TinyLlamaSpec) -> PathBuf {
    let dir = root.join("hf");
    std::fs::create_dir(&dir).unwrap();
    tiny_llama(&dir, spec, Dtype::BF16, Shards::One, 11).unwrap();
    let out = gguftune(root, &["convert", "hf", "-o", "base.gguf", "--type", "q8_0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    root.join("base.gguf")
}

/// An adapter with random A and B (PEFT would start B at zero, which changes nothing), big
/// enough to change what the model generates.
fn random_adapter(base: &Path, out: &Path) {
    let model = Model::open(base).unwrap();
    let cfg = LoraConfig { rank: 4, alpha: 4.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
    let slots = lora_layout(model.hparams(), &cfg).unwrap();
    let mut rng = Rng::new(5);
    let values: Vec<Vec<f32>> = slots
        .iter()
        .flat_map(|s| [s.n_in * cfg.rank, cfg.rank * s.n_out])
        .map(|n| (0..n).map(|_| rng.uniform(0.3)).collect())
        .collect();
    write_lora_gguf(out, "llama", cfg.alpha, &pairs_from_values(&slots, cfg.rank, &values)).unwrap();
}

fn run_json(root: &Path, args: &[&str]) -> Value {
    let mut all = vec!["generate", "base.gguf", "--threads", "1", "--ctx", CTX, "--json"];
    all.extend_from_slice(args);
    let out = gguftune(root, &all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tokens_of(v: &Value) -> Vec<i32> {
    v["tokens"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect()
}

/// Greedy decoding the slow way: the whole prefix again at every step, argmax of the last row.
fn greedy_by_hand(ctx: &mut LlamaContext<'_>, llama: &LlamaModel, prompt: &[i32], max: usize) -> Vec<i32> {
    let mut tokens = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < max {
        let logits = ctx.logits_all(&tokens).unwrap();
        let last = logits.last().unwrap();
        let next = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as i32;
        if llama.is_eog(next) {
            break;
        }
        out.push(next);
        tokens.push(next);
    }
    out
}

#[test]
fn greedy_generation_is_argmax_decoding_with_and_without_an_adapter() {
    let root = temp_dir();
    let base = base_model(root.path(), &TinyLlamaSpec::default());
    random_adapter(&base, &root.path().join("adapter.gguf"));
    let prompt = "Review: The movie was great.\nSentiment:";
    let max = 12;
    let n = max.to_string();

    let llama = LlamaModel::load(Runtime::get(), &base).unwrap();
    let adapter = LlamaAdapter::load(&llama, &root.path().join("adapter.gguf")).unwrap();
    let prompt_tokens = llama.tokenize(prompt, true, true).unwrap();
    let mut ctx = LlamaContext::new(&llama, CTX.parse().unwrap(), 1).unwrap();
    let base_expected = greedy_by_hand(&mut ctx, &llama, &prompt_tokens, max);
    ctx.set_adapters(&[(&adapter, 1.0)]).unwrap();
    let adapter_expected = greedy_by_hand(&mut ctx, &llama, &prompt_tokens, max);
    assert_ne!(base_expected, adapter_expected, "the adapter changes the output");

    for (lora, expected) in [(None, &base_expected), (Some("adapter.gguf:1"), &adapter_expected)] {
        let mut args = vec!["-p", prompt, "--temp", "0", "-n", &n];
        if let Some(lora) = lora {
            args.extend(["--lora", lora]);
        }
        let v = run_json(root.path(), &args);
        assert_eq!(v["prompt_tokens"].as_u64(), Some(prompt_tokens.len() as u64));
        assert_eq!(&tokens_of(&v), expected, "{lora:?}");
        let stop = if expected.len() == max { "length" } else { "eog" };
        assert_eq!(v["stop"], stop);
        // The text is the tokens' pieces, and streaming prints the same text.
        let pieces: Vec<u8> = expected.iter().flat_map(|&t| llama.token_to_piece(t, false).unwrap()).collect();
        assert_eq!(v["text"].as_str().unwrap(), String::from_utf8_lossy(&pieces));
        let mut stream_args = vec!["generate", "base.gguf", "--threads", "1", "--ctx", CTX];
        stream_args.extend_from_slice(&args);
        let out = gguftune(root.path(), &stream_args);
        assert!(out.status.success());
        let streamed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(streamed.strip_suffix('\n').unwrap_or(&streamed), v["text"].as_str().unwrap());
        let stats = String::from_utf8_lossy(&out.stderr);
        assert!(stats.contains(&format!("generated {} tokens", expected.len())), "{stats}");
    }
    // Scale 0 is the base model.
    let v = run_json(root.path(), &["-p", prompt, "--temp", "0", "-n", &n, "--lora", "adapter.gguf:0"]);
    assert_eq!(tokens_of(&v), base_expected);

    // A sampler reads the logits of the last decoded token, and refuses (rather than letting
    // llama.cpp assert) when there are none.
    let greedy = SamplerParams { temp: 0.0, top_k: 0, top_p: 1.0, seed: 0 };
    let mut sampler = Sampler::new(&greedy).unwrap();
    let mut fresh = LlamaContext::new(&llama, 64, 1).unwrap();
    assert!(matches!(sampler.sample(&fresh), Err(ggml::Error::NothingDecoded)));
    fresh.logits_at(&prompt_tokens, &[0]).unwrap();
    assert!(matches!(sampler.sample(&fresh), Err(ggml::Error::NothingDecoded)));
    fresh.decode(&prompt_tokens[..0]).unwrap_err();
    fresh.clear();
    fresh.decode(&prompt_tokens).unwrap();
    assert_eq!(sampler.sample(&fresh).unwrap(), base_expected[0]);
}

#[test]
fn seeded_sampling_is_reproducible_and_top_k_1_is_greedy() {
    let root = temp_dir();
    base_model(root.path(), &TinyLlamaSpec::default());
    let sample = |seed: &str, top_k: &str| {
        run_json(
            root.path(),
            &["-p", "The", "-n", "16", "--temp", "1.5", "--top-k", top_k, "--top-p", "1", "--seed", seed],
        )
    };
    let first = sample("7", "0");
    assert_eq!(first["seed"], 7);
    let again = sample("7", "0");
    assert_eq!((tokens_of(&first), &first["text"]), (tokens_of(&again), &again["text"]));
    // A random tiny model at a high temperature: other seeds give other text.
    assert!(["8", "9", "10"].iter().any(|s| tokens_of(&sample(s, "0")) != tokens_of(&first)));
    let greedy = run_json(root.path(), &["-p", "The", "-n", "16", "--temp", "0"]);
    for seed in ["1", "2"] {
        assert_eq!(tokens_of(&sample(seed, "1")), tokens_of(&greedy), "seed {seed}");
    }
}

#[test]
fn chat_prompts_go_through_the_models_template() {
    let root = temp_dir();
    base_model(root.path(), &TinyLlamaSpec { tokenizer: TinyTokenizer::Bpe, ..TinyLlamaSpec::default() });
    let v = run_json(root.path(), &["--chat", "--system", "Be brief.", "-p", "Name a colour.", "-n", "1"]);
    // The fixture's ChatML template, written out by hand.
    let expected =
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(v["prompt"], expected);
    let llama = LlamaModel::load_vocab(Runtime::get(), &root.path().join("base.gguf")).unwrap();
    // Special tokens are parsed: each marker is one token.
    let tokens = llama.tokenize(expected, true, true).unwrap();
    assert!(tokens.len() < llama.tokenize(expected, true, false).unwrap().len());
    assert_eq!(v["prompt_tokens"].as_u64(), Some(tokens.len() as u64));
    // Without --chat the same text is a raw prompt.
    let raw = run_json(root.path(), &["-p", "Name a colour.", "-n", "1"]);
    assert_eq!(raw["prompt"], "Name a colour.");
}

#[test]
fn generate_errors_are_bad_input() {
    let root = temp_dir();
    base_model(root.path(), &TinyLlamaSpec::default());
    let run = |args: &[&str]| {
        let mut all = vec!["generate", "base.gguf", "-n", "2", "--threads", "1"];
        all.extend_from_slice(args);
        let out = gguftune(root.path(), &all);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["-p", "x", "--lora", "adapter.gguf:half"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("'adapter.gguf:half': expected PATH or PATH:SCALE"), "{err}");
    // A model is not an adapter: llama.cpp's reason is passed on.
    let (code, err) = run(&["-p", "x", "--lora", "base.gguf"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("base.gguf: llama.cpp could not load the adapter:"), "{err}");
    let (code, err) = run(&["-p", "one two three four five six seven eight", "--ctx", "4"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("longer than the context of 4"), "{err}");
    let (code, err) = run(&["-p", "x", "--system", "s"]);
    assert_eq!(code, Some(2), "--system needs --chat: {err}");
    // A file that is not there is an I/O error.
    let (code, err) = run(&["-p", "x", "--lora", "missing.gguf"]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("missing.gguf"), "{err}");
}
