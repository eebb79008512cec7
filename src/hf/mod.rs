//! Hugging Face inputs: safetensors files over a memory map, sharded checkpoints with
//! `model.safetensors.index.json`, and `config.json`. No ggml here.

mod checkpoint;
mod safetensors_file;

use std::path::PathBuf;

pub use checkpoint::{Checkpoint, INDEX_FILE, SINGLE_FILE};
pub use safetensors_file::{SafetensorsFile, TensorEntry};

/// An error reading Hugging Face files: each names the file and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HfError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Json { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{}: not a valid safetensors file: {source}", path.display())]
    Safetensors { path: PathBuf, source: safetensors::SafeTensorError },
    #[error("{}: no weights found: expected '{SINGLE_FILE}' or '{INDEX_FILE}' (hint: only safetensors checkpoints are read; pickled .bin files can run code when loaded)", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("{}: shard '{shard}' is listed in the index but missing", index.display())]
    MissingShard { index: PathBuf, shard: String },
    #[error("{}: tensor '{tensor}' is mapped to shard '{shard}', which does not contain it", index.display())]
    TensorNotInShard { index: PathBuf, tensor: String, shard: String },
    #[error("{}: shard name '{shard}' is not a plain file name in the checkpoint folder", index.display())]
    BadShardName { index: PathBuf, shard: String },
    #[error("{}: expected '{expected}'", path.display())]
    BadField { path: PathBuf, expected: &'static str },
}

impl HfError {
    pub(crate) fn json(path: &std::path::Path, e: &serde_json::Error) -> HfError {
        HfError::Json { path: path.to_owned(), line: e.line(), column: e.column(), message: e.to_string() }
    }
}
