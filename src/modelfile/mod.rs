//! Ollama Modelfiles: a base model GGUF, a LoRA adapter GGUF trained on it, and the chat format
//! the model was trained with, as the text `ollama create NAME -f Modelfile` reads.
//!
//! ```text
//! FROM ./model.gguf
//! ADAPTER ./adapter.gguf
//! TEMPLATE """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>
//!
//! {{ .Content }}<|eot_id|>
//! {{- end }}<|start_header_id|>assistant<|end_header_id|>
//!
//! """
//! PARAMETER stop "<|eot_id|>"
//! ```
//!
//! - **Checks.** The model must be a model, and the adapter a LoRA adapter (`general.type =
//!   adapter`, `adapter.type = lora`) of the same `general.architecture` whose every
//!   `.lora_a`/`.lora_b` pair fits a tensor of the model, with the shapes llama.cpp checks when it
//!   loads an adapter (`llama_adapter_lora_init_impl` in src/llama-adapter.cpp). Ollama hands the
//!   adapter to llama.cpp, so a mismatch found here is one `ollama run` would fail on.
//! - **Chat format.** The model's Jinja chat template (`tokenizer.chat_template`) is recognised
//!   by the markers llama.cpp's `llm_chat_detect_template` (src/llama-chat.cpp) looks for, in its
//!   order ([`TemplateFamily::detect`]), and written as one of seven Go templates: Llama 2,
//!   Llama 3, ChatML (Qwen2 and others), Mistral, Phi-3, Gemma (2 and 3) and, for a model without
//!   a chat template, Alpaca (the prompt `finetune` trains such models with). A template that is
//!   none of them is an error that says what it looks like; the caller may then choose a family.
//! - **How Ollama renders a template** (its template/template.go and server/routes.go; Ollama
//!   0.2.2 and later). A template that mentions `.Messages` is executed with `.Messages` = the
//!   conversation (system messages included, consecutive messages of one role merged) and
//!   `.System` = the system messages joined by blank lines; the Modelfile's SYSTEM becomes the
//!   first message of a request that has none. The runner tokenizes the result with special
//!   tokens parsed and adds BOS when the model asks for it (`tokenizer.ggml.add_bos_token`), as
//!   `finetune` does when it tokenizes text that does not start with BOS. So each template writes
//!   what the model's Jinja writes after its leading `bos_token`, and writes that BOS only for a
//!   model that does not add it. The templates here are written from the Jinja formats, in the
//!   `{{- range .Messages }}` form of Ollama's own library templates (its template/*.gotmpl);
//!   the integration tests render both and compare them.
//! - **System prompts.** A ChatML or Llama 3 template may write a system turn of its own: a
//!   default when the conversation has none (Qwen2's "You are a helpful assistant."), or text
//!   around the one given (Llama 3.1's knowledge-date lines). Both are found by rendering the
//!   model's template on a probe conversation, and carried into SYSTEM. Alpaca's SYSTEM is its
//!   preamble ("Below is an instruction...") unless one is given, as `finetune` renders it.
//! - **Text.** Ollama's parser (parser/parser.go) reads one command per line (names in any case,
//!   `#` comments); a value runs to the end of the line unless it opens with `"` or `"""`, and
//!   then to the line that ends with the same quote. There are no escapes, and the parser drops
//!   every character Go's `strconv.IsPrint` rejects except tabs and line breaks. So values are
//!   written bare when they can be, else quoted, and a value the grammar cannot carry (a line
//!   inside it that ends in `"""`, a character the parser would drop) is an error, not a
//!   Modelfile that means something else.
//! - **Paths.** FROM and ADAPTER are written relative to the Modelfile's folder (`./adapter.gguf`)
//!   when the file is inside it, the way Ollama resolves them, and absolute otherwise, so that a
//!   folder holding the Modelfile and its files can be moved as one. Ollama takes a FROM path
//!   that does not exist for the name of a model to pull, so no path is written that does not
//!   name the file read here.
//! - **Ollama's models.** For a model in Ollama's store (`ollama:NAME`), FROM is its name and
//!   what Ollama already serves it with is kept ([`plan_ollama`]).
//! - **Reading back and creating.** [`parse`] reads a Modelfile as Ollama's parser does, and
//!   [`create`] makes the model in an Ollama server through its HTTP API, merging the adapter
//!   into the base when the server refuses adapters.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::data::ALPACA_PREAMBLE_NO_INPUT;
use crate::gguf::{Gguf, GgufFile, GgufFileError, TensorInfo};

