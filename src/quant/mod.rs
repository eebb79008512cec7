//! Quantization: which ggml type each tensor gets (mirroring llama-quantize), and the conversion
//! of f32 rows into that type through ggml.

mod policy;

pub use policy::*;
