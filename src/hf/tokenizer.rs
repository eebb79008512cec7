//! Hugging Face tokenizers as GGUF tokenizer metadata.
//!
//! [`load_tokenizer`] reads a model folder's `tokenizer.json` (with serde_json, not the
//! `tokenizers` crate) or, when there is none, its SentencePiece `tokenizer.model` (see
//! src/hf/sentencepiece.rs), then `tokenizer_config.json` and, when present, `config.json`,
//! `generation_config.json` and `chat_template.jinja`, and returns a [`GgufTokenizer`]: the
//! `tokenizer.*` keys that make llama.cpp tokenize exactly as the Hugging Face tokenizer does.
//! [`GgufTokenizer::to_metadata`] spells them as llama.cpp reads them (src/llama-vocab.cpp
//! `llama_vocab::impl::load`, key names from src/llama-arch.cpp). The special tokens, the chat
//! template and the padding of the vocabulary are worked out the same way for both files.
//!
//! Two kinds of tokenizer.json are supported, both BPE models:
//! - **SentencePiece-style BPE with byte fallback** (Llama 2, Mistral): `tokenizer.ggml.model =
//!   "llama"`. llama.cpp's SentencePiece tokenizer merges the adjacent pair whose *result* has the
//!   highest score, so each token's score is minus the rank of the first merge that produces it:
//!   the merge order of the Hugging Face BPE. (gguf-py's `LlamaHfVocab` writes -1000 for every
//!   token, which makes llama.cpp merge left to right instead.) Byte tokens `<0xXX>` get type 6.
//!   `add_space_prefix` comes from the normalizer (`Prepend("▁")`) or the `Metaspace`
//!   pre-tokenizer's prepend scheme, overridden by `add_prefix_space` in `tokenizer_config.json`
//!   as convert_hf_to_gguf.py does.
//! - **Byte-level BPE** (GPT-2, Llama 3, Qwen 2, Falcon): `tokenizer.ggml.model = "gpt2"`, with
//!   merges. convert_hf_to_gguf.py picks `tokenizer.ggml.pre` by hashing the tokens of a test
//!   string; here it comes from the pre-tokenizer's split regexes and the model's `ignore_merges`,
//!   looked up in a table of the pre-tokenizers llama.cpp implements ([`PRE_TOKENIZERS`], keep in
//!   sync with llama-cpp-sys-2's `llm_tokenizer_bpe` in src/llama-vocab.cpp). An unknown regex is
//!   an error, never a guess.
//!
//! Anything llama.cpp cannot reproduce (other normalizers, WordPiece or Unigram models, BPE
//! dropout, a byte-level pre-tokenizer that adds a prefix space, missing byte tokens) is refused
//! with an error naming the file and the JSON field. Known remaining differences, which no GGUF
//! key can express: llama.cpp does not apply an `NFC` normalizer (accepted for byte-level
//! tokenizers such as Qwen 2; only non-NFC input tokenizes differently); for a `Metaspace`
//! pre-tokenizer (instead of Llama 2's `Prepend` + `Replace` normalizers) llama.cpp also prepends
//! '▁' to text that already starts with a space and, for `prepend_scheme: "first"`, after special
//! tokens; llama.cpp ignores the `lstrip`/`rstrip` flags of added tokens; and a SentencePiece-style
//! score is per token, not per merge, so two merges producing the same token share a priority.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::checkpoint::read_json;
use super::sentencepiece::SPM_FILE;
use super::HfError;
use crate::gguf::{MetaArray, MetaValue};

/// The tokenizer file.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Special tokens, `add_bos_token`/`add_eos_token` and the chat template.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Fallback ids of the special tokens.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
/// Chat template of newer checkpoints, when `tokenizer_config.json` has none.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
const CONFIG_FILE: &str = "config.json";
const CHAT_TEMPLATE_JSON_FILE: &str = "chat_template.json";

/// Token ids at or above this are refused before anything is allocated for them (the largest
/// vocabularies in use have about 260k tokens).
pub const MAX_TOKEN_ID: u32 = 1 << 22;

/// Values of `tokenizer.ggml.token_type` (llama.cpp `llama_token_type`, gguf-py `TokenType`).
pub mod token_type {
    /// An ordinary vocabulary token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A special token (`<s>`, `<|im_end|>`): matched in text only when parsing specials.
    pub const CONTROL: i32 = 3;
    /// A non-special added token: always matched in text before tokenizing.
    pub const USER_DEFINED: i32 = 4;
    /// A padding entry that no text produces.
    pub const UNUSED: i32 = 5;
    /// A byte-fallback token `<0xXX>`.
    pub const BYTE: i32 = 6;
}

/// Which llama.cpp tokenizer reads the vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerModel {
    /// SentencePiece-style BPE with byte fallback: `tokenizer.ggml.model = "llama"`.
    Llama,
    /// Byte-level BPE: `tokenizer.ggml.model = "gpt2"`.
    Gpt2,
}

impl TokenizerModel {
    /// The value of `tokenizer.ggml.model`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            TokenizerModel::Llama => "llama",
            TokenizerModel::Gpt2 => "gpt2",
        }
    }
}

/// The `tokenizer.*` metadata of a GGUF, as llama.cpp reads it. `None` fields are not written, so
/// llama.cpp uses its defaults for them.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTokenizer {
    /// `tokenizer.ggml.model`.
    pub model: TokenizerModel,
    /// `tokenizer.ggml.pre`: the pre-tokenizer (byte-level BPE only).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by id; unassigned ids are `[PAD{id}]`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece-style only): higher merges first.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`, one of the [`token_type`] values per token.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges` in `"a b"` form, by rank (byte-level BPE only).
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece-style only).
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

