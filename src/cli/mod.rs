//! The command line: one file per subcommand, each a thin layer over the library.
//!
//! Exit codes: 0 success, 1 any other failure, 2 usage error (clap), 3 bad input file (also one
//! truncated while it was mapped: `io::mmap`'s SIGBUS handler exits with 3 itself), 4 I/O failure
//! (reading or writing files; also an RPC device's server that stops answering mid-run:
//! `ggml::abort` ends the process with 4 itself), 130 `finetune` stopped by Ctrl-C after saving a
//! checkpoint.
//!
//! For a hub repository: 3 when the hub answers that the repository, revision or file does not
//! exist or is gated (401, 403, 404), or when it holds nothing convertible (pickle-only weights,
//! no config.json, a malformed or oversized safetensors header); 4 when the hub cannot be
//! reached, a download breaks or fails its sha256 check, the cache cannot be written, or
//! `--offline` finds the repository missing from the cache.
//!
//! For an `ollama:` model: 3 when the name is not valid or no store has it, or its manifest is
//! malformed, names a missing blob or stores the model in a layout other than one GGUF; 4 when a
//! file of the store cannot be read. `ollama-create`: 4 when no Ollama server answers (or the
//! connection breaks), 3 when the server has no such base model or refuses the request (an HTTP
//! 4xx, such as a name it does not accept), 1 when the server fails while creating the model.

mod convert;
mod devices;
mod eval;
mod finetune;
mod generate;
mod hub;
mod inspect;
mod llama;
mod merge;
mod modelfile;
mod ollama_create;
mod output;
mod peft;
mod plan;
mod quantize;
mod rpc_server;
mod run_args;
mod source;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gguftune::gguf::GgufFileError;
use gguftune::hf::HfError;

/// GGUF-native LLM fine-tuning: convert, train LoRA adapters on quantized weights, run them in
/// llama.cpp and Ollama.
#[derive(Debug, Parser)]
#[command(name = "gguftune", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 ok, 1 other failure, 2 usage error, 3 bad input file, 4 I/O failure, 130 finetune stopped by Ctrl-C (checkpoint saved)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Convert(convert::Args),
    Devices(devices::Args),
    Eval(eval::Args),
    Finetune(Box<finetune::Args>),
    Generate(generate::Args),
    Inspect(inspect::Args),
    Merge(merge::Args),
    ImportPeft(peft::ImportArgs),
    ExportPeft(peft::ExportArgs),
    Modelfile(modelfile::Args),
    OllamaCreate(ollama_create::Args),
    Plan(plan::Args),
    Quantize(quantize::Args),
    RpcServer(rpc_server::Args),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Finetune(args) => finetune::run(*args),
        Command::Generate(args) => generate::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Merge(args) => merge::run(args),
        Command::ImportPeft(args) => peft::run_import(args),
        Command::ExportPeft(args) => peft::run_export(args),
        Command::Modelfile(args) => modelfile::run(args),
        Command::OllamaCreate(args) => ollama_create::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::RpcServer(args) => rpc_server::run(args),
    }
}

/// Exit code 4 for I/O failures, 3 for input that is not what it should be, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let mut code = 1;
    for cause in err.chain() {
        match classify(cause) {
            Some(4) => return 4,
            Some(c) => code = c,
            None => {}
        }
    }
    code
}

