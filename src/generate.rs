//! Text generation with llama.cpp, so that what gguftune shows is what llama.cpp and Ollama
//! produce for the same model, adapters and prompt.
//!
//! The prompt is tokenized as llama.cpp's tools tokenize it ([`prompt_tokens`]): a raw prompt
//! with the BOS token the model asks for, special-token text parsed; a chat prompt rendered first
//! with the model's chat template (a user message, optionally after a system message, with the
//! generation prompt), BOS added only when the template did not write it. [`generate`] then feeds
//! the prompt in one batch and one token per step after it (the KV cache is reused), choosing
//! each token with llama.cpp's sampler chain, until an end-of-generation token or the token
//! budget. Text is handed out as it is produced, whole UTF-8 characters only ([`Utf8Stream`]).
//!
//! What it does not do: repetition penalties, grammars, stop strings, or multi-turn chat.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use crate::data::{ChatTemplate, Message, TemplateError};
use crate::ggml::{self, LlamaContext, LlamaModel, Sampler, SamplerParams};

/// Why a generation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// An adapter argument is not `PATH` or `PATH:SCALE`.
    #[error("'{spec}': expected PATH or PATH:SCALE with SCALE a finite number, found scale '{scale}'")]
    BadLoraSpec {
        /// The argument as given.
        spec: String,
        /// The text after the last `:`.
        scale: String,
    },
    /// The prompt does not fit the context.
    #[error("the prompt is {n_tokens} tokens, longer than the context of {n_ctx} (hint: raise --ctx)")]
    PromptTooLong {
        /// Tokens of the prompt.
        n_tokens: usize,
        /// Positions of the context.
        n_ctx: usize,
    },
    /// The prompt has no tokens (empty text, and a model that adds no BOS).
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A chat prompt, and no chat template to render it with.
    #[error("a chat prompt needs the model's chat template, and its GGUF has none (no 'tokenizer.chat_template'; hint: drop --chat)")]
    NoChatTemplate,
    /// The chat template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// llama.cpp failed.
    #[error(transparent)]
    Ggml(#[from] ggml::Error),
    /// The generated text could not be written out.
    #[error("writing the generated text")]
    Output(#[source] std::io::Error),
}

/// A LoRA adapter to apply and its scale, as `PATH[:SCALE]` on the command line (llama.cpp's
/// `--lora-scaled PATH SCALE`; the scale multiplies the adapter's own `alpha / rank`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// The adapter GGUF.
    pub path: PathBuf,
    /// Its scale (1 when not given).
    pub scale: f32,
}

impl FromStr for LoraSpec {
    type Err = GenerateError;

