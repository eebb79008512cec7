//! Training end to end on a synthetic task: fixed prompts each mapped to a fixed answer. The
//! completion loss falls at least 5x, and llama.cpp, loading the written adapter on the q4_k_m
//! base, greedily generates the trained answers.

use gguftune::adapter::{pairs_from_values, write_lora_gguf};
use gguftune::arch::Arch;
use gguftune::ggml::{LlamaAdapter, LlamaContext, LlamaModel, Runtime};
use gguftune::model::{lora_layout, LoraConfig, Model};
use gguftune::quant::FileType;
use gguftune::train::Example;

use crate::common::fixtures::{tiny_llama, Dtype, Shards, TinyLlamaSpec};
use crate::common::temp_dir;
use crate::common::training::train_lora;

const TASK: &[(&str, &str)] = &[
    ("Q: colour of the sky?\nA:", "blue"),
    ("Q: colour of grass?\nA:", "green"),
    ("Q: colour of snow?\nA:", "white"),
    ("Q: colour of coal?\nA:", "black"),
];

fn greedy(ctx: &mut LlamaContext<'_>, prompt: &[i32], eos: i32, max: usize) -> Vec<i32> {
    let mut tokens = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..max {
        let logits = ctx.logits_all(&tokens).unwrap();
        let last = logits.last().unwrap();
        let next = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as i32;
        out.push(next);
        if next == eos {
            break;
        }
        tokens.push(next);
    }
    out
}

#[test]
fn lora_learns_a_task_and_llama_cpp_reproduces_it_with_the_adapter() {
    let root = temp_dir();
    let dir = root.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    tiny_llama(&dir, &TinyLlamaSpec { hidden: 256, ffn: 512, ..TinyLlamaSpec::default() }, Dtype::BF16, Shards::One, 2)
        .unwrap();
    let base = root.path().join("base-q4_k_m.gguf");
    crate::common::convert_to(&dir, FileType::Q4_K_M, &base).unwrap();

    let llama = LlamaModel::load(Runtime::get(), &base).unwrap();
    let eos = llama.eos_token().unwrap();
    let mut examples = Vec::new();
    let mut answers = Vec::new();
    for (prompt, answer) in TASK {
        let p = llama.tokenize(prompt, true, false).unwrap();
        let mut a = llama.tokenize(answer, false, false).unwrap();
        a.push(eos);
        examples.push(Example::from_prompt_completion(&p, &a));
        answers.push((p, a));
    }

    let model = Model::open(&base).unwrap();
    let cfg = LoraConfig { rank: 8, alpha: 16.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
    let (values, losses) = train_lora(&model, &cfg, &examples, 4, 60, 3e-3);
    assert_eq!(losses.len(), 60, "one step per epoch of 4 examples in one micro-batch of 4");
    let (first, last) = (losses[0], *losses.last().unwrap());
    eprintln!("completion loss {first:.3} -> {last:.3} in {} steps", losses.len());
    assert!(last * 5.0 <= first, "loss fell only from {first} to {last}");

    let slots = lora_layout(model.hparams(), &cfg).unwrap();
    let pairs = pairs_from_values(&slots, cfg.rank, &values);
    let adapter_path = root.path().join("adapter.gguf");
    write_lora_gguf(&adapter_path, "llama", cfg.alpha, &pairs).unwrap();

    let adapter = LlamaAdapter::load(&llama, &adapter_path).unwrap();
    let mut ctx = LlamaContext::new(&llama, 64, 2).unwrap();
    ctx.set_adapters(&[(&adapter, 1.0)]).unwrap();
    for ((p, a), (prompt, answer)) in answers.iter().zip(TASK) {
        let got = greedy(&mut ctx, p, eos, a.len() + 2);
        assert_eq!(&got, a, "prompt {prompt:?}: expected {answer:?}");
    }
}
