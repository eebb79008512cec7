//! `gguftune ollama-create`: an Ollama model of a base model and a LoRA adapter trained on it,
//! through a Modelfile and `ollama create`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

use gguftune::modelfile::{for_adapter, for_ollama_adapter};
use gguftune::ollama::ModelName;

use super::source::ModelArg;

/// Make an Ollama model of a base model and a LoRA adapter: write the Modelfile, then run
/// `ollama create` (or print the command when `ollama` is not on PATH).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  gguftune ollama-create mymodel --adapter adapter.gguf
  gguftune ollama-create mymodel:v2 --adapter adapter.gguf --model ollama:llama3.2:1b

Without --model, the Modelfile that finetune wrote next to the adapter (<name>.Modelfile) is used as
it is. With --model (a GGUF file, or ollama:NAME[:TAG] for a model in Ollama's store) the Modelfile is
written first, as finetune writes it: FROM NAME:TAG for an Ollama model, so that its stored GGUF,
template, system prompt and parameters are reused. Then `ollama create NAME -f <Modelfile>` runs when
`ollama` is on PATH (the Ollama server must be running); otherwise the command is printed.")]
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
}

fn parse_name(s: &str) -> Result<String, String> {
    ModelName::parse(s).map(|_| s.to_owned()).map_err(|e| e.to_string())
}

/// The largest Modelfile read to check which adapter it names.
const MAX_MODELFILE_BYTES: u64 = 4 << 20;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let modelfile = args.modelfile.clone().unwrap_or_else(|| {
        let stem = args.adapter.file_stem().map_or_else(|| "adapter".into(), |s| s.to_string_lossy().into_owned());
        args.adapter.with_file_name(format!("{stem}.Modelfile"))
    });
    match &args.model {
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
            planned
                .with_context(|| format!("making a Modelfile for {} on {}", args.adapter.display(), model.display()))?;
            eprintln!("wrote {}", modelfile.display());
        }
        None => check_adapter(&modelfile, &args.adapter)?,
    }
    let command = ["create", args.name.as_str(), "-f", &path_text(&modelfile)?];
    let Some(ollama) = find_on_path("ollama") else {
        eprintln!("`ollama` is not on PATH; with Ollama installed and its server running, create the model with:");
        println!("ollama {}", command.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "));
        return Ok(ExitCode::SUCCESS);
    };
    let status =
        Command::new(&ollama).args(command).status().with_context(|| format!("running {}", ollama.display()))?;
    if !status.success() {
        bail!("`ollama {}` failed ({status})", command.join(" "));
    }
    eprintln!("created {}: ollama run {}", args.name, args.name);
    Ok(ExitCode::SUCCESS)
}

/// Checks that the existing Modelfile `modelfile` names `adapter` in its ADAPTER line, as
/// Ollama resolves it (relative to the Modelfile's folder).
fn check_adapter(modelfile: &Path, adapter: &Path) -> anyhow::Result<()> {
    let hint = "finetune writes one next to the adapter; or give --model, the base model the adapter was trained on";
    let file =
        std::fs::File::open(modelfile).with_context(|| format!("no Modelfile at {} ({hint})", modelfile.display()))?;
    let mut text = String::new();
    file.take(MAX_MODELFILE_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", modelfile.display()))?;
    let named = text.lines().find_map(|line| {
        let (command, value) = line.trim_start().split_once([' ', '\t'])?;
        command.eq_ignore_ascii_case("ADAPTER").then(|| value.trim().trim_matches('"').to_owned())
    });
    let Some(named) = named else {
        bail!("{} has no ADAPTER line ({hint})", modelfile.display());
    };
    let dir = modelfile.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let same = match (std::fs::canonicalize(dir.join(&named)), std::fs::canonicalize(adapter)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        bail!(
            "{} is for the adapter {named}, not {} (hint: give --model, the base model {} was trained on, to write a Modelfile for it)",
            modelfile.display(),
            adapter.display(),
            adapter.display()
        );
    }
    Ok(())
}

/// The path as text (a command line argument shown to the user).
fn path_text(path: &Path) -> anyhow::Result<String> {
    match path.to_str() {
        Some(s) => Ok(s.to_owned()),
        None => bail!("{}: the path is not valid UTF-8", path.display()),
    }
}

/// The first executable `program` in the folders of PATH.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let file = format!("{program}{}", std::env::consts::EXE_SUFFIX);
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(&file)).find(|p| is_executable(p))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// `s` as a POSIX shell word: as it is when it has only safe characters, else in single quotes.
fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("adapter.Modelfile"), "adapter.Modelfile");
        assert_eq!(shell_quote("my dir/a.Modelfile"), "'my dir/a.Modelfile'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
