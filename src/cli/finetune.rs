//! `gguftune finetune`: train a LoRA adapter on a GGUF model's frozen weights.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use gguftune::adapter::{pairs_from_values, write_lora_gguf};
use gguftune::data::{read_jsonl, ChatTemplate, RenderOptions};
use gguftune::ggml::{LlamaModel, Runtime};
use gguftune::gguf::GgufFile;
use gguftune::model::{lora_layout, LoraConfig, Model, TARGETS};
use gguftune::train::{build_examples, init_lora, train_lora, AdamWConfig, Schedule, TrainConfig};

/// Train a LoRA adapter on a GGUF model (any type convert writes; weights stay frozen).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  gguftune finetune model-q4_k_m.gguf --data train.jsonl -o adapter.gguf --epochs 3\n\nDatasets: JSONL with {\"text\"}, {\"prompt\",\"completion\"}, Alpaca {\"instruction\",\"input\",\"output\"},\nDolly {\"instruction\",\"context\",\"response\"} or chat {\"messages\":[{\"role\",\"content\"}]} records; loss on\ncompletions / assistant turns only unless --train-on-prompt."
)]
pub struct Args {
    /// The base model (GGUF).
    model: PathBuf,
    /// Training data (JSONL).
    #[arg(long)]
    data: PathBuf,
    /// The adapter to write (GGUF). Metrics go next to it, as <name>.metrics.jsonl.
    #[arg(short, long)]
    output: PathBuf,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    rank: u64,
    /// LoRA alpha (the adapter's scale is alpha / rank).
    #[arg(long, default_value_t = 32.0)]
    alpha: f32,
    /// Projections to adapt, comma-separated: q,k,v,o,gate,up,down.
    #[arg(long, default_value = "q,k,v,o,gate,up,down")]
    targets: String,
    /// Longest example in tokens.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Passes over the data.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Learning rate (AdamW).
    #[arg(long, default_value_t = 2e-4)]
    lr: f32,
    /// Learning-rate schedule after warmup: constant, linear or cosine.
    #[arg(long, default_value = "cosine", value_parser = parse_schedule)]
    schedule: Schedule,
    /// Fraction of the steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.03)]
    warmup: f32,
    /// Clip the global gradient norm to this (0 turns clipping off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f32,
    /// Seed of the adapter's initialisation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Also train on prompts and user turns.
    #[arg(long)]
    train_on_prompt: bool,
    /// Drop examples longer than --ctx instead of cutting them.
    #[arg(long)]
    skip_overlong: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    Schedule::from_name(s).ok_or_else(|| format!("unknown schedule '{s}' (expected constant, linear or cosine)"))
}

