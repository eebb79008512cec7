//! `gguftune finetune`: train a LoRA adapter on a GGUF model's frozen weights.

use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use gguftune::adapter::{pairs_from_values, sibling_path, write_lora_gguf};
use gguftune::data::{read_jsonl, RenderOptions};
use gguftune::ggml::{LlamaModel, Placement, Runtime};
use gguftune::gguf::GgufFile;
use gguftune::model::{lora_layout, LoraConfig, LoraSlot, Model};
use gguftune::plot::loss_curve_svg;
use gguftune::train::checkpoint::{read_checkpoint, write_checkpoint};
use gguftune::train::{
    build_examples, init_lora, pack_examples, split_validation, train, AdamWConfig, EvalReport, Example, ExampleStats,
    OptimizerState, Schedule, Sequence, StepReport, TrainConfig, TrainData, TrainError, TrainObserver,
};

use gguftune::plan::{device_memory, training_memory, DeviceMemory, DevicePlan, RunShape};

use super::llama::chat_setup;
use super::output::{human_bytes, peak_rss_bytes};
use super::run_args::{device_labels, RunArgs};
use super::source::ModelArg;

/// Train a LoRA adapter on a GGUF model (any type convert writes; weights stay frozen).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  gguftune finetune model-q4_k_m.gguf --data train.jsonl -o adapter.gguf --epochs 3
  gguftune finetune ollama:qwen2.5:0.5b --data chat.jsonl -o adapter.gguf --threads 8