    /// `adapter.gguf` (scale 1) or `adapter.gguf:0.5`. The scale follows the last `:`; a path
    /// that itself contains `:` is given with an explicit scale (`a:b.gguf:1`).
    fn from_str(spec: &str) -> Result<LoraSpec, GenerateError> {
        let Some((path, scale)) = spec.rsplit_once(':') else {
            return Ok(LoraSpec { path: spec.into(), scale: 1.0 });
        };
        match scale.parse::<f32>() {
            Ok(s) if s.is_finite() && !path.is_empty() => Ok(LoraSpec { path: path.into(), scale: s }),
            _ => Err(GenerateError::BadLoraSpec { spec: spec.to_owned(), scale: scale.to_owned() }),
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt<'a> {
    /// Text given to the model as it is.
    Raw(&'a str),
    /// A user message (after an optional system message) rendered with the chat template.
    Chat {
        /// The system message, if any.
        system: Option<&'a str>,
        /// The user message.
        user: &'a str,
    },
}

/// The prompt's text as the model sees it (rendered, for a chat prompt) and its tokens.
pub fn prompt_tokens(
    model: &LlamaModel,
    template: Option<&ChatTemplate>,
    prompt: Prompt<'_>,
) -> Result<(String, Vec<i32>), GenerateError> {
    let (text, add_bos) = match prompt {
        // llama.cpp's completion mode (`common_tokenize(ctx, prompt, true, true)`).
        Prompt::Raw(text) => (text.to_owned(), true),
        Prompt::Chat { system, user } => {
            let template = template.ok_or(GenerateError::NoChatTemplate)?;
            let mut messages: Vec<Message> = system.map(|s| Message::new("system", s)).into_iter().collect();
            messages.push(Message::new("user", user));
            let text = template.render(&messages, true)?;
            // As training tokenizes chat records (train::build_examples): no second BOS when
            // the template writes one.
            let bos = template.bos_token();
            let add_bos = bos.is_empty() || !text.starts_with(bos);
            (text, add_bos)
        }
    };
    let tokens = model.tokenize(&text, add_bos, true)?;
    if tokens.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    Ok((text, tokens))
}

/// How much to generate and how to choose tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_new: usize,
    /// The sampler chain's settings.
    pub sampler: SamplerParams,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// The model produced an end-of-generation token (EOS, end of turn).
    Eog,
    /// The token budget or the context ran out.
    Length,
}

impl StopReason {
    /// `eog` or `length`, as in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eog => "eog",
            StopReason::Length => "length",
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generation {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// The generated tokens, without the end-of-generation token.
    pub tokens: Vec<i32>,
    /// Their text (control tokens give none).
    pub text: String,
    /// Why it stopped.
    pub stop: StopReason,
    /// Seconds spent on the prompt.
    pub prompt_seconds: f64,
    /// Seconds spent generating.
    pub generate_seconds: f64,
}

/// Generates from `prompt` (tokens) in `ctx`, a context of `model` with any adapters set, calling
/// `on_text` with each new piece of text as soon as it forms whole characters. The context is
/// cleared first.
pub fn generate(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    prompt: &[i32],
    options: &GenerateOptions,
    on_text: &mut dyn FnMut(&str) -> std::io::Result<()>,
) -> Result<Generation, GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if prompt.len() > ctx.n_ctx() {
        return Err(GenerateError::PromptTooLong { n_tokens: prompt.len(), n_ctx: ctx.n_ctx() });
    }
    let mut sampler = Sampler::new(&options.sampler)?;
    let start = Instant::now();
    ctx.clear();
    ctx.decode(prompt)?;
    let prompt_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (mut tokens, mut text, mut stream) = (Vec::new(), String::new(), Utf8Stream::default());
    let mut emit = |piece: String, text: &mut String| -> Result<(), GenerateError> {
        if !piece.is_empty() {
            on_text(&piece).map_err(GenerateError::Output)?;
            text.push_str(&piece);
        }
        Ok(())
    };
    let stop = loop {
        if tokens.len() >= options.max_new {
            break StopReason::Length;
        }
        let token = sampler.sample(ctx)?;
        if model.is_eog(token) {
            break StopReason::Eog;
        }
        tokens.push(token);
        emit(stream.push(&model.token_to_piece(token, false)?), &mut text)?;
        if tokens.len() >= options.max_new || ctx.n_past() >= ctx.n_ctx() {
            break StopReason::Length;
        }
        ctx.decode(&[token])?;
    };
    emit(stream.finish(), &mut text)?;
    Ok(Generation {
        prompt_tokens: prompt.len(),
        tokens,
        text,
        stop,
        prompt_seconds,
        generate_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Turns a stream of byte pieces into text, holding back the bytes of a character split across
/// pieces (byte-fallback tokens spell a multi-byte character one byte per token) until it is
/// whole. Bytes that can never be valid UTF-8 become U+FFFD, as `String::from_utf8_lossy` does.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds `bytes` and returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut done = 0;
        loop {
            match std::str::from_utf8(&self.pending[done..]) {
                Ok(s) => {
                    out.push_str(s);
                    done = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = &self.pending[done..done + e.valid_up_to()];
                    out.push_str(&String::from_utf8_lossy(valid));
                    done += e.valid_up_to();
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            done += n;
                        }
                        // The start of a character whose other bytes have not come yet.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..done);
        out
    }

    /// Ends the stream: what is held back (an unfinished character) as U+FFFD.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_pieces_come_out_whole() {
        let mut s = Utf8Stream::default();
        // "é" is C3 A9, "日" is E6 97 A5, "🙂" is F0 9F 99 82.
        assert_eq!(s.push(b"caf\xC3"), "caf");
        assert_eq!(s.push(b"\xA9 "), "é ");
        assert_eq!(s.push(b"\xE6"), "");
        assert_eq!(s.push(b"\x97"), "");
        assert_eq!(s.push(b"\xA5\xF0\x9F"), "日");
        assert_eq!(s.push(b"\x99\x82!"), "🙂!");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(b"a\xFFb"), "a\u{FFFD}b");
        // A lead byte followed by a non-continuation byte is invalid at once.
        assert_eq!(s.push(b"\xC3x"), "\u{FFFD}x");
        // An unfinished character at the end of the stream.
        assert_eq!(s.push(b"\xE6\x97"), "");
        assert_eq!(s.finish(), "\u{FFFD}");
        assert_eq!(s.push(b"ok"), "ok");
    }

    #[test]
    fn lora_specs_parse_path_and_scale() {
        let spec = |s: &str| s.parse::<LoraSpec>();
        assert_eq!(spec("a.gguf").unwrap(), LoraSpec { path: "a.gguf".into(), scale: 1.0 });
        assert_eq!(spec("dir/a.gguf:0.5").unwrap(), LoraSpec { path: "dir/a.gguf".into(), scale: 0.5 });
        assert_eq!(spec("a:b.gguf:-1").unwrap(), LoraSpec { path: "a:b.gguf".into(), scale: -1.0 });
        for bad in ["a.gguf:", "a.gguf:x", "a.gguf:inf", "a:b.gguf", ":2"] {
            assert!(matches!(spec(bad), Err(GenerateError::BadLoraSpec { .. })), "{bad}");
        }
        assert_eq!(
            spec("a.gguf:x").unwrap_err().to_string(),
            "'a.gguf:x': expected PATH or PATH:SCALE with SCALE a finite number, found scale 'x'"
        );
    }
}
