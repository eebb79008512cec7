//! `gguftune quantize`: requantize an F32/F16/BF16 GGUF, as llama-quantize does.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::convert::parse_file_type;
use super::output::{byte_progress, print_conversion_summary};
use gguftune::quant::{requantize, FileType};

/// Quantize an F32, F16 or BF16 GGUF to another type (the same bytes llama-quantize writes).
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  gguftune quantize model-f16.gguf model-q4_k_m.gguf q4_k_m")]
pub struct Args {
    /// The F32/F16/BF16 GGUF to read.
    input: PathBuf,
    /// The GGUF to write.
    output: PathBuf,
    /// Output type: f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k
    /// (also q4_1, q5_0, q5_1, q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q5_k_s).
    #[arg(value_parser = parse_file_type)]
    file_type: FileType,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bar = byte_progress(0, "quantizing");
    let summary = requantize(&args.input, &args.output, args.file_type, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("quantizing {} to {}", args.input.display(), args.output.display()))?;
    bar.finish_and_clear();
    print_conversion_summary(args.json, &args.output, args.file_type.name(), &summary);
    Ok(ExitCode::SUCCESS)
}