fn parse_targets(s: &str) -> anyhow::Result<Vec<gguftune::names::TensorKind>> {
    s.split(',')
        .map(|t| {
            TARGETS.iter().find(|(n, _)| *n == t.trim()).map(|(_, k)| *k).with_context(|| {
                format!("unknown target '{t}' (expected some of: {})", TARGETS.map(|(n, _)| n).join(","))
            })
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let targets = parse_targets(&args.targets)?;
    if args.batch == 0 || args.epochs == 0 || args.ctx < 2 {
        bail!("--batch and --epochs must be at least 1 and --ctx at least 2");
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let model = Model::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let vocab = LlamaModel::load_vocab(Runtime::get(), &args.model).context("loading the vocabulary with llama.cpp")?;
    let template = chat_template(&args.model, &vocab)?;
    let dataset = read_jsonl(&args.data)?;
    let options = RenderOptions { train_on_prompt: args.train_on_prompt };
    let (examples, stats) =
        build_examples(&dataset, template.as_ref(), &vocab, &options, args.ctx, args.skip_overlong)?;

    let lora = LoraConfig { rank: args.rank, alpha: args.alpha, targets };
    let steps = (examples.len() * args.epochs).div_ceil(args.batch);
    let cfg = TrainConfig {
        lora: lora.clone(),
        adamw: AdamWConfig { lr: args.lr, ..AdamWConfig::default() },
        steps,
        batch: args.batch,
        schedule: args.schedule,
        warmup_steps: (args.warmup.clamp(0.0, 1.0) * steps as f32).round() as usize,
        max_grad_norm: args.max_grad_norm,
        threads,
    };
    let mut values = init_lora(&model, &lora, args.seed)?;
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} training [{bar:30}] step {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let tokens_per_step = stats.tokens as f64 * args.epochs as f64 / steps as f64;
    let mut metrics = Vec::new();
    let mut losses = Vec::new();
    let train_start = Instant::now();
    let mut last = Instant::now();
    train_lora(&model, &cfg, &mut values, &examples, &mut |r| {
        let tps = tokens_per_step / last.elapsed().as_secs_f64().max(1e-9);
        last = Instant::now();
        losses.push(r.loss);
        bar.set_message(format!("loss {:.4} {:.0} tok/s", r.loss, tps));
        bar.inc(1);
        metrics.push(serde_json::json!({"step": r.step + 1, "loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm, "tokens_per_second": tps}));
    })?;
    bar.finish_and_clear();
    let train_seconds = train_start.elapsed().as_secs_f64();

    let arch = GgufFile::open(&args.model)?.gguf()?.get_str("general.architecture").unwrap_or("llama").to_owned();
    let slots = lora_layout(model.hparams(), &lora)?;
    write_lora_gguf(&args.output, &arch, lora.alpha, &pairs_from_values(&slots, lora.rank, &values))
        .with_context(|| format!("writing {}", args.output.display()))?;
    let metrics_path = metrics_path(&args.output);
    let mut lines = Vec::new();
    for m in &metrics {
        writeln!(lines, "{m}")?;
    }
    gguftune::io::write_atomic(&metrics_path, &lines).with_context(|| format!("writing {}", metrics_path.display()))?;

    let (first, final_loss) = (losses.first().copied().unwrap_or(f32::NAN), losses.last().copied().unwrap_or(f32::NAN));
    let tokens_per_second = stats.tokens as f64 * args.epochs as f64 / train_seconds.max(1e-9);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "adapter": args.output, "metrics": metrics_path, "examples_used": stats.used,
                "examples_truncated": stats.truncated, "examples_skipped": stats.skipped,
                "tokens": stats.tokens, "target_tokens": stats.target_tokens, "steps": steps,
                "first_loss": first, "final_loss": final_loss, "seconds": start.elapsed().as_secs_f64(),
                "tokens_per_second": tokens_per_second,
            })
        );
    } else {
        eprintln!(
            "wrote {}: {} examples ({} truncated, {} skipped), {} tokens ({} trained), {steps} steps, loss {first:.4} -> {final_loss:.4}, {:.1} s, {tokens_per_second:.0} tok/s",
            args.output.display(),
            stats.used,
            stats.truncated,
            stats.skipped,
            stats.tokens,
            stats.target_tokens,
            start.elapsed().as_secs_f64(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `adapter.gguf` -> `adapter.metrics.jsonl`.
fn metrics_path(adapter: &Path) -> PathBuf {
    let stem = adapter.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "adapter".into());
    adapter.with_file_name(format!("{stem}.metrics.jsonl"))
}

/// The model's own chat template (`tokenizer.chat_template`), with its BOS/EOS token texts.
fn chat_template(model: &Path, vocab: &LlamaModel) -> anyhow::Result<Option<ChatTemplate>> {
    let file = GgufFile::open(model)?;
    let gguf = file.gguf()?;
    let Some(source) = gguf.get_str("tokenizer.chat_template") else { return Ok(None) };
    let text = |t: Option<i32>| t.and_then(|t| vocab.token_text(t)).unwrap_or_default();
    let template = ChatTemplate::new(source, &text(vocab.bos_token()), &text(vocab.eos_token()))
        .with_context(|| format!("{}: tokenizer.chat_template", model.display()))?;
    Ok(Some(template))
}
