//! `gguftune eval`: loss, perplexity and a task metric of a model, with or without adapters, on
//! held-out data, through llama.cpp.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use gguftune::data::{read_jsonl, RenderOptions};
use gguftune::eval::{evaluate, EvalSet, Scores, TaskChoice};
use gguftune::generate::LoraSpec;
use gguftune::ggml::{LlamaAdapter, LlamaContext};

use super::llama::{chat_setup, load_adapters, load_model};
use super::run_args::{device_labels, DeviceArgs};
use super::source::ModelArg;

/// Evaluate a model and its adapters on held-out data: completion loss, perplexity, task metric.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  gguftune eval model.gguf --lora adapter.gguf --data val.jsonl --compare
  gguftune eval model.gguf --lora adapter.gguf --data entities.jsonl --task extract --max-new 128 --json
  gguftune eval ollama:llama3.2:1b --lora adapter.gguf --data val.jsonl --compare
  gguftune eval model.gguf --lora adapter.gguf --data val.jsonl --device cpu,rpc:10.0.0.2:50052 --split 1,3

The data is any format finetune reads; loss covers the completion tokens finetune trains on. Records
with a reference answer (completion, output, response, last assistant message) are also answered
greedily and scored: accuracy (classify), entity precision/recall/F1 on JSON (extract) or ROUGE-L
(summarize); --task auto picks one from the references.")]
pub struct Args {
    /// The base model: a GGUF file, or ollama:NAME[:TAG] for a model in Ollama's store.
    model: PathBuf,
    /// A LoRA adapter to apply, PATH or PATH:SCALE (repeatable; all are applied together).
    #[arg(long, value_name = "PATH[:SCALE]")]
    lora: Vec<String>,
    /// Evaluation data (JSONL).
    #[arg(long)]
    data: PathBuf,
    /// Evaluate the base model too and print both with the difference (needs --lora).
    #[arg(long, requires = "lora")]
    compare: bool,
    /// Task metric: auto, classify, extract, summarize or none.
    #[arg(long, default_value = "auto", value_parser = parse_task)]
    task: TaskChoice,
    /// Most tokens generated per answer.
    #[arg(long, default_value_t = 64)]
    max_new: usize,
    /// Tokens per example, as in finetune: longer examples are cut (or skipped, --overlong skip).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// What to do with examples longer than --ctx: truncate or skip.
    #[arg(long, default_value = "truncate", value_parser = ["truncate", "skip"])]
    overlong: String,
    #[command(flatten)]
    devices: DeviceArgs,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_task(s: &str) -> Result<TaskChoice, String> {
    TaskChoice::from_name(s)
        .ok_or_else(|| format!("unknown task '{s}' (expected auto, classify, extract, summarize or none)"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let specs: Vec<LoraSpec> = args.lora.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    let dataset = read_jsonl(&args.data)?;
    let source = ModelArg::resolve(&args.model)?;
    let offload = args.devices.resolve()?;
    let devices = device_labels(&offload.list);
    let model = load_model(&source.path, &offload)?;
    let adapters = load_adapters(&model, &specs)?;
    let chat = chat_setup(&source, &model)?;
    let render = RenderOptions { train_on_prompt: false, system: chat.system, merge_roles: chat.merge_roles };
    let set = EvalSet::prepare(
        &dataset,
        chat.template.as_ref(),
        &model,
        &render,
        args.ctx,
        args.overlong == "skip",
        args.task,
    )?;
    let n_ctx = u32::try_from(set.max_tokens() + args.max_new).context("--ctx plus --max-new is too large")?;
    let mut ctx =
        LlamaContext::with_precision(&model, n_ctx, threads, true).context("creating the llama.cpp context")?;

    let with_adapters: Vec<(&LlamaAdapter<'_>, f32)> = adapters.iter().zip(&specs).map(|(a, s)| (a, s.scale)).collect();
    let mut runs: Vec<(&str, Vec<(&LlamaAdapter<'_>, f32)>)> = Vec::new();
    if args.compare || adapters.is_empty() {
        runs.push(("base", Vec::new()));
    }
    if !adapters.is_empty() {
        runs.push(("adapter", with_adapters));
    }
    let bar = ProgressBar::new((set.items.len() * runs.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} evaluating {msg} [{bar:30}] {pos}/{len} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut results: Vec<(&str, Scores)> = Vec::new();
    for (name, list) in &runs {
        bar.set_message(*name);
        ctx.set_adapters(list)?;
        let scores = evaluate(&model, &mut ctx, &set, args.max_new, &mut || bar.inc(1))?;
        results.push((name, scores));
    }
    bar.finish_and_clear();

    let get = |name: &str| results.iter().find(|(n, _)| *n == name).map(|(_, s)| s);
    let (base, adapter) = (get("base"), get("adapter"));
    let delta = base.zip(adapter).map(|(b, a)| Delta {
        loss: a.loss - b.loss,
        perplexity: a.perplexity - b.perplexity,
        metric: a.metric.zip(b.metric).map(|(a, b)| a.headline() - b.headline()),
    });
    let task = set.task.map(|t| t.name());
    if args.json {
        let adapters: Vec<_> = specs.iter().map(|s| serde_json::json!({ "path": s.path, "scale": s.scale })).collect();
        let report = serde_json::json!({
            "model": args.model, "adapters": adapters, "data": args.data, "devices": devices, "task": task,
            "examples": set.items.len(), "skipped": set.skipped, "truncated": set.truncated,
            "base": base, "adapter": adapter, "delta": delta, "seconds": start.elapsed().as_secs_f64(),
        });
        println!("{report}");
    } else {
        print!("{}", table(&results, delta.as_ref(), set.task.map(|t| t.metric_name())));
    }
    let tokens = results.first().map_or(0, |(_, s)| s.target_tokens);
    eprintln!(
        "evaluated {} examples of {} ({} skipped, {} truncated), {tokens} completion tokens, task {}, on {}, {:.1} s",
        set.items.len(),
        args.data.display(),
        set.skipped,
        set.truncated,
        task.unwrap_or("none"),
        devices.join(", "),
        start.elapsed().as_secs_f64(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Adapter minus base.
#[derive(Debug, serde::Serialize)]
struct Delta {
    loss: f64,
    perplexity: f64,
    /// Of the task's headline metric (accuracy, F1 or ROUGE-L).
    metric: Option<f64>,
}

/// Rows loss, perplexity and the task metric; a column per run, and the delta when there are two.
fn table(results: &[(&str, Scores)], delta: Option<&Delta>, metric_name: Option<&str>) -> String {
    let mut header = vec![String::new()];
    header.extend(results.iter().map(|(n, _)| n.to_string()));
    let mut rows = vec![header];
    let mut row = |label: &str, value: &dyn Fn(&Scores) -> Option<f64>, delta: Option<f64>, digits: usize| {
        let mut cells = vec![label.to_owned()];
        cells.extend(results.iter().map(|(_, s)| value(s).map_or("-".into(), |v| format!("{v:.digits$}"))));
        if results.len() == 2 {
            cells.push(delta.map_or("-".into(), |d| format!("{d:+.digits$}")));
        }
        rows.push(cells);
    };
    row("loss", &|s| Some(s.loss), delta.map(|d| d.loss), 4);
    row("perplexity", &|s| Some(s.perplexity), delta.map(|d| d.perplexity), 3);
    if let Some(name) = metric_name {
        row(name, &|s| s.metric.map(|m| m.headline()), delta.and_then(|d| d.metric), 3);
    }
    if results.len() == 2 {
        rows[0].push("delta".into());
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r.get(c).map_or(0, String::len)).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| if c == 0 { format!("{v:<w$}", w = widths[c]) } else { format!("{v:>w$}", w = widths[c]) })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguftune::eval::TaskScores;

    #[test]
    fn the_table_has_a_delta_column_when_comparing() {
        let scores = |loss: f64, accuracy: f64| Scores {
            loss,
            perplexity: loss.exp(),
            target_tokens: 4,
            examples: 2,
            metric: Some(TaskScores::Classify { accuracy, correct: 1 }),
        };
        let results = [("base", scores(2.0, 0.5)), ("adapter", scores(0.5, 1.0))];
        let delta = Delta { loss: -1.5, perplexity: 0.5f64.exp() - 2f64.exp(), metric: Some(0.5) };
        let text = table(&results, Some(&delta), Some("accuracy"));
        let expected = concat!(
            "              base  adapter    delta\n",
            "loss        2.0000   0.5000  -1.5000\n",
            "perplexity   7.389    1.649   -5.740\n",
            "accuracy     0.500    1.000   +0.500\n",
        );
        assert_eq!(text, expected);
        let single = table(&results[1..], None, None);
        assert_eq!(single, concat!("            adapter\n", "loss         0.5000\n", "perplexity    1.649\n"));
    }
}