pub mod create;
mod family;
mod ollama;
pub mod parse;

pub use family::{LlamaCppFormat, SpecialTokens, TemplateFamily, Unrecognized, LLAMA_CPP_FORMATS};
pub use ollama::{for_ollama_adapter, plan_ollama};

const KEY_TYPE: &str = "general.type";
const KEY_ARCHITECTURE: &str = "general.architecture";
const KEY_ADAPTER_TYPE: &str = "adapter.type";
const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// Where a Modelfile's chat format came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilySource {
    /// Recognised in the model's `tokenizer.chat_template`.
    Detected,
    /// Chosen by the caller.
    Chosen,
    /// The model has no chat template (Alpaca).
    NoTemplate,
    /// FROM names a model in Ollama's store whose own TEMPLATE is this family's: it is kept,
    /// with its SYSTEM and parameters, so none of them is written.
    Ollama,
}

/// A Modelfile's contents, before they are written as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modelfile {
    /// FROM: the base model's path, as written.
    pub from: String,
    /// ADAPTER: the adapter's path, as written.
    pub adapter: String,
    /// The chat format of TEMPLATE and the stop sequences.
    pub family: TemplateFamily,
    /// Where the format came from.
    pub family_source: FamilySource,
    /// TEMPLATE: the Go template.
    pub template: String,
    /// SYSTEM, when there is one.
    pub system: Option<String>,
    /// One `PARAMETER stop` each.
    pub stop: Vec<String>,
}

impl Modelfile {
    /// The Modelfile's text. Errors when a value cannot be written so that Ollama's parser reads
    /// it back unchanged.
    pub fn to_text(&self) -> Result<String, ModelfileError> {
        let mut out = String::from("# Ollama Modelfile written by gguftune: ollama create NAME -f Modelfile\n");
        command(&mut out, "FROM", &self.from, false)?;
        command(&mut out, "ADAPTER", &self.adapter, false)?;
        let origin = match self.family_source {
            FamilySource::Detected => "recognised in the model's tokenizer.chat_template",
            FamilySource::Chosen => "chosen with --template-family",
            FamilySource::NoTemplate => "the model has no tokenizer.chat_template",
            FamilySource::Ollama => {
                // `ollama create` copies the FROM model's template, system and parameter layers.
                out.push_str(&format!(
                    "# chat format: {} (the TEMPLATE of {}, kept with its SYSTEM and parameters)\n",
                    self.family, self.from
                ));
                return Ok(out);
            }
        };
        out.push_str(&format!("# chat format: {} ({origin})\n", self.family));
        command(&mut out, "TEMPLATE", &self.template, true)?;
        if let Some(system) = &self.system {
            command(&mut out, "SYSTEM", system, true)?;
        }
        for stop in &self.stop {
            command(&mut out, "PARAMETER stop", stop, true)?;
        }
        Ok(out)
    }
}

