//! The only module that calls ggml and llama.cpp (through `llama-cpp-sys-2`).
//!
//! Invariants every wrapper keeps:
//! - Each owning type holds a non-null pointer it alone frees, in `Drop`.
//! - ggml reports misuse with `GGML_ASSERT`, which aborts the process. Every wrapper checks the
//!   preconditions of the C function it calls in Rust first and returns an [`Error`] instead.
//! - Callbacks from C never unwind: they catch panics and do nothing that can panic.
//! - [`Runtime::get`] initialises the library once, thread-safely, and routes its log into a
//!   buffer so that failures can be reported with llama.cpp's own reason.
//! - An RPC server that stops answering mid-run ends the process with one line and exit code 4
//!   instead of ggml's abort (`abort.rs`), naming the last checkpoint training wrote
//!   ([`set_last_checkpoint`]).

mod abort;
mod backend;
mod buffer;
mod context;
mod custom_ops;
mod device;
mod device_spec;
mod log;
mod oracle;
mod quant;
mod rpc;
mod sampling;
mod sched;

use std::ffi::CString;
use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_sys_2 as sys;

use crate::gguf::GgmlType;

pub use abort::{set_last_checkpoint, EXIT_DEVICE_LOST};
pub use backend::{Allocated, Allocator, Backend, Graph, BACKWARD_OPS, BACKWARD_UNARY_OPS};
pub use buffer::{init_views, MappedBuffer, ParamBuffer, WeightBuffer};
pub use context::{Context, RopeMode, RopeParams, Tensor};
pub use custom_ops::gelu_derivative;
pub use device::{
    add_rpc_server, default_device, resolve_devices, Device, DeviceError, DeviceInfo, DeviceType, Devices, Memory,
};
pub use device_spec::{DeviceList, DeviceSpec, DeviceSpecError, DeviceSpecErrorKind, RpcEndpoint, ACCEPTED_DEVICES};
pub use oracle::{chat_apply_template, GgufContext, LlamaAdapter, LlamaContext, LlamaModel};
pub use quant::{can_quantize_to, dequantize_rows, llama_model_quantize, quantize_rows};
pub use rpc::{greet_rpc_server, serve_rpc, ProtocolVersion, RpcError, ServeOptions, RPC_PROTOCOL_VERSION};
pub use sampling::{Sampler, SamplerParams};
pub use sched::{custom_op_nodes, BackendNodes, Placement, Scheduled, Scheduler};

