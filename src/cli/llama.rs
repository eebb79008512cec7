//! Loading what the commands that run llama.cpp need: the model, its adapters, its chat template.

use std::path::Path;

use anyhow::Context;

use gguftune::data::ChatTemplate;
use gguftune::generate::LoraSpec;
use gguftune::ggml::{LlamaAdapter, LlamaModel, Runtime};
use gguftune::gguf::GgufFile;

/// Loads the model at `path` with llama.cpp. A file that cannot be opened is an I/O error (exit
/// 4) rather than llama.cpp's load failure.
pub fn load_model(path: &Path) -> anyhow::Result<LlamaModel> {
    std::fs::File::open(path).with_context(|| path.display().to_string())?;
    Ok(LlamaModel::load(Runtime::get(), path)?)
}

/// Loads each adapter of `specs` for `model`, checking first that its file can be opened.
pub fn load_adapters<'m>(model: &'m LlamaModel, specs: &[LoraSpec]) -> anyhow::Result<Vec<LlamaAdapter<'m>>> {
    let load = |s: &LoraSpec| -> anyhow::Result<LlamaAdapter<'m>> {
        std::fs::File::open(&s.path).with_context(|| s.path.display().to_string())?;
        Ok(LlamaAdapter::load(model, &s.path)?)
    };
    specs.iter().map(load).collect()
}

/// The model's own chat template (`tokenizer.chat_template`), with its BOS/EOS token texts, or
/// `None` when the GGUF has none.
pub fn chat_template(model: &Path, vocab: &LlamaModel) -> anyhow::Result<Option<ChatTemplate>> {
    let file = GgufFile::open(model)?;
    let gguf = file.gguf()?;
    let Some(source) = gguf.get_str("tokenizer.chat_template") else { return Ok(None) };
    let text = |t: Option<i32>| t.and_then(|t| vocab.token_text(t)).unwrap_or_default();
    let template = ChatTemplate::new(source, &text(vocab.bos_token()), &text(vocab.eos_token()))
        .with_context(|| format!("{}: tokenizer.chat_template", model.display()))?;
    Ok(Some(template))
}
