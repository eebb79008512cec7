//! Which of a repository's files conversion needs, chosen from the hub's file listing.

use std::path::Path;

use super::{HubError, RepoId};

/// The single-file checkpoint (the name `hf::Checkpoint` reads).
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index of a sharded checkpoint (the name `hf::Checkpoint` reads).
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The configuration every conversion reads.
const CONFIG_FILE: &str = "config.json";
/// Files fetched when the repository has them: the tokenizer, its special tokens, the chat
/// template and the generation defaults the converter reads.
pub const OPTIONAL_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
];
/// Weight files in Python's pickle format, refused by name.
const PICKLE_SUFFIXES: &[&str] = &[".bin", ".pt", ".pth", ".ckpt", ".pkl"];

/// The files to download from a repository whose listing is `siblings`: the configuration, the
/// optional files it has, and last `model.safetensors` or the shard index (whose shards
/// `shards_of_index` names once the index is on disk). Refuses a repository with only pickled
/// weights.
pub fn select_files(repo: &RepoId, siblings: &[String]) -> Result<Vec<String>, HubError> {
    let has = |name: &str| siblings.iter().any(|s| s == name);
    if !has(CONFIG_FILE) {
        return Err(HubError::NoConfig { repo: repo.clone() });
    }
    let weights = if has(INDEX_FILE) {
        INDEX_FILE
    } else if has(SINGLE_FILE) {
        SINGLE_FILE
    } else {
        let top_level = |s: &&String| !s.contains('/');
        let pickle =
            siblings.iter().filter(top_level).find(|s| PICKLE_SUFFIXES.iter().any(|suffix| s.ends_with(suffix)));
        if let Some(file) = pickle {
            return Err(HubError::PickleOnly { repo: repo.clone(), file: file.clone() });
        }
        let found = siblings.iter().filter(|s| s.ends_with(".safetensors")).cloned().collect();
        return Err(HubError::NoWeights { repo: repo.clone(), found });
    };
    let mut files = vec![CONFIG_FILE.to_owned()];
    files.extend(OPTIONAL_FILES.iter().filter(|f| has(f)).map(|f| (*f).to_owned()));
    files.push(weights.to_owned());
    Ok(files)
}

/// The shards `index` (a downloaded `model.safetensors.index.json`) routes tensors to, each
/// once, in order of first use; every one must be a plain file name the repository lists.
pub fn shards_of_index(repo: &RepoId, index: &Path, siblings: &[String]) -> Result<Vec<String>, HubError> {
    let shards = index_shards(repo, index)?;
    if let Some(shard) = shards.iter().find(|shard| !siblings.contains(shard)) {
        return Err(HubError::BadShard {
            repo: repo.clone(),
            shard: shard.clone(),
            why: "which the repository does not have",
        });
    }
    Ok(shards)
}

/// The shards `index` routes tensors to, each once, in order of first use; every one must be
/// a plain file name.
pub fn index_shards(repo: &RepoId, index: &Path) -> Result<Vec<String>, HubError> {
    let bad_index = || HubError::BadIndex { path: index.to_owned() };
    let text = std::fs::read_to_string(index).map_err(|source| HubError::Cache { path: index.to_owned(), source })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad_index())?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(bad_index)?;
    let mut shards: Vec<String> = Vec::new();
    for value in map.values() {
        let shard = value.as_str().ok_or_else(bad_index)?;
        if shards.iter().any(|s| s == shard) {
            continue;
        }
        if shard.contains(['/', '\\']) || shard == "." || shard == ".." || shard.is_empty() {
            return Err(HubError::BadShard {
                repo: repo.clone(),
                shard: shard.to_owned(),
                why: "which is not a plain file name",
            });
        }
        shards.push(shard.to_owned());
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn picks_config_tokenizer_and_weights_only() {
        let repo = RepoId::parse("o/n").unwrap();
        let siblings = names(&[
            "README.md",
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "pytorch_model.bin",
            "onnx/model.onnx",
        ]);
        assert_eq!(
            select_files(&repo, &siblings).unwrap(),
            names(&["config.json", "tokenizer.json", "model.safetensors"])
        );
        let sharded = names(&["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"]);
        assert_eq!(select_files(&repo, &sharded).unwrap(), names(&["config.json", "model.safetensors.index.json"]));
    }

    #[test]
    fn refuses_pickle_only_and_missing_config() {
        let repo = RepoId::parse("o/n").unwrap();
        let pickle = names(&["config.json", "pytorch_model.bin"]);
        assert!(
            matches!(select_files(&repo, &pickle), Err(HubError::PickleOnly { file, .. }) if file == "pytorch_model.bin")
        );
        assert!(matches!(select_files(&repo, &names(&["model.safetensors"])), Err(HubError::NoConfig { .. })));
        let other = names(&["config.json", "consolidated.safetensors"]);
        assert!(matches!(select_files(&repo, &other), Err(HubError::NoWeights { found, .. }) if found.len() == 1));
    }
}
