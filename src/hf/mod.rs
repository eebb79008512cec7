//! Hugging Face inputs: safetensors files over a memory map, sharded checkpoints with
//! `model.safetensors.index.json`, `config.json`, and the tokenizer (`tokenizer.json` or a
//! SentencePiece `tokenizer.model`). No ggml here.

mod checkpoint;
mod config;
mod rope;
mod safetensors_file;
mod sentencepiece;
mod tokenizer;

use std::path::PathBuf;

pub(crate) use checkpoint::read_json;
pub use checkpoint::{Checkpoint, ShardIndex, INDEX_FILE, SINGLE_FILE};
pub use config::{ConfigError, ConfigReader, ModelConfig, LIMITS};
pub use rope::{llama3_frequency_factors, RopeScaling};
pub use safetensors_file::{
    header_len, parse_header, read_header, Header, SafetensorsFile, TensorEntry, HEADER_LEN_BYTES, MAX_HEADER_BYTES,
};
pub use sentencepiece::{
    parse_model_proto, ModelProto, NormalizerSpec, Piece, PieceType, SpmError, SpmErrorKind, SpmField, SpmMember,
    SpmMessage, SpmModelType, TrainerSpec, WireType, ADDED_TOKENS_FILE, MAX_MODEL_FILE_BYTES, SPM_FILE,
};
pub use tokenizer::TOKENIZER_FILE;
pub use tokenizer::{load_tokenizer, token_type, GgufTokenizer, PreTokenizer, TokenizerModel, PRE_TOKENIZERS};

/// An error reading Hugging Face files: each names the file and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HfError {
    #[error("{}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Json { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{}: not a valid safetensors file", path.display())]
    Safetensors { path: PathBuf, source: safetensors::SafeTensorError },
    #[error("{}: no weights found: expected '{SINGLE_FILE}' or '{INDEX_FILE}' (hint: only safetensors checkpoints are read; pickled .bin files can run code when loaded)", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("{}: shard '{shard}' is listed in the index but missing", index.display())]
    MissingShard { index: PathBuf, shard: String },
    #[error("{}: tensor '{tensor}' is mapped to shard '{shard}', which does not contain it", index.display())]
    TensorNotInShard { index: PathBuf, tensor: String, shard: String },
    #[error("{}: shard name '{shard}' is not a plain file name in the checkpoint folder", index.display())]
    BadShardName { index: PathBuf, shard: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: expected '{expected}'", path.display())]
    BadField { path: PathBuf, expected: &'static str },
    #[error("{}: {field}: expected {expected}", path.display())]
    TokenizerField { path: PathBuf, field: String, expected: &'static str },
    #[error("{}: {field} '{found}' is not supported (expected {expected})", path.display())]
    UnsupportedTokenizer { path: PathBuf, field: String, found: String, expected: &'static str },
    #[error("{}: pre_tokenizer: no llama.cpp pre-tokenizer splits with {} and ignore_merges {ignore_merges} (supported: {supported}) (hint: llama.cpp implements a fixed set of split regexes, so this tokenizer cannot be reproduced)", path.display(), tokenizer::quote_list(regexes))]
    UnknownPreTokenizer { path: PathBuf, regexes: Vec<String>, ignore_merges: bool, supported: &'static str },
    #[error("{}: model.vocab: tokens '{first}' and '{second}' both have id {id}", path.display())]
    DuplicateId { path: PathBuf, id: u32, first: String, second: String },
    #[error("{}: token '{token}' is at ids {first} and {second} (llama.cpp needs each token text once)", path.display())]
    DuplicateToken { path: PathBuf, token: String, first: usize, second: usize },
    #[error("{}: the tokenizer uses ids up to {max_id} but config.json has vocab_size {vocab_size}", path.display())]
    VocabSizeMismatch { path: PathBuf, max_id: u32, vocab_size: usize },
    #[error("{}: model.vocab: byte token '{token}' is missing (hint: llama.cpp's SentencePiece tokenizer falls back to the 256 tokens '<0x00>'..'<0xFF>' and needs all of them)", path.display())]
    MissingByteToken { path: PathBuf, token: String },
    #[error("{}: add_{kind}_token is set but no {kind} token is known (expected '{kind}_token' naming a token of tokenizer.json, or '{kind}_token_id' in config.json)", path.display())]
    MissingSpecialToken { path: PathBuf, kind: &'static str },
    #[error("{}: no tokenizer found: expected '{TOKENIZER_FILE}' or a SentencePiece '{SPM_FILE}'", dir.display())]
    NoTokenizer { dir: PathBuf },
    #[error("{}: not a valid SentencePiece model", path.display())]
    SentencePiece { path: PathBuf, source: SpmError },
    #[error("{}: {size} bytes is larger than a tokenizer file can be (expected at most {max})", path.display())]
    FileTooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{}: pieces: byte piece '{token}' is missing (hint: llama.cpp's SentencePiece tokenizer falls back to the 256 pieces '<0x00>'..'<0xFF>' and needs all of them)", path.display())]
    MissingBytePiece { path: PathBuf, token: String },
}

impl HfError {
    pub(crate) fn json(path: &std::path::Path, e: &serde_json::Error) -> HfError {
        HfError::Json { path: path.to_owned(), line: e.line(), column: e.column(), message: e.to_string() }
    }
}
