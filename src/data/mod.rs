//! Training data: JSONL datasets in the formats people already have, the model's chat template,
//! and the split of every example into text the loss ignores and text it is trained on.
//!
//! The path of one example:
//!
//! ```text
//! train.jsonl ──read_jsonl──▶ Dataset { format, entries: [Entry { line, record }] }
//!                                  │
//!            ChatTemplate ─────────┤ (from the GGUF's tokenizer.chat_template, or none)
//!                                  ▼
//!                   render(record) ──▶ Rendered { segments: [Segment { text, trainable }] }
//!                                  ──▶ tokenized, masked and packed by the training step
//! ```
//!
//! - [`read_jsonl`] streams a file line by line and turns each line into a [`Record`]. The format
//!   is decided by the first record and every other line must have that format's fields (see
//!   [`Format::detect`]). Every error names `file:line:column` and what was expected there.
//! - [`ChatTemplate`] renders chat messages with the model's own Jinja template, in an environment
//!   set up as transformers' `apply_chat_template` sets up Jinja2, under a fuel budget and an
//!   output cap so that a hostile template cannot loop forever or fill memory.
//! - [`render`] turns a record into [`Segment`]s: prompts are not trainable, completions and
//!   assistant turns (with the end-of-turn text the template puts after them) are, unless
//!   [`RenderOptions::train_on_prompt`].
//!
//! Limits, all applied before the work they bound: [`MAX_LINE_BYTES`] per line,
//! [`MAX_JSON_DEPTH`] levels of JSON nesting (checked by a flat scan before serde_json, whose own
//! recursion limit of 128 stays on as a second guard), [`TemplateLimits`] per template render.
//!
//! What this module does not do: tokenize (that needs the model's vocabulary, through
//! llama.cpp), mask token ids, pack or batch. It hands over text with a trainable flag per piece
//! and two facts the tokenizer step needs: whether the text already begins with the BOS token's
//! text ([`Rendered::bos_in_text`]) and whether an EOS token is to be appended
//! ([`Rendered::append_eos`]).

mod format;
mod render;
mod template;

use std::fmt;
use std::path::PathBuf;

pub use format::{
    read_jsonl, read_jsonl_as, read_jsonl_from, Dataset, Entry, Message, Record, MAX_JSON_DEPTH, MAX_LINE_BYTES,
};
pub use render::{
    alpaca_prompt, render, PrefixCheck, RenderError, RenderOptions, Rendered, Segment, ALPACA_PREAMBLE,
    ALPACA_PREAMBLE_NO_INPUT,
};
pub use template::{
    ChatTemplate, TemplateError, TemplateLimits, DEFAULT_FUEL, DEFAULT_MAX_OUTPUT_BYTES, MAX_SOURCE_BYTES,
};

/// A dataset format, decided per file from its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// `{"text": ...}`: plain text, all of it trained on.
    Text,
    /// `{"prompt": ..., "completion": ...}` (TRL's standard prompt-completion format).
    PromptCompletion,
    /// `{"instruction": ..., "input": ..., "output": ...}` (Stanford Alpaca), with an optional
    /// `system` (LLaMA-Factory's Alpaca format).
    Alpaca,
    /// `{"instruction": ..., "context": ..., "response": ...}` (databricks-dolly-15k).
    Dolly,
    /// `{"messages": [{"role": ..., "content": ...}, ...]}` (OpenAI / TRL conversational).
    Chat,
}

impl Format {
    /// Every format, in detection order.
    pub const ALL: [Format; 5] = [Format::Chat, Format::Alpaca, Format::Dolly, Format::PromptCompletion, Format::Text];

