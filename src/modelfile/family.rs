//! Chat formats: recognising a model's Jinja chat template, and the Go template, stop sequences
//! and system turn that Ollama needs to write the same text.

use std::fmt;

use crate::data::{ChatTemplate, Message};
use crate::gguf::Gguf;

const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";

/// A chat format with a Go template for Ollama.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateFamily {
    /// Llama 2 chat: `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s>`, as
    /// Meta's template writes it (BOS before every `[INST]`).
    Llama2,
    /// Llama 3: `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>` per message.
    Llama3,
    /// ChatML (Qwen2, many fine-tunes): `<|im_start|>{role}\n{content}<|im_end|>\n` per message.
    ChatMl,
    /// Mistral Instruct v0.1: `<s>[INST] {user} [/INST]{answer}</s>`, no system block (a system
    /// prompt is written before the first user message, followed by a blank line).
    Mistral,
    /// Phi-3: `<|{role}|>\n{content}<|end|>\n` per message, as Phi-3-mini's template writes it.
    Phi3,
    /// Gemma (2 and 3): `<start_of_turn>{role}\n{content}<end_of_turn>\n` per message, the
    /// assistant's role written `model`, no system turn (a system prompt opens the first user
    /// message, followed by a blank line, as Gemma 3's template and llama.cpp write it).
    Gemma,
    /// Alpaca: `{preamble}\n\n### Instruction:\n{user}\n\n### Response:\n{answer}`, the prompt
    /// `finetune` uses for a model without a chat template (see [`crate::data::alpaca_prompt`]).
    Alpaca,
}

impl TemplateFamily {
    /// Every family, in the order of their names in messages.
    pub const ALL: [TemplateFamily; 7] = [
        TemplateFamily::Llama2,
        TemplateFamily::Llama3,
        TemplateFamily::ChatMl,
        TemplateFamily::Mistral,
        TemplateFamily::Phi3,
        TemplateFamily::Gemma,
        TemplateFamily::Alpaca,
    ];

