//! `gguftune modelfile`: an Ollama Modelfile for a base model and a LoRA adapter trained on it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use gguftune::modelfile::{plan, write, FamilySource, Options, TemplateFamily};

/// Write an Ollama Modelfile: the base model, the adapter, and the model's chat format as an
/// Ollama template with its stop sequences.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  gguftune modelfile --model model.gguf --adapter adapter.gguf -o Modelfile\n  ollama create mymodel -f Modelfile\n  ollama run mymodel\n\nThe chat format is recognised in the model's tokenizer.chat_template (Llama 2, Llama 3, ChatML, Mistral);\na model without one gets the Alpaca prompt that finetune trains it with."
)]
pub struct Args {
    /// The base model (GGUF) the adapter was trained on.
    #[arg(long)]
    model: PathBuf,
    /// The LoRA adapter (GGUF).
    #[arg(long)]
    adapter: PathBuf,
    /// Write the Modelfile here, with paths relative to its folder. Without it, print the
    /// Modelfile with absolute paths.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// System prompt (SYSTEM). Default: the one the model's chat template writes, if any.
    #[arg(long)]
    system: Option<String>,
    /// Chat format, instead of the one recognised in the model: llama2, llama3, chatml, mistral,
    /// phi3, gemma or alpaca.
    #[arg(long, value_parser = parse_family)]
    template_family: Option<TemplateFamily>,
}

fn parse_family(s: &str) -> Result<TemplateFamily, String> {
    TemplateFamily::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = TemplateFamily::ALL.iter().map(|f| f.name()).collect();
        format!("unknown template family '{s}' (expected one of: {})", names.join(", "))
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = Options { system: args.system, family: args.template_family };
    let dir = args.output.as_deref().map(|o| o.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(".".as_ref()));
    let modelfile = plan(&args.model, &args.adapter, dir, &options)
        .with_context(|| format!("making a Modelfile for {} on {}", args.adapter.display(), args.model.display()))?;
    let Some(output) = args.output else {
        let mut out = std::io::stdout().lock();
        out.write_all(modelfile.to_text()?.as_bytes())?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    };
    write(&output, &modelfile).context("writing the Modelfile")?;
    let origin = match modelfile.family_source {
        FamilySource::Detected => "recognised in the model",
        FamilySource::Chosen => "chosen",
        FamilySource::NoTemplate => "the model has no chat template",
        FamilySource::Ollama => "Ollama's own, kept",
    };
    eprintln!(
        "wrote {}: {} template ({origin}), {} stop sequences{}\n  next: ollama create NAME -f {}",
        output.display(),
        modelfile.family,
        modelfile.stop.len(),
        if modelfile.system.is_some() { ", a system prompt" } else { "" },
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}
