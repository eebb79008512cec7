//! A Hugging Face model folder: `config.json` plus `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{HfError, SafetensorsFile, TensorEntry};

/// The weights file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A checkpoint folder with its config and every shard mapped and validated.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    /// `config.json`, parsed but not interpreted (each architecture reads what it needs).
    pub config: serde_json::Value,
    /// Shards in index order (one for an unsharded checkpoint).
    pub shards: Vec<SafetensorsFile>,
}

impl Checkpoint {
    /// Opens `dir`: reads `config.json`, then maps every shard and checks the index against them.
    pub fn open(dir: &Path) -> Result<Checkpoint, HfError> {
        let config = read_json(&dir.join("config.json"))?;
        if !config.is_object() {
            return Err(HfError::BadField { path: dir.join("config.json"), expected: "a JSON object" });
        }
        let single = dir.join(SINGLE_FILE);
        let index_path = dir.join(INDEX_FILE);
        let shards = if index_path.is_file() {
            open_shards(dir, &index_path)?
        } else if single.is_file() {
            vec![SafetensorsFile::open(&single)?]
        } else {
            return Err(HfError::NoWeights { dir: dir.to_owned() });
        };
        Ok(Checkpoint { dir: dir.to_owned(), config, shards })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lets the pages of `data`, a slice of one of the shards, leave memory.
    pub fn release(&self, data: &[u8]) {
        for shard in &self.shards {
            shard.release(data);
        }
    }

    /// Every tensor of every shard, with the shard it is in.
    pub fn tensors(&self) -> Result<Vec<(TensorEntry, &SafetensorsFile)>, HfError> {
        let mut out = Vec::new();
        for shard in &self.shards {
            out.extend(shard.tensors()?.into_iter().map(|t| (t, shard)));
        }
        Ok(out)
    }
}

/// Reads and parses a JSON file, reporting line and column on a syntax error.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, HfError> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Io { path: path.to_owned(), source })?;
    serde_json::from_str(&text).map_err(|e| HfError::json(path, &e))
}

fn open_shards(dir: &Path, index_path: &Path) -> Result<Vec<SafetensorsFile>, HfError> {
    let index = read_json(index_path)?;
    let weight_map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or(HfError::BadField { path: index_path.to_owned(), expected: "an object 'weight_map'" })?;
    // Shard name -> tensors the index puts there, in first-seen order of shards.
    let mut by_shard: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tensor, shard) in weight_map {
        let shard = shard
            .as_str()
            .ok_or(HfError::BadField { path: index_path.to_owned(), expected: "shard file names as strings" })?;
        by_shard.entry(shard).or_default().push(tensor);
    }
    let mut shards = Vec::with_capacity(by_shard.len());
    for (shard, tensors) in by_shard {
        let is_plain_name = Path::new(shard).file_name().is_some_and(|n| n == shard) && shard != "..";
        if !is_plain_name {
            return Err(HfError::BadShardName { index: index_path.to_owned(), shard: shard.to_owned() });
        }
        let path = dir.join(shard);
        if !path.is_file() {
            return Err(HfError::MissingShard { index: index_path.to_owned(), shard: shard.to_owned() });
        }
        let file = SafetensorsFile::open(&path)?;
        let view = file.view()?;
        if let Some(missing) = tensors.iter().find(|t| view.tensor(t).is_err()) {
            return Err(HfError::TensorNotInShard {
                index: index_path.to_owned(),
                tensor: (*missing).to_owned(),
                shard: shard.to_owned(),
            });
        }
        drop(view);
        shards.push(file);
    }
    Ok(shards)
}
