//! Model arguments: a path, or `ollama:NAME[:TAG]` for a model in Ollama's store (its GGUF blob,
//! with the template, system prompt and parameters Ollama serves it with).

use std::path::{Path, PathBuf};

use anyhow::Context;

use gguftune::ollama::{self, OllamaModel};

/// What a model argument names.
#[derive(Debug)]
pub struct ModelArg {
    /// The file to open: the argument itself, or the GGUF blob of an Ollama model.
    pub path: PathBuf,
    /// The Ollama model, for an `ollama:` argument.
    pub ollama: Option<OllamaModel>,
}

impl ModelArg {
    /// Resolves `arg`: `ollama:NAME[:TAG]` through Ollama's store (a file of that name is
    /// reached as `./ollama:NAME`), anything else as a path.
    pub fn resolve(arg: &Path) -> anyhow::Result<ModelArg> {
        let Some(name) = arg.to_str().and_then(ollama::source_name) else {
            return Ok(ModelArg { path: arg.to_owned(), ollama: None });
        };
        let model =
            ollama::resolve(name).with_context(|| format!("finding {} in Ollama's model store", arg.display()))?;
        let label = format!("{}{}", ollama::SCHEME, model.name);
        if !model.adapters.is_empty() {
            eprintln!(
                "warning: {label} has {} adapter layer(s) of its own, which Ollama applies and gguftune does not: training and evaluation see the base GGUF alone",
                model.adapters.len()
            );
        }
        if model.has_messages {
            eprintln!("warning: {label} has MESSAGE lines that Ollama puts before every chat; training data is rendered without them");
        }
        eprintln!("{label}: {}", model.model_path.display());
        Ok(ModelArg { path: model.model_path.clone(), ollama: Some(model) })
    }

    /// The model as users name it: `ollama:name:tag`, or the file's name.
    pub fn label(&self) -> String {
        match &self.ollama {
            Some(model) => format!("{}{}", ollama::SCHEME, model.name),
            None => self
                .path
                .file_name()
                .map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned()),
        }
    }
}
