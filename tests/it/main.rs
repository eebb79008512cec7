//! The one integration-test binary (every test binary links llama.cpp, so one link, not many).

mod common;

mod adapter_llama_cpp;
mod adapter_merge;
mod adapter_peft;
mod batching;
mod convert;
mod data_formats;
mod devices;
mod docs_help;
mod eval_cli;
mod falcon_gptneox;
mod falcon_tokenizer;
mod faults;
mod finetune_cli;
mod forward;
mod generate_cli;
mod gguf_malformed;
mod gguf_py;
mod gguf_read_write;
mod hf_read;
mod hostile_input;
mod hub_cli;
mod inspect_cli;
mod kill;
mod llama_cpp_oracle;
mod lora_grad;
mod modelfile;
mod new_families;
mod offload;
mod ollama_api;
mod ollama_cli;
mod plan;
mod source_audit;
mod spm_tokenizer;
mod train;