Datasets: JSONL with {\"text\"}, {\"prompt\",\"completion\"}, Alpaca {\"instruction\",\"input\",\"output\"},
Dolly {\"instruction\",\"context\",\"response\"} or chat {\"messages\":[{\"role\",\"content\"}]} records; loss on
completions / assistant turns only unless --train-on-prompt.

Next to the adapter: <name>.Modelfile for `ollama create`, <name>.metrics.jsonl (one line per step
and per validation), <name>.loss.svg (the loss curve) and, with --checkpoint-every,
<name>.checkpoints/step-NNNNNN/ folders that --resume continues from exactly.

A model in Ollama's store (ollama:NAME[:TAG]; OLLAMA_MODELS, else ~/.ollama/models) is trained on
the GGUF Ollama runs, with conversations rendered as Ollama renders them (its TEMPLATE when it is
one of gguftune's chat families, else the GGUF's chat template) and its SYSTEM; the Modelfile then
says FROM NAME:TAG.")]
pub struct Args {
    /// The base model: a GGUF file, or ollama:NAME[:TAG] for a model in Ollama's store.
    model: PathBuf,
    /// Training data (JSONL).
    #[arg(long)]
    data: PathBuf,
    /// The adapter to write (GGUF).
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    run: RunArgs,
    /// LoRA alpha (the adapter's scale is alpha / rank).
    #[arg(long, default_value_t = 32.0)]
    alpha: f32,
    /// Passes over the training data.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 2e-4)]
    lr: f32,
    /// AdamW beta1.
    #[arg(long, default_value_t = 0.9)]
    beta1: f32,
    /// AdamW beta2.
    #[arg(long, default_value_t = 0.999)]
    beta2: f32,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Learning-rate schedule after warmup: constant, linear or cosine.
    #[arg(long, default_value = "cosine", value_parser = parse_schedule)]
    schedule: Schedule,
    /// Fraction of the steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.03)]
    warmup: f32,
    /// Clip the global gradient norm to this (0 turns clipping off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f32,
    /// Fraction of the examples held out for validation (loss and perplexity).
    #[arg(long, default_value_t = 0.05)]
    val_split: f32,
    /// Validate every N steps (default: at the end of every epoch).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Pack several short examples into each sequence (attention stays inside each example).
    #[arg(long)]
    pack: bool,
    /// Seed of the adapter's initialisation, the validation split and the data order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also train on prompts and user turns.
    #[arg(long)]
    train_on_prompt: bool,
    /// What to do with examples longer than --ctx: truncate or skip.
    #[arg(long, default_value = "truncate", value_parser = ["truncate", "skip"])]
    overlong: String,
    /// Save a checkpoint every N steps (into <name>.checkpoints/ next to the adapter).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Checkpoints to keep.
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    /// Continue from a checkpoint folder (made with the same settings).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    Schedule::from_name(s).ok_or_else(|| format!("unknown schedule '{s}' (expected constant, linear or cosine)"))
}

/// Set by Ctrl-C (or SIGTERM): the run stops after the current step and saves a checkpoint.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Exit code of a run stopped by Ctrl-C, as shells report SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    // A second Ctrl-C exits at once, without waiting for the step.
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    })
    .context("installing the Ctrl-C handler")?;
    args.run.check()?;
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if !(0.0..1.0).contains(&args.val_split) {
        bail!("--val-split must be in [0, 1), found {}", args.val_split);
    }
    if args.output.is_dir() {
        let message =
            format!("output path '{}' is a directory (expected the adapter file to write)", args.output.display());
        return Err(std::io::Error::new(std::io::ErrorKind::IsADirectory, message).into());
    }
    // A read-only or missing output folder fails now, not after the training.
    gguftune::io::probe_writable(&args.output).with_context(|| format!("writing {}", args.output.display()))?;
    let threads = args.run.threads();
    let devices = args.run.devices.resolve()?;
    let source = ModelArg::resolve(&args.model)?;
    let model = Model::open(&source.path).with_context(|| format!("opening {}", source.path.display()))?;
    let PreparedData { examples, stats, train_idx, val_idx, train_seqs, val_seqs, seq_len } = prepare_data(
        &source,
        &args.data,
        &DataOptions {
            ctx: args.run.ctx,
            pack: args.pack,
            val_split: args.val_split,
            seed: args.seed,
            train_on_prompt: args.train_on_prompt,
            skip_overlong: args.overlong == "skip",
        },
    )?;

    let lora = args.run.lora(args.alpha, model.hparams().arch)?;
    let mut cfg = TrainConfig {
        lora: lora.clone(),
        adamw: AdamWConfig {
            lr: args.lr,
            beta1: args.beta1,
            beta2: args.beta2,
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        shape: args.run.batch_shape(seq_len, train_seqs.len()),
        activations: args.run.activations(),
        grad_accum: args.run.grad_accum,
        epochs: args.epochs,
        max_steps: args.max_steps,
        schedule: args.schedule,
        warmup_steps: 0,
        max_grad_norm: args.max_grad_norm,
        seed: args.seed,
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        threads,
        devices,
    };
    let total_steps = cfg.total_steps(train_seqs.len());
    cfg.warmup_steps = (args.warmup.clamp(0.0, 1.0) * total_steps as f32).round() as u64;

    let run_shape = RunShape { lora: lora.clone(), shape: cfg.shape, activations: cfg.activations, threads };
    let planned = training_memory(&model, model.file_bytes(), &run_shape).context("planning the run's memory")?;
    let planned_devices = match cfg.devices.is_cpu_only() {
        true => None,
        false => Some(device_memory(&model, &run_shape, &cfg.devices, None).context("planning the devices' memory")?),
    };
    let arch = GgufFile::open(&source.path)?.gguf()?.get_str("general.architecture").unwrap_or("llama").to_owned();
    let slots = lora_layout(model.hparams(), &lora)?;
    let settings = settings_fingerprint(&args, &source.path, &cfg, &examples, total_steps);
    let (mut state, mut metrics) = match &args.resume {
        Some(dir) => {
            let checkpoint = read_checkpoint(dir, &slots, lora.rank, &settings)?;
            (checkpoint.state, checkpoint.metrics)
        }
        None => (OptimizerState::new(init_lora(&model, &lora, args.seed)?), Vec::new()),
    };
    let resumed_at = state.steps;

    let bar = ProgressBar::new(total_steps);
    bar.set_style(
        ProgressStyle::with_template("{spinner} training [{bar:30}] step {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_position(state.steps);
    let data = TrainData { examples: &examples, train: train_seqs, validation: val_seqs };
    let mut observer = Observer {
        bar: &bar,
        metrics: &mut metrics,
        last: Instant::now(),
        train_seconds: 0.0,
        tokens: 0,
        checkpoints: checkpoint_root(&args.output),
        keep: args.keep_checkpoints,
        last_checkpoint: args.resume.clone(),
        arch: &arch,
        lora: &lora,
        slots: &slots,
        settings: &settings,
    };
    gguftune::ggml::set_last_checkpoint(args.resume.as_deref());
    let result = train(&model, &cfg, &data, &mut state, &mut observer);
    bar.finish_and_clear();
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e @ TrainError::Diverged { .. }) => {
            let hint = match &observer.last_checkpoint {
                Some(dir) => format!(
                    "the last good checkpoint is {} (continue with --resume {} and a lower --lr)",
                    dir.display(),
                    dir.display()
                ),
                None => "no checkpoint was written (save some with --checkpoint-every N); try a lower --lr".into(),
            };
            return Err(anyhow::Error::new(e).context(format!("no adapter written; {hint}")));
        }
        Err(e) => return Err(e.into()),
    };
    if INTERRUPTED.load(Ordering::SeqCst) {
        observer.checkpoint(&state).context("saving a checkpoint after Ctrl-C")?;
        let dir = observer.last_checkpoint.as_deref().unwrap_or(Path::new("?")).display().to_string();
        eprintln!(
            "interrupted after step {} of {total_steps}: saved {dir}; continue with --resume {dir} (no adapter written)",
            state.steps
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    let Observer { train_seconds, tokens, .. } = observer;

    write_lora_gguf(&args.output, &arch, lora.alpha, &pairs_from_values(&slots, lora.rank, &state.params))
        .with_context(|| format!("writing {}", args.output.display()))?;
    // The adapter is complete without a Modelfile (a model whose chat format Ollama's templates
    // do not cover gets none), so a failure here is a warning.
    let modelfile_path = sibling_path(&args.output, "Modelfile");
    let written = match &source.ollama {
        Some(ollama) => gguftune::modelfile::for_ollama_adapter(ollama, &args.output, &modelfile_path),
        None => gguftune::modelfile::for_adapter(&source.path, &args.output, &modelfile_path, None),
    };
    let modelfile = match written {
        Ok(_) => Some(modelfile_path),
        Err(e) => {
            eprintln!("warning: no Ollama Modelfile written: {e} (see `gguftune modelfile --help`)");
            None
        }
    };
    let metrics_path = sibling_path(&args.output, "metrics.jsonl");
    gguftune::io::write_atomic(&metrics_path, &metrics)
        .with_context(|| format!("writing {}", metrics_path.display()))?;

    let (train_curve, val_curve) = curves(&metrics);
    let title = format!("{} on {}", file_name(&args.output), source.label());
    let plot_path = sibling_path(&args.output, "loss.svg");
    gguftune::io::write_atomic(&plot_path, loss_curve_svg(&train_curve, &val_curve, &title).as_bytes())
        .with_context(|| format!("writing {}", plot_path.display()))?;
    let first = train_curve.first().map_or(f32::NAN, |p| p.1);
    let final_loss = train_curve.last().map_or(f32::NAN, |p| p.1);
    let tokens_per_second = tokens as f64 / train_seconds.max(1e-9);
    let peak = peak_rss_bytes();
    // Each device's memory as the run allocated it, beside the plan's.
    let device_memory: Vec<(DeviceMemory, DeviceMemory)> = match &planned_devices {
        Some(planned) => {
            let used = DevicePlan::from_session(&model, &lora, &cfg.devices, outcome.memory.clone())?;
            used.memories.into_iter().zip(planned.memories.iter().cloned()).collect()
        }
        None => Vec::new(),
    };
    let last_eval = outcome.last_eval;
    let (val_loss, val_ppl) = last_eval.as_ref().map_or((None, None), |e| (Some(e.loss), Some(e.perplexity)));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "adapter": args.output, "metrics": metrics_path, "loss_curve": plot_path, "modelfile": modelfile, "examples_used": stats.used,
                "examples_train": train_idx.len(), "examples_validation": val_idx.len(),
                "examples_truncated": stats.truncated, "examples_skipped": stats.skipped,
                "tokens": stats.tokens, "target_tokens": stats.target_tokens, "steps": state.steps,
                "resumed_at_step": (resumed_at > 0).then_some(resumed_at),
                "seq_len": cfg.shape.seq_len, "batch": cfg.shape.n_seq, "grad_accum": cfg.grad_accum,
                "first_loss": first, "final_loss": final_loss, "val_loss": val_loss, "val_perplexity": val_ppl,
                "seconds": start.elapsed().as_secs_f64(), "train_seconds": train_seconds,
                "trained_tokens": tokens, "tokens_per_second": tokens_per_second, "peak_rss_bytes": peak,
                "planned_peak_bytes": planned.peak_bytes(),
                "compute_buffer_bytes": outcome.memory.compute_bytes, "planned_compute_buffer_bytes": planned.session.compute_bytes,
                "trainable_state_bytes": outcome.memory.param_bytes,
                "devices": device_labels(&cfg.devices.list), "placement": outcome.placement.as_ref().map(placement_json),
                "optimizer_placement": outcome.optimizer_placement.as_ref().map(placement_json),
                "device_memory": device_memory.iter().map(device_memory_json).collect::<Vec<_>>(),
            })
        );
    } else {
        let val = match last_eval {
            Some(e) => format!(", validation loss {:.4} (perplexity {:.2})", e.loss, e.perplexity),
            None => String::new(),
        };
        eprintln!(
            "wrote {}: {} examples ({} train, {} validation; {} truncated, {} skipped), {} tokens ({} trained), {} steps, loss {first:.4} -> {final_loss:.4}{val}, {:.1} s, {tokens_per_second:.0} tok/s on {}{}, peak memory {} (planned {}){}",
            args.output.display(),
            stats.used,
            train_idx.len(),
            val_idx.len(),
            stats.truncated,
            stats.skipped,
            stats.tokens,
            stats.target_tokens,
            state.steps,
            start.elapsed().as_secs_f64(),
            device_labels(&cfg.devices.list).join(", "),
            outcome.placement.as_ref().map_or_else(String::new, |p| format!(" ({p})")),
            peak.map_or_else(|| "unknown".into(), human_bytes),
            human_bytes(planned.peak_bytes()),
            device_memory
                .iter()
                .map(|(used, planned)| format!(
                    ", {} {} (planned {})",
                    used.name,
                    human_bytes(used.total_bytes()),
                    human_bytes(planned.total_bytes())
                ))
                .collect::<String>(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Reports progress, writes metrics lines and checkpoints.
struct Observer<'a> {
    bar: &'a ProgressBar,
    metrics: &'a mut Vec<u8>,
    last: Instant,
    train_seconds: f64,
    tokens: usize,
    checkpoints: PathBuf,
    keep: usize,
    last_checkpoint: Option<PathBuf>,
    arch: &'a str,
    lora: &'a LoraConfig,
    slots: &'a [LoraSlot],
    settings: &'a serde_json::Value,
}

impl TrainObserver for Observer<'_> {
    fn step(&mut self, r: &StepReport) -> Result<ControlFlow<()>, TrainError> {
        let seconds = self.last.elapsed().as_secs_f64();
        self.train_seconds += seconds;
        self.tokens += r.tokens;
        let tps = r.tokens as f64 / seconds.max(1e-9);
        self.bar.set_message(format!("loss {:.4} {:.0} tok/s", r.loss, tps));
        self.bar.set_position(r.step);
        let line = serde_json::json!({
            "step": r.step, "epoch": r.epoch, "loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm,
            "tokens": r.tokens, "tokens_per_second": tps,
        });
        writeln!(self.metrics, "{line}").map_err(|e| TrainError::Observer(e.into()))?;
        self.last = Instant::now();
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    }

    fn validation(&mut self, r: &EvalReport) -> Result<(), TrainError> {
        let line = serde_json::json!({"step": self.bar.position(), "val_loss": r.loss, "val_perplexity": r.perplexity, "val_tokens": r.tokens});
        writeln!(self.metrics, "{line}").map_err(|e| TrainError::Observer(e.into()))?;
        self.bar.println(format!(
            "step {}: validation loss {:.4}, perplexity {:.2}",
            self.bar.position(),
            r.loss,
            r.perplexity
        ));
        self.last = Instant::now();
        Ok(())
    }

    fn checkpoint(&mut self, state: &OptimizerState) -> Result<(), TrainError> {
        let dir = write_checkpoint(
            &self.checkpoints,
            self.keep,
            self.arch,
            self.lora.alpha,
            self.slots,
            self.lora.rank,
            state,
            self.settings,
            self.metrics,
        )
        .map_err(|e| {
            let e = anyhow::Error::new(e).context(format!("saving a checkpoint in {}", self.checkpoints.display()));
            TrainError::Observer(e.into())
        })?;
        // Named by the line ggml's abort becomes if a remote device dies mid-step.
        gguftune::ggml::set_last_checkpoint(Some(&dir));
        self.last_checkpoint = Some(dir);
        self.last = Instant::now();
        Ok(())
    }
}

/// The settings a resumed run must share with the run that wrote the checkpoint: everything
/// that changes which data goes into which step or what a step computes.
/// One memory of a run on devices as the run used it, beside the plan's, for `--json`.
fn device_memory_json((used, planned): &(DeviceMemory, DeviceMemory)) -> serde_json::Value {
    serde_json::json!({
        "name": used.name, "bytes": used.total_bytes(), "planned_bytes": planned.total_bytes(),
        "compute_buffer_bytes": used.compute_bytes, "planned_compute_buffer_bytes": planned.compute_bytes,
        "optimizer_buffer_bytes": used.optimizer_bytes, "planned_optimizer_buffer_bytes": planned.optimizer_bytes,
        "lora_state_bytes": used.lora_state_bytes, "planned_lora_state_bytes": planned.lora_state_bytes,
    })
}

/// Where the training graph's nodes ran, for `--json`.
fn placement_json(p: &Placement) -> serde_json::Value {
    serde_json::json!({
        "splits": p.splits,
        "backends": p.backends.iter().map(|b| serde_json::json!({"backend": b.backend, "nodes": b.nodes, "views": b.views})).collect::<Vec<_>>(),
    })
}

fn settings_fingerprint(
    args: &Args,
    model: &Path,
    cfg: &TrainConfig,
    examples: &[Example],
    total_steps: u64,
) -> serde_json::Value {
    // FNV-1a over every example's tokens and targets: a different dataset, tokenization or
    // loss mask changes it.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |v: i64| {
        for b in v.to_le_bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for ex in examples {
        eat(ex.tokens.len() as i64);
        ex.tokens.iter().for_each(|&t| eat(i64::from(t)));
        ex.targets.iter().for_each(|t| eat(t.map_or(-1, i64::from)));
    }
    let model_bytes = std::fs::metadata(model).map(|m| m.len()).unwrap_or(0);
    serde_json::json!({
        "model_bytes": model_bytes, "data": format!("{hash:016x}"), "examples": examples.len(),
        "rank": cfg.lora.rank, "alpha": cfg.lora.alpha, "targets": args.run.targets,
        "seq_len": cfg.shape.seq_len, "batch": cfg.shape.n_seq, "grad_accum": cfg.grad_accum,
        "epochs": cfg.epochs, "total_steps": total_steps, "lr": cfg.adamw.lr, "beta1": cfg.adamw.beta1,
        "beta2": cfg.adamw.beta2, "weight_decay": cfg.adamw.weight_decay, "schedule": args.schedule.name(),
        "warmup_steps": cfg.warmup_steps, "max_grad_norm": cfg.max_grad_norm, "seed": cfg.seed,
        "val_split": args.val_split, "pack": args.pack,
    })
}

/// (step, loss) points.
type Curve = Vec<(u64, f32)>;

/// The training loss per step and the validation loss per validation, from the metrics lines
/// (those of a resumed run's checkpoint included).
fn curves(metrics: &[u8]) -> (Curve, Curve) {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(metrics).lines() {
        let Ok(m) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(step) = m["step"].as_u64() else { continue };
        if let Some(loss) = m["loss"].as_f64() {
            train.push((step, loss as f32));
        } else if let Some(loss) = m["val_loss"].as_f64() {
            val.push((step, loss as f32));
        }
    }
    (train, val)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// `adapter.gguf` -> `adapter.checkpoints/`.
fn checkpoint_root(adapter: &Path) -> PathBuf {
    sibling_path(adapter, "checkpoints")
}

/// How a dataset becomes training sequences (the finetune flags of the same names).
pub(super) struct DataOptions {
    pub ctx: usize,
    pub pack: bool,
    pub val_split: f32,
    pub seed: u64,
    pub train_on_prompt: bool,
    pub skip_overlong: bool,
}

/// A dataset tokenized for a model and grouped into sequences exactly as finetune trains on it.
pub(super) struct PreparedData {
    pub examples: Vec<Example>,
    pub stats: ExampleStats,
    pub train_idx: Vec<usize>,
    pub val_idx: Vec<usize>,
    pub train_seqs: Vec<Sequence>,
    pub val_seqs: Vec<Sequence>,
    /// The longest sequence: the length of every micro-batch row.
    pub seq_len: usize,
}

/// Reads `data`, renders it as the model is served (see [`chat_setup`]), tokenizes it with
/// `model`'s vocabulary (llama.cpp's), splits off the validation examples and packs both sets
/// into sequences.
pub(super) fn prepare_data(model: &ModelArg, data: &Path, options: &DataOptions) -> anyhow::Result<PreparedData> {
    let vocab = LlamaModel::load_vocab(Runtime::get(), &model.path).context("loading the vocabulary with llama.cpp")?;
    let chat = chat_setup(model, &vocab)?;
    let dataset = read_jsonl(data)?;
    let render =
        RenderOptions { train_on_prompt: options.train_on_prompt, system: chat.system, merge_roles: chat.merge_roles };
    let (examples, stats) =
        build_examples(&dataset, chat.template.as_ref(), &vocab, &render, options.ctx, options.skip_overlong)?;
    let (train_idx, val_idx) = split_validation(examples.len(), options.val_split, options.seed);
    let train_seqs = pack_examples(&examples, &train_idx, options.ctx, options.pack);
    let val_seqs = pack_examples(&examples, &val_idx, options.ctx, options.pack);
    let seq_len = train_seqs.iter().chain(&val_seqs).map(|s| s.len).max().unwrap_or(2).max(2);
    Ok(PreparedData { examples, stats, train_idx, val_idx, train_seqs, val_seqs, seq_len })
}
