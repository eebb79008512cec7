//! `gguftune import-peft` and `gguftune export-peft`: Hugging Face PEFT LoRA adapters to and from
//! llama.cpp's LoRA GGUF.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use gguftune::adapter::{export_peft, import_peft, PeftSummary};

/// Import a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) as a GGUF
/// adapter for llama.cpp and Ollama.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  gguftune convert ./TinyLlama-1.1B -o base.gguf --type q8_0\n  gguftune import-peft ./my-lora --base base.gguf -o adapter.gguf\n  llama-cli -m base.gguf --lora adapter.gguf\n\nThe base is the GGUF of the model PEFT trained on: it gives the architecture, the head counts\n(Llama's Q/K rows are permuted in GGUF, and Falcon's and GPT-NeoX's fused QKV rows regrouped, so\nlora_B is reordered to match) and the shapes checked."
)]
pub struct ImportArgs {
    /// The PEFT adapter folder.
    input: PathBuf,
    /// The base model (GGUF) converted from the model the adapter was trained on.
    #[arg(long)]
    base: PathBuf,
    /// Output adapter GGUF.
    #[arg(short, long)]
    output: PathBuf,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Export a GGUF LoRA adapter as a PEFT adapter folder (F32 adapter_model.safetensors and
/// adapter_config.json) that `PeftModel.from_pretrained` loads.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  gguftune export-peft adapter.gguf --base base.gguf -o ./my-lora\n  gguftune export-peft qwen-adapter.gguf -o ./qwen-lora --json\n\n--base is needed for Llama-architecture adapters of q_proj/k_proj (to undo GGUF's Q/K row permutation)\nand for Falcon and GPT-NeoX adapters of the fused query_key_value (to regroup its rows by head);\nit also checks the adapter against the base and names the base in adapter_config.json."
)]
pub struct ExportArgs {
    /// The adapter GGUF.
    input: PathBuf,
    /// The base model (GGUF) the adapter belongs to.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Output folder (must not exist, or be empty).
    #[arg(short, long)]
    output: PathBuf,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let summary = import_peft(&args.input, &args.base, &args.output)
        .with_context(|| format!("importing {} to {}", args.input.display(), args.output.display()))?;
    report(args.json, &args.output, &summary)
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let summary = export_peft(&args.input, &args.output, args.base.as_deref())
        .with_context(|| format!("exporting {} to {}", args.input.display(), args.output.display()))?;
    report(args.json, &args.output, &summary)
}

fn report(json: bool, output: &std::path::Path, s: &PeftSummary) -> anyhow::Result<ExitCode> {
    if json {
        let mut value = serde_json::to_value(s)?;
        value["output"] = serde_json::json!(output);
        println!("{value}");
    } else {
        eprintln!(
            "wrote {}: {} adapted weights, rank {}, alpha {}{}",
            output.display(),
            s.pairs,
            s.rank,
            s.alpha,
            if s.permuted { ", Q/K rows in llama.cpp's order" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