    /// The format's name as users write it (`--format alpaca`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::PromptCompletion => "prompt-completion",
            Format::Alpaca => "alpaca",
            Format::Dolly => "dolly",
            Format::Chat => "chat",
        }
    }

    /// The fields a record of this format must have; their presence identifies the format.
    pub fn required_fields(self) -> &'static [&'static str] {
        match self {
            Format::Text => &["text"],
            Format::PromptCompletion => &["prompt", "completion"],
            Format::Alpaca => &["instruction", "output"],
            Format::Dolly => &["instruction", "response"],
            Format::Chat => &["messages"],
        }
    }

    /// The formats whose required fields are all among `keys`.
    ///
    /// Detection rule: a file's format is the one format whose required fields the first
    /// record has (extra fields, such as Dolly's `category` or an `id`, are ignored). No match,
    /// or more than one (a record with both `text` and `messages`), is an error that names the
    /// line, rather than a guess. Per-file rather than per-line detection is what LLaMA-Factory
    /// and axolotl do (a dataset has one format), and it is what lets a line that lacks a field
    /// be reported as such ("expected field 'instruction' (alpaca format)") instead of being
    /// silently read as some other format.
    pub fn detect<'k>(keys: impl Iterator<Item = &'k str> + Clone) -> Vec<Format> {
        let has_all = |format: &Format| format.required_fields().iter().all(|f| keys.clone().any(|k| k == *f));
        Format::ALL.into_iter().filter(has_all).collect()
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of a JSON value, for "expected ..., found ..." messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl JsonKind {
    /// The kind of `value`.
    pub fn of(value: &serde_json::Value) -> JsonKind {
        match value {
            serde_json::Value::Null => JsonKind::Null,
            serde_json::Value::Bool(_) => JsonKind::Bool,
            serde_json::Value::Number(_) => JsonKind::Number,
            serde_json::Value::String(_) => JsonKind::String,
            serde_json::Value::Array(_) => JsonKind::Array,
            serde_json::Value::Object(_) => JsonKind::Object,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        })
    }
}

/// Where in a record a field is: a top-level key or a key of one chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldPath {
    /// A top-level field, e.g. `instruction`.
    Key(&'static str),
    /// `messages[index]` itself, or its field `key`.
    Message {
        /// Index of the message in `messages`.
        index: usize,
        /// The field of the message, or `None` for the message as a whole.
        key: Option<&'static str>,
    },
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPath::Key(key) => write!(f, "'{key}'"),
            FieldPath::Message { index, key: None } => write!(f, "'messages[{index}]'"),
            FieldPath::Message { index, key: Some(key) } => write!(f, "'messages[{index}].{key}'"),
        }
    }
}

/// An error reading or rendering a dataset. Errors tied to a line of a file carry the path, the
/// 1-based line and, where a place within the line is known, the 1-based byte column (as
/// serde_json counts it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A line is longer than [`MAX_LINE_BYTES`]; it is refused before it is buffered whole.
    #[error("{}:{line}: line is longer than {max_bytes} bytes (hint: one JSON object per line is expected; is this a pretty-printed JSON file rather than JSONL?)", path.display())]
    LineTooLong { path: PathBuf, line: usize, max_bytes: usize },
    /// A line is not valid UTF-8; `column` is the first invalid byte.
    #[error("{}:{line}:{column}: invalid UTF-8", path.display())]
    InvalidUtf8 { path: PathBuf, line: usize, column: usize },
    /// A line is not valid JSON (`error` says what serde_json expected).
    #[error("{}:{line}:{column}: invalid JSON: {}", path.display(), json_message(error))]
    Json { path: PathBuf, line: usize, column: usize, error: serde_json::Error },
    /// A line nests arrays and objects deeper than [`MAX_JSON_DEPTH`].
    #[error("{}:{line}:{column}: JSON nested deeper than {max_depth} levels", path.display())]
    TooDeep { path: PathBuf, line: usize, column: usize, max_depth: usize },
    /// A line holds valid JSON that is not an object.
    #[error("{}:{line}:{column}: expected a JSON object, found {found}", path.display())]
    NotAnObject { path: PathBuf, line: usize, column: usize, found: JsonKind },
    /// The first record's fields match no known format.
    #[error("{}:{line}:{column}: cannot tell the dataset format from the fields {} (expected {})", path.display(), quote_list(fields), format_list())]
    UnknownFormat { path: PathBuf, line: usize, column: usize, fields: Vec<String> },
    /// The first record has the fields of two formats.
    #[error("{}:{line}:{column}: the record has the fields of both the {first} and the {second} format (hint: keep only one of them in the file)", path.display())]
    AmbiguousFormat { path: PathBuf, line: usize, column: usize, first: Format, second: Format },
    /// A record lacks a field its format requires; `column` is where its object starts.
    #[error("{}:{line}:{column}: expected field {field} ({format} format)", path.display())]
    MissingField { path: PathBuf, line: usize, column: usize, field: FieldPath, format: Format },
    /// A field has the wrong JSON type; `column` is where its value starts.
    #[error("{}:{line}:{column}: field {field}: expected {expected}, found {found} ({format} format)", path.display())]
    WrongType {
        path: PathBuf,
        line: usize,
        column: usize,
        field: FieldPath,
        expected: JsonKind,
        found: JsonKind,
        format: Format,
    },
    /// A chat record has an empty `messages` array.
    #[error("{}:{line}:{column}: expected at least one message in 'messages' (chat format)", path.display())]
    NoMessages { path: PathBuf, line: usize, column: usize },
    /// The file has no record: it is empty or holds only blank lines.
    #[error("{}: the dataset is empty (expected one JSON object per line)", path.display())]
    Empty { path: PathBuf },
    /// A record could not be rendered into training text.
    #[error("{}:{line}: cannot render the record", path.display())]
    Render { path: PathBuf, line: usize, source: RenderError },
    /// A chat template failed outside any record (it does not compile, for instance).
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// serde_json's message without the " at line L column C" it appends: per-line parsing makes its
/// line always 1, and the real line and column are already in front.
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

