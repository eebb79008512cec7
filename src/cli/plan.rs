//! `gguftune plan`: the memory of a LoRA run before it starts, line by line, against the
//! machine's memory, beside the alternatives and the rules of thumb people use.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};

use gguftune::model::{Devices, LoraConfig, Model};
use gguftune::plan::{open_source, training_memory, MemoryPlan, ModelSource, PlannedModel, RunShape, SourceKind};
use gguftune::quant::FileType;
use gguftune::train::{
    init_lora, train, Activations, AdamWConfig, BatchShape, EvalReport, OptimizerState, Schedule, StepReport,
    TrainConfig, TrainData, TrainError, TrainObserver,
};

mod devices;

use super::convert::parse_file_type;
use super::finetune::{prepare_data, DataOptions, PreparedData};
use super::output::{human_bytes, human_count};
use super::run_args::{parse_targets, RunArgs};
use super::source::ModelArg;

/// Plan a LoRA fine-tuning run: its peak memory from the graph it will run, whether it fits,
/// and what would make it fit.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  gguftune plan model-q4_k_m.gguf --ctx 512 --batch 8
  gguftune plan ./Llama-2-7b-hf --type q4_k_m --memory 16GiB
  gguftune plan config.json --type q8_0 --json
  gguftune plan ollama:llama3.2:1b --data chat.jsonl

The model may be a GGUF, ollama:NAME[:TAG] (a model in Ollama's store), a Hugging Face folder (its
safetensors need not be downloaded) or a bare config.json; --type says what `convert` (or `quantize`, for a GGUF) would make of it.")]
pub struct Args {
    /// A GGUF model, ollama:NAME[:TAG], a Hugging Face folder, or a config.json.
    model: PathBuf,
    /// Plan for the file `convert` / `quantize` would write at this type (default: a GGUF's own
    /// types; f16 for a Hugging Face model).
    #[arg(long = "type", value_parser = parse_file_type)]
    file_type: Option<FileType>,
    #[command(flatten)]
    run: RunArgs,
    /// Memory available, such as 16GiB or 8000MB (default: this machine's).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Training data (JSONL): count its tokens and the run's steps, and plan for its longest
    /// sequence as finetune does. Tokenized with the model's own tokenizer for a GGUF; for a
    /// Hugging Face model, estimated at 4 bytes per token.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Passes over the data.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Fraction of the examples held out for validation, as finetune's --val-split.
    #[arg(long, default_value_t = 0.05)]
    val_split: f32,
    /// Pack short examples into full sequences, as finetune's --pack.
    #[arg(long)]
    pack: bool,
    /// Measure the speed with a few real training steps on this machine (a GGUF model, with
    /// --data; the first step is a warm-up and not counted).
    #[arg(long)]
    calibrate: bool,
    /// Steps --calibrate times after its warm-up step.
    #[arg(long, default_value_t = 3)]
    calibrate_steps: u64,
    /// Training speed to assume, in tokens per second (instead of --calibrate).
    #[arg(long)]
    tokens_per_second: Option<f64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Parses `24GiB`, `16GB`, `8G`, `512MiB`, `1000000`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("'{s}' is not a size (expected a number and a unit, e.g. 24GiB)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        "t" | "tib" => 1024.0f64.powi(4),
        "tb" => 1e12,
        other => {
            return Err(format!("unknown unit '{other}' in '{s}' (expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"))
        }
    };
    Ok((value * scale) as u64)
}

/// This machine's memory (`MemTotal` of /proc/meminfo), if known.
fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One row of the alternatives table.
struct Alternative {
    name: String,
    bytes: u64,
    how: &'static str,
    rule_name: &'static str,
    rule_bytes: u64,
}

/// One change that would lower the peak.
struct Suggestion {
    change: String,
    /// The peak after the change (on devices: of the memory that fits worst, `on`).
    peak: u64,
    /// Whether the run fits after the change.
    fits: bool,
    /// On devices: the memory that fits worst after the change.
    on: Option<String>,
}

/// What a run needs, as [`suggestions`] compares the changes it tries.
struct Need {
    peak: u64,
    fits: bool,
    on: Option<String>,
}