    /// The family's name: `llama2`, `llama3`, `chatml`, `mistral`, `phi3`, `gemma`,
    /// `alpaca`.
    pub fn name(self) -> &'static str {
        match self {
            TemplateFamily::Llama2 => "llama2",
            TemplateFamily::Llama3 => "llama3",
            TemplateFamily::ChatMl => "chatml",
            TemplateFamily::Mistral => "mistral",
            TemplateFamily::Phi3 => "phi3",
            TemplateFamily::Gemma => "gemma",
            TemplateFamily::Alpaca => "alpaca",
        }
    }

    /// The family named `name` (any case).
    pub fn from_name(name: &str) -> Option<TemplateFamily> {
        TemplateFamily::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Recognises the family of a Jinja chat template by the markers llama.cpp's
    /// `llm_chat_detect_template` looks for, in its order (see [`LLAMA_CPP_FORMATS`]). A source
    /// that is just a family's name is that family, as llama.cpp accepts a template's name.
    pub fn detect(source: &str) -> Result<TemplateFamily, Unrecognized> {
        if let Some(family) = TemplateFamily::from_name(source) {
            return Ok(family);
        }
        for format in LLAMA_CPP_FORMATS {
            if format.markers.iter().all(|m| source.contains(m)) {
                return format.family.ok_or(Unrecognized::Known {
                    name: format.name,
                    marker: format.markers[format.markers.len() - 1],
                });
            }
        }
        let head: String = source.chars().take(60).collect();
        Err(Unrecognized::Unmarked { head, chars: source.chars().count() })
    }

    /// Whether the family's Jinja templates start with `bos_token`.
    fn writes_bos_first(self) -> bool {
        matches!(
            self,
            TemplateFamily::Llama2 | TemplateFamily::Llama3 | TemplateFamily::Mistral | TemplateFamily::Gemma
        )
    }

    /// The Go template, for a model with these special tokens.
    pub fn go_template(self, tokens: &SpecialTokens) -> String {
        let body = match self {
            TemplateFamily::Llama2 => LLAMA2.replace("@BOS@", &tokens.bos).replace("@EOS@", &tokens.eos),
            TemplateFamily::Llama3 => LLAMA3.to_owned(),
            TemplateFamily::ChatMl => CHATML.to_owned(),
            TemplateFamily::Mistral => MISTRAL.replace("@EOS@", &tokens.eos),
            TemplateFamily::Phi3 => PHI3.to_owned(),
            TemplateFamily::Gemma => GEMMA.to_owned(),
            TemplateFamily::Alpaca => ALPACA.to_owned(),
        };
        if self.writes_bos_first() && !tokens.add_bos {
            format!("{}{body}", tokens.bos)
        } else {
            body
        }
    }

    /// A Jinja chat template (as [`crate::data::ChatTemplate`] renders it) that writes what the
    /// family's Go template makes Ollama write: the same text for any conversation whose
    /// consecutive messages have different roles (Ollama merges those of one role first), with
    /// the generation prompt when the conversation ends with a user turn, and the BOS token's
    /// text first where the Go template writes it or the runner adds the token. `None` for
    /// Alpaca, whose format `finetune` writes without a template.
    ///
    /// Unlike the models' own templates these do not trim message contents, and they write
    /// every system message, joined by a blank line, where the Go template writes `.System`,
    /// because Ollama's templates do.
    pub fn jinja(self) -> Option<&'static str> {
        match self {
            TemplateFamily::Llama2 => Some(LLAMA2_JINJA),
            TemplateFamily::Llama3 => Some(LLAMA3_JINJA),
            TemplateFamily::ChatMl => Some(CHATML_JINJA),
            TemplateFamily::Mistral => Some(MISTRAL_JINJA),
            TemplateFamily::Phi3 => Some(PHI3_JINJA),
            TemplateFamily::Gemma => Some(GEMMA_JINJA),
            TemplateFamily::Alpaca => None,
        }
    }

    /// The stop sequences: the texts that begin or end a turn in this format.
    pub fn stop(self, tokens: &SpecialTokens) -> Vec<String> {
        let fixed: &[&str] = match self {
            TemplateFamily::Llama2 => &["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"],
            TemplateFamily::Llama3 => &["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"],
            TemplateFamily::ChatMl => &["<|im_end|>", "<|im_start|>"],
            TemplateFamily::Mistral => &["[INST]", "[/INST]"],
            // Ollama's own phi3 model's stop parameters.
            TemplateFamily::Phi3 => &["<|end|>", "<|user|>", "<|assistant|>"],
            // Ollama's gemma-instruct template's stop parameters (its gemma3-instruct has the
            // first alone); llama.cpp ends generation at <end_of_turn> by itself (an EOG token).
            TemplateFamily::Gemma => &["<end_of_turn>", "<start_of_turn>"],
            TemplateFamily::Alpaca => &["### Instruction:", "### Response:"],
        };
        let eos = matches!(self, TemplateFamily::Llama2 | TemplateFamily::Mistral).then(|| tokens.eos.clone());
        eos.into_iter().chain(fixed.iter().map(|s| (*s).to_owned())).collect()
    }

    /// The opening and closing text of a system turn, for families whose templates may write
    /// one of their own.
    fn system_turn(self) -> Option<(&'static str, &'static str)> {
        match self {
            TemplateFamily::ChatMl => Some(("<|im_start|>system\n", "<|im_end|>")),
            TemplateFamily::Llama3 => Some(("<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>")),
            _ => None,
        }
    }
}

impl fmt::Display for TemplateFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One chat format llama.cpp recognises: its name in llama.cpp, the markers that must all be in
/// a template, and our family for it (`None`: no Modelfile translation).
#[derive(Debug)]
pub struct LlamaCppFormat {
    /// llama.cpp's name for the format (`LLM_CHAT_TEMPLATES` in src/llama-chat.cpp).
    pub name: &'static str,
    /// Texts that must all occur in the template.
    pub markers: &'static [&'static str],
    /// The family written for it.
    pub family: Option<TemplateFamily>,
}

const fn llama_cpp(
    name: &'static str,
    markers: &'static [&'static str],
    family: Option<TemplateFamily>,
) -> LlamaCppFormat {
    LlamaCppFormat { name, markers, family }
}