/// `'a', 'b', 'c'`.
fn quote_list(items: &[String]) -> String {
    if items.is_empty() {
        return "(none)".to_owned();
    }
    items.iter().map(|item| format!("'{item}'")).collect::<Vec<_>>().join(", ")
}

/// The accepted formats and their fields, for [`DataError::UnknownFormat`].
fn format_list() -> String {
    let format = |f: Format| format!("{} {{{}}}", f.name(), f.required_fields().join(", "));
    Format::ALL.into_iter().map(format).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_formats_from_keys() {
        let detect = |keys: &[&str]| Format::detect(keys.iter().copied());
        assert_eq!(detect(&["text"]), [Format::Text]);
        assert_eq!(detect(&["prompt", "completion"]), [Format::PromptCompletion]);
        assert_eq!(detect(&["instruction", "input", "output"]), [Format::Alpaca]);
        assert_eq!(detect(&["instruction", "output"]), [Format::Alpaca]);
        assert_eq!(detect(&["instruction", "context", "response", "category"]), [Format::Dolly]);
        assert_eq!(detect(&["messages", "id"]), [Format::Chat]);
        assert_eq!(detect(&["text", "messages"]), [Format::Chat, Format::Text]);
        assert_eq!(detect(&["prompt"]), []);
        assert_eq!(detect(&["instruction", "input"]), []);
    }

    #[test]
    fn field_paths_display_quoted() {
        assert_eq!(FieldPath::Key("output").to_string(), "'output'");
        assert_eq!(FieldPath::Message { index: 2, key: Some("role") }.to_string(), "'messages[2].role'");
        assert_eq!(FieldPath::Message { index: 0, key: None }.to_string(), "'messages[0]'");
    }

    #[test]
    fn json_message_drops_serde_position() {
        let error = serde_json::from_str::<serde_json::Value>("{\"a\" 1}").unwrap_err();
        assert_eq!(json_message(&error), "expected `:`");
    }

    #[test]
    fn unknown_format_lists_what_is_accepted() {
        let error = DataError::UnknownFormat {
            path: "d.jsonl".into(),
            line: 1,
            column: 1,
            fields: vec!["question".into(), "answer".into()],
        };
        assert_eq!(
            error.to_string(),
            "d.jsonl:1:1: cannot tell the dataset format from the fields 'question', 'answer' (expected chat \
             {messages}, alpaca {instruction, output}, dolly {instruction, response}, prompt-completion \
             {prompt, completion}, text {text})"
        );
    }
}
