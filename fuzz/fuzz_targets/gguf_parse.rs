//! The GGUF reader: header, metadata, tensor infos, then every metadata value decoded (arrays
//! walked to the bottom and copied to owned values) and every tensor's data slice read.
#![no_main]

use gguftune::gguf::{parse, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = parse(data) else { return };
    for (key, value) in &gguf.metadata {
        std::hint::black_box(key.len());
        walk(value);
        std::hint::black_box(value.to_owned_value());
    }
    for info in &gguf.tensors {
        std::hint::black_box(info.n_elements());
        let bytes = gguf.tensor_data(info);
        assert_eq!(bytes.len() as u64, info.n_bytes, "tensor {} slice has the size its info declares", info.name);
        std::hint::black_box(bytes.iter().fold(0u8, |a, b| a ^ b));
    }
});

/// Decodes every element of every (nested) array.
fn walk(value: &Value<'_>) {
    match value {
        Value::Array(array) => {
            let mut n = 0u64;
            for element in array.iter() {
                walk(&element);
                n += 1;
            }
            assert_eq!(n, array.len(), "an array yields the number of elements it declares");
        }
        other => {
            std::hint::black_box((other.as_u64(), other.as_i64(), other.as_f64(), other.as_str(), other.as_bool()));
        }
    }
}