/// Appends `name value\n`, the value bare when `quote` is false and it reads back unchanged bare,
/// otherwise in `"` or `"""`.
fn command(out: &mut String, name: &'static str, value: &str, quote: bool) -> Result<(), ModelfileError> {
    if let Some((offset, character)) = value.char_indices().find(|(_, c)| dropped_by_ollama(*c)) {
        return Err(ModelfileError::DroppedCharacter { command: name, character, offset });
    }
    let newline = |c: char| c == '\n' || c == '\r';
    let bare = !quote
        && !value.is_empty()
        && !value.contains(newline)
        && !value.starts_with('"')
        && value.trim_matches([' ', '\t']) == value;
    // In `"""`, the parser ends the value at the first line break after which the text so far,
    // trimmed, ends in `"""`; in `"`, at the first after which it ends in `"`.
    let early_end = value
        .match_indices(newline)
        .find(|(offset, _)| value[..*offset].trim_end_matches(is_go_space).ends_with("\"\"\""));
    out.push_str(name);
    out.push(' ');
    if bare {
        out.push_str(value);
    } else if !value.contains(newline) && !value.contains('"') {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else if let Some((offset, _)) = early_end {
        // Then the value has quotes, so `"` cannot carry it either.
        let line = value[..offset].matches('\n').count() + 1;
        return Err(ModelfileError::Unquotable { command: name, line });
    } else {
        out.push_str("\"\"\"");
        out.push_str(value);
        out.push_str("\"\"\"");
    }
    out.push('\n');
    Ok(())
}

/// White space as Go's `strings.TrimSpace` sees it (ASCII and Unicode spaces; others are refused
/// before this is asked).
fn is_go_space(c: char) -> bool {
    c.is_whitespace()
}

/// Whether Ollama's parser drops `c` from a value: it keeps tabs, line breaks and what Go's
/// `strconv.IsPrint` accepts (letters, marks, numbers, punctuation, symbols and the ASCII space).
/// Checked here: control characters, white space other than the ASCII space, the format
/// characters in use (soft hyphen, zero-width and direction marks, BOM, ...) and private use
/// code points. (Unassigned code points, which it drops too, are not.)
fn dropped_by_ollama(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r' | ' ') {
        return false;
    }
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '\u{AD}'
                | '\u{600}'..='\u{605}'
                | '\u{61C}'
                | '\u{6DD}'
                | '\u{70F}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E000}'..='\u{F8FF}'
                | '\u{E0001}'..='\u{E007F}'
                | '\u{F0000}'..
        )
}

/// How to build a Modelfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The system prompt (SYSTEM); `None`: the template's own default, if any.
    pub system: Option<String>,
    /// The chat format; `None`: recognised from the model's chat template.
    pub family: Option<TemplateFamily>,
}

/// Reads and checks `model` and `adapter`, and plans a Modelfile for them. `dir` is the folder
/// the Modelfile will be written to (paths inside it are written relative to it); `None` writes
/// absolute paths.
pub fn plan(model: &Path, adapter: &Path, dir: Option<&Path>, options: &Options) -> Result<Modelfile, ModelfileError> {
    let model_file = GgufFile::open(model)?;
    let model_gguf = model_file.gguf()?;
    let adapter_file = GgufFile::open(adapter)?;
    let adapter_gguf = adapter_file.gguf()?;
    check_pair(model, &model_gguf, adapter, &adapter_gguf)?;
    let format = chat_lines(model, &model_gguf, options)?;
    Ok(Modelfile {
        from: path_text(model, dir)?,
        adapter: path_text(adapter, dir)?,
        family: format.family,
        family_source: format.family_source,
        template: format.template,
        system: format.system,
        stop: format.stop,
    })
}

/// The chat format lines of a Modelfile: TEMPLATE, SYSTEM and the stop parameters.
struct ChatLines {
    family: TemplateFamily,
    family_source: FamilySource,
    template: String,
    system: Option<String>,
    stop: Vec<String>,
}

/// The chat format of the model at `model`: chosen, or recognised in its chat template.
fn chat_lines(model: &Path, model_gguf: &Gguf<'_>, options: &Options) -> Result<ChatLines, ModelfileError> {
    let tokens = SpecialTokens::from_gguf(model_gguf);
    let source = match model_gguf.get(KEY_CHAT_TEMPLATE) {
        None => None,
        Some(value) => Some(value.as_str().ok_or_else(|| ModelfileError::ChatTemplateNotString {
            path: model.to_owned(),
            found: value.value_type().to_string(),
        })?),
    };
    let (family, family_source) = match (options.family, source) {
        (Some(family), _) => (family, FamilySource::Chosen),
        (None, None) => (TemplateFamily::Alpaca, FamilySource::NoTemplate),
        (None, Some(source)) => {
            let family = TemplateFamily::detect(source)
                .map_err(|found| ModelfileError::UnknownTemplate { path: model.to_owned(), found })?;
            (family, FamilySource::Detected)
        }
    };
    let template = family.go_template(&tokens);
    for token in [&tokens.bos, &tokens.eos] {
        if (token.contains("{{") || token.contains("}}")) && template.contains(token.as_str()) {
            return Err(ModelfileError::TokenInTemplate { path: model.to_owned(), token: token.clone() });
        }
    }
    let own = source.map(|source| family.own_system(source, &tokens)).unwrap_or_default();
    let system = match (&options.system, family) {
        (Some(system), _) => Some(format!("{}{system}{}", own.prefix, own.suffix)),
        (None, TemplateFamily::Alpaca) => Some(ALPACA_PREAMBLE_NO_INPUT.trim_end().to_owned()),
        (None, _) => own.default,
    };
    Ok(ChatLines { family, family_source, template, system, stop: family.stop(&tokens) })
}

