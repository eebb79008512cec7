//! Which text Ollama makes of a conversation for a model, as far as gguftune can write the same
//! text: the decision `finetune` trains by, so that training and serving agree.
//!
//! What Ollama does (server/images.go `GetModel`, `shouldPreferChatTemplate`; server/routes.go
//! `shouldUseGoTemplate`, `usesOllamaRenderedChat`), in the version read for this (2026):
//!
//! 1. A model whose config names a built-in `renderer` is rendered by that Go code, whatever its
//!    template says.
//! 2. A model with a Go template (a template layer) is rendered with it, unless the GGUF's
//!    `tokenizer.chat_template` has capabilities the Go template lacks (tools: the text `tools`
//!    or `tool_call`; thinking: `<think>` and `</think>`, or a split at `</think>`) and the config
//!    names no parser: then llama.cpp renders the GGUF's template (Jinja), unless the server was
//!    started with `OLLAMA_GO_TEMPLATE` set, which gguftune cannot see.
//! 3. A model without a Go template is rendered by llama.cpp with the GGUF's chat template.
//!
//! In every case Ollama first puts the model's SYSTEM before a conversation that does not open
//! with a system message; for a Go template it also merges consecutive messages of one role
//! (template/template.go `collate`). `finetune` does both ([`crate::data::RenderOptions`]).
//!
//! gguftune reproduces two of these exactly: the GGUF's own chat template (it renders it as
//! llama.cpp's Jinja does), and a Go template that is, text for text, the one gguftune's
//! Modelfiles write for one of its chat families ([`TemplateFamily::go_template`]; for ChatML,
//! Llama 3 and Phi-3 also the template Ollama itself picks for GGUFs in those formats, but not
//! for Gemma, whose generation prompt Ollama's template ends with an extra line break), whose
//! rendering [`TemplateFamily::jinja`] writes. Any other Go template (Ollama's library templates
//! with tool calls, for example) is not reproduced: then training uses the GGUF's chat template,
//! and the Modelfile written for the adapter sets TEMPLATE to that template's family so that
//! Ollama renders the fine-tuned model the way it was trained.

use crate::gguf::Gguf;
use crate::modelfile::{SpecialTokens, TemplateFamily};

use super::OllamaModel;

const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// How a conversation for an Ollama model is rendered to train on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatFormat {
    /// Ollama renders with its Go template, which is gguftune's template for this family:
    /// render in the family's format ([`TemplateFamily::jinja`]).
    Family(TemplateFamily),
    /// Render with the GGUF's own chat template, for this reason.
    GgufTemplate(GgufTemplateReason),
}

/// Why a conversation is rendered with the GGUF's chat template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GgufTemplateReason {
    /// The model has no template layer: Ollama renders with the GGUF's chat template too.
    NoTemplateLayer,
    /// The GGUF's chat template supports tools or thinking and the Go template does not, so
    /// Ollama prefers the chat template.
    OllamaPrefersIt,
    /// The config names a built-in renderer that gguftune does not reproduce.
    Renderer(String),
    /// The Go template is not one gguftune reproduces.
    UnknownTemplate,
}

impl GgufTemplateReason {
    /// Whether Ollama renders this model's conversations with the GGUF's chat template too, so
    /// that training with it formats conversations exactly as Ollama serves them.
    pub fn ollama_agrees(&self) -> bool {
        matches!(self, GgufTemplateReason::NoTemplateLayer | GgufTemplateReason::OllamaPrefersIt)
    }
}

impl OllamaModel {
    /// How conversations for this model are rendered, given its GGUF (see the module's docs).
    pub fn chat_format(&self, gguf: &Gguf<'_>) -> ChatFormat {
        if let Some(renderer) = &self.renderer {
            return ChatFormat::GgufTemplate(GgufTemplateReason::Renderer(renderer.clone()));
        }
        let Some(template) = &self.template else {
            return ChatFormat::GgufTemplate(GgufTemplateReason::NoTemplateLayer);
        };
        let tokens = SpecialTokens::from_gguf(gguf);
        let Some(family) = TemplateFamily::ALL.into_iter().find(|f| f.go_template(&tokens) == *template) else {
            return ChatFormat::GgufTemplate(GgufTemplateReason::UnknownTemplate);
        };
        // gguftune's Go templates have no tools and no thinking, so a chat template with either
        // has more capabilities (server/images.go `hasMoreCapabilities`).
        let chat = gguf.get_str(KEY_CHAT_TEMPLATE).unwrap_or_default();
        if self.parser.is_none() && (has_tools(chat) || has_thinking(chat)) {
            return ChatFormat::GgufTemplate(GgufTemplateReason::OllamaPrefersIt);
        }
        ChatFormat::Family(family)
    }
}

/// Ollama's `chatTemplateHasToolSupport`.
fn has_tools(chat_template: &str) -> bool {
    chat_template.contains("tools") || chat_template.contains("tool_call")
}

/// Ollama's `chatTemplateHasThinkingSupport`.
fn has_thinking(chat_template: &str) -> bool {
    if chat_template.contains("<think>") && chat_template.contains("</think>") {
        return true;
    }
    (chat_template.contains("content.split('</think>')") || chat_template.contains("content.split(\"</think>\")"))
        && !chat_template.contains("reasoning_content")
        && !chat_template.contains("<SPECIAL_12>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_and_thinking_are_found_as_ollama_finds_them() {
        assert!(has_tools("{% if tools %}"));
        assert!(has_tools("{{ message.tool_calls }}"));
        assert!(!has_tools("{{ message['content'] }}"));
        assert!(has_thinking("<think>{{ r }}</think>"));
        assert!(has_thinking("{% set c = content.split('</think>')[-1] %}"));
        assert!(!has_thinking("{% set c = content.split('</think>')[-1] %}{{ reasoning_content }}"));
        assert!(!has_thinking("<|im_start|>"));
    }
}
