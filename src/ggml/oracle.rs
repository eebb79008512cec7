//! llama.cpp's own readers (and its built-in chat formats), used as the compatibility oracle: if
//! llama.cpp (and so Ollama) loads what we wrote, and sees what we meant, we are compatible.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::device::{Device, DeviceType, Devices};
use super::{c_path, log, Error, Runtime};

/// A conversation of `(role, content)` messages as llama.cpp formats it without a Jinja engine
/// (`llama_chat_apply_template`): in the built-in format it recognises in `template`, a format's
/// name (`"gemma"`) or a Jinja chat template by its markers (`llm_chat_detect_template`), with
/// the assistant's opening after it when `add_assistant`. llama.cpp writes no BOS there: its
/// tokenizer adds one when the vocabulary asks for it.
pub fn chat_apply_template(
    _rt: &Runtime,
    template: &str,
    messages: &[(&str, &str)],
    add_assistant: bool,
) -> Result<String, Error> {
    let c_text = |text: &str, what| CString::new(text).map_err(|_| Error::TextWithNul { what });
    let c_template = c_text(template, "the chat template")?;
    let texts = messages
        .iter()
        .map(|(role, content)| Ok((c_text(role, "a message's role")?, c_text(content, "a message's content")?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let chat: Vec<sys::llama_chat_message> = texts
        .iter()
        .map(|(role, content)| sys::llama_chat_message { role: role.as_ptr(), content: content.as_ptr() })
        .collect();
    let mut buf = vec![0u8; 1024];
    loop {
        let length = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        // SAFETY: the template and every role and content pointer are NUL-terminated strings in
        // `c_template` and `texts`, which outlive the call; `chat` holds `chat.len()` messages;
        // llama.cpp copies at most `length` bytes, no more than `buf` holds, and returns the
        // formatted length (negative when it knows no format for the template).
        let n = unsafe {
            sys::llama_chat_apply_template(
                c_template.as_ptr(),
                chat.as_ptr(),
                chat.len(),
                add_assistant,
                buf.as_mut_ptr().cast(),
                length,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return Err(Error::UnknownChatTemplate { head: template.chars().take(60).collect() });
        };
        if n <= buf.len() {
            buf.truncate(n);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        buf.resize(n, 0);
    }
}

/// A GGUF file as llama.cpp's `gguf_init_from_file` reads it (metadata and tensor infos only).
#[derive(Debug)]
pub struct GgufContext {
    ptr: NonNull<sys::gguf_context>,
}

impl GgufContext {
    /// Reads `path` with `gguf_init_from_file(no_alloc = true)`.
    pub fn open(_rt: &Runtime, path: &Path) -> Result<GgufContext, Error> {
        let c = c_path(path)?;
        let params = sys::gguf_init_params { no_alloc: true, ctx: std::ptr::null_mut() };
        log::clear_errors();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call; with no_alloc and
        // a null ctx pointer, gguf reads only the header and returns null on any failure.
        let ptr = unsafe { sys::gguf_init_from_file(c.as_ptr(), params) };
        NonNull::new(ptr)
            .map(|ptr| GgufContext { ptr })
            .ok_or_else(|| Error::GgufRejected { path: path.to_owned(), reason: log::take_errors() })
    }

    /// Format version.
    pub fn version(&self) -> u32 {
        // SAFETY: `self.ptr` is a live context owned by self.
        unsafe { sys::gguf_get_version(self.ptr.as_ptr()) }
    }

    /// Alignment of tensor data.
    pub fn alignment(&self) -> u64 {
        // SAFETY: live context owned by self.
        unsafe { sys::gguf_get_alignment(self.ptr.as_ptr()) as u64 }
    }

    /// Offset of the data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        // SAFETY: live context owned by self.
        unsafe { sys::gguf_get_data_offset(self.ptr.as_ptr()) as u64 }
    }

    /// Number of metadata pairs.
    pub fn n_kv(&self) -> u64 {
        // SAFETY: live context owned by self.
        let n = unsafe { sys::gguf_get_n_kv(self.ptr.as_ptr()) };
        u64::try_from(n).unwrap_or(0)
    }

    /// Number of tensors.
    pub fn n_tensors(&self) -> u64 {
        // SAFETY: live context owned by self.
        let n = unsafe { sys::gguf_get_n_tensors(self.ptr.as_ptr()) };
        u64::try_from(n).unwrap_or(0)
    }

    fn check(&self, what: &'static str, index: u64, count: u64) -> Result<i64, Error> {
        if index >= count {
            return Err(Error::IndexOutOfRange { what, index, count });
        }
        Ok(i64::try_from(index).unwrap_or(i64::MAX))
    }

    /// Key of metadata pair `index` (gguf asserts the index is in range: checked first).
    pub fn key(&self, index: u64) -> Result<String, Error> {
        let i = self.check("the metadata", index, self.n_kv())?;
        // SAFETY: live context; `i` is in range, so gguf returns a pointer to a NUL-terminated key
        // owned by the context, which we copy before returning.
        Ok(unsafe { CStr::from_ptr(sys::gguf_get_key(self.ptr.as_ptr(), i)) }.to_string_lossy().into_owned())
    }

    /// Value type id (`enum gguf_type`) of metadata pair `index`.
    pub fn kv_type(&self, index: u64) -> Result<u32, Error> {
        let i = self.check("the metadata", index, self.n_kv())?;
        // SAFETY: live context, index in range.
        Ok(unsafe { sys::gguf_get_kv_type(self.ptr.as_ptr(), i) } as u32)
    }

    /// Name of tensor `index`.
    pub fn tensor_name(&self, index: u64) -> Result<String, Error> {
        let i = self.check("the tensor table", index, self.n_tensors())?;
        // SAFETY: live context, index in range; the name is copied before returning.
        Ok(unsafe { CStr::from_ptr(sys::gguf_get_tensor_name(self.ptr.as_ptr(), i)) }.to_string_lossy().into_owned())
    }

    /// Type id of tensor `index`.
    pub fn tensor_type(&self, index: u64) -> Result<u32, Error> {
        let i = self.check("the tensor table", index, self.n_tensors())?;
        // SAFETY: live context, index in range.
        Ok(unsafe { sys::gguf_get_tensor_type(self.ptr.as_ptr(), i) } as u32)
    }

    /// Data offset of tensor `index`, relative to the data section.
    pub fn tensor_offset(&self, index: u64) -> Result<u64, Error> {
        let i = self.check("the tensor table", index, self.n_tensors())?;
        // SAFETY: live context, index in range.
        Ok(unsafe { sys::gguf_get_tensor_offset(self.ptr.as_ptr(), i) } as u64)
    }

    /// Data size in bytes of tensor `index`.
    pub fn tensor_size(&self, index: u64) -> Result<u64, Error> {
        let i = self.check("the tensor table", index, self.n_tensors())?;
        // SAFETY: live context, index in range.
        Ok(unsafe { sys::gguf_get_tensor_size(self.ptr.as_ptr(), i) } as u64)
    }
}

impl Drop for GgufContext {
    fn drop(&mut self) {
        // SAFETY: the pointer came from gguf_init_from_file and is freed exactly once, here.
        unsafe { sys::gguf_free(self.ptr.as_ptr()) }
    }
}

/// The most devices llama.cpp offloads to (`llama_max_devices`, the length of `tensor_split`).
fn max_devices() -> usize {
    // SAFETY: returns a constant.
    unsafe { sys::llama_max_devices() }
}

/// A model loaded by llama.cpp: on the CPU, weights memory-mapped, or offloaded to devices.
#[derive(Debug)]
pub struct LlamaModel {
    pub(super) ptr: NonNull<sys::llama_model>,
}

impl LlamaModel {
    /// Loads `path` with `llama_model_load_from_file`, as llama.cpp's tools and Ollama do, on
    /// the CPU, with the weights used as they are mapped (see `load_with`).
    pub fn load(rt: &Runtime, path: &Path) -> Result<LlamaModel, Error> {
        Self::load_on(rt, path, &Devices::cpu())
    }

    /// Loads `path` as [`LlamaModel::load`] does, its layers on the devices of `offload`
    /// (`llama_model_params`' `devices`, `n_gpu_layers` and `tensor_split`). llama.cpp copies the
    /// weights of offloaded layers to their device while it loads (for an RPC device: sends them
    /// to its server).
    ///
    /// llama.cpp keeps the token embeddings on the CPU, and each repeating layer and the output
    /// layer on one device, the devices taking consecutive runs of layers in their order. The CPU
    /// is not one of llama.cpp's offload devices: named with others, it keeps the first layers
    /// (its share of them), which llama.cpp does not offload; named alone, or no device named,
    /// everything stays on the CPU.
    pub fn load_on(rt: &Runtime, path: &Path, offload: &Devices) -> Result<LlamaModel, Error> {
        offload.shares()?;
        let is_cpu = |d: &Device| d.kind() == DeviceType::Cpu;
        let offloaded: Vec<usize> = (0..offload.list.len()).filter(|&i| !is_cpu(&offload.list[i])).collect();
        if offloaded.len() > max_devices() {
            return Err(Error::TooManyDevices { n_devices: offloaded.len(), max: max_devices() });
        }
        // NULL-terminated, as llama.cpp reads it; empty (just the NULL) keeps llama.cpp from
        // choosing devices of its registry itself.
        let mut devices: Vec<sys::ggml_backend_dev_t> = offloaded.iter().map(|&i| offload.list[i].raw()).collect();
        devices.push(std::ptr::null_mut());
        let mut tensor_split = vec![0f32; max_devices()];
        if let Some(split) = &offload.split {
            for (slot, &i) in tensor_split.iter_mut().zip(&offloaded) {
                *slot = split[i];
            }
        }
        let n_gpu_layers = if offloaded.is_empty() {
            0
        } else if offloaded.len() == offload.list.len() {
            -1 // every layer
        } else {
            Self::offloaded_layers(rt, path, offload)?
        };
        Self::load_with(rt, path, false, |params| {
            params.devices = devices.as_mut_ptr();
            params.n_gpu_layers = n_gpu_layers;
            if offload.split.is_some() {
                params.tensor_split = tensor_split.as_ptr();
            }
        })
    }

    /// How many layers (of the repeating ones and the output layer) leave the CPU when it is
    /// one of several devices: all but its share, by `split` or by free memory.
    fn offloaded_layers(rt: &Runtime, path: &Path, offload: &Devices) -> Result<i32, Error> {
        let n_layers = Self::load_vocab(rt, path)?.n_layer() + 1;
        let weight = |i: usize, d: &Device| match &offload.split {
            Some(split) => f64::from(split[i]),
            None => d.memory().free as f64,
        };
        let weights: Vec<(bool, f64)> =
            offload.list.iter().enumerate().map(|(i, d)| (d.kind() == DeviceType::Cpu, weight(i, d))).collect();
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        let on_cpu: f64 = weights.iter().filter(|(cpu, _)| *cpu).map(|(_, w)| w).sum();
        let cpu_layers = if total > 0.0 { (f64::from(n_layers) * on_cpu / total).round() as i32 } else { 0 };
        Ok(n_layers - cpu_layers.clamp(0, n_layers))
    }

    /// Loads only the vocabulary of `path` (for tokenizing; no weights are read).
    pub fn load_vocab(rt: &Runtime, path: &Path) -> Result<LlamaModel, Error> {
        Self::load_with(rt, path, true, |params| params.n_gpu_layers = 0)
    }

    /// Loads `path` with llama.cpp's default parameters, set for this crate and then by `place`,
    /// which may store pointers that live until this function returns (llama.cpp copies what
    /// it keeps).
    fn load_with(
        _rt: &Runtime,
        path: &Path,
        vocab_only: bool,
        place: impl FnOnce(&mut sys::llama_model_params),
    ) -> Result<LlamaModel, Error> {
        let c = c_path(path)?;
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { sys::llama_model_default_params() };
        params.vocab_only = vocab_only;
        // No repacking of the weights into extra CPU buffer types (AMX on Intel Xeons with AMX,
        // interleaved layouts on Arm): on a Sapphire Rapids CPU, a release build (ggml at -O3,
        // -march=native) crashes in the first AMX matrix product (ggml_backend_amx_mul_mat, as
        // llama.cpp issue 20824 reports), for any model. The weights are used as they are mapped,
        // so llama.cpp also multiplies with the ggml kernels gguftune's training graph runs (with
        // AMX repacking its q8_0 logits differed from ours by nmse 1e-5; without, bit for bit).
        params.use_extra_bufts = false;
        place(&mut params);
        log::clear_errors();
        // SAFETY: `c` is a valid NUL-terminated path for the call; the pointers `place` stored
        // (a NULL-terminated device list of live devices, a tensor split of llama_max_devices()
        // floats) outlive the call, and llama.cpp copies both. llama.cpp returns null on failure
        // and catches its own C++ exceptions at this boundary.
        let ptr = unsafe { sys::llama_model_load_from_file(c.as_ptr(), params) };
        NonNull::new(ptr)
            .map(|ptr| LlamaModel { ptr })
            .ok_or_else(|| Error::ModelRejected { path: path.to_owned(), reason: log::take_errors() })
    }

    /// Number of repeating layers (blocks).
    pub fn n_layer(&self) -> i32 {
        // SAFETY: live model owned by self.
        unsafe { sys::llama_model_n_layer(self.ptr.as_ptr()) }
    }

    /// Number of parameters as llama.cpp counts them.
    pub fn n_params(&self) -> u64 {
        // SAFETY: live model owned by self.
        unsafe { sys::llama_model_n_params(self.ptr.as_ptr()) }
    }

    /// llama.cpp's one-line description (`llama ?B F16`).
    pub fn desc(&self) -> String {
        let mut buf = vec![0u8; 256];
        // SAFETY: live model; the buffer and its length come from the same Vec, and llama.cpp
        // writes at most buf_size bytes including the NUL.
        let n = unsafe { sys::llama_model_desc(self.ptr.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(usize::try_from(n).unwrap_or(0).min(255));
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A metadata value as llama.cpp renders it to a string, if the key exists.
    pub fn meta_val_str(&self, key: &str) -> Option<String> {
        let key = std::ffi::CString::new(key).ok()?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: live model; key is NUL-terminated; the buffer and its length come from the same
        // Vec. Returns -1 when the key is absent, else the full length (possibly truncated copy).
        let n = unsafe {
            sys::llama_model_meta_val_str(self.ptr.as_ptr(), key.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        let n = usize::try_from(n).ok()?;
        buf.truncate(n.min(buf.len() - 1));
        Some(String::from_utf8_lossy(&buf).into_owned())
    }
}

impl Drop for LlamaModel {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_model_load_from_file and is freed exactly once, here.
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) }
    }
}

impl LlamaModel {
    /// Size of the vocabulary.
    pub fn n_vocab(&self) -> usize {
        // SAFETY: live model; the vocab pointer is owned by the model and valid while it lives.
        let n = unsafe { sys::llama_vocab_n_tokens(sys::llama_model_get_vocab(self.ptr.as_ptr())) };
        usize::try_from(n).unwrap_or(0)
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos_token(&self) -> Option<i32> {
        // SAFETY: live model; its vocab lives as long as it does.
        let t = unsafe { sys::llama_vocab_bos(sys::llama_model_get_vocab(self.ptr.as_ptr())) };
        (t >= 0).then_some(t)
    }

    /// The text of token `t` (its piece as stored in the vocabulary).
    pub fn token_text(&self, t: i32) -> Option<String> {
        if t < 0 || t as usize >= self.n_vocab() {
            return None;
        }
        // SAFETY: live model; `t` is in range (checked), and the returned string is owned by the
        // vocab and copied before returning.
        let p = unsafe { sys::llama_vocab_get_text(sys::llama_model_get_vocab(self.ptr.as_ptr()), t) };
        // SAFETY: non-null pointers from llama.cpp are NUL-terminated strings.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// The end-of-sequence token, if the vocabulary has one.
    pub fn eos_token(&self) -> Option<i32> {
        // SAFETY: live model; its vocab lives as long as it does.
        let t = unsafe { sys::llama_vocab_eos(sys::llama_model_get_vocab(self.ptr.as_ptr())) };
        (t >= 0).then_some(t)
    }

    /// Tokenizes `text` as llama.cpp does (`llama_tokenize`); `add_special` adds BOS/EOS as the
    /// model's metadata asks, `parse_special` turns special-token text into its token.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<i32>, Error> {
        let len = i32::try_from(text.len()).map_err(|_| Error::TextTooLong { len: text.len() })?;
        // SAFETY: live model; its vocab lives as long as it does.
        let vocab = unsafe { sys::llama_model_get_vocab(self.ptr.as_ptr()) };
        // Every byte becomes at most one token, plus BOS and EOS.
        let mut tokens = vec![0i32; text.len() + 2];
        // SAFETY: `text` is valid for `len` bytes (no NUL needed: the length is passed); the token
        // buffer and its capacity come from the same Vec.
        let n = unsafe {
            sys::llama_tokenize(
                vocab,
                text.as_ptr().cast(),
                len,
                tokens.as_mut_ptr(),
                tokens.len() as i32,
                add_special,
                parse_special,
            )
        };
        let n = usize::try_from(n).map_err(|_| Error::TokenizeFailed { needed: n.unsigned_abs() as usize })?;
        tokens.truncate(n);
        Ok(tokens)
    }
}

/// llama.cpp's default micro-batch (`n_ubatch` in common/common.h).
const MAX_UBATCH: u32 = 512;

/// An inference context on a [`LlamaModel`]: llama.cpp's logits, and incremental decoding for
/// generation.
#[derive(Debug)]
pub struct LlamaContext<'m> {
    pub(super) ptr: NonNull<sys::llama_context>,
    pub(super) n_vocab: usize,
    pub(super) n_ctx: usize,
    /// Positions already in the context's memory (the next token goes at this position).
    pub(super) n_past: usize,
    /// The last batch asked for the logits of its last token (what a sampler reads).
    pub(super) last_logits: bool,
    _model: std::marker::PhantomData<&'m LlamaModel>,
}

impl<'m> LlamaContext<'m> {
    /// A context of `n_ctx` positions using `threads` CPU threads, with llama.cpp's defaults
    /// (f16 KV cache, flash attention where the backend supports it).
    pub fn new(model: &'m LlamaModel, n_ctx: u32, threads: i32) -> Result<LlamaContext<'m>, Error> {
        Self::with_precision(model, n_ctx, threads, false)
    }

    /// As [`LlamaContext::new`]; with `exact`, an f32 KV cache and no flash attention, so that
    /// llama.cpp computes attention in f32 as gguftune's training graph does.
    pub fn with_precision(
        model: &'m LlamaModel,
        n_ctx: u32,
        threads: i32,
        exact: bool,
    ) -> Result<LlamaContext<'m>, Error> {
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { sys::llama_context_default_params() };
        params.n_ctx = n_ctx;
        // One llama_decode call takes the whole context; llama.cpp runs it in micro-batches of at
        // most MAX_UBATCH tokens, which bounds the compute buffer (its logits are n_ubatch rows).
        params.n_batch = n_ctx;
        params.n_ubatch = n_ctx.min(MAX_UBATCH);
        params.n_threads = threads;
        params.n_threads_batch = threads;
        if exact {
            params.type_k = sys::GGML_TYPE_F32;
            params.type_v = sys::GGML_TYPE_F32;
            params.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_DISABLED;
        }
        log::clear_errors();
        // SAFETY: live model, which the PhantomData keeps borrowed for the context's lifetime.
        let ptr = unsafe { sys::llama_init_from_model(model.ptr.as_ptr(), params) };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::ContextFailed { reason: log::take_errors() })?;
        Ok(LlamaContext {
            ptr,
            n_vocab: model.n_vocab(),
            n_ctx: n_ctx as usize,
            n_past: 0,
            last_logits: false,
            _model: std::marker::PhantomData,
        })
    }

    /// Runs `tokens` (a fresh sequence from position 0) and returns the logits of every position,
    /// `tokens.len()` rows of `n_vocab`. Later [`LlamaContext::decode`] calls continue after them.
    pub fn logits_all(&mut self, tokens: &[i32]) -> Result<Vec<Vec<f32>>, Error> {
        let all: Vec<usize> = (0..tokens.len()).collect();
        self.logits_at(tokens, &all)
    }

    /// As [`LlamaContext::logits_all`], with the logits of `positions` only (in that order): llama.cpp
    /// then projects only those rows to the vocabulary, and keeps only them.
    pub fn logits_at(&mut self, tokens: &[i32], positions: &[usize]) -> Result<Vec<Vec<f32>>, Error> {
        if let Some(&bad) = positions.iter().find(|&&p| p >= tokens.len()) {
            return Err(Error::IndexOutOfRange { what: "the sequence", index: bad as u64, count: tokens.len() as u64 });
        }
        let mut wanted = vec![false; tokens.len()];
        positions.iter().for_each(|&p| wanted[p] = true);
        self.clear();
        self.run_batch(tokens, &wanted)?;
        positions.iter().map(|&p| Ok(self.logits_row(p as i32)?.to_vec())).collect()
    }

    /// Appends `tokens` to the sequence at the next positions (after [`LlamaContext::clear`],
    /// from position 0) and returns the logits of the last one, the distribution of the token
    /// that follows. This is how llama.cpp's tools feed a prompt and then one token per step,
    /// reusing the KV cache.
    pub fn decode(&mut self, tokens: &[i32]) -> Result<&[f32], Error> {
        let mut wanted = vec![false; tokens.len()];
        if let Some(last) = wanted.last_mut() {
            *last = true;
        }
        self.run_batch(tokens, &wanted)?;
        self.logits_row(-1)
    }

    /// Forgets the sequence (clears the KV cache): the next decode starts at position 0.
    pub fn clear(&mut self) {
        // SAFETY: live context; clearing the memory (KV cache) of all sequences is always valid.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ptr.as_ptr()), true) };
        self.n_past = 0;
        self.last_logits = false;
    }

    /// Positions in the sequence so far.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Positions the context holds.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Decodes `tokens` at positions `n_past..`, with logits for the positions marked in `wanted`
    /// (one flag per token); on success `n_past` moves past them.
    fn run_batch(&mut self, tokens: &[i32], wanted: &[bool]) -> Result<(), Error> {
        if tokens.is_empty() || self.n_past + tokens.len() > self.n_ctx {
            return Err(Error::BadBatch { n_tokens: self.n_past + tokens.len(), n_ctx: self.n_ctx });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t < 0 || t as usize >= self.n_vocab) {
            return Err(Error::TokenOutOfRange { token: bad, n_vocab: self.n_vocab });
        }
        let n = tokens.len() as i32;
        // SAFETY: allocates a batch for n tokens with one sequence id each; freed below.
        let mut batch = unsafe { sys::llama_batch_init(n, 0, 1) };
        for (i, &t) in tokens.iter().enumerate() {
            // SAFETY: the batch arrays hold n entries and i < n; seq_id[i] points to room for one id.
            unsafe {
                *batch.token.add(i) = t;
                *batch.pos.add(i) = (self.n_past + i) as i32;
                *batch.n_seq_id.add(i) = 1;
                *(*batch.seq_id.add(i)) = 0;
                *batch.logits.add(i) = i8::from(wanted[i]);
            }
        }
        batch.n_tokens = n;
        log::clear_errors();
        // SAFETY: live context; the batch is fully initialised for n tokens at positions that
        // continue the sequence in memory and stay within n_ctx (checked above).
        let rc = unsafe { sys::llama_decode(self.ptr.as_ptr(), batch) };
        // SAFETY: the batch came from llama_batch_init and is freed once.
        unsafe { sys::llama_batch_free(batch) };
        if rc != 0 {
            let reason = log::take_errors();
            // Part of the batch may be in memory: start over rather than continue from a guess.
            self.clear();
            return Err(Error::DecodeFailed { code: rc, reason });
        }
        self.n_past += tokens.len();
        self.last_logits = wanted.last() == Some(&true);
        Ok(())
    }

    /// Row `i` of the last decode's logits (`-1`: the last row), `n_vocab` floats. Callers ask
    /// only for rows the last batch requested: llama.cpp aborts on others in builds without NDEBUG.
    fn logits_row(&self, i: i32) -> Result<&[f32], Error> {
        // SAFETY: live context; `i` names a row the last batch asked logits for (the callers'
        // contract above), so llama.cpp resolves it; it returns null if there are no logits.
        let row = unsafe { sys::llama_get_logits_ith(self.ptr.as_ptr(), i) };
        if row.is_null() {
            return Err(Error::DecodeFailed { code: -1, reason: log::take_errors() });
        }
        // SAFETY: a non-null row holds n_vocab floats owned by the context; the borrow of self
        // keeps them from being overwritten by another decode while the slice lives.
        Ok(unsafe { std::slice::from_raw_parts(row, self.n_vocab) })
    }
}

impl Drop for LlamaContext<'_> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_init_from_model and is freed exactly once, here.
        unsafe { sys::llama_free(self.ptr.as_ptr()) }
    }
}

/// A LoRA adapter loaded by llama.cpp (`llama_adapter_lora_init`) for a model.
#[derive(Debug)]
pub struct LlamaAdapter<'m> {
    ptr: NonNull<sys::llama_adapter_lora>,
    _model: std::marker::PhantomData<&'m LlamaModel>,
}

impl<'m> LlamaAdapter<'m> {
    /// Loads the adapter at `path` for `model`, as llama.cpp's `--lora` and Ollama's `ADAPTER` do.
    pub fn load(model: &'m LlamaModel, path: &Path) -> Result<LlamaAdapter<'m>, Error> {
        let c = c_path(path)?;
        log::clear_errors();
        // SAFETY: live model; NUL-terminated path; returns null (after logging why) on failure.
        let ptr = unsafe { sys::llama_adapter_lora_init(model.ptr.as_ptr(), c.as_ptr()) };
        NonNull::new(ptr)
            .map(|ptr| LlamaAdapter { ptr, _model: std::marker::PhantomData })
            .ok_or_else(|| Error::AdapterRejected { path: path.to_owned(), reason: log::take_errors() })
    }
}

impl Drop for LlamaAdapter<'_> {
    fn drop(&mut self) {
        // SAFETY: created by llama_adapter_lora_init for a model that is still alive (borrowed);
        // freed once. Contexts using it are dropped first (they borrow the adapter).
        unsafe { sys::llama_adapter_lora_free(self.ptr.as_ptr()) }
    }
}

impl<'m> LlamaContext<'m> {
    /// Applies `adapters` with their scales to the following decodes (`llama_set_adapters_lora`).
    pub fn set_adapters(&mut self, adapters: &[(&'m LlamaAdapter<'m>, f32)]) -> Result<(), Error> {
        let mut ptrs: Vec<*mut sys::llama_adapter_lora> = adapters.iter().map(|(a, _)| a.ptr.as_ptr()).collect();
        let mut scales: Vec<f32> = adapters.iter().map(|(_, s)| *s).collect();
        // SAFETY: live context; the arrays hold n_adapters entries each, the adapters belong to
        // this context's model and outlive the context ('m).
        let rc = unsafe {
            sys::llama_set_adapters_lora(self.ptr.as_ptr(), ptrs.as_mut_ptr(), ptrs.len(), scales.as_mut_ptr())
        };
        if rc != 0 {
            return Err(Error::DecodeFailed { code: rc, reason: log::take_errors() });
        }
        Ok(())
    }
}