/// Set in the child process that computes the plan (see [`run`]).
const CHILD_ENV: &str = "GGUFTUNE_PLAN_CHILD";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // ggml's graph allocator aborts the process when a graph fragments its buffer into more than
    // 256 free blocks (very deep models, some sizes). Nothing can catch an abort, so the plan is
    // computed in a child process, and an abort becomes an error that says what happened.
    if std::env::var_os(CHILD_ENV).is_none() {
        return run_in_child();
    }
    plan(args)
}

fn run_in_child() -> anyhow::Result<ExitCode> {
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().context("finding the gguftune executable")?;
    let out = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .env("GGML_NO_BACKTRACE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::piped())
        .output()
        .context("starting the planning process")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.signal().is_some() {
        let assert = stderr.lines().find(|l| l.contains("GGML_ASSERT")).unwrap_or("killed by a signal");
        bail!(
            "ggml could not plan this run's graph and aborted ({}); finetune would stop at the same point (hint: try another --ctx or --batch, or fewer layers)",
            assert.rsplit(": ").next().unwrap_or(assert).trim()
        );
    }
    eprint!("{stderr}");
    Ok(ExitCode::from(u8::try_from(out.status.code().unwrap_or(1)).unwrap_or(1)))
}

fn plan(args: Args) -> anyhow::Result<ExitCode> {
    args.run.check()?;
    if args.calibrate && args.data.is_none() {
        bail!("--calibrate trains a few steps on your data: give --data");
    }
    if !(0.0..1.0).contains(&args.val_split) || args.epochs == 0 {
        bail!("--val-split must be in [0, 1) and --epochs at least 1");
    }
    let threads = args.run.threads();
    let devices = args.run.devices.resolve()?;
    let model_arg = ModelArg::resolve(&args.model)?;
    let source = ModelSource::detect(&model_arg.path).with_context(|| format!("reading {}", args.model.display()))?;
    let planned = open_source(&source, args.file_type).with_context(|| format!("planning {}", args.model.display()))?;
    // Alpha scales the adapter and changes nothing planned here.
    let lora = args.run.lora(2.0 * args.run.rank as f32, planned.model.hparams().arch)?;
    let shape = BatchShape { seq_len: args.run.ctx, n_seq: args.run.batch };
    let mut run = RunShape { lora, shape, activations: args.run.activations(), threads };
    let data = match &args.data {
        Some(path) => Some(DataPlan::read(&args, &source, &model_arg, path)?),
        None => None,
    };
    if let Some(d) = data.as_ref().and_then(|d| d.prepared.as_ref()) {
        // finetune's micro-batch: rows of the longest sequence, no more rows than sequences.
        run.shape = args.run.batch_shape(d.seq_len, d.train_seqs.len());
    }
    let time = time_plan(&args, &planned, &run, data.as_ref(), &devices)?;
    if !devices.is_cpu_only() {
        return devices::plan_on_devices(&args, &source, &planned, &run, &devices, time.as_ref());
    }
    let plan = training_memory(&planned.model, planned.file_bytes, &run)?;
    let limit = args.memory.or_else(machine_memory);
    let fits = limit.map(|l| plan.peak_bytes() <= l);
    let suggestions = match (fits, limit) {
        (Some(false), Some(l)) => {
            let need = |model: &PlannedModel, run: &RunShape| -> anyhow::Result<Need> {
                let peak = peak_with(model, run)?;
                Ok(Need { peak, fits: peak <= l, on: None })
            };
            suggestions(&source, &planned, &run, args.run.grad_accum, &need)?
        }
        _ => Vec::new(),
    };
    let alternatives = alternatives(&source, &planned, &run, &plan)?;

    let report = Report {
        args: &args,
        planned: &planned,
        run: &run,
        plan: &plan,
        limit,
        fits,
        alternatives: &alternatives,
        suggestions: &suggestions,
        time: time.as_ref(),
    };
    if args.json {
        report.print_json();
    } else {
        report.print_text();
    }
    Ok(ExitCode::SUCCESS)
}

/// The peak after one change to `run` (and maybe the model's type).
fn peak_with(model: &PlannedModel, run: &RunShape) -> anyhow::Result<u64> {
    Ok(training_memory(&model.model, model.file_bytes, run)?.peak_bytes())
}

/// The changes to `run` that lower its memory, each with what the run then needs (`need`):
/// recomputing activations, smaller micro-batches with more accumulation, a shorter context, a
/// smaller type, fewer targets.
fn suggestions(
    source: &ModelSource,
    planned: &PlannedModel,
    run: &RunShape,
    grad_accum: usize,
    need: &dyn Fn(&PlannedModel, &RunShape) -> anyhow::Result<Need>,
) -> anyhow::Result<Vec<Suggestion>> {
    let suggest = |change: String, n: Need| Suggestion { change, peak: n.peak, fits: n.fits, on: n.on };
    let mut out = Vec::new();
    if run.activations == Activations::Keep {
        let recompute = RunShape { activations: Activations::Recompute, ..run.clone() };
        out.push(suggest("--recompute".into(), need(planned, &recompute)?));
    }
    // Smaller micro-batches with more accumulation: the same effective batch.
    let mut batch = run.shape.n_seq;
    while batch > 1 {
        batch /= 2;
        let smaller = RunShape { shape: BatchShape { n_seq: batch, ..run.shape }, ..run.clone() };
        let n = need(planned, &smaller)?;
        if n.fits || batch == 1 {
            let accum = grad_accum * run.shape.n_seq / batch;
            out.push(suggest(format!("--batch {batch} --grad-accum {accum}"), n));
            break;
        }
    }
    let mut ctx = run.shape.seq_len;
    while ctx > 128 {
        ctx /= 2;
        let shorter = RunShape { shape: BatchShape { seq_len: ctx, ..run.shape }, ..run.clone() };
        let n = need(planned, &shorter)?;
        if n.fits || ctx <= 128 {
            out.push(suggest(format!("--ctx {ctx}"), n));
            break;
        }
    }
    for ft in [FileType::Q8_0, FileType::Q6_K, FileType::Q5_K_M, FileType::Q4_K_M] {
        let smaller = open_source(source, Some(ft))?;
        if smaller.file_bytes < planned.file_bytes {
            out.push(suggest(format!("--type {}", ft.name()), need(&smaller, run)?));
        }
    }
    let arch = planned.model.hparams().arch;
    for &targets in arch.family().fewer_targets() {
        let fewer =
            RunShape { lora: LoraConfig { targets: parse_targets(targets, arch)?, ..run.lora.clone() }, ..run.clone() };
        if fewer.lora.targets.len() < run.lora.targets.len() {
            out.push(suggest(format!("--targets {targets}"), need(planned, &fewer)?));
        }
    }
    Ok(out)
}

/// The dataset side of a plan: counted exactly for a GGUF model, estimated otherwise.
struct DataPlan {
    /// Tokenized and grouped as finetune would (GGUF models).
    prepared: Option<PreparedData>,
    /// Tokens of the training examples per epoch.
    tokens_per_epoch: u64,
    /// Training sequences per epoch.
    sequences: u64,
    /// How the token count was found.
    tokens_from: &'static str,
}

/// Bytes per token assumed when no tokenizer is at hand (English text with a 32k-50k
/// vocabulary; the plan says so when it uses it).
const BYTES_PER_TOKEN: u64 = 4;

impl DataPlan {
    fn read(args: &Args, source: &ModelSource, model: &ModelArg, path: &std::path::Path) -> anyhow::Result<DataPlan> {
        if let ModelSource::Gguf(_) = source {
            let options = DataOptions {
                ctx: args.run.ctx,
                pack: args.pack,
                val_split: args.val_split,
                seed: 42,
                train_on_prompt: false,
                skip_overlong: false,
            };
            let prepared = prepare_data(model, path, &options)?;
            let tokens_per_epoch = prepared.train_seqs.iter().map(|s| s.len as u64).sum();
            let sequences = prepared.train_seqs.len() as u64;
            return Ok(DataPlan {
                prepared: Some(prepared),
                tokens_per_epoch,
                sequences,
                tokens_from: "tokenized with the model's tokenizer",
            });
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let examples = text.lines().filter(|l| !l.trim().is_empty()).count() as f64;
        let train_fraction = 1.0 - f64::from(args.val_split);
        Ok(DataPlan {
            prepared: None,
            tokens_per_epoch: (text.len() as f64 * train_fraction) as u64 / BYTES_PER_TOKEN,
            sequences: (examples * train_fraction).round().max(1.0) as u64,
            tokens_from: "estimated at 4 bytes per token (no tokenizer: plan a GGUF for an exact count)",
        })
    }
}

/// How long the run takes.
struct TimePlan {
    tokens: u64,
    steps: u64,
    tokens_from: &'static str,
    /// Tokens per second and where the figure comes from.
    speed: Option<(f64, String)>,
    seconds: Option<f64>,
}

fn time_plan(
    args: &Args,
    planned: &PlannedModel,
    run: &RunShape,
    data: Option<&DataPlan>,
    devices: &Devices,
) -> anyhow::Result<Option<TimePlan>> {
    let Some(data) = data else {
        return Ok(args.tokens_per_second.map(|tps| TimePlan {
            tokens: 0,
            steps: 0,
            tokens_from: "no --data",
            speed: Some((tps, "given with --tokens-per-second".into())),
            seconds: None,
        }));
    };
    let per_step = (run.shape.n_seq * args.run.grad_accum) as u64;
    let steps = data.sequences.div_ceil(per_step.max(1)) * args.epochs as u64;
    let tokens = data.tokens_per_epoch * args.epochs as u64;
    let (speed, seconds) = match (args.calibrate, args.tokens_per_second) {
        (true, _) => {
            let Some(prepared) = data.prepared.as_ref().filter(|_| planned.kind == SourceKind::GgufFile) else {
                bail!("--calibrate trains on the GGUF file itself: give a GGUF model without --type");
            };
            let (seconds_per_step, tps) = calibrate(&planned.model, prepared, run, args, devices)?;
            let how = format!(
                "measured by --calibrate: {} steps of {} x {} tokens after a warm-up step",
                args.calibrate_steps, run.shape.n_seq, run.shape.seq_len
            );
            (Some((tps, how)), Some(seconds_per_step * steps as f64))
        }
        (false, Some(tps)) => {
            (Some((tps, "given with --tokens-per-second".into())), Some(tokens as f64 / tps.max(1e-9)))
        }
        (false, None) => (None, None),
    };
    Ok(Some(TimePlan { tokens, steps, tokens_from: data.tokens_from, speed, seconds }))
}

/// Times `args.calibrate_steps` real training steps after a warm-up step: (seconds per step,
/// tokens per second).
fn calibrate(
    model: &Model,
    data: &PreparedData,
    run: &RunShape,
    args: &Args,
    devices: &Devices,
) -> anyhow::Result<(f64, f64)> {
    struct Clock {
        times: Vec<(Instant, usize)>,
    }
    impl TrainObserver for Clock {
        fn step(&mut self, r: &StepReport) -> Result<ControlFlow<()>, TrainError> {
            self.times.push((Instant::now(), r.tokens));
            Ok(ControlFlow::Continue(()))
        }
        fn validation(&mut self, _: &EvalReport) -> Result<(), TrainError> {
            Ok(())
        }
        fn checkpoint(&mut self, _: &OptimizerState) -> Result<(), TrainError> {
            Ok(())
        }
    }
    let steps = args.calibrate_steps.max(1) + 1;
    let mut cfg = TrainConfig {
        lora: run.lora.clone(),
        adamw: AdamWConfig::default(),
        shape: run.shape,
        activations: run.activations,
        grad_accum: args.run.grad_accum,
        epochs: 1,
        max_steps: Some(steps),
        schedule: Schedule::Constant,
        warmup_steps: 0,
        max_grad_norm: 1.0,
        seed: 42,
        eval_every: None,
        checkpoint_every: None,
        threads: run.threads,
        devices: devices.clone(),
    };
    // Enough epochs over a small dataset for the warm-up and the timed steps.
    let per_epoch = cfg.steps_per_epoch(data.train_seqs.len()).max(1);
    cfg.epochs = usize::try_from(steps.div_ceil(per_epoch)).unwrap_or(usize::MAX);
    let train_data = TrainData { examples: &data.examples, train: data.train_seqs.clone(), validation: Vec::new() };
    let mut state = OptimizerState::new(init_lora(model, &run.lora, 42)?);
    let mut clock = Clock { times: Vec::new() };
    eprintln!("calibrating: {steps} training steps ...");
    train(model, &cfg, &train_data, &mut state, &mut clock)?;
    let (Some((first, _)), Some((last, _))) = (clock.times.first(), clock.times.last()) else {
        bail!("--calibrate: no training step ran");
    };
    let measured = clock.times.len().saturating_sub(1).max(1) as f64;
    let seconds = last.duration_since(*first).as_secs_f64();
    let tokens: usize = clock.times.iter().skip(1).map(|(_, t)| t).sum();
    Ok((seconds / measured, tokens as f64 / seconds.max(1e-9)))
}

fn hours_minutes(seconds: f64) -> String {
    let minutes = (seconds / 60.0).round() as u64;
    if minutes == 0 {
        format!("{seconds:.0} s")
    } else {
        format!("{} h {:02} min", minutes / 60, minutes % 60)
    }
}

/// Bytes per billion parameters of the rules of thumb in fine-tuning guides.
const RULE_INFER_FP32: f64 = 4e9;
const RULE_FINETUNE: f64 = 8e9;
const RULE_QLORA: f64 = 48e9 / 65.0;
const RULE_FULL_ADAM: f64 = 20e9;

fn alternatives(
    source: &ModelSource,
    planned: &PlannedModel,
    run: &RunShape,
    plan: &MemoryPlan,
) -> anyhow::Result<Vec<Alternative>> {
    let billions = plan.base_params as f64 / 1e9;
    let rule = |per_billion: f64| (per_billion * billions) as u64;
    let h = planned.model.hparams();
    let ctx = run.shape.seq_len as u64;
    let kv_cache = 2 * h.n_layer * ctx * h.n_head_kv * h.head_dim * 2;
    // One forward pass of the context: an upper bound on llama.cpp's compute buffer (our graph
    // keeps the logits of every position).
    let infer_compute = planned.model.measure_forward(run.shape.seq_len, run.threads)? as u64;
    let four_bit = planned.file_bytes * 8 < plan.base_params * 6;
    let this = planned.file_type.map_or("this file".to_owned(), |t| t.name().to_owned());
    let mut rows = vec![
        Alternative {
            name: format!("inference only (llama.cpp, ctx {ctx})"),
            bytes: plan.weights_bytes + kv_cache + infer_compute + plan.runtime_bytes,
            how: "weights + f16 KV cache + one forward pass",
            rule_name: "4 GB per billion parameters (fp32)",
            rule_bytes: rule(RULE_INFER_FP32),
        },
        Alternative {
            name: format!("LoRA on {this} (this plan)"),
            bytes: plan.peak_bytes(),
            how: "measured on the training graph",
            rule_name: if four_bit { "QLoRA: a 65B model on one 48 GB GPU" } else { "twice fp32 inference" },
            rule_bytes: rule(if four_bit { RULE_QLORA } else { RULE_FINETUNE }),
        },
    ];
    if planned.file_type != Some(FileType::F16) {
        let f16 = open_source(source, Some(FileType::F16))?;
        rows.push(Alternative {
            name: "LoRA on f16".into(),
            bytes: peak_with(&f16, run)?,
            how: "measured on the training graph",
            rule_name: "twice fp32 inference",
            rule_bytes: rule(RULE_FINETUNE),
        });
    }
    rows.push(Alternative {
        name: "full fine-tuning, fp32 AdamW".into(),
        bytes: 16 * plan.base_params + plan.session.compute_bytes as u64 + plan.runtime_bytes,
        how: "4 B each: weights, gradients, 2 moments; + this plan's activations",
        rule_name: "20 GB per billion parameters",
        rule_bytes: rule(RULE_FULL_ADAM),
    });
    Ok(rows)
}

fn source_text(planned: &PlannedModel) -> String {
    let ty = planned.file_type.map_or_else(String::new, |t| format!(" {}", t.name()));
    match planned.kind {
        SourceKind::GgufFile => "the GGUF file".into(),
        SourceKind::Requantized => format!("the{ty} GGUF `quantize` would write"),
        SourceKind::Converted => format!("the{ty} GGUF `convert` would write"),
        SourceKind::FromConfig(gguftune::convert::TokenizerSource::Files) => {
            format!("the{ty} GGUF `convert` would write (tensor shapes from config.json)")
        }
        SourceKind::FromConfig(gguftune::convert::TokenizerSource::Estimated) => format!(
            "the{ty} GGUF `convert` would write (tensor shapes from config.json; no tokenizer files, its metadata estimated)"
        ),
    }
}

/// The run a plan is about, in one line: the adapter, the model, its file.
fn run_text(args: &Args, planned: &PlannedModel, run: &RunShape, base_params: u64) -> String {
    let targets: Vec<&str> = run
        .lora
        .targets
        .iter()
        .filter_map(|k| gguftune::model::TARGETS.iter().find(|(_, t)| t == k).map(|(n, _)| *n))
        .collect();
    format!(
        "LoRA r{} on {} of {} ({} layers, {} parameters), {}",
        run.lora.rank,
        targets.join(","),
        args.model.display(),
        planned.model.hparams().n_layer,
        human_count(base_params),
        source_text(planned)
    )
}

/// Prints the time a run takes, if known, and adds it to the `summary` line.
fn print_time(args: &Args, time: Option<&TimePlan>, summary: &mut String) {
    let Some(t) = time else { return };
    println!();
    if t.steps > 0 {
        println!("time: {} tokens in {} steps ({} epochs; {})", t.tokens, t.steps, args.epochs, t.tokens_from);
    }
    match (&t.speed, t.seconds) {
        (Some((tps, how)), Some(seconds)) => {
            println!("  at {tps:.0} tokens/s ({how}): {}", hours_minutes(seconds));
            summary.push_str(&format!(", about {} of training", hours_minutes(seconds)));
        }
        (Some((tps, how)), None) => {
            println!("  at {tps:.0} tokens/s ({how}); give --data for the run's length")
        }
        _ => println!("  speed unknown: add --calibrate (a few real steps) or --tokens-per-second N"),
    }
}

/// The time part of `--json`.
fn time_json(time: Option<&TimePlan>) -> serde_json::Value {
    serde_json::json!(time.map(|t| serde_json::json!({
        "tokens": t.tokens, "steps": t.steps, "tokens_from": t.tokens_from,
        "speed_from": t.speed.as_ref().map(|(_, how)| how), "seconds": t.seconds,
    })))
}

/// Everything a plan prints.
#[derive(Clone, Copy)]
struct Report<'a> {
    args: &'a Args,
    planned: &'a PlannedModel,
    run: &'a RunShape,
    plan: &'a MemoryPlan,
    limit: Option<u64>,
    fits: Option<bool>,
    alternatives: &'a [Alternative],
    suggestions: &'a [Suggestion],
    time: Option<&'a TimePlan>,
}

impl Report<'_> {
    fn print_text(&self) {
        let Report { args, planned, run, plan, limit, fits, alternatives, suggestions, time } = *self;
        let h = planned.model.hparams();
        let hb = |n: u64| human_bytes(n);
        println!("{}", run_text(args, planned, run, plan.base_params));
        println!("micro-batch {} x {} tokens, {} CPU threads\n", run.shape.n_seq, run.shape.seq_len, run.threads);
        let s = &plan.session;
        let lines: Vec<(String, u64, String)> = vec![
            (
                "model file, resident (mapped; each step reads every weight)".into(),
                plan.weights_bytes,
                if plan.weights_bytes < planned.file_bytes {
                    format!("of {}: token embeddings are read by row", hb(planned.file_bytes))
                } else {
                    String::new()
                },
            ),
            (
                format!(
                    "LoRA: {} parameters ({:.2}% of the model), gradients, 2 AdamW moments",
                    human_count(plan.lora_params),
                    100.0 * plan.lora_params as f64 / plan.base_params.max(1) as f64
                ),
                s.param_bytes as u64,
                format!("4 x 4 B x {}", plan.lora_params),
            ),
            ("ggml compute buffer (activations, gradients, logits)".into(), s.compute_bytes as u64, String::new()),
            (
                "  activations kept for the backward pass".into(),
                plan.activations_per_layer * plan.n_layer,
                format!("{} per layer x {}", hb(plan.activations_per_layer), plan.n_layer),
            ),
            (
                "  logits, loss and the rest".into(),
                (s.compute_bytes as u64).saturating_sub(plan.activations_per_layer * plan.n_layer),
                format!(
                    "logits of one loss chunk: {} x {} of {} positions x 4 B = {}",
                    h.n_vocab,
                    plan.loss_chunk,
                    run.shape.seq_len * run.shape.n_seq,
                    hb(plan.logits_bytes)
                ),
            ),
            ("ggml optimizer buffer".into(), s.optimizer_bytes as u64, String::new()),
            ("ggml CPU scratch buffer".into(), s.work_bytes as u64, format!("{} threads", run.threads)),
            (
                "LoRA state on the host (resumable copy)".into(),
                plan.host_state_bytes,
                format!("3 x 4 B x {}", plan.lora_params),
            ),
            ("runtime (program, tokenizer, data, heap)".into(), plan.runtime_bytes, "constant".into()),
        ];
        for (what, bytes, formula) in &lines {
            println!("  {what:<62} {:>10}  {formula}", hb(*bytes));
        }
        let verdict = match (fits, limit) {
            (Some(true), Some(l)) => format!("fits in {}", hb(l)),
            (Some(false), Some(l)) => format!("does NOT fit in {}", hb(l)),
            _ => "memory of this machine unknown (give --memory)".into(),
        };
        println!("  {:<62} {:>10}  {verdict}", "peak", hb(plan.peak_bytes()));
        if !suggestions.is_empty() {
            println!("\nto fit, change one of:");
            for sg in suggestions {
                println!("  {:<40} peak {:>10}{}", sg.change, hb(sg.peak), if sg.fits { "  fits" } else { "" });
            }
        }
        println!("\n  {:<44} {:>10}  {:<46} {:>10}", "alternatives", "gguftune", "rule of thumb", "says");
        for a in alternatives {
            println!("  {:<44} {:>10}  {:<46} {:>10}", a.name, hb(a.bytes), a.rule_name, hb(a.rule_bytes));
        }
        let mut summary = format!("plan: peak {} ({verdict})", hb(plan.peak_bytes()));
        print_time(args, time, &mut summary);
        eprintln!("\n{summary}");
    }

    fn print_json(&self) {
        let Report { args, planned, run, plan, limit, fits, alternatives, suggestions, time } = *self;
        let s = &plan.session;
        let value = serde_json::json!({
            "model": args.model,
            "file_type": planned.file_type.map(|t| t.name()),
            "file_bytes": planned.file_bytes,
            "base_parameters": plan.base_params,
            "lora_parameters": plan.lora_params,
            "rank": run.lora.rank,
            "seq_len": run.shape.seq_len,
            "batch": run.shape.n_seq,
            "threads": run.threads,
            "peak_memory_bytes": plan.peak_bytes(),
            "memory_limit_bytes": limit,
            "fits": fits,
            "tokens_per_second": time.and_then(|t| t.speed.as_ref().map(|(tps, _)| *tps)),
            "time": time_json(time),
            "breakdown": {
                "weights_bytes": plan.weights_bytes,
                "lora_state_bytes": s.param_bytes,
                "compute_buffer_bytes": s.compute_bytes,
                "activations_per_layer_bytes": plan.activations_per_layer,
                "layers": plan.n_layer,
                "logits_bytes": plan.logits_bytes,
                "optimizer_buffer_bytes": s.optimizer_bytes,
                "cpu_scratch_bytes": s.work_bytes,
                "host_state_bytes": plan.host_state_bytes,
                "runtime_bytes": plan.runtime_bytes,
            },
            "alternatives": alternatives.iter().map(|a| serde_json::json!({
                "name": a.name, "bytes": a.bytes, "how": a.how, "rule_of_thumb": a.rule_name, "rule_of_thumb_bytes": a.rule_bytes,
            })).collect::<Vec<_>>(),
            "suggestions": suggestions.iter().map(|sg| serde_json::json!({
                "change": sg.change, "peak_memory_bytes": sg.peak, "fits": sg.fits,
            })).collect::<Vec<_>>(),
        });
        println!("{value}");
    }
}
