//! Quantization: which ggml type each tensor gets (mirroring llama-quantize), and the conversion
//! of f32 rows into that type (through ggml, but for F16, whose bytes are the same either way).

mod decode;
mod encode;

/// Values per parallel task (and per stack buffer) of the row decoder and encoder.
const VALUES_PER_TASK: usize = 8192;
mod policy;
mod requantize;

pub use decode::{decode_to_f32, DecodeError};
pub use encode::encode_rows;
pub use policy::*;
pub use requantize::{add_metadata, requantize, requantized_plan, type_chooser, ConversionSummary, QuantizeError};
