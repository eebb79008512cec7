//! Modelfiles for an adapter trained on a model in Ollama's store: FROM the model's name, so that
//! `ollama create` reuses the GGUF Ollama already has instead of copying it.
//!
//! `ollama create` with `FROM name:tag` copies that model's layers (server/create.go
//! `parseFromModel`): its template, system prompt and parameters come along unless the
//! Modelfile sets its own (`setTemplate`, `setSystem` replace the layer; `setParameters` keeps
//! every parameter the Modelfile does not set). So:
//!
//! - when `finetune` trained in the format of Ollama's own template
//!   ([`crate::ollama::ChatFormat::Family`]), the Modelfile is FROM and ADAPTER alone;
//! - otherwise training used the GGUF's chat template, and the Modelfile sets TEMPLATE and the
//!   stop parameters of that template's family, as for a GGUF path, so that Ollama renders the
//!   new model as it was trained (when the GGUF's template is of no family, there is no such
//!   Modelfile: [`ModelfileError::UnknownTemplate`]). Ollama's SYSTEM was given to training
//!   conversations that had none, as Ollama gives it to chats; it is kept, and written only when
//!   the chat template wraps a system prompt in text of its own.

use std::path::Path;

use crate::gguf::GgufFile;
use crate::ollama::{ChatFormat, OllamaModel};

use super::{chat_lines, check_pair, path_text, write, FamilySource, Modelfile, ModelfileError, Options};

/// Reads and checks Ollama's `model` and `adapter`, and plans the Modelfile that makes a new
/// Ollama model of them. `dir` is the folder the Modelfile will be written to (the adapter's path
/// is written relative to it when inside it); `None` writes an absolute path.
pub fn plan_ollama(model: &OllamaModel, adapter: &Path, dir: Option<&Path>) -> Result<Modelfile, ModelfileError> {
    let model_file = GgufFile::open(&model.model_path)?;
    let model_gguf = model_file.gguf()?;
    let adapter_file = GgufFile::open(adapter)?;
    let adapter_gguf = adapter_file.gguf()?;
    check_pair(&model.model_path, &model_gguf, adapter, &adapter_gguf)?;
    let from = model.name.shortest();
    let adapter = path_text(adapter, dir)?;
    Ok(match model.chat_format(&model_gguf) {
        ChatFormat::Family(family) => Modelfile {
            from,
            adapter,
            family,
            family_source: FamilySource::Ollama,
            template: model.template.clone().unwrap_or_default(),
            system: model.system.clone(),
            stop: model.stop(),
        },
        ChatFormat::GgufTemplate(_) => {
            let options = Options { system: model.system.clone(), family: None };
            let lines = chat_lines(&model.model_path, &model_gguf, &options)?;
            let system = match (&model.system, lines.system) {
                (Some(kept), Some(system)) if *kept == system => None,
                (_, system) => system,
            };
            Modelfile {
                from,
                adapter,
                family: lines.family,
                family_source: lines.family_source,
                template: lines.template,
                system,
                stop: lines.stop,
            }
        }
    })
}

/// Plans and writes the Modelfile `out` for `adapter` trained on Ollama's `model`, with the
/// adapter's path relative to `out`'s folder; what `finetune` writes next to an adapter trained
/// on an `ollama:` model.
pub fn for_ollama_adapter(model: &OllamaModel, adapter: &Path, out: &Path) -> Result<Modelfile, ModelfileError> {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let modelfile = plan_ollama(model, adapter, Some(dir))?;
    write(out, &modelfile)?;
    Ok(modelfile)
}
