//! The JSONL dataset parser, with the format detected from the first record and with each format
//! forced; the first byte of the input picks which.
#![no_main]

use std::path::Path;

use gguftune::data::{read_jsonl_from, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let format = match usize::from(pick) % (Format::ALL.len() + 1) {
        0 => None,
        i => Some(Format::ALL[i - 1]),
    };
    if let Ok(dataset) = read_jsonl_from(rest, Path::new("fuzz.jsonl"), format) {
        assert!(format.is_none_or(|f| f == dataset.format()), "a forced format is the dataset's format");
        std::hint::black_box(dataset.len());
    }
});
