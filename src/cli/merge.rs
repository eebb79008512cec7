//! `gguftune merge`: fold LoRA adapters into their base model, as llama-export-lora does.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::convert::parse_file_type;
use super::output::{byte_progress, human_bytes};
use gguftune::adapter::{merge, MergeInput};
use gguftune::quant::FileType;

/// Merge LoRA adapters into a base model: W' = W + scale·(alpha/r)·B·A for every adapted weight.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  gguftune merge model-f16.gguf adapter.gguf -o merged-q4_k_m.gguf --type q4_k_m\n  gguftune merge model.gguf style.gguf domain.gguf --scale 0.5 --scale 1 -o merged.gguf\n\nWithout --type every tensor keeps the base's type (merged quantized tensors are quantized again);\nwith --type each tensor gets the type `gguftune quantize` (and llama-quantize) would choose."
)]
pub struct Args {
    /// The base model (GGUF) the adapters were trained on.
    base: PathBuf,
    /// One or more LoRA adapters (GGUF), merged in order.
    #[arg(required = true)]
    adapters: Vec<PathBuf>,
    /// Output GGUF file.
    #[arg(short, long)]
    output: PathBuf,
    /// Output type: f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k (and the others convert
    /// takes). Default: keep each tensor's type.
    #[arg(long = "type", value_parser = parse_file_type)]
    file_type: Option<FileType>,
    /// Scale of the adapters (llama.cpp's --lora-scaled): once for all, or once per adapter
    /// (default: 1).
    #[arg(long)]
    scale: Vec<f32>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scales = match args.scale.as_slice() {
        [] => vec![1.0; args.adapters.len()],
        [s] => vec![*s; args.adapters.len()],
        s if s.len() == args.adapters.len() => s.to_vec(),
        s => bail!(
            "{} --scale values for {} adapters: give one for all or one per adapter",
            s.len(),
            args.adapters.len()
        ),
    };
    let inputs: Vec<MergeInput> =
        args.adapters.iter().zip(scales).map(|(path, scale)| MergeInput { path: path.clone(), scale }).collect();
    let bar = byte_progress(0, "merging");
    let summary = merge(&args.base, &inputs, args.file_type, &args.output, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("merging into {}, writing {}", args.base.display(), args.output.display()))?;
    bar.finish_and_clear();
    let type_name = args.file_type.map_or("base types", FileType::name);
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["output"] = serde_json::json!(args.output);
        value["type"] = serde_json::json!(args.file_type.map(FileType::name));
        println!("{value}");
    } else {
        eprintln!(
            "wrote {}: {} adapter(s) merged into {} of {} tensors, {} -> {} ({type_name}) in {:.1} s",
            args.output.display(),
            summary.adapters,
            summary.merged,
            summary.tensors,
            human_bytes(summary.input_bytes),
            human_bytes(summary.output_bytes),
            summary.seconds,
        );
    }
    Ok(ExitCode::SUCCESS)
}
