//! `gguftune ollama-create`: an Ollama model of a base model and a LoRA adapter trained on it,
//! made through the Ollama server's HTTP API (no `ollama` program needed), with the Modelfile
//! written for those who build by hand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use gguftune::adapter::sibling_path;
use gguftune::modelfile::create::{create, Base, CreateEvent, CreateSpec, MergeReason, MergeWhen};
use gguftune::modelfile::{for_adapter, for_ollama_adapter, parse};
use gguftune::ollama::api::{OllamaClient, OllamaHost};
use gguftune::ollama::ModelName;

use super::output::{byte_progress, escape, human_bytes};
use super::source::ModelArg;

/// Make an Ollama model of a base model and a LoRA adapter, through the Ollama server's HTTP API.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  gguftune ollama-create mymodel --adapter adapter.gguf
  gguftune ollama-create mymodel:v2 --adapter adapter.gguf --model ollama:llama3.2:1b

Without --model, the Modelfile that finetune wrote next to the adapter (<name>.Modelfile) is read.
With --model (a GGUF file, or ollama:NAME[:TAG] for a model in Ollama's store) the Modelfile is
written first, as finetune writes it. Then the model is created in the Ollama server at OLLAMA_HOST
(default 127.0.0.1:11434), as `ollama create` does: the GGUF files the server lacks are uploaded,
and the model is created with the Modelfile's base, adapter, template, system prompt and
parameters. When the server refuses the adapter (newer Ollama versions refuse every adapter), or
with --merge, the adapter is merged into the base (<adapter>.merged.gguf, every tensor keeping the
base's type) and that model is created instead: it takes the size of the base on disk, here and in
Ollama's store. The Modelfile stays, for `ollama create NAME -f <Modelfile>` by hand.")]
pub struct Args {
    /// The Ollama model to create, `name[:tag]`.
    #[arg(value_parser = parse_name)]
    name: String,
    /// The LoRA adapter (GGUF).
    #[arg(long)]
    adapter: PathBuf,
    /// The base model the adapter was trained on: a GGUF file or ollama:NAME[:TAG]. Without it,
    /// the Modelfile next to the adapter says which.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The Modelfile to write and use. Default: <adapter name>.Modelfile next to the adapter.
    #[arg(long)]
    modelfile: Option<PathBuf>,
    /// Merge the adapter into the base and create that model, without offering Ollama the adapter.
    #[arg(long)]
    merge: bool,
}

fn parse_name(s: &str) -> Result<String, String> {
    ModelName::parse(s).map(|_| s.to_owned()).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let modelfile = args.modelfile.clone().unwrap_or_else(|| sibling_path(&args.adapter, "Modelfile"));
    let spec = match &args.model {
        Some(model) => {
            let source = ModelArg::resolve(model)?;
            if let Some(ollama) = &source.ollama {
                if ModelName::parse(&args.name).is_ok_and(|name| name == ollama.name) {
                    bail!(
                        "{} is the base model itself: creating it again would replace it in Ollama's store (hint: choose another NAME)",
                        args.name
                    );
                }
            }
            let planned = match &source.ollama {
                Some(ollama) => for_ollama_adapter(ollama, &args.adapter, &modelfile),
                None => for_adapter(&source.path, &args.adapter, &modelfile, None),
            };
            let planned = planned
                .with_context(|| format!("making a Modelfile for {} on {}", args.adapter.display(), model.display()))?;
            eprintln!("wrote {}", modelfile.display());
            let base = match source.ollama {
                Some(ollama) => Base::Ollama(ollama.name),
                None => Base::File(source.path),
            };
            CreateSpec::from_modelfile(&args.name, base, &args.adapter, &planned)
        }
        None => {
            let parsed = parse::read(&modelfile).with_context(|| match modelfile.exists() {
                true => format!("reading {}", modelfile.display()),
                false => format!(
                    "no Modelfile at {} (hint: finetune writes one next to the adapter; or give --model, the base model the adapter was trained on)",
                    modelfile.display()
                ),
            })?;
            CreateSpec::from_parsed(&args.name, &parsed, &modelfile, &args.adapter)?
        }
    };
    let client = OllamaClient::new(OllamaHost::from_env());
    let when = if args.merge { MergeWhen::Always } else { MergeWhen::Refused };
    // The step and file go in the bar's message.
    let bar = byte_progress(0, "{msg}");
    let mut label = String::new();
    let summary = create(&client, &spec, when, &mut |event| match event {
        CreateEvent::Hashing { file, done, total } => show(&bar, &mut label, "hashing", file, done, total),
        CreateEvent::Uploading { file, done, total } => show(&bar, &mut label, "uploading", file, done, total),
        CreateEvent::Merging { done, total, .. } => show(&bar, &mut label, "merging", &spec.adapter, done, total),
        CreateEvent::BlobPresent { file } => {
            bar.suspend(|| eprintln!("{}: the Ollama server has it already", file.display()));
        }
        CreateEvent::Status(status) => bar.suspend(|| eprintln!("ollama: {}", escape(status))),
        CreateEvent::Merged { reason, output, output_bytes, adapter_bytes } => {
            let why = match reason {
                MergeReason::Refused { message } => {
                    format!("the Ollama server refused the adapter ({})", escape(message))
                }
                MergeReason::Asked => "--merge".to_owned(),
            };
            bar.suspend(|| {
                eprintln!(
                    "{why}: merged it into the base instead, as {}: {} on disk here and as much in Ollama's store, where the adapter alone is {}",
                    output.display(),
                    human_bytes(output_bytes),
                    human_bytes(adapter_bytes),
                )
            });
        }
    });
    bar.finish_and_clear();
    summary.with_context(|| {
        format!(
            "creating {} in the Ollama server at {} (the Modelfile {} stays, for `ollama create {} -f {}` by hand)",
            args.name,
            client.host(),
            modelfile.display(),
            args.name,
            modelfile.display()
        )
    })?;
    eprintln!("created {}: ollama run {}", args.name, args.name);
    Ok(ExitCode::SUCCESS)
}

/// Shows progress through `file`, relabelling the bar when the step or file changes.
fn show(bar: &indicatif::ProgressBar, label: &mut String, step: &str, file: &std::path::Path, done: u64, total: u64) {
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    let wanted = format!("{step} {name}");
    if *label != wanted {
        bar.set_message(wanted.clone());
        bar.set_position(0);
        *label = wanted;
    }
    bar.set_length(total);
    bar.set_position(done);
}