/// Writes `modelfile` to `path` atomically (see [`crate::io::write_atomic`]).
pub fn write(path: &Path, modelfile: &Modelfile) -> Result<(), ModelfileError> {
    let text = modelfile.to_text()?;
    crate::io::write_atomic(path, text.as_bytes())
        .map_err(|source| ModelfileError::Io { path: path.to_owned(), source })
}

/// Plans and writes the Modelfile `out` for `adapter` on `model`, with paths relative to `out`'s
/// folder and the chat format recognised from the model; what `finetune` writes next to an
/// adapter.
pub fn for_adapter(
    model: &Path,
    adapter: &Path,
    out: &Path,
    system: Option<&str>,
) -> Result<Modelfile, ModelfileError> {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let options = Options { system: system.map(str::to_owned), family: None };
    let modelfile = plan(model, adapter, Some(dir), &options)?;
    write(out, &modelfile)?;
    Ok(modelfile)
}

/// Checks that `model` is a model and `adapter` a LoRA adapter that loads on it.
fn check_pair(
    model: &Path,
    model_gguf: &Gguf<'_>,
    adapter: &Path,
    adapter_gguf: &Gguf<'_>,
) -> Result<(), ModelfileError> {
    let owned = |s: Option<&str>| s.map(str::to_owned);
    if model_gguf.get_str(KEY_TYPE) == Some("adapter") {
        return Err(ModelfileError::ModelIsAdapter { path: model.to_owned() });
    }
    let adapter_type = adapter_gguf.get_str(KEY_TYPE);
    if adapter_type != Some("adapter") {
        return Err(ModelfileError::NotAnAdapter { path: adapter.to_owned(), found: owned(adapter_type) });
    }
    let lora = adapter_gguf.get_str(KEY_ADAPTER_TYPE);
    if lora != Some("lora") {
        return Err(ModelfileError::NotLora { path: adapter.to_owned(), found: owned(lora) });
    }
    let arch = |path: &Path, gguf: &Gguf<'_>| {
        gguf.get_str(KEY_ARCHITECTURE)
            .map(str::to_owned)
            .ok_or_else(|| ModelfileError::NoArchitecture { path: path.to_owned() })
    };
    let (model_arch, adapter_arch) = (arch(model, model_gguf)?, arch(adapter, adapter_gguf)?);
    if model_arch != adapter_arch {
        return Err(ModelfileError::ArchitectureMismatch {
            model: model.to_owned(),
            model_arch,
            adapter: adapter.to_owned(),
            adapter_arch,
        });
    }
    check_tensors(model, model_gguf, adapter, adapter_gguf)
}

