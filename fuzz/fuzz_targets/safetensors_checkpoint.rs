//! The safetensors header and `model.safetensors.index.json` handling, as `convert` opens a
//! checkpoint folder, on bytes: the input is split at the first `0xFF` byte (never valid UTF-8,
//! so never inside the JSON) into an index and a shard. Without a split, the whole input is the
//! single shard. `Checkpoint::open` runs the same functions on the files it reads.
//!
//! Besides "no crash", the target checks that our header reader (which `inspect` of a hub
//! repository uses without the file) accepts exactly the files the `safetensors` crate accepts,
//! and lists the tensors the crate's view holds with their sizes.
#![no_main]

use std::path::Path;

use gguftune::hf::{read_header, ShardIndex, INDEX_FILE};
use libfuzzer_sys::fuzz_target;
use safetensors::SafeTensors;

/// The shard name fuzzed indexes are expected to use (the seeds use it).
const SHARD: &str = "model-00001-of-00001.safetensors";

fuzz_target!(|data: &[u8]| {
    let (index, shard) = match data.iter().position(|&b| b == 0xFF) {
        None => (None, data),
        Some(at) => (Some(&data[..at]), &data[at + 1..]),
    };
    let index = index.and_then(|bytes| ShardIndex::parse(bytes, Path::new(INDEX_FILE)).ok());
    let view = SafeTensors::deserialize(shard);
    let header = read_header(shard);
    assert_eq!(view.is_ok(), header.is_ok(), "the crate and read_header disagree: {:?} vs {:?}", view.err(), header.err());
    let (Ok(view), Ok(header)) = (view, header) else { return };
    if let Some(index) = &index {
        std::hint::black_box(index.check_shard(SHARD, &view).is_ok());
    }
    assert_eq!(header.tensors.len(), view.len(), "every tensor listed once");
    for entry in &header.tensors {
        let tensor = view.tensor(&entry.name).expect("a listed tensor is in the view");
        assert_eq!(tensor.data().len(), entry.n_bytes, "{}: data size matches the entry", entry.name);
        assert_eq!((tensor.dtype(), tensor.shape()), (entry.dtype, entry.shape.as_slice()), "{}", entry.name);
        std::hint::black_box(tensor.data().iter().fold(0u8, |a, b| a ^ b));
    }
});
