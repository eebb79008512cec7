//! Loading what the commands that run llama.cpp need: the model, its adapters, its chat template.

use std::path::Path;

use anyhow::Context;

use gguftune::data::ChatTemplate;
use gguftune::generate::LoraSpec;
use gguftune::ggml::{Devices, LlamaAdapter, LlamaModel, Runtime};
use gguftune::gguf::GgufFile;
use gguftune::ollama::{ChatFormat, GgufTemplateReason};

use super::source::ModelArg;

/// Loads the model at `path` with llama.cpp, its layers on the devices of `offload`. A file that
/// cannot be opened is an I/O error (exit 4) rather than llama.cpp's load failure.
pub fn load_model(path: &Path, offload: &Devices) -> anyhow::Result<LlamaModel> {
    std::fs::File::open(path).with_context(|| path.display().to_string())?;
    Ok(LlamaModel::load_on(Runtime::get(), path, offload)?)
}

/// Loads each adapter of `specs` for `model`, checking first that its file can be opened.
pub fn load_adapters<'m>(model: &'m LlamaModel, specs: &[LoraSpec]) -> anyhow::Result<Vec<LlamaAdapter<'m>>> {
    let load = |s: &LoraSpec| -> anyhow::Result<LlamaAdapter<'m>> {
        std::fs::File::open(&s.path).with_context(|| s.path.display().to_string())?;
        Ok(LlamaAdapter::load(model, &s.path)?)
    };
    specs.iter().map(load).collect()
}

/// How chat data is rendered for a model: the template, and a system prompt for conversations
/// without one.
pub struct ChatSetup {
    /// The chat template; `None` when the model has none (Alpaca prompts, no chat records).
    pub template: Option<ChatTemplate>,
    /// Ollama's SYSTEM, for an `ollama:` model that has one.
    pub system: Option<String>,
    /// Whether consecutive messages of one role are merged, as Ollama does for a Go template.
    pub merge_roles: bool,
}

/// The chat setup for `model`: its GGUF's chat template, or for an `ollama:` model the format
/// Ollama serves it in (see [`gguftune::ollama::ChatFormat`]) and its SYSTEM. Says on stderr which
/// format an `ollama:` model gets, and warns when it is not the one Ollama renders with.
pub fn chat_setup(model: &ModelArg, vocab: &LlamaModel) -> anyhow::Result<ChatSetup> {
    let Some(ollama) = &model.ollama else {
        return Ok(ChatSetup { template: chat_template(&model.path, vocab)?, system: None, merge_roles: false });
    };
    let label = model.label();
    let file = GgufFile::open(&model.path)?;
    let format = ollama.chat_format(&file.gguf()?);
    let template = match &format {
        ChatFormat::Family(family) => {
            eprintln!("{label}: chat format {family}, as Ollama's TEMPLATE renders it");
            match family.jinja() {
                Some(source) => {
                    let (bos, eos) = special_texts(vocab);
                    Some(ChatTemplate::new(source, &bos, &eos).with_context(|| format!("the {family} chat format"))?)
                }
                None => None,
            }
        }
        ChatFormat::GgufTemplate(reason) => {
            match reason {
                GgufTemplateReason::NoTemplateLayer => {
                    eprintln!("{label}: no TEMPLATE in Ollama; the GGUF's chat template, as Ollama renders it")
                }
                GgufTemplateReason::OllamaPrefersIt => eprintln!(
                    "{label}: the GGUF's chat template, which Ollama prefers to its TEMPLATE for this model (it has tools or thinking)"
                ),
                GgufTemplateReason::Renderer(renderer) => eprintln!(
                    "warning: {label}: Ollama renders this model with its built-in renderer '{renderer}', which gguftune does not reproduce; the GGUF's chat template is used instead, and Ollama's text may differ"
                ),
                GgufTemplateReason::UnknownTemplate => eprintln!(
                    "warning: {label}: Ollama's TEMPLATE for this model is not one gguftune reproduces (it reproduces its own llama2, llama3, chatml, mistral, phi3, gemma and alpaca templates); the GGUF's chat template is used instead, and the Modelfile finetune writes sets TEMPLATE to match it"
                ),
            }
            chat_template(&model.path, vocab)?
        }
    };
    let merge_roles = matches!(format, ChatFormat::Family(_));
    Ok(ChatSetup { template, system: ollama.system.clone(), merge_roles })
}

/// The texts of the model's BOS and EOS tokens (empty when it has none).
fn special_texts(vocab: &LlamaModel) -> (String, String) {
    let text = |t: Option<i32>| t.and_then(|t| vocab.token_text(t)).unwrap_or_default();
    (text(vocab.bos_token()), text(vocab.eos_token()))
}

/// The model's own chat template (`tokenizer.chat_template`), with its BOS/EOS token texts, or
/// `None` when the GGUF has none.
fn chat_template(model: &Path, vocab: &LlamaModel) -> anyhow::Result<Option<ChatTemplate>> {
    let file = GgufFile::open(model)?;
    let gguf = file.gguf()?;
    let Some(source) = gguf.get_str("tokenizer.chat_template") else { return Ok(None) };
    let (bos, eos) = special_texts(vocab);
    let template = ChatTemplate::new(source, &bos, &eos)
        .with_context(|| format!("{}: tokenizer.chat_template", model.display()))?;
    Ok(Some(template))
}