/// llama.cpp's `llm_chat_detect_template`, flattened: the first entry whose markers all occur
/// wins. Sync with src/llama-chat.cpp of the pinned llama.cpp: the entries up to `llama3` keep
/// its order, because it tries them before Llama 3's markers; the later ones only name what a
/// template is in an error.
pub const LLAMA_CPP_FORMATS: &[LlamaCppFormat] = &[
    llama_cpp("phi4", &["<|im_start|>", "<|im_sep|>"], None),
    llama_cpp("smolvlm", &["<|im_start|>", "<end_of_utterance>"], None),
    llama_cpp("chatml", &["<|im_start|>"], Some(TemplateFamily::ChatMl)),
    llama_cpp("mistral-v7", &["[INST]", "[SYSTEM_PROMPT]"], None),
    llama_cpp("mistral-v1", &["[INST]", "' [INST] ' + system_message"], None),
    llama_cpp("mistral-v3", &["[INST]", "[AVAILABLE_TOOLS]"], None),
    llama_cpp("llama2-sys", &["[INST]", "<<SYS>>"], Some(TemplateFamily::Llama2)),
    llama_cpp("llama2", &["[INST]"], Some(TemplateFamily::Mistral)),
    llama_cpp("phi3", &["<|assistant|>", "<|end|>"], Some(TemplateFamily::Phi3)),
    llama_cpp("chatglm4", &["[gMASK]<sop>"], None),
    llama_cpp("glmedge", &["<|assistant|>", "<|user|>"], None),
    llama_cpp("zephyr", &["<|user|>", "<|endoftext|>"], None),
    llama_cpp("monarch", &["bos_token + message['role']"], None),
    llama_cpp("gemma", &["<start_of_turn>"], Some(TemplateFamily::Gemma)),
    llama_cpp("orion", &["'\\n\\nAssistant: ' + eos_token"], None),
    llama_cpp("openchat", &["GPT4 Correct "], None),
    llama_cpp("vicuna", &["USER: ", "ASSISTANT: "], None),
    llama_cpp("deepseek", &["### Instruction:", "<|EOT|>"], None),
    llama_cpp("command-r", &["<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>"], None),
    llama_cpp("llama3", &["<|start_header_id|>", "<|end_header_id|>"], Some(TemplateFamily::Llama3)),
    llama_cpp("chatglm3", &["[gMASK]sop"], None),
    llama_cpp("deepseek3", &["<｜Assistant｜>", "<｜User｜>"], None),
    llama_cpp("exaone3", &["[|system|]", "[|assistant|]"], None),
    llama_cpp("granite", &["<|start_of_role|>"], None),
    llama_cpp("llama4", &["<|header_start|>", "<|header_end|>"], None),
    llama_cpp("gpt-oss", &["<|start|>", "<|channel|>"], None),
];

/// What a chat template that no family matches looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrecognized {
    /// A format llama.cpp knows (by `marker`), with no Modelfile translation here.
    Known {
        /// llama.cpp's name for it.
        name: &'static str,
        /// A marker that identified it.
        marker: &'static str,
    },
    /// Nothing known: the template's first characters and its length in characters.
    Unmarked { head: String, chars: usize },
}

impl fmt::Display for Unrecognized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unrecognized::Known { name, marker } => {
                write!(f, "llama.cpp's '{name}' format (it contains {:?})", marker)
            }
            Unrecognized::Unmarked { head, chars } => {
                write!(f, "a format with none of the markers llama.cpp knows ({chars} characters, starting {head:?})")
            }
        }
    }
}

// The Go templates, one line of template per string. `{{-` and `-}}` trim the white space next to
// them, so only the line breaks written before text (not before an action) reach the output.

const LLAMA3: &str = concat!(
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n",
    "\n",
    "{{ .Content }}<|eot_id|>\n",
    "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n",
    "\n",
);

const CHATML: &str = concat!(
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n",
    "{{ .Content }}<|im_end|>\n",
    "{{ end }}<|im_start|>assistant\n",
);

const PHI3: &str =
    concat!("{{- range .Messages }}<|{{ .Role }}|>\n", "{{ .Content }}<|end|>\n", "{{ end }}<|assistant|>\n",);

