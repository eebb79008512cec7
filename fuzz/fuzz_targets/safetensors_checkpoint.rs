//! The safetensors header and `model.safetensors.index.json` handling, as `convert` opens a
//! checkpoint folder: the input is split at the first `0xFF` byte (never valid UTF-8, so never
//! inside the JSON) into an index and a shard. Without a split, the whole input is a single
//! `model.safetensors`; with one, the first part is the index and the second the shard it names.
#![no_main]

use gguftune::hf::{Checkpoint, INDEX_FILE, SINGLE_FILE};
use libfuzzer_sys::fuzz_target;

/// The shard name fuzzed indexes are expected to use (the seeds use it).
const SHARD: &str = "model-00001-of-00001.safetensors";

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).expect("write input");
    write("config.json", b"{}");
    match data.iter().position(|&b| b == 0xFF) {
        None => write(SINGLE_FILE, data),
        Some(at) => {
            write(INDEX_FILE, &data[..at]);
            write(SHARD, &data[at + 1..]);
        }
    }
    let Ok(checkpoint) = Checkpoint::open(dir.path()) else { return };
    let Ok(tensors) = checkpoint.tensors() else { return };
    for (entry, shard) in tensors {
        let Ok(view) = shard.view() else { continue };
        if let Ok(tensor) = view.tensor(&entry.name) {
            assert_eq!(tensor.data().len(), entry.n_bytes, "{}: data size matches the entry", entry.name);
            std::hint::black_box(tensor.data().iter().fold(0u8, |a, b| a ^ b));
        }
        std::hint::black_box(shard.metadata().ok());
    }
});