/// An error from a ggml or llama.cpp call, with the reason llama.cpp logged when it gave one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("path '{}' contains a NUL byte and cannot be passed to llama.cpp", path.display())]
    PathWithNul { path: std::path::PathBuf },
    #[error("{}: llama.cpp could not read the GGUF file{}", path.display(), log::reason_suffix(reason))]
    GgufRejected { path: std::path::PathBuf, reason: Vec<String> },
    #[error("{}: llama.cpp could not load the model{}", path.display(), log::reason_suffix(reason))]
    ModelRejected { path: std::path::PathBuf, reason: Vec<String> },
    #[error("{}: llama.cpp could not load the adapter{}", path.display(), log::reason_suffix(reason))]
    AdapterRejected { path: std::path::PathBuf, reason: Vec<String> },
    #[error("{}: llama_model_quantize failed{}", path.display(), log::reason_suffix(reason))]
    QuantizeFailed { path: std::path::PathBuf, reason: Vec<String> },
    #[error("ggml cannot quantize to {ty} without an importance matrix")]
    CannotQuantize { ty: GgmlType },
    #[error("ggml cannot convert {ty} to f32")]
    CannotDequantize { ty: GgmlType },
    #[error("row length {n_per_row} is not a multiple of the {ty} block size {block_size}")]
    RowNotBlockMultiple { ty: GgmlType, n_per_row: usize, block_size: u64 },
    #[error("{len} values do not make whole rows of {n_per_row}")]
    PartialRow { len: usize, n_per_row: usize },
    #[error("buffer holds {found} elements, expected {expected}")]
    BufferSize { expected: usize, found: usize },
    #[error("text of {len} bytes is too long to tokenize in one call")]
    TextTooLong { len: usize },
    #[error("llama_tokenize needs room for {needed} tokens")]
    TokenizeFailed { needed: usize },
    #[error("llama.cpp could not create a context{}", log::reason_suffix(reason))]
    ContextFailed { reason: Vec<String> },
    #[error("a batch of {n_tokens} tokens does not fit a context of {n_ctx} (at least 1 needed)")]
    BadBatch { n_tokens: usize, n_ctx: usize },
    #[error("token {token} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { token: i32, n_vocab: usize },
    #[error("llama_decode failed with code {code}{}", log::reason_suffix(reason))]
    DecodeFailed { code: i32, reason: Vec<String> },
    #[error("ggml could not allocate a context of {bytes} bytes")]
    ContextAlloc { bytes: usize },
    #[error("{op}: the ggml context has no room for another tensor")]
    ContextFull { op: &'static str },
    #[error("{op}: shapes {a:?} and {b:?} do not fit")]
    ShapeMismatch { op: &'static str, a: [i64; 4], b: [i64; 4] },
    #[error("{op}: bad dimensions {ne:?}")]
    BadShape { op: &'static str, ne: Vec<u64> },
    #[error("permute: {axes:?} is not a permutation of 0..4")]
    BadPermutation { axes: [i32; 4] },
    #[error("set_param: only leaf tensors can be trained")]
    NotALeaf,
    #[error("{op}: the tensor is not a trainable parameter")]
    NotAParam { op: &'static str },
    #[error("set_loss: the loss must be a scalar f32, found ne {ne:?}")]
    BadLoss { ne: [i64; 4] },
    #[error("op '{op}' has no backward pass in ggml; a graph using it cannot be trained")]
    NoBackward { op: String },
    #[error("build_backward_expand: the graph needs a trainable parameter and a loss")]
    NothingToTrain,
    #[error("recomputation needs a graph with its backward pass (build_backward_expand first)")]
    NotDifferentiated,
    #[error("recomputation: the forward pass has an in-place op, whose copy could overwrite a kept value")]
    InPlaceRecompute,
    #[error("ggml backend '{name}' could not be started")]
    BackendInit { name: &'static str },
    #[error("the graph could not be allocated (out of memory?)")]
    GraphAlloc,
    #[error("a buffer of {bytes} bytes is larger than backend '{backend}' allocates at once ({max_bytes} bytes)")]
    BufferTooLarge { bytes: usize, max_bytes: usize, backend: String },
    #[error("a scheduler needs 1 to 16 backends, the last one a CPU backend; found [{}]", backends.join(", "))]
    BadScheduler { backends: Vec<String> },
    #[error("node '{node}' is a custom op, which runs on the CPU alone, in a graph placed over other backends")]
    CustomOpOffCpu { node: String },
    #[error("no backend of the scheduler supports node '{node}'")]
    NoBackendForOp { node: String },
    #[error("tensor '{tensor}' is in a buffer none of the scheduler's backends can compute it from")]
    NoBackendForBuffer { tensor: String },
    #[error("graph computation failed with status {status}")]
    Compute { status: i32 },
    #[error("tensor data: {what}")]
    TensorData { what: &'static str },
    #[error("llama.cpp could not create a sampler")]
    SamplerFailed,
    #[error("sampling needs the logits of a decoded token (decode a prompt first)")]
    NothingDecoded,
    #[error("index {index} is out of range: {what} has {count}")]
    IndexOutOfRange { what: &'static str, index: u64, count: u64 },
    #[error("{what} contains a NUL byte and cannot be passed to llama.cpp")]
    TextWithNul { what: &'static str },
    #[error("llama.cpp has no built-in chat format for the template {head:?}...")]
    UnknownChatTemplate { head: String },
    #[error("{n_devices} devices to offload to; llama.cpp takes at most {max}")]
    TooManyDevices { n_devices: usize, max: usize },
    #[error("split {split:?}: expected one share per device ({n_devices}), none negative and not all 0")]
    BadSplit { split: Vec<f32>, n_devices: usize },
}

/// The initialised ggml/llama.cpp library. Get it with [`Runtime::get`].
#[derive(Debug)]
pub struct Runtime {
    _private: (),
}

impl Runtime {
    /// Initialises llama.cpp's backends and log routing once per process.
    pub fn get() -> &'static Runtime {
        static RUNTIME: OnceLock<Runtime> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            log::install();
            abort::install();
            // SAFETY: llama_backend_init takes no arguments and is made idempotent here by the
            // OnceLock; it only initialises ggml's global tables and timers.
            unsafe { sys::llama_backend_init() };
            // SAFETY: ggml_backend_rpc_reg returns a static registry entry with no device (RPC
            // servers' devices stay out of the registry: see `device`); registered once (this
            // OnceLock), it names the RPC backend among the compiled-in ones.
            unsafe { sys::ggml_backend_register(rpc::ggml_backend_rpc_reg()) };
            Runtime { _private: () }
        })
    }
}

/// ggml's block size for `ty` (`ggml_blck_size`): elements per block.
pub fn block_size(ty: GgmlType) -> u64 {
    Runtime::get();
    // SAFETY: `ty.id()` is one of ggml's live type ids (GgmlType only holds those), and
    // ggml_blck_size only indexes its static type table with it.
    let n = unsafe { sys::ggml_blck_size(ty.id() as sys::ggml_type) };
    u64::try_from(n).unwrap_or(0)
}

/// ggml's type size for `ty` (`ggml_type_size`): bytes per block.
pub fn type_size(ty: GgmlType) -> u64 {
    Runtime::get();
    // SAFETY: as in `block_size`, a valid id indexing a static table.
    let n = unsafe { sys::ggml_type_size(ty.id() as sys::ggml_type) };
    n as u64
}

fn c_path(path: &Path) -> Result<CString, Error> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::PathWithNul { path: path.to_owned() })
}