/// `.System` opens the first user message, followed by a blank line, as Gemma 3's template
/// (`first_user_prefix`) and llama.cpp's `LLM_CHAT_TEMPLATE_GEMMA` write it. Not Ollama's own
/// template/gemma3-instruct.gotmpl, whose generation prompt ends with a second line break (its
/// file's last one, after `{{- end }}`), which Gemma's templates do not write.
const GEMMA: &str = concat!(
    "{{- $system := .System }}\n",
    "{{- range .Messages }}\n",
    "{{- if eq .Role \"user\" }}<start_of_turn>user\n",
    "{{ if $system }}{{ $system }}\n",
    "\n",
    "{{ end }}{{ $system = \"\" }}{{ .Content }}<end_of_turn>\n",
    "{{ else if eq .Role \"assistant\" }}<start_of_turn>model\n",
    "{{ .Content }}<end_of_turn>\n",
    "{{ end }}\n",
    "{{- end }}<start_of_turn>model\n",
);

/// `@BOS@` and `@EOS@` are replaced by the model's token texts. The system prompt opens the first
/// user message; every `[INST]` but the first (whose BOS the runner adds) follows a BOS.
const LLAMA2: &str = concat!(
    "{{- $system := .System }}{{ $started := false }}\n",
    "{{- range .Messages }}\n",
    "{{- if eq .Role \"user\" }}{{ if $started }}@BOS@{{ end }}[INST] {{ if $system }}<<SYS>>\n",
    "{{ $system }}\n",
    "<</SYS>>\n",
    "\n",
    "{{ end }}{{ .Content }} [/INST]\n",
    "{{- $system = \"\" }}{{ $started = true }}\n",
    "{{- else if eq .Role \"assistant\" }} {{ .Content }} @EOS@\n",
    "{{- end }}\n",
    "{{- end }}",
);

/// `@EOS@` is replaced by the model's token text.
const MISTRAL: &str = concat!(
    "{{- $system := .System }}\n",
    "{{- range .Messages }}\n",
    "{{- if eq .Role \"user\" }}[INST] {{ if $system }}{{ $system }}\n",
    "\n",
    "{{ end }}{{ .Content }} [/INST]\n",
    "{{- $system = \"\" }}\n",
    "{{- else if eq .Role \"assistant\" }}{{ .Content }}@EOS@\n",
    "{{- end }}\n",
    "{{- end }}",
);

/// Earlier answers are followed by a blank line, as in Ollama's own Alpaca template (`finetune`
/// trains single turns, answer then EOS).
const ALPACA: &str = concat!(
    "{{- if .System }}{{ .System }}\n",
    "\n",
    "{{ end }}\n",
    "{{- range .Messages }}\n",
    "{{- if eq .Role \"user\" }}### Instruction:\n",
    "{{ .Content }}\n",
    "\n",
    "### Response:\n",
    "{{ else if eq .Role \"assistant\" }}{{ .Content }}\n",
    "\n",
    "{{ end }}\n",
    "{{- end }}",
);

// The Jinja twins of the Go templates above. Text goes through `{{ '...' }}` so that the
// trim_blocks / lstrip_blocks of the chat template environment cannot touch a line break.

const LLAMA3_JINJA: &str = concat!(
    "{{ bos_token }}{% for message in messages %}",
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}",
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
);

const CHATML_JINJA: &str = concat!(
    "{% for message in messages %}",
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}",
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
);

const PHI3_JINJA: &str = concat!(
    "{% for message in messages %}",
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}",
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
);

/// `.System` as in Llama 2, written at the start of the first user message and a blank line.
const GEMMA_JINJA: &str = concat!(
    "{{ bos_token }}",
    "{% set ns = namespace(system=messages | selectattr('role', 'equalto', 'system') | map(attribute='content') | join('\\n\\n')) %}",
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<start_of_turn>user\\n' }}",
    "{% if ns.system %}{{ ns.system + '\\n\\n' }}{% endif %}",
    "{{ message['content'] + '<end_of_turn>\\n' }}{% set ns.system = '' %}",
    "{% elif message['role'] == 'assistant' %}{{ '<start_of_turn>model\\n' + message['content'] + '<end_of_turn>\\n' }}",
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}",
);