impl GgufTokenizer {
    /// The GGUF key-value pairs, with llama.cpp's key names and value types (gguf-py
    /// `GGUFWriter.add_token_list` and friends): strings, `[string]`, `[f32]`, `[i32]`, u32 ids
    /// and bools. Merges are always written for `gpt2`, since llama.cpp refuses a BPE vocabulary
    /// without them.
    pub fn to_metadata(&self) -> Vec<(String, MetaValue)> {
        let mut out: Vec<(String, MetaValue)> = Vec::new();
        let mut push = |key: &str, value: MetaValue| out.push((key.to_owned(), value));
        push("tokenizer.ggml.model", self.model.gguf_name().into());
        if let Some(pre) = &self.pre {
            push("tokenizer.ggml.pre", pre.as_str().into());
        }
        push("tokenizer.ggml.tokens", MetaValue::Array(MetaArray::String(self.tokens.clone())));
        if let Some(scores) = &self.scores {
            push("tokenizer.ggml.scores", MetaValue::Array(MetaArray::F32(scores.clone())));
        }
        push("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(self.token_types.clone())));
        if self.model == TokenizerModel::Gpt2 || !self.merges.is_empty() {
            push("tokenizer.ggml.merges", MetaValue::Array(MetaArray::String(self.merges.clone())));
        }
        let ids = [
            ("tokenizer.ggml.bos_token_id", self.bos_id),
            ("tokenizer.ggml.eos_token_id", self.eos_id),
            ("tokenizer.ggml.unknown_token_id", self.unk_id),
            ("tokenizer.ggml.padding_token_id", self.pad_id),
        ];
        for (key, id) in ids {
            if let Some(id) = id {
                push(key, MetaValue::U32(id));
            }
        }
        let flags = [
            ("tokenizer.ggml.add_bos_token", self.add_bos),
            ("tokenizer.ggml.add_eos_token", self.add_eos),
            ("tokenizer.ggml.add_space_prefix", self.add_space_prefix),
        ];
        for (key, flag) in flags {
            if let Some(flag) = flag {
                push(key, MetaValue::Bool(flag));
            }
        }
        if let Some(template) = &self.chat_template {
            push("tokenizer.chat_template", template.as_str().into());
        }
        out
    }
}

// ----- Pre-tokenizer table --------------------------------------------------------------------

/// GPT-2's split regex, as the `ByteLevel` pre-tokenizer applies it when `use_regex` is true.
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// llama.cpp's spelling of the GPT-2 regex (without the final `|\s+`, which changes nothing there:
/// llama.cpp keeps unmatched text as pieces too).
const GPT2_REGEX_LLAMA_CPP: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

// The regexes below are the ones in tokenizer.json, copied from src/llama-vocab.cpp
// (`llm_tokenizer_bpe::llm_tokenizer_bpe`: the "original regex from tokenizer.json" comments where
// llama.cpp adapted the regex, else the expressions themselves).
const LLAMA3: &[&str] = &[
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
];
const QWEN2: &[&str] = &[
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
];
const QWEN35: &[&str] = &[
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
];
const TEKKEN: &[&str] = &[
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
];
const GPT4O: &[&str] = &[
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
];
const DEEPSEEK_LLM: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
    "\\s+$",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}+",
];
const DEEPSEEK_CODER: &[&str] = &["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"];
/// llama.cpp's regex for tokenizers' `Punctuation` pre-tokenizer with `Contiguous` behavior. Its
/// `is_punc` is ASCII punctuation or a Unicode `P*` character: `\p{P}` plus the ASCII symbols
/// `$`, `+`, `<`, `=`, `>`, `^`, `~`, `|` and the backtick.
const PUNCTUATION_REGEX: &str = "[\\p{P}\\$\\+<=>\\^~\\|`]+";
/// The one `Split` accepted after `ByteLevel` (Falcon's): groups of three ASCII digits, which the
/// byte-level mapping leaves as they are.
const DIGIT_GROUPS_REGEX: &str = "[0-9][0-9][0-9]";
/// Falcon (tiiuae/falcon-7b, falcon-40b): `Punctuation` (Contiguous), `ByteLevel` (GPT-2's
/// regex), `Digits` (individual_digits false), `Split("[0-9][0-9][0-9]", Isolated)`.
///
/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_FALCON` splits with [`PUNCTUATION_REGEX`], GPT-2's regex and
/// `[0-9][0-9][0-9]`: it has no `Digits` step (the `\p{N}+` here), which tokenizers runs on the
/// byte-level characters, after `ByteLevel`. So llama.cpp's pieces differ from the Hugging Face
/// ones in two cases:
/// - a space before a run of one or two digits (`" 42"`): `Digits` splits the space off,
///   llama.cpp keeps `" 42"` one piece (longer runs agree: `[0-9][0-9][0-9]` isolates their first
///   three digits from the space either way);
/// - the bytes 0xB2, 0xB3, 0xB9 and 0xBC..=0xBE are the numeric byte-level characters '²', '³',
///   '¹', '¼', '½' and '¾', so `Digits` splits text whose UTF-8 has one of them ("ü" is C3 BC,
///   "ó" C3 B3) between its bytes; llama.cpp does not.
///
/// The tokens differ only where a merge joins across such a split (`Ġ 4`, `Ã ¼`), which a BPE
/// trained with this pre-tokenizer never learns. convert_hf_to_gguf.py writes "falcon" for
/// tiiuae/falcon-7b all the same (`get_vocab_base_pre`, chkhsh `8aeee386…`), and llama.cpp sets
/// no flag for it (`ignore_merges` stays false).
const FALCON: &[&str] = &[PUNCTUATION_REGEX, GPT2_REGEX, "\\p{N}+", DIGIT_GROUPS_REGEX];
const DEEPSEEK_V3: &[&str] = &[
    "\\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
];

/// A byte-level pre-tokenizer llama.cpp implements.
#[derive(Clone, Copy, Debug)]
pub struct PreTokenizer {
    /// The value of `tokenizer.ggml.pre`.
    pub pre: &'static str,
    /// The split regexes, applied one after the other as a `Sequence` of `Split(..., "Isolated")`
    /// pre-tokenizers does (`Digits` is `\p{N}` or `\p{N}+`, a `Contiguous` `Punctuation` is
    /// llama.cpp's Falcon punctuation regex; a `ByteLevel` with `use_regex` appends GPT-2's regex).
    pub regexes: &'static [&'static str],
    /// Whether llama.cpp sets `ignore_merges` for this pre-tokenizer; it must equal the model's.
    pub ignore_merges: bool,
}

/// The pre-tokenizers recognised, by split regexes and `ignore_merges` (from `llama_vocab::impl::load`
/// in src/llama-vocab.cpp; the first match wins).
pub const PRE_TOKENIZERS: &[PreTokenizer] = &[
    PreTokenizer { pre: "llama-bpe", regexes: LLAMA3, ignore_merges: true },
    PreTokenizer { pre: "dbrx", regexes: LLAMA3, ignore_merges: false },
    PreTokenizer { pre: "qwen2", regexes: QWEN2, ignore_merges: false },
    PreTokenizer { pre: "qwen35", regexes: QWEN35, ignore_merges: true },
    PreTokenizer { pre: "gpt-2", regexes: &[GPT2_REGEX], ignore_merges: false },
    PreTokenizer { pre: "starcoder", regexes: &["\\p{N}", GPT2_REGEX], ignore_merges: false },
    PreTokenizer { pre: "tekken", regexes: TEKKEN, ignore_merges: true },
    PreTokenizer { pre: "gpt-4o", regexes: GPT4O, ignore_merges: false },
    PreTokenizer { pre: "deepseek-llm", regexes: DEEPSEEK_LLM, ignore_merges: false },
    PreTokenizer { pre: "deepseek-coder", regexes: DEEPSEEK_CODER, ignore_merges: false },
    PreTokenizer { pre: "deepseek-v3", regexes: DEEPSEEK_V3, ignore_merges: false },
    PreTokenizer { pre: "falcon", regexes: FALCON, ignore_merges: false },
];

/// [`PRE_TOKENIZERS`] in words, for error messages.
const SUPPORTED_PRE: &str = "'llama-bpe' (Llama 3 regex with ignore_merges), 'dbrx' (Llama 3 regex without), \
'qwen2', 'qwen35', 'gpt-2' (ByteLevel's own regex), 'starcoder' (individual Digits then ByteLevel's regex), \
'tekken', 'gpt-4o', 'deepseek-llm', 'deepseek-coder', 'deepseek-v3', \
'falcon' (Contiguous Punctuation, ByteLevel's regex, then Digits and Split [0-9][0-9][0-9])";

/// A regex in one spelling: literal CR, LF and TAB characters (JSON `"\r"`) as their regex escapes
/// (JSON `"\\r"`), which match the same text.
fn canonical_regex(regex: &str) -> String {
    let mut out = String::with_capacity(regex.len());
    for c in regex.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    if out == GPT2_REGEX_LLAMA_CPP {
        return GPT2_REGEX.to_owned();
    }
    out
}

/// The `tokenizer.ggml.pre` of byte-level tokenizer splitting with `regexes`.
fn find_pre(path: &Path, regexes: &[String], ignore_merges: bool) -> Result<&'static str, HfError> {
    let same = |entry: &PreTokenizer| {
        entry.regexes.len() == regexes.len()
            && entry.regexes.iter().zip(regexes).all(|(a, b)| canonical_regex(a) == canonical_regex(b))
    };
    PRE_TOKENIZERS
        .iter()
        .find(|entry| same(entry) && entry.ignore_merges == ignore_merges)
        .map(|entry| entry.pre)
        .ok_or_else(|| HfError::UnknownPreTokenizer {
            path: path.to_owned(),
            regexes: regexes.to_vec(),
            ignore_merges,
            supported: SUPPORTED_PRE,
        })
}

// ----- JSON access ----------------------------------------------------------------------------

/// A normalizer, pre-tokenizer or post-processor with its JSON path (`pre_tokenizer.pretokenizers[1]`).
type Component<'v> = (String, &'v Map<String, Value>);

/// Typed access to one JSON file's values, naming the file and the field on errors.
pub(super) struct Json<'p> {
    pub(super) path: &'p Path,
}

impl Json<'_> {
    pub(super) fn field_error(&self, field: &str, expected: &'static str) -> HfError {
        HfError::TokenizerField { path: self.path.to_owned(), field: field.to_owned(), expected }
    }

    fn unsupported(&self, field: &str, found: &str, expected: &'static str) -> HfError {
        HfError::UnsupportedTokenizer {
            path: self.path.to_owned(),
            field: field.to_owned(),
            found: found.to_owned(),
            expected,
        }
    }

    pub(super) fn object<'v>(&self, value: &'v Value, field: &str) -> Result<&'v Map<String, Value>, HfError> {
        value.as_object().ok_or_else(|| self.field_error(field, "a JSON object"))
    }

    /// `obj[key]` as a string; `None` when absent or null.
    pub(super) fn opt_str<'v>(
        &self,
        obj: &'v Map<String, Value>,
        key: &str,
        field: &str,
    ) -> Result<Option<&'v str>, HfError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.field_error(&join(field, key), "a string")),
        }
    }

    /// `obj[key]` as a bool; `None` when absent or null.
    pub(super) fn opt_bool(&self, obj: &Map<String, Value>, key: &str, field: &str) -> Result<Option<bool>, HfError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.field_error(&join(field, key), "true or false")),
        }
    }

    /// A token id: a non-negative integer below [`MAX_TOKEN_ID`]. `field` is only built for an
    /// error (vocabularies have 100k+ entries).
    pub(super) fn token_id(&self, value: &Value, field: impl FnOnce() -> String) -> Result<u32, HfError> {
        value
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .filter(|&id| id < MAX_TOKEN_ID)
            .ok_or_else(|| self.field_error(&field(), "a token id (an integer from 0 to 4194303)"))
    }

    /// The `"type"` of a normalizer, pre-tokenizer or post-processor.
    fn type_of<'v>(&self, obj: &'v Map<String, Value>, field: &str) -> Result<&'v str, HfError> {
        self.opt_str(obj, "type", field)?.ok_or_else(|| self.field_error(&join(field, "type"), "a string"))
    }

    /// The components of a normalizer, pre-tokenizer or post-processor, with their JSON paths:
    /// a `Sequence`'s items (recursively), the value itself otherwise, nothing for null.
    fn components<'v>(
        &self,
        value: Option<&'v Value>,
        field: &str,
        items_key: &str,
    ) -> Result<Vec<Component<'v>>, HfError> {
        let mut out = Vec::new();
        self.collect_components(value, field.to_owned(), items_key, &mut out, 0)?;
        Ok(out)
    }

    fn collect_components<'v>(
        &self,
        value: Option<&'v Value>,
        field: String,
        items_key: &str,
        out: &mut Vec<Component<'v>>,
        depth: usize,
    ) -> Result<(), HfError> {
        const MAX_DEPTH: usize = 16;
        let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(()) };
        let obj = self.object(value, &field)?;
        if self.type_of(obj, &field)? != "Sequence" {
            out.push((field, obj));
            return Ok(());
        }
        if depth >= MAX_DEPTH {
            return Err(self.field_error(&field, "Sequences nested at most 16 deep"));
        }
        let items_field = join(&field, items_key);
        let items =
            obj.get(items_key).and_then(Value::as_array).ok_or_else(|| self.field_error(&items_field, "an array"))?;
        for (i, item) in items.iter().enumerate() {
            self.collect_components(Some(item), format!("{items_field}[{i}]"), items_key, out, depth + 1)?;
        }
        Ok(())
    }
}

/// `field.key`, or `key` at the top level.
fn join(field: &str, key: &str) -> String {
    if field.is_empty() {
        key.to_owned()
    } else {
        format!("{field}.{key}")
    }
}

/// Reads a JSON file that may be absent.
fn read_optional_json(path: &Path) -> Result<Option<Value>, HfError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A file's top-level object (an empty one when the file is absent).
fn top_object(path: &Path, value: Option<Value>) -> Result<Map<String, Value>, HfError> {
    match value {
        None => Ok(Map::new()),
        Some(Value::Object(obj)) => Ok(obj),
        Some(_) => Err(HfError::TokenizerField {
            path: path.to_owned(),
            field: "(top level)".into(),
            expected: "a JSON object",
        }),
    }
}

// ----- tokenizer.json -------------------------------------------------------------------------

/// An added token: an entry of tokenizer.json's `added_tokens`, of `added_tokens.json` or of
/// `tokenizer_config.json`'s `added_tokens_decoder`.
pub(super) struct AddedToken {
    pub(super) id: u32,
    pub(super) content: String,
    pub(super) special: bool,
    /// Whether the tokenizer normalizes the token's text: for a SentencePiece-style vocabulary,
    /// its '▁' are written as spaces (llama.cpp matches added tokens in the raw text).
    pub(super) normalized: bool,
}

/// What `tokenizer.json` says, before the vocabulary is laid out.
struct Parsed {
    model: TokenizerModel,
    pre: Option<&'static str>,
    /// `model.vocab`, by id.
    vocab: Vec<(String, u32)>,
    /// `model.merges`, by rank.
    merges: Vec<(String, String)>,
    added: Vec<AddedToken>,
    unk_token: Option<String>,
    add_space_prefix: Option<bool>,
}

fn parse_tokenizer_json(j: &Json<'_>, root: &Value) -> Result<Parsed, HfError> {
    let root = j.object(root, "(top level)")?;
    let model = j.object(root.get("model").unwrap_or(&Value::Null), "model")?;
    let model_type = match j.opt_str(model, "type", "model")? {
        Some(t) => t,
        // tokenizers reads a model without "type" by its fields; only BPE has merges.
        None if model.contains_key("merges") => "BPE",
        None => return Err(j.field_error("model.type", "a string")),
    };
    if model_type != "BPE" {
        return Err(j.unsupported("model.type", model_type, "BPE"));
    }
    if let Some(dropout) = model.get("dropout").filter(|d| !d.is_null()) {
        if dropout.as_f64() != Some(0.0) {
            return Err(j.unsupported(
                "model.dropout",
                &dropout.to_string(),
                "null: tokenization must be deterministic",
            ));
        }
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if let Some(affix) = j.opt_str(model, key, "model")?.filter(|s| !s.is_empty()) {
            return Err(j.unsupported(&join("model", key), affix, "null: llama.cpp has no subword affixes"));
        }
    }
    let byte_fallback = j.opt_bool(model, "byte_fallback", "model")?.unwrap_or(false);
    let ignore_merges = j.opt_bool(model, "ignore_merges", "model")?.unwrap_or(false);
    let unk_token = j.opt_str(model, "unk_token", "model")?.map(str::to_owned);
    let vocab = parse_vocab(j, model)?;
    let merges = parse_merges(j, model)?;
    let added = parse_added_tokens(j, root)?;

    let normalizers = j.components(root.get("normalizer"), "normalizer", "normalizers")?;
    let pre_tokenizers = j.components(root.get("pre_tokenizer"), "pre_tokenizer", "pretokenizers")?;
    let mut is_byte_level = false;
    for (field, obj) in &pre_tokenizers {
        is_byte_level |= j.type_of(obj, field)? == "ByteLevel";
    }

    let (model, pre, add_space_prefix) = if is_byte_level {
        if byte_fallback {
            return Err(j.unsupported("model.byte_fallback", "true", "false with a ByteLevel pre-tokenizer"));
        }
        check_byte_level_normalizers(j, &normalizers)?;
        let regexes = byte_level_regexes(j, &pre_tokenizers)?;
        (TokenizerModel::Gpt2, Some(find_pre(j.path, &regexes, ignore_merges)?), None)
    } else if byte_fallback {
        if ignore_merges {
            return Err(j.unsupported(
                "model.ignore_merges",
                "true",
                "false (llama.cpp's SentencePiece tokenizer always merges)",
            ));
        }
        let add_space_prefix = spm_space_prefix(j, &normalizers, &pre_tokenizers, &vocab)?;
        check_byte_tokens(j, &vocab)?;
        (TokenizerModel::Llama, None, Some(add_space_prefix))
    } else {
        return Err(j.unsupported(
            "model.byte_fallback",
            "false",
            "a ByteLevel pre-tokenizer (GPT-2 style) or byte_fallback true (SentencePiece style)",
        ));
    };
    Ok(Parsed { model, pre, vocab, merges, added, unk_token, add_space_prefix })
}

/// `model.vocab`: token → id, as (token, id) sorted by id. Ids must be unique.
fn parse_vocab(j: &Json<'_>, model: &Map<String, Value>) -> Result<Vec<(String, u32)>, HfError> {
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| j.field_error("model.vocab", "an object of token -> id"))?;
    let mut out = Vec::with_capacity(vocab.len());
    for (token, id) in vocab {
        out.push((token.clone(), j.token_id(id, || format!("model.vocab['{token}']"))?));
    }
    out.sort_by_key(|&(_, id)| id);
    for pair in out.windows(2) {
        if pair[0].1 == pair[1].1 {
            return Err(HfError::DuplicateId {
                path: j.path.to_owned(),
                id: pair[0].1,
                first: pair[0].0.clone(),
                second: pair[1].0.clone(),
            });
        }
    }
    Ok(out)
}

/// `model.merges`, as `"a b"` strings (tokenizers before 0.20) or `["a", "b"]` pairs (newer).
fn parse_merges(j: &Json<'_>, model: &Map<String, Value>) -> Result<Vec<(String, String)>, HfError> {
    let merges = match model.get("merges") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(merges)) => merges,
        Some(_) => return Err(j.field_error("model.merges", "an array")),
    };
    let mut out = Vec::with_capacity(merges.len());
    for (i, merge) in merges.iter().enumerate() {
        let pair = match merge {
            // tokenizers' own rule (`convert_merges_to_hashmap`): exactly one space.
            Value::String(s) => {
                s.split_once(' ').filter(|(_, b)| !b.contains(' ')).map(|(a, b)| (a.to_owned(), b.to_owned()))
            }
            Value::Array(pair) => match &pair[..] {
                [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                _ => None,
            },
            _ => None,
        };
        match pair {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => out.push((a, b)),
            _ => {
                return Err(
                    j.field_error(&format!("model.merges[{i}]"), "\"a b\" or [\"a\", \"b\"] with two non-empty tokens")
                )
            }
        }
    }
    Ok(out)
}

fn parse_added_tokens(j: &Json<'_>, root: &Map<String, Value>) -> Result<Vec<AddedToken>, HfError> {
    let list = match root.get("added_tokens") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(j.field_error("added_tokens", "an array")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let field = format!("added_tokens[{i}]");
        let obj = j.object(entry, &field)?;
        let id = j.token_id(obj.get("id").unwrap_or(&Value::Null), || join(&field, "id"))?;
        let content =
            j.opt_str(obj, "content", &field)?.ok_or_else(|| j.field_error(&join(&field, "content"), "a string"))?;
        let special = j.opt_bool(obj, "special", &field)?.unwrap_or(false);
        // tokenizers' AddedToken default: special tokens are not normalized, others are.
        let normalized = j.opt_bool(obj, "normalized", &field)?.unwrap_or(!special);
        out.push(AddedToken { id, content: content.to_owned(), special, normalized });
    }
    Ok(out)
}

/// A byte-level tokenizer's normalizer must be one llama.cpp (which has none) can skip.
fn check_byte_level_normalizers(j: &Json<'_>, normalizers: &[Component<'_>]) -> Result<(), HfError> {
    for (field, obj) in normalizers {
        let kind = j.type_of(obj, field)?;
        // NFC only changes non-NFC input; Qwen 2 and convert_hf_to_gguf.py ignore it the same way.
        if kind != "NFC" {
            return Err(j.unsupported(&join(field, "type"), kind, "no normalizer (or NFC) for a byte-level tokenizer"));
        }
    }
    Ok(())
}

/// The split regexes of a byte-level pre-tokenizer, in order.
fn byte_level_regexes(j: &Json<'_>, items: &[Component<'_>]) -> Result<Vec<String>, HfError> {
    let mut regexes = Vec::new();
    // How many components followed ByteLevel so far; None before it.
    let mut after_byte_level: Option<usize> = None;
    for (field, obj) in items {
        let kind = j.type_of(obj, field)?;
        if let Some(index) = after_byte_level {
            regexes.push(after_byte_level_regex(j, index, field, obj, kind)?.to_owned());
            after_byte_level = Some(index + 1);
            continue;
        }
        match kind {
            "Split" => regexes.push(split_regex(j, field, obj)?.to_owned()),
            "Digits" => {
                let individual = j.opt_bool(obj, "individual_digits", field)?.unwrap_or(false);
                regexes.push(if individual { "\\p{N}" } else { "\\p{N}+" }.to_owned());
            }
            "Punctuation" => {
                // tokenizers' default behavior is Isolated, which splits "?!" into two pieces.
                let behavior = j.opt_str(obj, "behavior", field)?.unwrap_or("Isolated");
                if behavior != "Contiguous" {
                    return Err(j.unsupported(
                        &join(field, "behavior"),
                        behavior,
                        "Contiguous, as llama.cpp's Falcon pre-tokenizer splits punctuation",
                    ));
                }
                regexes.push(PUNCTUATION_REGEX.to_owned());
            }
            "ByteLevel" => {
                // tokenizers' defaults: add_prefix_space and use_regex are true when absent.
                if j.opt_bool(obj, "add_prefix_space", field)?.unwrap_or(true) {
                    return Err(j.unsupported(
                        &join(field, "add_prefix_space"),
                        "true",
                        "false (llama.cpp's BPE tokenizer never adds a prefix space)",
                    ));
                }
                if j.opt_bool(obj, "use_regex", field)?.unwrap_or(true) {
                    regexes.push(GPT2_REGEX.to_owned());
                }
                after_byte_level = Some(0);
            }
            other => return Err(j.unsupported(&join(field, "type"), other, "Split, Digits, Punctuation or ByteLevel")),
        }
    }
    Ok(regexes)
}

/// The regex of a `Split` pre-tokenizer, which must isolate its matches as llama.cpp does.
fn split_regex<'v>(j: &Json<'_>, field: &str, obj: &'v Map<String, Value>) -> Result<&'v str, HfError> {
    let pattern_field = join(field, "pattern");
    let pattern = obj.get("pattern").and_then(Value::as_object);
    let regex = match pattern.and_then(|p| p.get("Regex")).and_then(Value::as_str) {
        Some(regex) => regex,
        None => match pattern.and_then(|p| p.get("String")).and_then(Value::as_str) {
            Some(s) => return Err(j.unsupported(&join(&pattern_field, "String"), s, "a Regex pattern")),
            None => return Err(j.field_error(&pattern_field, "{\"Regex\": \"...\"}")),
        },
    };
    let behavior = j.opt_str(obj, "behavior", field)?.unwrap_or("Isolated");
    if behavior != "Isolated" {
        return Err(j.unsupported(&join(field, "behavior"), behavior, "Isolated, as llama.cpp splits"));
    }
    if j.opt_bool(obj, "invert", field)?.unwrap_or(false) {
        return Err(j.unsupported(&join(field, "invert"), "true", "false"));
    }
    Ok(regex)
}

/// The regex of the pre-tokenizer `index` places after `ByteLevel`. tokenizers runs it on
/// byte-level characters, llama.cpp on the text, so only Falcon's tail is accepted there:
/// `Digits` (individual_digits false), then `Split("[0-9][0-9][0-9]")` (see [`FALCON`]).
fn after_byte_level_regex(
    j: &Json<'_>,
    index: usize,
    field: &str,
    obj: &Map<String, Value>,
    kind: &str,
) -> Result<&'static str, HfError> {
    match (index, kind) {
        (0, "Digits") => {
            if j.opt_bool(obj, "individual_digits", field)?.unwrap_or(false) {
                return Err(j.unsupported(
                    &join(field, "individual_digits"),
                    "true",
                    "false after ByteLevel, as in Falcon's pre-tokenizer",
                ));
            }
            Ok("\\p{N}+")
        }
        (1, "Split") => match split_regex(j, field, obj)? {
            DIGIT_GROUPS_REGEX => Ok(DIGIT_GROUPS_REGEX),
            other => Err(j.unsupported(
                &join(&join(field, "pattern"), "Regex"),
                other,
                "[0-9][0-9][0-9] after ByteLevel, as in Falcon's pre-tokenizer",
            )),
        },
        _ => Err(j.unsupported(
            &join(field, "type"),
            kind,
            "ByteLevel last in the pre-tokenizer sequence, or followed by exactly Digits (individual_digits \
             false) then Split [0-9][0-9][0-9], as in Falcon's",
        )),
    }
}

/// `add_space_prefix` of a SentencePiece-style tokenizer, checking that spaces become `▁` as
/// llama.cpp's SentencePiece tokenizer always does (`llama_escape_whitespace`).
fn spm_space_prefix(
    j: &Json<'_>,
    normalizers: &[Component<'_>],
    pre_tokenizers: &[Component<'_>],
    vocab: &[(String, u32)],
) -> Result<bool, HfError> {
    let (mut escapes, mut prepend) = (false, false);
    for (field, obj) in normalizers {
        match j.type_of(obj, field)? {
            "Prepend" if j.opt_str(obj, "prepend", field)? == Some("▁") => prepend = true,
            "Replace"
                if obj.get("pattern").and_then(|p| p.get("String")).and_then(Value::as_str) == Some(" ")
                    && j.opt_str(obj, "content", field)? == Some("▁") =>
            {
                escapes = true
            }
            other => {
                return Err(j.unsupported(
                    &join(field, "type"),
                    other,
                    "Prepend(\"▁\") and Replace(\" \", \"▁\"), as llama.cpp's SentencePiece tokenizer does",
                ))
            }
        }
    }
    for (field, obj) in pre_tokenizers {
        let kind = j.type_of(obj, field)?;
        if kind != "Metaspace" {
            return Err(j.unsupported(&join(field, "type"), kind, "Metaspace or no pre-tokenizer"));
        }
        let replacement = j.opt_str(obj, "replacement", field)?;
        if replacement != Some("▁") {
            return Err(j.unsupported(&join(field, "replacement"), replacement.unwrap_or("null"), "'▁'"));
        }
        escapes = true;
        // tokenizers' Metaspace: prepend_scheme defaults to "always"; add_prefix_space false
        // (older files) means "never"; split defaults to true.
        let scheme = match j.opt_bool(obj, "add_prefix_space", field)? {
            Some(false) => "never",
            _ => j.opt_str(obj, "prepend_scheme", field)?.unwrap_or("always"),
        };
        match scheme {
            "always" | "first" => prepend = true,
            "never" => {}
            other => return Err(j.unsupported(&join(field, "prepend_scheme"), other, "always, first or never")),
        }
        // Split on '▁', BPE never merges across words; llama.cpp's SentencePiece tokenizer does
        // whenever the vocabulary has such a token.
        if j.opt_bool(obj, "split", field)?.unwrap_or(true) {
            if let Some((token, _)) = vocab.iter().find(|(t, _)| t.chars().skip(1).any(|c| c == '▁')) {
                return Err(j.unsupported(
                    &format!("model.vocab['{token}']"),
                    token,
                    "no token with '▁' inside a word when the Metaspace pre-tokenizer splits",
                ));
            }
        }
    }
    if !escapes {
        return Err(j.field_error(
            "normalizer",
            "spaces replaced by '▁' (Replace(\" \", \"▁\") or a Metaspace pre-tokenizer), as llama.cpp's SentencePiece tokenizer does",
        ));
    }
    Ok(prepend)
}

/// The text of the byte token for `byte`, as llama.cpp's `byte_to_token` and tokenizers' byte
/// fallback spell it.
pub(super) fn byte_token(byte: u8) -> String {
    format!("<0x{byte:02X}>")
}

/// llama.cpp's SentencePiece tokenizer throws when a byte it falls back to has no token.
fn check_byte_tokens(j: &Json<'_>, vocab: &[(String, u32)]) -> Result<(), HfError> {
    let texts: std::collections::HashSet<&str> = vocab.iter().map(|(t, _)| t.as_str()).collect();
    for byte in 0..=u8::MAX {
        let token = byte_token(byte);
        if !texts.contains(token.as_str()) {
            return Err(HfError::MissingByteToken { path: j.path.to_owned(), token });
        }
    }
    Ok(())
}

/// `<0xXX>` (either case of hex digits, as gguf-py's `LlamaHfVocab` matches).
fn is_byte_token(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 6 && b.starts_with(b"<0x") && b[5] == b'>' && b[3].is_ascii_hexdigit() && b[4].is_ascii_hexdigit()
}

/// convert_hf_to_gguf.py `does_token_look_special`: added tokens some models forget to mark special.
fn looks_special(text: &str) -> bool {
    matches!(text, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (text.starts_with("<|") && text.ends_with("|>"))
        || (text.starts_with("<｜") && text.ends_with("｜>"))
        || (text.starts_with("<unused") && text.ends_with('>'))
}

// ----- tokenizer_config.json and friends ------------------------------------------------------

/// A special token named in `tokenizer_config.json`: a string or `{"content": ...}`.
fn config_token(j: &Json<'_>, config: &Map<String, Value>, key: &str) -> Result<Option<String>, HfError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(obj)) => match obj.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(j.field_error(&format!("{key}.content"), "a string")),
        },
        Some(_) => Err(j.field_error(key, "a token string or {\"content\": ...}")),
    }
}

/// The chat template: `chat_template` in `tokenizer_config.json` (a string, or a list of
/// `{name, template}` of which "default" is taken), else `chat_template.jinja`, else
/// `chat_template.json`, in convert_hf_to_gguf.py's order.
fn chat_template(dir: &Path, j: &Json<'_>, config: &Map<String, Value>) -> Result<Option<String>, HfError> {
    match config.get("chat_template") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => return Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            for (i, entry) in list.iter().enumerate() {
                let field = format!("chat_template[{i}]");
                let obj = j.object(entry, &field)?;
                if j.opt_str(obj, "name", &field)? == Some("default") {
                    let template = j.opt_str(obj, "template", &field)?;
                    return template
                        .map(|t| Some(t.to_owned()))
                        .ok_or_else(|| j.field_error(&join(&field, "template"), "a string"));
                }
            }
            return Ok(None);
        }
        Some(_) => return Err(j.field_error("chat_template", "a string or a list of {\"name\", \"template\"}")),
    }
    let jinja = dir.join(CHAT_TEMPLATE_FILE);
    if jinja.is_file() {
        let text = std::fs::read_to_string(&jinja).map_err(|source| HfError::Io { path: jinja, source })?;
        return Ok(Some(text));
    }
    let json_path = dir.join(CHAT_TEMPLATE_JSON_FILE);
    let Some(value) = read_optional_json(&json_path)? else { return Ok(None) };
    let obj = top_object(&json_path, Some(value))?;
    let j = Json { path: &json_path };
    Ok(j.opt_str(&obj, "chat_template", "")?.map(str::to_owned))
}

/// `{kind}_token_id` of `config.json` (or its `text_config`) or `generation_config.json`, as
/// convert_hf_to_gguf.py's `_try_load_from_config_json` reads it: an integer (the first of a
/// list), below `n_vocab`; anything else is ignored, since these are fallbacks.
fn fallback_id(files: &[&Map<String, Value>], kind: &str, n_vocab: usize) -> Option<u32> {
    let key = format!("{kind}_token_id");
    let id_of = |v: &Value| match v {
        Value::Array(list) => list.first().and_then(Value::as_u64),
        v => v.as_u64(),
    };
    files
        .iter()
        .flat_map(|file| [file.get(&key), file.get("text_config").and_then(|c| c.get(&key))])
        .flatten()
        .filter_map(id_of)
        .filter_map(|id| u32::try_from(id).ok())
        .find(|&id| usize::try_from(id).is_ok_and(|id| id < n_vocab))
}

/// What the post-processor adds around a sequence, as convert_hf_to_gguf.py's `SpecialVocab`
/// reads it: `(first, last)` special tokens of a `TemplateProcessing`'s `single` template, or
/// BOS and EOS for `RobertaProcessing`.
#[derive(Default)]
pub(super) struct PostProcessor {
    first: Option<String>,
    last: Option<String>,
    roberta: bool,
}

fn parse_post_processor(j: &Json<'_>, root: &Value) -> Result<PostProcessor, HfError> {
    let mut out = PostProcessor::default();
    let processors = j.components(root.get("post_processor"), "post_processor", "processors")?;
    for (field, obj) in processors {
        match j.type_of(obj, &field)? {
            "RobertaProcessing" => out.roberta = true,
            "TemplateProcessing" => {
                let single_field = join(&field, "single");
                let single = obj
                    .get("single")
                    .and_then(Value::as_array)
                    .ok_or_else(|| j.field_error(&single_field, "an array"))?;
                let special = |piece: Option<&Value>| {
                    piece
                        .and_then(|p| p.get("SpecialToken"))
                        .and_then(|s| s.get("id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                if single.len() > 1 {
                    out.first = special(single.first());
                    out.last = special(single.last());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

// ----- Assembly -------------------------------------------------------------------------------

/// Reads the tokenizer of the model folder `dir` and lays out its vocabulary for llama.cpp.
///
/// The tokenizer is `tokenizer.json` when the folder has one, else the SentencePiece model
/// `tokenizer.model` (src/hf/sentencepiece.rs: pieces, scores and piece types from the file,
/// special ids from its trainer spec). When both files exist, `tokenizer.json` is read and
/// `tokenizer.model` ignored: it is what the Hugging Face fast tokenizer runs, and it carries
/// the added tokens and post-processor of the checkpoint (convert_hf_to_gguf.py's `LlamaModel`
/// tries `tokenizer.model` first; in Llama-2-style checkpoints both describe the same
/// tokenizer). A folder with neither is an error naming both.
///
/// `vocab_size` is `config.json`'s: the vocabulary is padded to it with `[PAD{id}]` tokens of type
/// unused (as convert_hf_to_gguf.py does), and a tokenizer with more ids than that is an error.
///
/// Special tokens come from `tokenizer_config.json` (`bos_token` etc., resolved through the
/// vocabulary), falling back to the ids in `config.json`, then `generation_config.json`, then
/// (for `tokenizer.model`) the trainer spec. `add_bos`/`add_eos` come from the post-processor
/// (`TemplateProcessing`) of `tokenizer.json` or the defaults of a SentencePiece model, overridden
/// by `add_bos_token`/`add_eos_token` in `tokenizer_config.json`, as in convert_hf_to_gguf.py.
pub fn load_tokenizer(dir: &Path, vocab_size: Option<usize>) -> Result<GgufTokenizer, HfError> {
    let json_path = dir.join(TOKENIZER_FILE);
    let spm_path = dir.join(SPM_FILE);
    let from_json = json_path.is_file();
    if !from_json && !spm_path.is_file() {
        return Err(HfError::NoTokenizer { dir: dir.to_owned() });
    }
    let files = ConfigFiles::load(dir)?;
    if vocab_size.is_some_and(|size| size > MAX_TOKEN_ID as usize) {
        return Err(HfError::TokenizerField {
            path: files.model_config_path,
            field: "vocab_size".into(),
            expected: "at most 4194304 (MAX_TOKEN_ID)",
        });
    }
    if from_json {
        load_tokenizer_json(dir, &json_path, &files, vocab_size)
    } else {
        super::sentencepiece::load(dir, &spm_path, &files, vocab_size)
    }
}

/// `tokenizer.json` as a [`GgufTokenizer`].
fn load_tokenizer_json(
    dir: &Path,
    path: &Path,
    files: &ConfigFiles,
    vocab_size: Option<usize>,
) -> Result<GgufTokenizer, HfError> {
    let root = read_json(path)?;
    let j = Json { path };
    let parsed = parse_tokenizer_json(&j, &root)?;
    let post = parse_post_processor(&j, &root)?;

    let is_spm = parsed.model == TokenizerModel::Llama;
    let base: Vec<BaseToken<'_>> = parsed
        .vocab
        .iter()
        .map(|(text, id)| {
            let kind = if is_spm && is_byte_token(text) {
                token_type::BYTE
            } else if is_spm && parsed.unk_token.as_deref() == Some(text.as_str()) {
                token_type::UNKNOWN
            } else {
                token_type::NORMAL
            };
            BaseToken { key: text, text: Cow::Borrowed(text), id: *id, kind }
        })
        .collect();
    let layout = lay_out_vocab(path, &base, &parsed.added, parsed.model, vocab_size)?;
    let n_vocab = layout.tokens.len();
    let scores = match parsed.model {
        TokenizerModel::Llama => Some(spm_scores(&parsed, n_vocab)),
        TokenizerModel::Gpt2 => None,
    };
    let merges = match parsed.model {
        // convert_hf_to_gguf.py writes spaces inside a pair's tokens as U+0120 ('Ġ'), so that
        // llama.cpp's split at the first space (after the first byte) finds the right one.
        TokenizerModel::Gpt2 => {
            parsed.merges.iter().map(|(a, b)| format!("{} {}", a.replace(' ', "Ġ"), b.replace(' ', "Ġ"))).collect()
        }
        TokenizerModel::Llama => Vec::new(),
    };
    let file = FileSpecials {
        unk_name: parsed.unk_token.clone(),
        post,
        add_space_prefix: parsed.add_space_prefix,
        ..FileSpecials::default()
    };
    let vocab = Vocabulary { model: parsed.model, pre: parsed.pre, layout, scores, merges };
    finish(dir, files, vocab, file)
}

/// `tokenizer_config.json`, `config.json` and `generation_config.json` (empty objects when absent).
pub(super) struct ConfigFiles {
    pub(super) tokenizer_config_path: PathBuf,
    pub(super) tokenizer_config: Map<String, Value>,
    model_config_path: PathBuf,
    model_config: Map<String, Value>,
    generation: Map<String, Value>,
}

impl ConfigFiles {
    fn load(dir: &Path) -> Result<ConfigFiles, HfError> {
        let tokenizer_config_path = dir.join(TOKENIZER_CONFIG_FILE);
        let tokenizer_config = top_object(&tokenizer_config_path, read_optional_json(&tokenizer_config_path)?)?;
        let model_config_path = dir.join(CONFIG_FILE);
        let model_config = top_object(&model_config_path, read_optional_json(&model_config_path)?)?;
        let generation_path = dir.join(GENERATION_CONFIG_FILE);
        let generation = top_object(&generation_path, read_optional_json(&generation_path)?)?;
        Ok(ConfigFiles { tokenizer_config_path, tokenizer_config, model_config_path, model_config, generation })
    }
}

/// Special-token ids fixed by the tokenizer file itself (a SentencePiece trainer spec).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SpecialIds {
    pub(super) bos: Option<u32>,
    pub(super) eos: Option<u32>,
    pub(super) unk: Option<u32>,
    pub(super) pad: Option<u32>,
}

/// What the tokenizer file says about special tokens and the space prefix, before
/// `tokenizer_config.json` and the model's config files have their say.
#[derive(Default)]
pub(super) struct FileSpecials {
    /// The unknown token's text (`model.unk_token` of tokenizer.json).
    pub(super) unk_name: Option<String>,
    /// What the post-processor adds (tokenizer.json).
    pub(super) post: PostProcessor,
    /// Ids of the file, the last fallback.
    pub(super) ids: SpecialIds,
    /// Whether BOS/EOS are added, unless the post-processor or the config says.
    pub(super) add_bos: Option<bool>,
    pub(super) add_eos: Option<bool>,
    /// `add_space_prefix` of a SentencePiece-style tokenizer.
    pub(super) add_space_prefix: Option<bool>,
}

/// A vocabulary laid out for llama.cpp, before special tokens are resolved.
pub(super) struct Vocabulary<'a> {
    pub(super) model: TokenizerModel,
    pub(super) pre: Option<&'static str>,
    pub(super) layout: Layout<'a>,
    pub(super) scores: Option<Vec<f32>>,
    pub(super) merges: Vec<String>,
}

/// Resolves the special tokens, the add-BOS/EOS flags, the space prefix and the chat template of
/// a laid-out vocabulary from the tokenizer file's own `file` specials and the config files.
pub(super) fn finish(
    dir: &Path,
    files: &ConfigFiles,
    vocab: Vocabulary<'_>,
    file: FileSpecials,
) -> Result<GgufTokenizer, HfError> {
    let Vocabulary { model, pre, layout, scores, merges } = vocab;
    let Layout { tokens, types: token_types, ids: first_ids, .. } = layout;
    let n_vocab = tokens.len();
    let config = &files.tokenizer_config;
    let cj = Json { path: &files.tokenizer_config_path };

    // Token names; tokenizer_config.json wins, as in convert_hf_to_gguf.py (cls/sep stand in for
    // bos/eos when those are missing).
    let mut bos_name = config_token(&cj, config, "bos_token")?;
    let mut eos_name = config_token(&cj, config, "eos_token")?;
    if bos_name.is_none() {
        bos_name = config_token(&cj, config, "cls_token")?;
    }
    if eos_name.is_none() {
        eos_name = config_token(&cj, config, "sep_token")?;
    }
    let unk_name = config_token(&cj, config, "unk_token")?.or(file.unk_name);
    let pad_name = config_token(&cj, config, "pad_token")?;

    // What the post-processor adds (SpecialVocab._try_load_from_tokenizer_json).
    let (mut add_bos, mut add_eos) = (file.add_bos, file.add_eos);
    let post = file.post;
    if post.roberta {
        (add_bos, add_eos) = (Some(true), Some(true));
    }
    if let Some(first) = post.first {
        // A template naming a BOS the config does not: the template's is the BOS.
        let bos = bos_name.get_or_insert_with(|| first.clone());
        add_bos = Some(*bos == first);
    }
    if let Some(last) = post.last {
        // convert_hf_to_gguf.py makes the template's last token the EOS (keeping the config's as
        // end-of-turn, which llama.cpp finds by its text).
        eos_name = Some(last);
        add_eos = Some(true);
    }
    if let Some(flag) = cj.opt_bool(config, "add_bos_token", "")? {
        add_bos = Some(flag);
    }
    if let Some(flag) = cj.opt_bool(config, "add_eos_token", "")? {
        add_eos = Some(flag);
    }

    let fallbacks = [&files.model_config, &files.generation];
    let resolve = |name: Option<&String>, kind: &str, file_id: Option<u32>| {
        name.and_then(|n| first_ids.get(n.as_str()).copied())
            .or_else(|| fallback_id(&fallbacks, kind, n_vocab))
            .or(file_id.filter(|&id| (id as usize) < n_vocab))
    };
    let bos_id = resolve(bos_name.as_ref(), "bos", file.ids.bos);
    let eos_id = resolve(eos_name.as_ref(), "eos", file.ids.eos);
    let unk_id = resolve(unk_name.as_ref(), "unk", file.ids.unk);
    let pad_id = resolve(pad_name.as_ref(), "pad", file.ids.pad);
    if add_bos == Some(true) && bos_id.is_none() {
        return Err(HfError::MissingSpecialToken { path: files.tokenizer_config_path.clone(), kind: "bos" });
    }
    if add_eos == Some(true) && eos_id.is_none() {
        return Err(HfError::MissingSpecialToken { path: files.tokenizer_config_path.clone(), kind: "eos" });
    }

    let add_space_prefix = match model {
        // LlamaModel.set_vocab: tokenizer_config.json's add_prefix_space wins.
        TokenizerModel::Llama => cj.opt_bool(config, "add_prefix_space", "")?.or(file.add_space_prefix),
        TokenizerModel::Gpt2 => None,
    };

    Ok(GgufTokenizer {
        model,
        pre: pre.map(str::to_owned),
        tokens,
        scores,
        token_types,
        merges,
        bos_id,
        eos_id,
        unk_id,
        pad_id,
        add_bos,
        add_eos,
        add_space_prefix,
        chat_template: chat_template(dir, &cj, config)?,
    })
}

/// A token of the base vocabulary (tokenizer.json's `model.vocab`, tokenizer.model's pieces).
pub(super) struct BaseToken<'a> {
    /// The text special tokens are looked up by.
    pub(super) key: &'a str,
    /// The text written to the GGUF.
    pub(super) text: Cow<'a, str>,
    pub(super) id: u32,
    /// One of the [`token_type`] values.
    pub(super) kind: i32,
}

/// Where the token at an id comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    Base,
    Added,
    Padding,
}

/// The vocabulary by id, as llama.cpp reads it.
pub(super) struct Layout<'a> {
    pub(super) tokens: Vec<String>,
    pub(super) types: Vec<i32>,
    pub(super) origins: Vec<Origin>,
    /// The id of each token text (an added token's before a base token's).
    pub(super) ids: HashMap<&'a str, u32>,
}

/// Lays out tokens and types by id: the base vocabulary, then the added tokens over it, padded to
/// `vocab_size` with `[PAD{id}]`. Base ids must be unique and below [`MAX_TOKEN_ID`]; `path` is
/// the tokenizer file, named on errors.
pub(super) fn lay_out_vocab<'a>(
    path: &Path,
    base: &'a [BaseToken<'a>],
    added: &'a [AddedToken],
    model: TokenizerModel,
    vocab_size: Option<usize>,
) -> Result<Layout<'a>, HfError> {
    let max_id = base.iter().map(|t| t.id).chain(added.iter().map(|t| t.id)).max();
    // Ids are below MAX_TOKEN_ID, so this fits and bounds the allocation.
    let needed = max_id.map_or(0, |id| id as usize + 1);
    let n_vocab = match (vocab_size, max_id) {
        (Some(size), Some(max_id)) if size < needed => {
            return Err(HfError::VocabSizeMismatch { path: path.to_owned(), max_id, vocab_size: size })
        }
        (Some(size), _) => size,
        (None, _) => needed,
    };
    let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
    let mut types = vec![token_type::UNUSED; n_vocab];
    let mut origins = vec![Origin::Padding; n_vocab];
    for token in base {
        let i = token.id as usize;
        types[i] = token.kind;
        tokens[i] = Some(token.text.clone().into_owned());
        origins[i] = Origin::Base;
    }
    let is_spm = model == TokenizerModel::Llama;
    let mut ids: HashMap<&str, u32> = HashMap::new();
    for added in added {
        let i = added.id as usize;
        if is_spm && types[i] == token_type::BYTE && tokens[i].as_deref() == Some(added.content.as_str()) {
            continue; // byte tokens stay bytes, as in gguf-py's LlamaHfVocab
        }
        let (text, kind) = if added.special || looks_special(&added.content) {
            (added.content.clone(), token_type::CONTROL)
        } else if is_spm && added.normalized {
            // llama.cpp matches user-defined tokens in the raw text, before spaces become '▁'
            // (convert_hf_to_gguf.py "pre-normalize user-defined spaces").
            (added.content.replace('▁', " "), token_type::USER_DEFINED)
        } else {
            (added.content.clone(), token_type::USER_DEFINED)
        };
        tokens[i] = Some(text);
        types[i] = kind;
        origins[i] = Origin::Added;
        ids.entry(added.content.as_str()).or_insert(added.id);
    }
    for token in base {
        ids.entry(token.key).or_insert(token.id);
    }

    let tokens: Vec<String> =
        tokens.into_iter().enumerate().map(|(id, token)| token.unwrap_or_else(|| format!("[PAD{id}]"))).collect();
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, text) in tokens.iter().enumerate() {
        if let Some(first) = seen.insert(text, id) {
            return Err(HfError::DuplicateToken { path: path.to_owned(), token: text.clone(), first, second: id });
        }
    }
    Ok(Layout { tokens, types, origins, ids })
}

/// SentencePiece-style scores: minus the rank of the first merge producing each token, so that
/// llama.cpp's highest-score-first merging follows the BPE merge order. Tokens no merge produces
/// (characters, byte tokens, added and padding tokens) score below every merge.
fn spm_scores(parsed: &Parsed, n_vocab: usize) -> Vec<f32> {
    // f32 holds integers exactly up to 2^24, far above the merge count of any real tokenizer.
    let score = |rank: usize| -(rank as f32);
    let mut scores = vec![score(parsed.merges.len() + 1); n_vocab];
    let ids: HashMap<&str, u32> = parsed.vocab.iter().map(|(t, id)| (t.as_str(), *id)).collect();
    let mut merged = String::new();
    for (rank, (a, b)) in parsed.merges.iter().enumerate() {
        merged.clear();
        merged.push_str(a);
        merged.push_str(b);
        if let Some(&id) = ids.get(merged.as_str()) {
            let slot = &mut scores[id as usize];
            *slot = slot.max(score(rank));
        }
    }
    scores
}

/// `'a', 'b'` for error messages.
pub(super) fn quote_list(items: &[String]) -> String {
    items.iter().map(|item| format!("'{item}'")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A model folder holding `files` (name, contents).
    fn folder(files: &[(&str, String)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn load(files: &[(&str, String)], vocab_size: Option<usize>) -> Result<GgufTokenizer, HfError> {
        let dir = folder(files);
        load_tokenizer(dir.path(), vocab_size)
    }

    /// A Llama-2-style tokenizer.json: `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then pieces;
    /// merges written as `"a b"` strings.
    fn spm_json() -> Value {
        let mut vocab = Map::new();
        for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
            vocab.insert((*t).into(), json!(i));
        }
        for b in 0..=255u8 {
            vocab.insert(byte_token(b), json!(3 + u32::from(b)));
        }
        for (i, t) in ["▁", "a", "b", "▁a", "ab", "▁ab"].iter().enumerate() {
            vocab.insert((*t).into(), json!(259 + i));
        }
        let special = |id: u32, content: &str| {
            json!({ "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true })
        };
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
            "normalizer": { "type": "Sequence", "normalizers": [
                { "type": "Prepend", "prepend": "▁" },
                { "type": "Replace", "pattern": { "String": " " }, "content": "▁" },
            ]},
            "pre_tokenizer": null,
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{ "SpecialToken": { "id": "<s>", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } }],
                "pair": [{ "SpecialToken": { "id": "<s>", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } },
                         { "SpecialToken": { "id": "<s>", "type_id": 1 } }, { "Sequence": { "id": "B", "type_id": 1 } }],
                "special_tokens": { "<s>": { "id": "<s>", "ids": [1], "tokens": ["<s>"] } },
            },
            "decoder": { "type": "Sequence", "decoders": [
                { "type": "Replace", "pattern": { "String": "▁" }, "content": " " },
                { "type": "ByteFallback" }, { "type": "Fuse" },
                { "type": "Strip", "content": " ", "start": 1, "stop": 0 },
            ]},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab,
                "merges": ["▁ a", "a b", "▁a b"],
            },
        })
    }

    fn spm_config() -> Value {
        json!({ "add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>",
                "unk_token": "<unk>", "pad_token": null, "legacy": true, "tokenizer_class": "LlamaTokenizer" })
    }

    /// A Llama-3-style byte-level tokenizer.json; merges written as `["a", "b"]` pairs.
    fn bpe_json(regex: &str, ignore_merges: bool) -> Value {
        let special = |id: u32, content: &str| {
            json!({ "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true })
        };
        json!({
            "version": "1.0",
            "added_tokens": [special(5, "<|begin_of_text|>"), special(6, "<|end_of_text|>")],
            "normalizer": null,
            "pre_tokenizer": { "type": "Sequence", "pretokenizers": [
                { "type": "Split", "pattern": { "Regex": regex }, "behavior": "Isolated", "invert": false },
                { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false },
            ]},
            "post_processor": { "type": "Sequence", "processors": [
                { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true },
                { "type": "TemplateProcessing",
                  "single": [{ "SpecialToken": { "id": "<|begin_of_text|>", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } }],
                  "pair": [],
                  "special_tokens": {} },
            ]},
            "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                "vocab": { "a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġa": 4 },
                "merges": [["a", "b"], ["Ġ", "a"]],
            },
        })
    }

    fn bpe_config() -> Value {
        json!({ "bos_token": { "content": "<|begin_of_text|>", "lstrip": false, "normalized": false, "rstrip": false,
                               "single_word": false, "special": true },
                "eos_token": "<|end_of_text|>",
                "chat_template": [{ "name": "tool_use", "template": "tools" }, { "name": "default", "template": "chat" }] })
    }

    fn files(tokenizer: &Value, config: &Value) -> Vec<(&'static str, String)> {
        vec![(TOKENIZER_FILE, tokenizer.to_string()), (TOKENIZER_CONFIG_FILE, config.to_string())]
    }

    fn llama3_regex() -> &'static str {
        LLAMA3[0]
    }

    #[test]
    fn llama2_style_spm_bpe_with_byte_fallback() {
        let mut f = files(&spm_json(), &spm_config());
        f.push((CHAT_TEMPLATE_FILE, "{{ messages }}".into()));
        let t = load(&f, None).unwrap();
        assert_eq!(t.model, TokenizerModel::Llama);
        assert_eq!(t.pre, None);
        assert_eq!(t.tokens.len(), 265);
        assert_eq!(&t.tokens[..4], ["<unk>", "<s>", "</s>", "<0x00>"]);
        assert_eq!(t.tokens[258], "<0xFF>");
        assert_eq!(
            &t.token_types[..4],
            [token_type::CONTROL, token_type::CONTROL, token_type::CONTROL, token_type::BYTE]
        );
        assert!(t.token_types[3..259].iter().all(|&k| k == token_type::BYTE));
        assert!(t.token_types[259..].iter().all(|&k| k == token_type::NORMAL));
        // Scores follow the merge ranks: "▁a" (rank 0) > "ab" (1) > "▁ab" (2) > everything else.
        let scores = t.scores.as_ref().unwrap();
        assert_eq!((scores[262], scores[263], scores[264]), (0.0, -1.0, -2.0));
        assert!(scores.iter().enumerate().filter(|(i, _)| !(262..=264).contains(i)).all(|(_, &s)| s == -4.0));
        assert!(t.merges.is_empty());
        assert_eq!((t.bos_id, t.eos_id, t.unk_id, t.pad_id), (Some(1), Some(2), Some(0), None));
        assert_eq!((t.add_bos, t.add_eos, t.add_space_prefix), (Some(true), Some(false), Some(true)));
        assert_eq!(t.chat_template.as_deref(), Some("{{ messages }}"));
    }

    #[test]
    fn llama3_style_byte_level_bpe() {
        let t = load(&files(&bpe_json(llama3_regex(), true), &bpe_config()), None).unwrap();
        assert_eq!(t.model, TokenizerModel::Gpt2);
        assert_eq!(t.pre.as_deref(), Some("llama-bpe"));
        assert_eq!(t.tokens, ["a", "b", "ab", "Ġ", "Ġa", "<|begin_of_text|>", "<|end_of_text|>"]);
        let n = token_type::NORMAL;
        assert_eq!(t.token_types, [n, n, n, n, n, token_type::CONTROL, token_type::CONTROL]);
        assert_eq!(t.scores, None);
        assert_eq!(t.merges, ["a b", "Ġ a"]);
        // bos_token as an object, eos_token as a string.
        assert_eq!((t.bos_id, t.eos_id, t.unk_id, t.pad_id), (Some(5), Some(6), None, None));
        // add_bos from the TemplateProcessing inside the Sequence post-processor.
        assert_eq!((t.add_bos, t.add_eos, t.add_space_prefix), (Some(true), None, None));
        assert_eq!(t.chat_template.as_deref(), Some("chat"));
    }

    #[test]
    fn merges_as_strings_and_as_pairs_are_the_same() {
        let mut pairs = spm_json();
        pairs["model"]["merges"] = json!([["▁", "a"], ["a", "b"], ["▁a", "b"]]);
        let config = spm_config();
        assert_eq!(load(&files(&pairs, &config), None).unwrap(), load(&files(&spm_json(), &config), None).unwrap());

        let mut strings = bpe_json(llama3_regex(), true);
        strings["model"]["merges"] = json!(["a b", "Ġ a"]);
        let config = bpe_config();
        let a = load(&files(&strings, &config), None).unwrap();
        assert_eq!(a, load(&files(&bpe_json(llama3_regex(), true), &config), None).unwrap());
        assert_eq!(a.merges, ["a b", "Ġ a"]);
    }

    #[test]
    fn pair_merges_with_spaces_are_written_as_g() {
        let mut tok = bpe_json(llama3_regex(), true);
        tok["model"]["merges"] = json!([["a b", "c"]]);
        let t = load(&files(&tok, &bpe_config()), None).unwrap();
        assert_eq!(t.merges, ["aĠb c"]);
    }

    #[test]
    fn bad_merges_are_errors() {
        for merge in [json!("a"), json!("a b c"), json!(" a"), json!(["a"]), json!(["a", 1]), json!(7)] {
            let mut tok = bpe_json(llama3_regex(), true);
            tok["model"]["merges"] = json!([["a", "b"], merge]);
            let err = load(&files(&tok, &bpe_config()), None).unwrap_err().to_string();
            assert!(err.contains("tokenizer.json: model.merges[1]: expected \"a b\""), "{err}");
        }
    }

    #[test]
    fn vocab_is_padded_to_the_config_vocab_size() {
        let t = load(&files(&bpe_json(llama3_regex(), true), &bpe_config()), Some(10)).unwrap();
        assert_eq!(t.tokens.len(), 10);
        assert_eq!(&t.tokens[7..], ["[PAD7]", "[PAD8]", "[PAD9]"]);
        assert_eq!(&t.token_types[7..], [token_type::UNUSED; 3]);

        let t = load(&files(&spm_json(), &spm_config()), Some(266)).unwrap();
        assert_eq!(t.tokens[265], "[PAD265]");
        assert_eq!(t.token_types[265], token_type::UNUSED);
        assert_eq!(t.scores.unwrap().len(), 266);

        // Holes inside the tokenizer's own ids are padded the same way.
        let mut tok = bpe_json(llama3_regex(), true);
        tok["added_tokens"][1]["id"] = json!(8);
        let t = load(&files(&tok, &bpe_config()), None).unwrap();
        assert_eq!(&t.tokens[5..], ["<|begin_of_text|>", "[PAD6]", "[PAD7]", "<|end_of_text|>"]);
        assert_eq!(t.eos_id, Some(8));
    }

    #[test]
    fn a_vocab_size_below_the_tokenizer_is_an_error() {
        let err = load(&files(&bpe_json(llama3_regex(), true), &bpe_config()), Some(6)).unwrap_err();
        assert!(matches!(err, HfError::VocabSizeMismatch { max_id: 6, vocab_size: 6, .. }), "{err}");
        assert!(err.to_string().contains("ids up to 6 but config.json has vocab_size 6"), "{err}");
    }

    #[test]
    fn unknown_pre_tokenizer_regex_is_an_error_naming_it() {
        let err = load(&files(&bpe_json(r"\w+|\s+", false), &bpe_config()), None).unwrap_err();
        assert!(matches!(err, HfError::UnknownPreTokenizer { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("tokenizer.json: pre_tokenizer: no llama.cpp pre-tokenizer"), "{msg}");
        assert!(msg.contains(r"'\w+|\s+'"), "{msg}");
        assert!(msg.contains("'llama-bpe'") && msg.contains("'qwen2'"), "{msg}");
    }

    #[test]
    fn pre_follows_regex_and_ignore_merges() {
        let pre = |regex: &str, ignore_merges: bool| {
            load(&files(&bpe_json(regex, ignore_merges), &bpe_config()), None).map(|t| t.pre.unwrap_or_default())
        };
        assert_eq!(pre(llama3_regex(), true).unwrap(), "llama-bpe");
        assert_eq!(pre(llama3_regex(), false).unwrap(), "dbrx");
        assert_eq!(pre(QWEN2[0], false).unwrap(), "qwen2");
        // llama.cpp's qwen2 does not ignore merges, and no pre-tokenizer splits like Qwen 2 and does.
        assert!(matches!(pre(QWEN2[0], true), Err(HfError::UnknownPreTokenizer { ignore_merges: true, .. })));
        assert_eq!(pre(GPT2_REGEX, false).unwrap(), "gpt-2");
        assert_eq!(pre(GPT2_REGEX_LLAMA_CPP, false).unwrap(), "gpt-2");
        // Literal CR/LF in the JSON string match their escapes.
        assert_eq!(pre(&llama3_regex().replace("\\r", "\r").replace("\\n", "\n"), true).unwrap(), "llama-bpe");
    }

    #[test]
    fn gpt2_style_byte_level_uses_its_own_regex() {
        let mut tok = bpe_json("", false);
        tok["pre_tokenizer"] =
            json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true });
        assert_eq!(load(&files(&tok, &bpe_config()), None).unwrap().pre.as_deref(), Some("gpt-2"));

        tok["pre_tokenizer"] = json!({ "type": "Sequence", "pretokenizers": [
            { "type": "Digits", "individual_digits": true },
            { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true },
        ]});
        assert_eq!(load(&files(&tok, &bpe_config()), None).unwrap().pre.as_deref(), Some("starcoder"));

        // A prefix space is something llama.cpp's BPE tokenizer cannot add.
        tok["pre_tokenizer"] =
            json!({ "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true });
        let err = load(&files(&tok, &bpe_config()), None).unwrap_err().to_string();
        assert!(err.contains("pre_tokenizer.add_prefix_space 'true' is not supported"), "{err}");
    }

    /// tiiuae/falcon-7b's tokenizer.json in miniature: Falcon's pre-tokenizer sequence, its
    /// first added tokens (`>>TITLE<<` .. `<|endoftext|>`), no normalizer or post-processor.
    fn falcon_json() -> Value {
        let special = |id: u32, content: &str| {
            json!({ "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true })
        };
        let mut tok = bpe_json("", false);
        tok["added_tokens"] = json!([special(5, ">>TITLE<<"), special(6, ">>ABSTRACT<<"), special(7, "<|endoftext|>")]);
        tok["pre_tokenizer"] = json!({ "type": "Sequence", "pretokenizers": [
            { "type": "Punctuation", "behavior": "Contiguous" },
            { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true },
            { "type": "Digits", "individual_digits": false },
            { "type": "Split", "pattern": { "Regex": "[0-9][0-9][0-9]" }, "behavior": "Isolated", "invert": false },
        ]});
        tok["post_processor"] = Value::Null;
        tok["decoder"] =
            json!({ "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true });
        tok["model"].as_object_mut().unwrap().remove("ignore_merges");
        tok
    }

    #[test]
    fn falcon_pre_tokenizer_is_falcon() {
        let config = json!({ "add_prefix_space": false, "eos_token": "<|endoftext|>", "model_max_length": 2048,
                             "tokenizer_class": "PreTrainedTokenizerFast" });
        let t = load(&files(&falcon_json(), &config), None).unwrap();
        assert_eq!((t.model, t.pre.as_deref()), (TokenizerModel::Gpt2, Some("falcon")));
        assert_eq!(&t.tokens[5..], [">>TITLE<<", ">>ABSTRACT<<", "<|endoftext|>"]);
        assert_eq!((t.bos_id, t.eos_id, t.add_bos, t.add_space_prefix), (None, Some(7), None, None));
        // A ByteLevel post-processor (the other spelling of Falcon's files) changes nothing.
        let mut tok = falcon_json();
        tok["post_processor"] =
            json!({ "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true });
        assert_eq!(load(&files(&tok, &config), None).unwrap(), t);
    }

    #[test]
    fn only_falcons_sequence_may_follow_byte_level() {
        let err = |edit: &dyn Fn(&mut Value)| {
            let mut tok = falcon_json();
            edit(&mut tok["pre_tokenizer"]["pretokenizers"]);
            load(&files(&tok, &bpe_config()), None).unwrap_err()
        };
        let msg = err(&|p| p.as_array_mut().unwrap().push(json!({ "type": "Whitespace" }))).to_string();
        assert!(
            msg.ends_with(
                "tokenizer.json: pre_tokenizer.pretokenizers[4].type 'Whitespace' is not supported (expected \
                 ByteLevel last in the pre-tokenizer sequence, or followed by exactly Digits (individual_digits \
                 false) then Split [0-9][0-9][0-9], as in Falcon's)"
            ),
            "{msg}"
        );
        let msg = err(&|p| p[2] = json!({ "type": "Whitespace" })).to_string();
        assert!(msg.contains("pre_tokenizer.pretokenizers[2].type 'Whitespace' is not supported"), "{msg}");
        let msg = err(&|p| p[3]["pattern"]["Regex"] = json!("\\d{1,3}")).to_string();
        assert!(msg.contains(r"pre_tokenizer.pretokenizers[3].pattern.Regex '\d{1,3}' is not supported"), "{msg}");
        let msg = err(&|p| p[3]["behavior"] = json!("Removed")).to_string();
        assert!(msg.contains("pre_tokenizer.pretokenizers[3].behavior 'Removed' is not supported"), "{msg}");
        let msg = err(&|p| p[2]["individual_digits"] = json!(true)).to_string();
        assert!(msg.contains("pre_tokenizer.pretokenizers[2].individual_digits 'true' is not supported"), "{msg}");
        // Split and Digits swapped: the Split is not where Falcon has it.
        let msg = err(&|p| p.as_array_mut().unwrap().swap(2, 3)).to_string();
        assert!(msg.contains("pre_tokenizer.pretokenizers[2].type 'Split' is not supported"), "{msg}");
        // Punctuation must be Contiguous; tokenizers' default is Isolated.
        let msg = err(&|p| p[0]["behavior"] = json!("Isolated")).to_string();
        assert!(msg.contains("pre_tokenizer.pretokenizers[0].behavior 'Isolated' is not supported"), "{msg}");
        let msg = err(&|p| _ = p[0].as_object_mut().unwrap().remove("behavior")).to_string();
        assert!(msg.contains("pre_tokenizer.pretokenizers[0].behavior 'Isolated' is not supported"), "{msg}");
        // Part of Falcon's sequence is no llama.cpp pre-tokenizer.
        assert!(matches!(err(&|p| _ = p.as_array_mut().unwrap().pop()), HfError::UnknownPreTokenizer { .. }));
        assert!(matches!(err(&|p| _ = p.as_array_mut().unwrap().remove(0)), HfError::UnknownPreTokenizer { .. }));
    }

    #[test]
    fn unsupported_models_and_components_are_named() {
        let mut tok = bpe_json(llama3_regex(), true);
        tok["model"]["type"] = json!("WordPiece");
        let err = load(&files(&tok, &bpe_config()), None).unwrap_err().to_string();
        assert!(err.ends_with("tokenizer.json: model.type 'WordPiece' is not supported (expected BPE)"), "{err}");

        let mut tok = bpe_json(llama3_regex(), true);
        tok["normalizer"] = json!({ "type": "Lowercase" });
        let err = load(&files(&tok, &bpe_config()), None).unwrap_err().to_string();
        assert!(err.contains("normalizer.type 'Lowercase' is not supported"), "{err}");

        let mut tok = spm_json();
        tok["normalizer"]["normalizers"][1] = json!({ "type": "NFKC" });
        let err = load(&files(&tok, &spm_config()), None).unwrap_err().to_string();
        assert!(err.contains("normalizer.normalizers[1].type 'NFKC' is not supported"), "{err}");

        let mut tok = spm_json();
        tok["model"]["byte_fallback"] = json!(false);
        let err = load(&files(&tok, &spm_config()), None).unwrap_err().to_string();
        assert!(err.contains("model.byte_fallback 'false' is not supported"), "{err}");
    }

    #[test]
    fn missing_byte_tokens_are_an_error() {
        let mut tok = spm_json();
        tok["model"]["vocab"].as_object_mut().unwrap().remove("<0x7F>");
        let err = load(&files(&tok, &spm_config()), None).unwrap_err();
        assert!(matches!(&err, HfError::MissingByteToken { token, .. } if token == "<0x7F>"), "{err}");
    }

    #[test]
    fn metaspace_sets_add_space_prefix_and_the_config_overrides_it() {
        let with_metaspace = |scheme: &str| {
            let mut tok = spm_json();
            tok["normalizer"] = Value::Null;
            tok["pre_tokenizer"] =
                json!({ "type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": false });
            tok
        };
        let prefix = |tok: &Value, config: &Value| load(&files(tok, config), None).unwrap().add_space_prefix;
        assert_eq!(prefix(&with_metaspace("first"), &spm_config()), Some(true));
        assert_eq!(prefix(&with_metaspace("always"), &spm_config()), Some(true));
        assert_eq!(prefix(&with_metaspace("never"), &spm_config()), Some(false));
        let mut config = spm_config();
        config["add_prefix_space"] = json!(false);
        assert_eq!(prefix(&with_metaspace("first"), &config), Some(false));

        // Without a Prepend normalizer nothing is prepended; without '▁' for spaces, nothing fits.
        let mut tok = spm_json();
        tok["normalizer"]["normalizers"].as_array_mut().unwrap().remove(0);
        assert_eq!(prefix(&tok, &spm_config()), Some(false));
        tok["normalizer"] = Value::Null;
        let err = load(&files(&tok, &spm_config()), None).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json: normalizer: expected spaces replaced by '▁'"), "{err}");
    }

    #[test]
    fn special_tokens_fall_back_to_config_and_generation_config_ids() {
        let mut config = bpe_config();
        config.as_object_mut().unwrap().remove("bos_token");
        config["eos_token"] = json!("<|not in vocab|>");
        let mut f = files(&bpe_json(llama3_regex(), true), &config);
        f.push((CONFIG_FILE, json!({ "eos_token_id": 6, "pad_token_id": 99 }).to_string()));
        f.push((GENERATION_CONFIG_FILE, json!({ "pad_token_id": [4, 5] }).to_string()));
        let t = load(&f, None).unwrap();
        // The template's first special token stands in for the missing bos_token.
        assert_eq!(t.bos_id, Some(5));
        assert_eq!(t.add_bos, Some(true));
        assert_eq!(t.eos_id, Some(6));
        // 99 is out of range, so generation_config.json's (first) id is taken.
        assert_eq!(t.pad_id, Some(4));
    }

    #[test]
    fn config_add_flags_override_the_post_processor() {
        let mut config = spm_config();
        config["add_bos_token"] = json!(false);
        config["add_eos_token"] = json!(true);
        let t = load(&files(&spm_json(), &config), None).unwrap();
        assert_eq!((t.add_bos, t.add_eos), (Some(false), Some(true)));

        // Asking for an EOS that nothing names is an error.
        config.as_object_mut().unwrap().remove("eos_token");
        let mut tok = spm_json();
        tok["added_tokens"].as_array_mut().unwrap().truncate(2);
        tok["model"]["vocab"].as_object_mut().unwrap().remove("</s>");
        tok["model"]["vocab"]["x"] = json!(2);
        let err = load(&files(&tok, &config), None).unwrap_err();
        assert!(matches!(err, HfError::MissingSpecialToken { kind: "eos", .. }), "{err}");
    }

    #[test]
    fn added_tokens_are_typed_like_the_converter_does() {
        let mut tok = spm_json();
        let added = tok["added_tokens"].as_array_mut().unwrap();
        added.push(json!({ "id": 265, "content": "▁hello", "special": false, "normalized": true }));
        added.push(json!({ "id": 266, "content": "<|im_start|>", "special": false, "normalized": false }));
        let t = load(&files(&tok, &spm_config()), None).unwrap();
        // User-defined tokens are matched in raw text, before spaces become '▁'.
        assert_eq!((t.tokens[265].as_str(), t.token_types[265]), (" hello", token_type::USER_DEFINED));
        // Tokens that look special are control tokens even when not marked special.
        assert_eq!((t.tokens[266].as_str(), t.token_types[266]), ("<|im_start|>", token_type::CONTROL));
    }

    #[test]
    fn duplicate_ids_and_texts_are_errors() {
        let mut tok = bpe_json(llama3_regex(), true);
        tok["model"]["vocab"]["c"] = json!(1);
        let err = load(&files(&tok, &bpe_config()), None).unwrap_err();
        assert!(matches!(err, HfError::DuplicateId { id: 1, .. }), "{err}");

        let mut tok = bpe_json(llama3_regex(), true);
        tok["added_tokens"][1]["content"] = json!("ab");
        let err = load(&files(&tok, &bpe_config()), None).unwrap_err();
        assert!(matches!(err, HfError::DuplicateToken { first: 2, second: 6, .. }), "{err}");
    }

    #[test]
    fn missing_and_malformed_files_are_errors_not_panics() {
        let err = load(&[], None).unwrap_err();
        assert!(matches!(err, HfError::NoTokenizer { .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with(": no tokenizer found: expected 'tokenizer.json' or a SentencePiece 'tokenizer.model'"),
            "{err}"
        );
        let err = load(&[(TOKENIZER_FILE, "{\"model\": ".into())], None).unwrap_err();
        assert!(matches!(err, HfError::Json { .. }), "{err}");

        // Every field of both tokenizers replaced by values of the wrong shape.
        let junk =
            [json!(null), json!(-1), json!(1e300), json!("x"), json!([]), json!({}), json!([1, [2]]), json!(true)];
        for (tok, config) in [(spm_json(), spm_config()), (bpe_json(llama3_regex(), true), bpe_config())] {
            let mut paths = Vec::new();
            collect_paths(&tok, String::new(), &mut paths);
            for path in paths.iter().filter(|p| !p.contains("/vocab/") || p.ends_with("/vocab/a")) {
                for value in &junk {
                    let mut bad = tok.clone();
                    *bad.pointer_mut(path).unwrap() = value.clone();
                    let _ = load(&files(&bad, &config), None);
                }
            }
            for key in config.as_object().unwrap().keys() {
                for value in &junk {
                    let mut bad = config.clone();
                    bad[key] = value.clone();
                    let _ = load(&files(&tok, &bad), Some(300));
                }
            }
        }
    }

    /// JSON pointers of every value in `v`.
    fn collect_paths(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(obj) => {
                for (k, child) in obj {
                    collect_paths(child, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
                }
            }
            Value::Array(list) => {
                for (i, child) in list.iter().enumerate() {
                    collect_paths(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        if !at.is_empty() {
            out.push(at);
        }
    }

    #[test]
    fn to_metadata_uses_llama_cpp_keys_and_types() {
        let t = load(&files(&spm_json(), &spm_config()), None).unwrap();
        let md = t.to_metadata();
        let keys: Vec<&str> = md.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tokenizer.ggml.model",
                "tokenizer.ggml.tokens",
                "tokenizer.ggml.scores",
                "tokenizer.ggml.token_type",
                "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token",
                "tokenizer.ggml.add_space_prefix",
            ]
        );
        assert_eq!(md[0].1, MetaValue::String("llama".into()));
        assert!(matches!(&md[1].1, MetaValue::Array(MetaArray::String(v)) if v.len() == 265));
        assert!(matches!(&md[2].1, MetaValue::Array(MetaArray::F32(v)) if v.len() == 265));
        assert!(matches!(&md[3].1, MetaValue::Array(MetaArray::I32(v)) if v.len() == 265));
        assert_eq!(md[4].1, MetaValue::U32(1));
        assert_eq!(md[7].1, MetaValue::Bool(true));

        let mut t = load(&files(&bpe_json(llama3_regex(), true), &bpe_config()), None).unwrap();
        t.pad_id = Some(6);
        let md = t.to_metadata();
        let get = |key: &str| md.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert_eq!(get("tokenizer.ggml.model"), Some(MetaValue::String("gpt2".into())));
        assert_eq!(get("tokenizer.ggml.pre"), Some(MetaValue::String("llama-bpe".into())));
        assert_eq!(
            get("tokenizer.ggml.merges"),
            Some(MetaValue::Array(MetaArray::String(vec!["a b".into(), "Ġ a".into()])))
        );
        assert_eq!(get("tokenizer.ggml.padding_token_id"), Some(MetaValue::U32(6)));
        assert_eq!(get("tokenizer.chat_template"), Some(MetaValue::String("chat".into())));
        assert_eq!(get("tokenizer.ggml.scores"), None);
        assert_eq!(get("tokenizer.ggml.add_space_prefix"), None);
    }

    #[test]
    fn pre_table_is_consistent() {
        for (i, a) in PRE_TOKENIZERS.iter().enumerate() {
            assert!(SUPPORTED_PRE.contains(&format!("'{}'", a.pre)), "{} missing from SUPPORTED_PRE", a.pre);
            for b in &PRE_TOKENIZERS[i + 1..] {
                let same = a.regexes == b.regexes && a.ignore_merges == b.ignore_merges;
                assert!(!same, "{} and {} cannot be told apart", a.pre, b.pre);
            }
        }
    }
}