/// llama.cpp's checks of an adapter's tensors against the model's (`llama_adapter_lora_init_impl`).
fn check_tensors(
    model: &Path,
    model_gguf: &Gguf<'_>,
    adapter: &Path,
    adapter_gguf: &Gguf<'_>,
) -> Result<(), ModelfileError> {
    let fail = |tensor: &str, problem| ModelfileError::AdapterTensor {
        adapter: adapter.to_owned(),
        model: model.to_owned(),
        tensor: tensor.to_owned(),
        problem: Box::new(problem),
    };
    type Pair<'t, 'a> = (Option<&'t TensorInfo<'a>>, Option<&'t TensorInfo<'a>>);
    let mut pairs: BTreeMap<&str, Pair<'_, '_>> = BTreeMap::new();
    for t in &adapter_gguf.tensors {
        if let Some(base) = t.name.strip_suffix(".lora_a") {
            pairs.entry(base).or_default().0 = Some(t);
        } else if let Some(base) = t.name.strip_suffix(".lora_b") {
            pairs.entry(base).or_default().1 = Some(t);
        } else if !t.name.ends_with("_norm.weight") {
            // llama.cpp skips norm vectors and refuses any other name.
            return Err(fail(t.name, TensorProblem::UnexpectedName));
        }
    }
    for (base, pair) in pairs {
        let (a, b) = match pair {
            (Some(a), Some(b)) => (a, b),
            (None, _) => return Err(fail(base, TensorProblem::MissingHalf { missing: "lora_a" })),
            (_, None) => return Err(fail(base, TensorProblem::MissingHalf { missing: "lora_b" })),
        };
        let w = model_gguf.tensor(base).ok_or_else(|| fail(base, TensorProblem::NotInModel))?;
        let ne = |t: &TensorInfo<'_>, i: usize| t.ne.get(i).copied().unwrap_or(1);
        let fits = if base.ends_with("token_embd.weight") {
            ne(w, 0) == ne(b, 1) && ne(w, 1) == ne(a, 1)
        } else {
            ne(w, 0) == ne(a, 0) && ne(w, 1) == ne(b, 1) && ne(a, 1) == ne(b, 0)
        };
        if !fits {
            let problem = TensorProblem::WrongShape { model_ne: w.ne.clone(), a_ne: a.ne.clone(), b_ne: b.ne.clone() };
            return Err(fail(base, problem));
        }
    }
    Ok(())
}

/// `file` as FROM or ADAPTER write it: `./` and its path below `dir` when it is inside `dir`
/// (both resolved through symlinked folders, not through a symlinked file itself), else its
/// absolute path.
fn path_text(file: &Path, dir: Option<&Path>) -> Result<String, ModelfileError> {
    let canonical = |path: &Path| {
        let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
        std::fs::canonicalize(path).map_err(|source| ModelfileError::Io { path: path.to_owned(), source })
    };
    let absolute = match (file.parent(), file.file_name()) {
        (Some(parent), Some(name)) => canonical(parent)?.join(name),
        _ => canonical(file)?,
    };
    let utf8 =
        |path: &Path| path.to_str().map(str::to_owned).ok_or(ModelfileError::NonUtf8Path { path: file.to_owned() });
    if let Some(dir) = dir {
        if let Ok(below) = absolute.strip_prefix(canonical(dir)?) {
            let parts = below.iter().map(|p| utf8(Path::new(p))).collect::<Result<Vec<_>, _>>()?;
            return Ok(format!("./{}", parts.join("/")));
        }
    }
    utf8(&absolute)
}

/// What is wrong with one of an adapter's tensor pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorProblem {
    /// Neither `.lora_a`, `.lora_b` nor a norm vector.
    UnexpectedName,
    /// One half of the pair is missing.
    MissingHalf { missing: &'static str },
    /// The model has no such tensor.
    NotInModel,
    /// The shapes do not fit the model's tensor (`ne` of the model's tensor, `lora_a`, `lora_b`).
    WrongShape { model_ne: Vec<u64>, a_ne: Vec<u64>, b_ne: Vec<u64> },
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorProblem::UnexpectedName => f.write_str("not a .lora_a or .lora_b tensor"),
            TensorProblem::MissingHalf { missing } => write!(f, "its .{missing} tensor is missing"),
            TensorProblem::NotInModel => f.write_str("the model has no such tensor"),
            TensorProblem::WrongShape { model_ne, a_ne, b_ne } => {
                write!(
                    f,
                    "the model's tensor has ne {model_ne:?}, which lora_a {a_ne:?} and lora_b {b_ne:?} do not fit"
                )
            }
        }
    }
}

