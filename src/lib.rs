//! gguftune: a GGUF-native LLM fine-tuning toolkit.
//!
//! A Hugging Face checkpoint becomes a GGUF that llama.cpp loads (`convert`), LoRA adapters are
//! trained on its frozen, quantized weights through ggml's compute graph (`finetune`), and the
//! adapter is a GGUF LoRA that llama.cpp and Ollama load.
//!
//! Modules, one concern each:
//! - [`gguf`]: the GGUF format in pure Rust: parse (zero-copy, bounded), plan and stream-write.
//! - [`adapter`]: LoRA adapters as GGUF files llama.cpp and Ollama load.
//! - [`modelfile`]: Ollama Modelfiles for a model and its adapter, the chat template as Ollama's;
//!   the model made in an Ollama server from them ([`modelfile::create`]).
//! - [`convert`]: Hugging Face checkpoint to GGUF: plan, then stream.
//! - [`quant`]: which ggml type each tensor gets, mirroring llama-quantize.
//! - [`arch`]: the architectures supported, by llama.cpp's and Hugging Face's names.
//! - [`names`]: GGUF tensor names and their Hugging Face counterparts.
//! - [`data`]: JSONL datasets, chat templates, and which text of each example is trained on.
//! - [`model`]: hyper-parameters, weights bound to the mapped GGUF, the forward graph.
//! - [`train`]: LoRA initialisation, AdamW and the training loop.
//! - [`generate`]: text generation through llama.cpp, with adapters, streamed.
//! - [`plan`]: the memory of a training run before it starts, measured on the graph it will run.
//! - [`eval`]: loss, perplexity and task metrics of a model and its adapters on held-out data.
//! - [`hf`]: Hugging Face inputs: safetensors files, sharded checkpoints, config.json.
//! - [`hub`]: a hub repository id fetched (hf-hub) into the Hugging Face cache, as a local folder.
//! - [`ollama`]: `ollama:NAME[:TAG]`, a model in Ollama's store, as its GGUF blob and template;
//!   a client of the Ollama server's HTTP API ([`ollama::api`]).
//! - [`ggml`]: the only module that calls ggml and llama.cpp; safe owning wrappers.
//! - [`inspect`]: reports on GGUF files, safetensors files and model folders.
//! - [`plot`]: the loss curve of a training run as a self-contained SVG.
//! - [`io`]: outputs written to a temporary file and renamed; the memory map of inputs.

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod adapter;
pub mod arch;
pub mod convert;
pub mod data;
mod error;
pub mod eval;
pub mod generate;
#[allow(unsafe_code)]
pub mod ggml;
pub mod gguf;
pub mod hf;
pub mod hub;
pub mod inspect;
pub mod io;
pub mod model;
pub mod modelfile;
pub mod names;
pub mod ollama;
pub mod plan;
pub mod plot;
pub mod quant;
pub mod train;

pub use error::Error;
