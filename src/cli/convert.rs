//! `gguftune convert`: a Hugging Face checkpoint folder, or a hub repository id, to a GGUF
//! llama.cpp loads.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::hub::resolve_model_dir;
use super::output::{byte_progress, human_bytes, print_conversion_summary};
use gguftune::convert;
use gguftune::hf::Checkpoint;
use gguftune::quant::FileType;

/// Convert a Hugging Face checkpoint (config.json, *.safetensors, tokenizer.json) to GGUF.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  gguftune convert ./TinyLlama-1.1B-Chat -o tinyllama.gguf --type q4_k_m\n  gguftune convert TinyLlama/TinyLlama-1.1B-Chat-v1.0 -o tinyllama.gguf --type q4_k_m\n  gguftune convert Qwen/Qwen2-0.5B@main -o qwen.gguf --dry-run\n\nA hub repository id (owner/name[@revision], when no such path exists) is downloaded into the\nHugging Face cache (HF_HOME, HF_HUB_CACHE); HF_TOKEN or the token file of `huggingface-cli login`\nis sent for gated models; HF_ENDPOINT picks another hub."
)]
pub struct Args {
    /// The model folder, or a hub repository id `owner/name[@revision]`.
    input: String,
    /// Output GGUF file.
    #[arg(short, long)]
    output: PathBuf,
    /// Output type: f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k
    /// (also q4_1, q5_0, q5_1, q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q5_k_s).
    #[arg(long = "type", default_value = "f16", value_parser = parse_file_type)]
    file_type: FileType,
    /// Print the plan (each tensor's output type and the output size) without writing.
    #[arg(long)]
    dry_run: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// For a hub repository id: use the Hugging Face cache only, never the network.
    #[arg(long)]
    offline: bool,
}

/// Parses `--type` (shared with `quantize`).
pub fn parse_file_type(s: &str) -> Result<FileType, String> {
    FileType::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = FileType::all().iter().map(|t| t.name()).collect();
        format!("unknown type '{s}' (expected one of: {})", names.join(", "))
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let input: PathBuf = resolve_model_dir(&args.input, args.offline)?;
    let checkpoint = Checkpoint::open(&input).with_context(|| format!("reading {}", input.display()))?;
    let plan = convert::plan(&checkpoint, args.file_type).with_context(|| format!("planning {}", input.display()))?;
    if args.dry_run {
        for t in &plan.tensors {
            let ne = t.ne.iter().map(u64::to_string).collect::<Vec<_>>().join(" x ");
            println!(
                "{:<40} {:<6} -> {:<6} {:<20} {:>10}",
                t.gguf_name,
                t.src_type.name(),
                t.ty.name(),
                ne,
                human_bytes(t.out_bytes)
            );
        }
        println!(
            "{} tensors, output {} ({} bytes)",
            plan.tensors.len(),
            human_bytes(plan.output_bytes()),
            plan.output_bytes()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let bar = byte_progress(plan.input_bytes(), "converting");
    let summary = convert::execute(&checkpoint, plan, &args.output, &mut |done, _| bar.set_position(done))
        .with_context(|| format!("converting {} to {}", input.display(), args.output.display()))?;
    bar.finish_and_clear();
    print_conversion_summary(args.json, &args.output, args.file_type.name(), &summary);
    Ok(ExitCode::SUCCESS)
}