/// Why a Modelfile cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelfileError {
    /// The model or the adapter cannot be read as a GGUF file.
    #[error(transparent)]
    Read(#[from] GgufFileError),
    /// The model is an adapter.
    #[error("{}: this is a LoRA adapter, not a model (hint: --model takes the base model, --adapter the adapter)", path.display())]
    ModelIsAdapter { path: PathBuf },
    /// The adapter's `general.type` is not `adapter`.
    #[error("{}: not an adapter: general.type is {} (expected \"adapter\")", path.display(), quoted_or_missing(found))]
    NotAnAdapter { path: PathBuf, found: Option<String> },
    /// The adapter's `adapter.type` is not `lora`.
    #[error("{}: adapter.type is {} (expected \"lora\": Ollama loads LoRA adapters only)", path.display(), quoted_or_missing(found))]
    NotLora { path: PathBuf, found: Option<String> },
    /// A file has no `general.architecture`.
    #[error("{}: no general.architecture", path.display())]
    NoArchitecture { path: PathBuf },
    /// The adapter was trained on a model of another architecture.
    #[error("the adapter {} is for a '{adapter_arch}' model, but {} is '{model_arch}' (hint: an adapter loads only on the model it was trained on)", adapter.display(), model.display())]
    ArchitectureMismatch { model: PathBuf, model_arch: String, adapter: PathBuf, adapter_arch: String },
    /// One of the adapter's tensors does not fit the model.
    #[error("{}: tensor '{tensor}' does not fit {}: {problem} (hint: an adapter loads only on the model it was trained on)", adapter.display(), model.display())]
    AdapterTensor { adapter: PathBuf, model: PathBuf, tensor: String, problem: Box<TensorProblem> },
    /// `tokenizer.chat_template` is not a string.
    #[error("{}: tokenizer.chat_template is a {found}, not a string", path.display())]
    ChatTemplateNotString { path: PathBuf, found: String },
    /// The chat template is of no family here.
    #[error("{}: tokenizer.chat_template is {found}, which has no Ollama template here (hint: if the model was trained in one of the formats llama2, llama3, chatml, mistral, phi3, gemma or alpaca, choose it: gguftune modelfile --template-family NAME)", path.display())]
    UnknownTemplate { path: PathBuf, found: Unrecognized },
    /// A BOS or EOS token text that would break the Go template.
    #[error("{}: the special token {token:?} contains '{{{{' or '}}}}', which cannot be written in an Ollama template", path.display())]
    TokenInTemplate { path: PathBuf, token: String },
    /// A value has a character Ollama's parser would drop.
    #[error("the {command} text has the character {character:?} (U+{:04X}) at byte {offset}, which Ollama's Modelfile parser drops", u32::from(*character))]
    DroppedCharacter { command: &'static str, character: char, offset: usize },
    /// A value has a line ending in `"""` followed by more lines, which the parser would read as
    /// the end of the value.
    #[error("the {command} text cannot be written in a Modelfile: its line {line} ends in \"\"\", which Ollama's parser reads as the end of the text")]
    Unquotable { command: &'static str, line: usize },
    /// A Modelfile read back has a line Ollama's parser would refuse, or one gguftune cannot
    /// carry to Ollama's API.
    #[error("{}: line {line}: {problem}", path.display())]
    Syntax { path: PathBuf, line: usize, problem: parse::SyntaxProblem },
    /// A Modelfile read back has no ADAPTER line.
    #[error("{} has no ADAPTER line (hint: finetune writes one next to the adapter; or give --model, the base model the adapter was trained on)", path.display())]
    NoAdapterLine { path: PathBuf },
    /// A Modelfile read back has several ADAPTER lines.
    #[error("{} has {n} ADAPTER lines, and ollama-create makes a model of one adapter (hint: give --model, the base model the adapter was trained on, to write a Modelfile for it)", path.display())]
    SeveralAdapters { path: PathBuf, n: usize },
    /// A Modelfile read back is for another adapter.
    #[error("{} is for the adapter {named}, not {} (hint: give --model, the base model {} was trained on, to write a Modelfile for it)", path.display(), adapter.display(), adapter.display())]
    OtherAdapter { path: PathBuf, named: String, adapter: PathBuf },
    /// FROM of a Modelfile read back is neither a file nor an Ollama model name.
    #[error("{}: FROM {from} is neither a file (relative to the Modelfile's folder) nor an Ollama model name", path.display())]
    BadFrom { path: PathBuf, from: String },
    /// A path that is not UTF-8 (a Modelfile is text).
    #[error("{}: the path is not valid UTF-8", path.display())]
    NonUtf8Path { path: PathBuf },
    /// Reading a folder or writing the Modelfile failed.
    #[error("{}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn quoted_or_missing(value: &Option<String>) -> String {
    value.as_deref().map_or_else(|| "missing".to_owned(), |v| format!("{v:?}"))
}