/// 4 for an I/O error, 3 for a bad-input error of the library, `None` for anything else.
fn classify(cause: &(dyn std::error::Error + 'static)) -> Option<u8> {
    use gguftune::adapter::{AdapterError, AdapterReadError, MergeError, PeftError};
    use gguftune::convert::ConvertError;
    use gguftune::data::DataError;
    use gguftune::eval::EvalError;
    use gguftune::generate::GenerateError;
    use gguftune::ggml::Error as GgmlError;
    use gguftune::gguf::{GgufError, GgufWriteError};
    use gguftune::model::ModelError;
    use gguftune::modelfile::ModelfileError;
    use gguftune::plan::PlanError;
    use gguftune::quant::QuantizeError;
    use gguftune::train::checkpoint::CheckpointError;
    use gguftune::train::{ExampleError, TrainError};
    if let Some(e) = cause.downcast_ref::<PlanError>() {
        // Its variants are transparent: the error chain skips the inner error, so look inside.
        return match e {
            PlanError::File(inner) => classify(inner),
            PlanError::Hf(inner) => classify(inner),
            PlanError::Model(inner) => classify(inner),
            PlanError::Train(inner) => classify(inner),
            PlanError::Convert(inner) => classify(inner),
            PlanError::Quantize(inner) => classify(inner),
            PlanError::UnknownSource { .. } => Some(3),
            _ => None,
        };
    }
    if let Some(e) = cause.downcast_ref::<gguftune::ggml::DeviceError>() {
        return e.is_io().then_some(4);
    }
    if let Some(e) = cause.downcast_ref::<gguftune::ggml::RpcError>() {
        return e.is_io().then_some(4);
    }
    if let Some(e) = cause.downcast_ref::<gguftune::hub::HubError>() {
        return Some(if e.is_io() { 4 } else { 3 });
    }
    if let Some(e) = cause.downcast_ref::<gguftune::ollama::OllamaError>() {
        return Some(if e.is_io() { 4 } else { 3 });
    }
    if let Some(e) = cause.downcast_ref::<gguftune::modelfile::create::CreateError>() {
        use gguftune::modelfile::create::CreateError;
        // Its Api variant is transparent: the error chain skips the inner error, so look inside.
        return match e {
            CreateError::Api(inner) => classify(inner),
            // Boxed: the chain holds the box, not the error.
            CreateError::BaseNotLocal { source, .. } => classify(source.as_ref()),
            CreateError::Merge { source, .. } => classify(source.as_ref()),
            CreateError::UnknownBase { .. } => Some(3),
            _ => None,
        };
    }
    if let Some(e) = cause.downcast_ref::<gguftune::ollama::api::ApiError>() {
        return if e.is_io() { Some(4) } else { e.is_refused().then_some(3) };
    }
    let io = cause.is::<std::io::Error>()
        || matches!(cause.downcast_ref::<GgufFileError>(), Some(GgufFileError::Io { .. }))
        || matches!(cause.downcast_ref::<HfError>(), Some(HfError::Io { .. }))
        || matches!(cause.downcast_ref::<GgufWriteError>(), Some(GgufWriteError::Io(_)))
        || matches!(cause.downcast_ref::<DataError>(), Some(DataError::Io { .. }))
        || matches!(
            cause.downcast_ref::<ModelfileError>(),
            Some(ModelfileError::Io { .. } | ModelfileError::Read(GgufFileError::Io { .. }))
        )
        || matches!(
            cause.downcast_ref::<ConvertError>(),
            Some(ConvertError::Hf(HfError::Io { .. }) | ConvertError::Write(GgufWriteError::Io(_)))
        )
        || matches!(
            cause.downcast_ref::<QuantizeError>(),
            Some(QuantizeError::Read(GgufFileError::Io { .. }) | QuantizeError::Write(GgufWriteError::Io(_)))
        )
        || matches!(
            cause.downcast_ref::<gguftune::Error>(),
            Some(gguftune::Error::GgufFile(GgufFileError::Io { .. }) | gguftune::Error::Hf(HfError::Io { .. }))
        )
        || matches!(
            cause.downcast_ref::<gguftune::Error>(),
            Some(gguftune::Error::Hub(e)) if e.is_io()
        )
        || matches!(cause.downcast_ref::<AdapterReadError>(), Some(AdapterReadError::File(GgufFileError::Io { .. })))
        || matches!(
            cause.downcast_ref::<MergeError>(),
            Some(MergeError::Base(GgufFileError::Io { .. }) | MergeError::Write(GgufWriteError::Io(_)))
        )
        || matches!(
            cause.downcast_ref::<PeftError>(),
            Some(PeftError::Io { .. } | PeftError::Write(AdapterError::Write(GgufWriteError::Io(_))))
        )
        || matches!(cause.downcast_ref::<AdapterError>(), Some(AdapterError::Write(GgufWriteError::Io(_))))
        || matches!(
            cause.downcast_ref::<CheckpointError>(),
            Some(
                CheckpointError::Io { .. }
                    | CheckpointError::File(GgufFileError::Io { .. })
                    | CheckpointError::Write(GgufWriteError::Io(_))
                    | CheckpointError::Adapter(AdapterError::Write(GgufWriteError::Io(_)))
            )
        )
        || matches!(cause.downcast_ref::<GenerateError>(), Some(GenerateError::Output(_)))
        || matches!(
            cause.downcast_ref::<EvalError>(),
            Some(EvalError::Examples(ExampleError::Data(DataError::Io { .. })))
        );
    if io {
        return Some(4);
    }
    // A model or adapter llama.cpp refuses is a bad input file, whoever asked to load it.
    let rejected = |e: &GgmlError| matches!(e, GgmlError::ModelRejected { .. } | GgmlError::AdapterRejected { .. });
    if cause.downcast_ref::<GgmlError>().is_some_and(rejected)
        || matches!(cause.downcast_ref::<GenerateError>(), Some(GenerateError::Ggml(e)) if rejected(e))
        || matches!(cause.downcast_ref::<EvalError>(), Some(EvalError::Ggml(e)) if rejected(e))
    {
        return Some(3);
    }
    let ggml = cause.is::<gguftune::ggml::Error>()
        || matches!(cause.downcast_ref::<GenerateError>(), Some(GenerateError::Ggml(_)))
        || matches!(
            cause.downcast_ref::<EvalError>(),
            Some(
                EvalError::Ggml(_)
                    | EvalError::Examples(ExampleError::Ggml(_))
                    | EvalError::Generate(GenerateError::Ggml(_))
            )
        )
        || matches!(cause.downcast_ref::<ConvertError>(), Some(ConvertError::Ggml(_)))
        || matches!(cause.downcast_ref::<QuantizeError>(), Some(QuantizeError::Ggml(_)))
        || matches!(cause.downcast_ref::<MergeError>(), Some(MergeError::Ggml { .. }))
        || matches!(cause.downcast_ref::<ModelError>(), Some(ModelError::Ggml(_)))
        || matches!(cause.downcast_ref::<gguftune::Error>(), Some(gguftune::Error::Ggml(_)))
        || matches!(
            cause.downcast_ref::<TrainError>(),
            Some(TrainError::Ggml(_) | TrainError::Model(ModelError::Ggml(_)) | TrainError::Diverged { .. })
        );
    if ggml {
        return None;
    }
    let bad_input = cause.is::<GgufError>()
        || cause.is::<GgufFileError>()
        || cause.is::<HfError>()
        || cause.is::<ConvertError>()
        || cause.is::<QuantizeError>()
        || cause.is::<DataError>()
        || cause.is::<ExampleError>()
        || cause.is::<ModelError>()
        || cause.is::<CheckpointError>()
        || cause.is::<AdapterReadError>()
        || cause.is::<MergeError>()
        || cause.is::<PeftError>()
        || cause.is::<GenerateError>()
        || cause.is::<EvalError>()
        || matches!(cause.downcast_ref::<TrainError>(), Some(TrainError::Model(_) | TrainError::NoData { .. }))
        || matches!(
            cause.downcast_ref::<ModelfileError>(),
            Some(e) if !matches!(e, ModelfileError::DroppedCharacter { .. } | ModelfileError::Unquotable { .. })
        )
        || cause.is::<gguftune::Error>();
    bad_input.then_some(3)
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
