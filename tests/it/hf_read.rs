//! Hugging Face inputs: safetensors files and checkpoint folders, single-file and sharded.

use std::fs;

use gguftune::hf::{Checkpoint, HfError, SafetensorsFile};

use crate::common::fixtures::{tiny_llama, Dtype, Shards, TinyLlamaSpec};
use crate::common::temp_dir;

#[test]
fn reads_single_and_sharded_checkpoints_with_every_tensor() {
    for (dtype, shards) in [(Dtype::F32, Shards::One), (Dtype::BF16, Shards::Two), (Dtype::F16, Shards::Two)] {
        let dir = temp_dir();
        let info = tiny_llama(dir.path(), &TinyLlamaSpec::default(), dtype, shards, 1).unwrap();
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ckpt.shards.len(), if matches!(shards, Shards::One) { 1 } else { 2 });
        let tensors = ckpt.tensors().unwrap();
        let mut names: Vec<&str> = tensors.iter().map(|(t, _)| t.name.as_str()).collect();
        names.sort();
        let mut expected: Vec<&str> = info.tensor_names.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(names, expected);
        for (t, _) in &tensors {
            assert_eq!(t.dtype, dtype.safetensors(), "{}", t.name);
            assert_eq!(Some(t.shape.as_slice()), info.shape_of(&t.name), "{}", t.name);
        }
        assert_eq!(ckpt.config["model_type"], "llama");
    }
}

#[test]
fn a_shard_listed_in_the_index_but_missing_is_named() {
    let dir = temp_dir();
    tiny_llama(dir.path(), &TinyLlamaSpec::default(), Dtype::F32, Shards::Two, 1).unwrap();
    fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, HfError::MissingShard { shard, .. } if shard == "model-00002-of-00002.safetensors"),
        "{err}"
    );
    assert!(
        err.to_string().contains(
            "model.safetensors.index.json: shard 'model-00002-of-00002.safetensors' is listed in the index but missing"
        ),
        "{err}"
    );
}

#[test]
fn an_index_pointing_outside_the_folder_is_refused() {
    let dir = temp_dir();
    tiny_llama(dir.path(), &TinyLlamaSpec::default(), Dtype::F32, Shards::Two, 1).unwrap();
    let index_path = dir.path().join("model.safetensors.index.json");
    let index =
        fs::read_to_string(&index_path).unwrap().replace("model-00002-of-00002.safetensors", "../secret.safetensors");
    fs::write(&index_path, index).unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(matches!(err, HfError::BadShardName { .. }), "{err}");
}

#[test]
fn truncated_safetensors_and_bad_config_are_clear_errors() {
    let dir = temp_dir();
    tiny_llama(dir.path(), &TinyLlamaSpec::default(), Dtype::F32, Shards::One, 1).unwrap();
    let weights = dir.path().join("model.safetensors");
    let bytes = fs::read(&weights).unwrap();
    fs::write(&weights, &bytes[..bytes.len() - 10]).unwrap();
    let err = SafetensorsFile::open(&weights).unwrap_err();
    assert!(matches!(err, HfError::Safetensors { .. }), "{err}");
    assert!(err.to_string().starts_with(&weights.display().to_string()), "{err}");

    fs::write(dir.path().join("config.json"), "{\n  \"model_type\": \"llama\",\n  oops\n}").unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(matches!(err, HfError::Json { line: 3, .. }), "{err}");
}

#[test]
fn a_folder_without_safetensors_weights_is_refused_with_a_hint() {
    let dir = temp_dir();
    fs::write(dir.path().join("config.json"), "{}").unwrap();
    fs::write(dir.path().join("pytorch_model.bin"), b"pickle").unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(matches!(err, HfError::NoWeights { .. }));
    assert!(err.to_string().contains("pickled"), "{err}");
}
