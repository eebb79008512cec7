//! `gguftune inspect`: what is in a GGUF file, a safetensors file, a model folder or a hub
//! repository.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::hub::inspect_repo;
use super::output::{escape, human_bytes, human_count};
use super::source::ModelArg;
use gguftune::inspect::{inspect, Report};
use gguftune::ollama::OllamaModel;

/// Show a model's or adapter's metadata and tensors.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  gguftune inspect model.gguf\n  gguftune inspect adapter.gguf --tensors\n  gguftune inspect ./TinyLlama-1.1B --json\n  gguftune inspect TinyLlama/TinyLlama-1.1B-Chat-v1.0 --tensors\n  gguftune inspect ollama:llama3.2:1b"
)]
pub struct Args {
    /// A .gguf file, a .safetensors file, a Hugging Face model folder (config.json + shards), a
    /// hub repository id `owner/name[@revision]` (read from its safetensors headers without
    /// downloading the weights), or ollama:NAME[:TAG] for a model in Ollama's store (its GGUF,
    /// template, system prompt and parameters).
    path: PathBuf,
    /// For a hub repository id: inspect the Hugging Face cache's snapshot, never the network.
    #[arg(long)]
    offline: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// List every tensor (name, type, dimensions, bytes).
    #[arg(long)]
    tensors: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let source = ModelArg::resolve(&args.path)?;
    let from_hub = match (&source.ollama, args.path.to_str()) {
        (None, Some(input)) => inspect_repo(input, args.offline)?,
        _ => None,
    };
    let report = match from_hub {
        Some(report) => report,
        None => inspect(&source.path).with_context(|| format!("inspecting {}", args.path.display()))?,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if !args.tensors {
            if let Some(obj) = value.as_object_mut() {
                obj.insert("tensor_count".into(), report.tensors.len().into());
                obj.remove("tensors");
            }
        }
        if let (Some(ollama), Some(obj)) = (&source.ollama, value.as_object_mut()) {
            obj.insert("ollama".into(), serde_json::to_value(ollama)?);
        }
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
    } else {
        if let Some(ollama) = &source.ollama {
            render_ollama(&mut out, ollama)?;
        }
        render(&mut out, &report, args.tensors)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render(out: &mut impl Write, r: &Report, with_tensors: bool) -> std::io::Result<()> {
    let version = r.version.map(|v| format!(" v{v}")).unwrap_or_default();
    writeln!(out, "{}: {}{} {}", escape(&r.path), r.format, version, r.kind)?;
    if let Some(arch) = &r.architecture {
        writeln!(out, "  architecture: {}", escape(arch))?;
    }
    if let Some(name) = &r.name {
        writeln!(out, "  name:         {}", escape(name))?;
    }
    if let Some(ft) = &r.file_type {
        writeln!(out, "  file type:    {}", escape(ft))?;
    }
    writeln!(out, "  parameters:   {} ({})", human_count(r.parameter_count), r.parameter_count)?;
    writeln!(
        out,
        "  size:         {} ({} bytes), {} tensors",
        human_bytes(r.file_bytes),
        r.file_bytes,
        r.tensors.len()
    )?;
    writeln!(out, "metadata ({} keys):", r.metadata.len())?;
    let key_width = r.metadata.iter().map(|m| m.key.chars().count()).max().unwrap_or(0).min(48);
    for m in &r.metadata {
        let value = match &m.value {
            serde_json::Value::String(s) => format!("\"{}\"", escape(&truncate(s, 100))),
            other => escape(&truncate(&other.to_string(), 100)),
        };
        writeln!(out, "  {:<key_width$}  {:<14} {}", escape(&m.key), m.value_type, value)?;
    }
    if with_tensors {
        writeln!(out, "tensors:")?;
        let name_width = r.tensors.iter().map(|t| t.name.chars().count()).max().unwrap_or(0).min(64);
        for t in &r.tensors {
            let dims = t.dims.iter().map(u64::to_string).collect::<Vec<_>>().join(" x ");
            let file = t.file.as_deref().map(|f| format!("  {}", escape(f))).unwrap_or_default();
            writeln!(
                out,
                "  {:<name_width$}  {:<8} {:<24} {:>12}{}",
                escape(&t.name),
                t.ty,
                dims,
                human_bytes(t.bytes),
                file
            )?;
        }
    }
    Ok(())
}

/// What Ollama serves the model with.
fn render_ollama(out: &mut impl Write, m: &OllamaModel) -> std::io::Result<()> {
    writeln!(out, "ollama:{}: {}", escape(&m.name.to_string()), escape(&m.manifest.display().to_string()))?;
    let text = |s: &Option<String>| {
        s.as_deref().map_or_else(|| "none".into(), |s| format!("\"{}\"", escape(&truncate(s, 100))))
    };
    writeln!(out, "  template:     {}", text(&m.template))?;
    writeln!(out, "  system:       {}", text(&m.system))?;
    writeln!(out, "  parameters:   {}", escape(&serde_json::Value::Object(m.parameters.clone()).to_string()))?;
    if let Some(renderer) = &m.renderer {
        writeln!(out, "  renderer:     {}", escape(renderer))?;
    }
    if !m.adapters.is_empty() || !m.projectors.is_empty() {
        writeln!(out, "  adapters:     {}, projectors: {}", m.adapters.len(), m.projectors.len())?;
    }
    Ok(())
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let head: String = s.chars().take(max_chars).collect();
    format!("{head}… ({} chars)", s.chars().count())
}
