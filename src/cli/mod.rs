//! The command line: one file per subcommand, each a thin layer over the library.
//!
//! Exit codes: 0 success, 1 any other failure, 2 usage error (clap), 3 bad input file, 4 I/O
//! failure (reading or writing files).

mod convert;
mod inspect;
mod output;
mod quantize;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gguftune::gguf::GgufFileError;
use gguftune::hf::HfError;

/// GGUF-native LLM fine-tuning: convert, train LoRA adapters on quantized weights, run them in
/// llama.cpp and Ollama.
#[derive(Debug, Parser)]
#[command(name = "gguftune", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 ok, 1 other failure, 2 usage error, 3 bad input file, 4 I/O failure.")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Convert(convert::Args),
    Inspect(inspect::Args),
    Quantize(quantize::Args),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Quantize(args) => quantize::run(args),
    }
}

/// Exit code 3 for input that is not what it should be, 4 for I/O failures, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<gguftune::Error>() {
            return match e {
                gguftune::Error::GgufFile(GgufFileError::Io { .. }) | gguftune::Error::Hf(HfError::Io { .. }) => 4,
                gguftune::Error::GgufWrite(gguftune::gguf::GgufWriteError::Io(_)) => 4,
                gguftune::Error::Ggml(_) => 1,
                _ => 3,
            };
        }
        if let Some(e) = cause.downcast_ref::<GgufFileError>() {
            return match e {
                GgufFileError::Io { .. } => 4,
                _ => 3,
            };
        }
        if let Some(e) = cause.downcast_ref::<HfError>() {
            return match e {
                HfError::Io { .. } => 4,
                _ => 3,
            };
        }
        if let Some(e) = cause.downcast_ref::<gguftune::convert::ConvertError>() {
            use gguftune::convert::ConvertError as C;
            return match e {
                C::Hf(HfError::Io { .. }) | C::Write(gguftune::gguf::GgufWriteError::Io(_)) => 4,
                C::Ggml(_) => 1,
                _ => 3,
            };
        }
        if let Some(e) = cause.downcast_ref::<gguftune::quant::QuantizeError>() {
            use gguftune::quant::QuantizeError as Q;
            return match e {
                Q::Read(GgufFileError::Io { .. }) | Q::Write(gguftune::gguf::GgufWriteError::Io(_)) => 4,
                Q::Ggml(_) => 1,
                _ => 3,
            };
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return 4;
        }
    }
    1
}

/// Whether the error is a closed stdout (`gguftune inspect ... | head`), which is not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        let io_kind = c
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| c.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind));
        io_kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}
