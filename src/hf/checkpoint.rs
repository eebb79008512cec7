//! A Hugging Face model folder: `config.json` plus `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

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
    let bytes = std::fs::read(index_path).map_err(|source| HfError::Io { path: index_path.to_owned(), source })?;
    let index = ShardIndex::parse(&bytes, index_path)?;
    let mut shards = Vec::with_capacity(index.shards.len());
    for (shard, _) in &index.shards {
        let path = dir.join(shard);
        if !path.is_file() {
            return Err(HfError::MissingShard { index: index_path.to_owned(), shard: shard.clone() });
        }
        let file = SafetensorsFile::open(&path)?;
        index.check_shard(shard, &file.view()?)?;
        shards.push(file);
    }
    Ok(shards)
}

/// Whether `name` names a file directly inside a folder (no separator, not `..`).
fn is_plain_file_name(name: &str) -> bool {
    Path::new(name).file_name().is_some_and(|n| n == name) && name != ".."
}

/// `model.safetensors.index.json`: which tensors each shard holds.
#[derive(Debug)]
pub struct ShardIndex {
    path: PathBuf,
    /// Each shard's file name with the tensors the index puts there, sorted by shard name.
    pub shards: Vec<(String, Vec<String>)>,
}

impl ShardIndex {
    /// Parses the index's bytes (read from `path`, which errors name): a `weight_map` object of
    /// tensor name -> shard name, every shard a plain file name of the checkpoint folder.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<ShardIndex, HfError> {
        let index: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| HfError::json(path, &e))?;
        let weight_map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or(HfError::BadField { path: path.to_owned(), expected: "an object 'weight_map'" })?;
        let mut by_shard: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (tensor, shard) in weight_map {
            let shard = shard
                .as_str()
                .ok_or(HfError::BadField { path: path.to_owned(), expected: "shard file names as strings" })?;
            by_shard.entry(shard).or_default().push(tensor.clone());
        }
        if let Some(shard) = by_shard.keys().find(|s| !is_plain_file_name(s)) {
            return Err(HfError::BadShardName { index: path.to_owned(), shard: (*shard).to_owned() });
        }
        let shards = by_shard.into_iter().map(|(shard, tensors)| (shard.to_owned(), tensors)).collect();
        Ok(ShardIndex { path: path.to_owned(), shards })
    }

    /// Checks that `view`, the contents of `shard`, holds every tensor the index puts there.
    pub fn check_shard(&self, shard: &str, view: &SafeTensors<'_>) -> Result<(), HfError> {
        let mut tensors = self.shards.iter().filter(|(name, _)| name == shard).flat_map(|(_, tensors)| tensors);
        match tensors.find(|t| view.tensor(t).is_err()) {
            Some(missing) => Err(HfError::TensorNotInShard {
                index: self.path.clone(),
                tensor: missing.clone(),
                shard: shard.to_owned(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "model.safetensors.index.json";

    fn parse(json: &str) -> Result<ShardIndex, HfError> {
        ShardIndex::parse(json.as_bytes(), Path::new(INDEX))
    }

    #[test]
    fn groups_tensors_by_shard_in_name_order() {
        let index =
            parse(r#"{"weight_map": {"b": "two.safetensors", "a": "one.safetensors", "c": "two.safetensors"}}"#)
                .unwrap();
        let expected = [
            ("one.safetensors".to_owned(), vec!["a".to_owned()]),
            ("two.safetensors".to_owned(), vec!["b".to_owned(), "c".to_owned()]),
        ];
        assert_eq!(index.shards, expected);
    }

    #[test]
    fn refuses_shard_names_outside_the_folder_and_malformed_indexes() {
        for shard in ["../x.safetensors", "a/b.safetensors", "..", "/etc/passwd", ""] {
            let err = parse(&format!(r#"{{"weight_map": {{"t": {}}}}}"#, serde_json::json!(shard))).unwrap_err();
            assert!(matches!(&err, HfError::BadShardName { shard: s, .. } if s == shard), "{shard}: {err}");
        }
        assert!(matches!(parse(r#"{"weight_map": {"t": 1}}"#), Err(HfError::BadField { .. })));
        assert!(matches!(parse(r#"{"metadata": {}}"#), Err(HfError::BadField { .. })));
        let err = parse("{\n  \"weight_map\": {\"t\": \u{7f}").unwrap_err();
        assert!(matches!(err, HfError::Json { line: 2, .. }), "{err}");
        let err = ShardIndex::parse(b"{\"weight_map\": {\"\xff\": \"a\"}}", Path::new(INDEX)).unwrap_err();
        assert!(err.to_string().starts_with(&format!("{INDEX}:1:")), "{err}");
    }

    #[test]
    fn a_shard_missing_a_tensor_of_the_index_is_named() {
        let index = parse(r#"{"weight_map": {"a": "s.safetensors", "b": "s.safetensors"}}"#).unwrap();
        let header = r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&[0; 4]);
        let view = SafeTensors::deserialize(&file).unwrap();
        let err = index.check_shard("s.safetensors", &view).unwrap_err();
        assert!(matches!(&err, HfError::TensorNotInShard { tensor, .. } if tensor == "b"), "{err}");
        assert!(index.check_shard("other.safetensors", &view).is_ok());
    }
}