/// `.System` (`ns.system`) is every system message, joined by blank lines; it opens the first
/// user message.
const LLAMA2_JINJA: &str = concat!(
    "{{ bos_token }}",
    "{% set ns = namespace(system=messages | selectattr('role', 'equalto', 'system') | map(attribute='content') | join('\\n\\n'), started=false) %}",
    "{% for message in messages %}{% if message['role'] == 'user' %}",
    "{% if ns.started %}{{ bos_token }}{% endif %}{{ '[INST] ' }}",
    "{% if ns.system %}{{ '<<SYS>>\\n' + ns.system + '\\n<</SYS>>\\n\\n' }}{% endif %}",
    "{{ message['content'] + ' [/INST]' }}{% set ns.system = '' %}{% set ns.started = true %}",
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}",
    "{% endif %}{% endfor %}",
);

/// `.System` as in Llama 2, written before the first user message and a blank line.
const MISTRAL_JINJA: &str = concat!(
    "{{ bos_token }}",
    "{% set ns = namespace(system=messages | selectattr('role', 'equalto', 'system') | map(attribute='content') | join('\\n\\n'), started=false) %}",
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' }}",
    "{% if ns.system %}{{ ns.system + '\\n\\n' }}{% endif %}",
    "{{ message['content'] + ' [/INST]' }}{% set ns.system = '' %}",
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}",
    "{% endif %}{% endfor %}",
);

/// The special tokens a template writes, from the model's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// The BOS token's text (`<s>` when the model names none).
    pub bos: String,
    /// The EOS token's text (`</s>` when the model names none).
    pub eos: String,
    /// Whether the runner adds BOS to a prompt (`tokenizer.ggml.add_bos_token`; true when absent).
    pub add_bos: bool,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        SpecialTokens { bos: "<s>".into(), eos: "</s>".into(), add_bos: true }
    }
}

impl SpecialTokens {
    /// The special tokens of a model's GGUF.
    pub fn from_gguf(gguf: &Gguf<'_>) -> SpecialTokens {
        let text = |key: &str| {
            let id = usize::try_from(gguf.get(key)?.as_u64()?).ok()?;
            gguf.get(KEY_TOKENS)?.as_array()?.strings()?.nth(id).map(str::to_owned)
        };
        let default = SpecialTokens::default();
        SpecialTokens {
            bos: text(KEY_BOS_ID).unwrap_or(default.bos),
            eos: text(KEY_EOS_ID).unwrap_or(default.eos),
            add_bos: gguf.get(KEY_ADD_BOS).and_then(|v| v.as_bool()).unwrap_or(default.add_bos),
        }
    }
}

/// The system turn a model's chat template writes by itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TemplateSystem {
    /// Its text when the conversation has no system message.
    pub(super) default: Option<String>,
    /// Text it writes before a given system message.
    pub(super) prefix: String,
    /// Text it writes after a given system message.
    pub(super) suffix: String,
}

impl TemplateFamily {
    /// The system turn the model's template `source` writes by itself, found by rendering two
    /// probe conversations: one without a system message (its default), one with (the text around
    /// it). Only ChatML and Llama 3 have system turns of their own to find; a template that fails
    /// to render, or renders something else first, has none.
    pub(super) fn own_system(self, source: &str, tokens: &SpecialTokens) -> TemplateSystem {
        const USER: &str = "gguftune probe: user";
        const SYSTEM: &str = "gguftune probe: system";
        let Some((open, close)) = self.system_turn() else { return TemplateSystem::default() };
        let Ok(template) = ChatTemplate::new(source, &tokens.bos, &tokens.eos) else {
            return TemplateSystem::default();
        };
        let system_text = |messages: &[Message]| {
            let text = template.render(messages, true).ok()?;
            let text = text.strip_prefix(tokens.bos.as_str()).unwrap_or(&text);
            let body = text.strip_prefix(open)?;
            let end = body.find(close)?;
            body[end..].contains(USER).then(|| body[..end].to_owned())
        };
        let default = system_text(&[Message::new("user", USER)]).filter(|s| !s.is_empty());
        let wrapped = system_text(&[Message::new("system", SYSTEM), Message::new("user", USER)]);
        let (prefix, suffix) =
            wrapped.and_then(|w| w.split_once(SYSTEM).map(|(p, s)| (p.to_owned(), s.to_owned()))).unwrap_or_default();
        TemplateSystem { default, prefix, suffix }
    }
}
