//! Memory for tensors on a backend: trainable parameters, a model's weights on a device (all of
//! them, or the share of one device when a model is split), and a memory-mapped model file used
//! in place; and copying data in and out of tensors that have memory.

use std::marker::PhantomData;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::backend::Backend;
use super::context::{Context, Tensor};
use super::{Error, Runtime};

pub(super) fn get_f32(t: Tensor<'_>) -> Result<Vec<f32>, Error> {
    {
        if !t.has_data() || t.ty() != Some(crate::gguf::GgmlType::F32) {
            return Err(Error::TensorData { what: "reading a tensor that is not f32 or has no memory" });
        }
        let mut out = vec![0f32; t.nbytes() / 4];
        // SAFETY: the tensor has memory of nbytes bytes (checked), and `out` holds exactly that.
        unsafe { sys::ggml_backend_tensor_get(t.raw(), out.as_mut_ptr().cast(), 0, t.nbytes()) };
        Ok(out)
    }
}

pub(super) fn fill_zero(t: Tensor<'_>) -> Result<(), Error> {
    if !t.has_data() {
        return Err(Error::TensorData { what: "clearing a tensor without memory" });
    }
    // SAFETY: the tensor has memory of nbytes bytes (checked), and the range is exactly that.
    unsafe { sys::ggml_backend_tensor_memset(t.raw(), 0, 0, t.nbytes()) };
    Ok(())
}

pub(super) fn set_bytes(t: Tensor<'_>, src: *const u8, len: usize) -> Result<(), Error> {
    if !t.has_data() || t.nbytes() != len {
        return Err(Error::TensorData { what: "writing a tensor without memory, or with a different size" });
    }
    // SAFETY: the tensor has memory of exactly `len` bytes (checked: ggml asserts
    // offset + size <= nbytes), and `src` points to `len` readable bytes.
    unsafe { sys::ggml_backend_tensor_set(t.raw(), src.cast(), 0, len) };
    Ok(())
}

/// Memory for every tensor of a context (trainable parameters, their gradient accumulators),
/// in one backend buffer that lives as long as this value.
#[derive(Debug)]
pub struct ParamBuffer<'ctx> {
    ptr: NonNull<sys::ggml_backend_buffer>,
    _ctx: PhantomData<&'ctx Context>,
}

impl<'ctx> ParamBuffer<'ctx> {
    /// Allocates all tensors of `ctx` (none may have memory yet) on `backend`.
    pub fn alloc(ctx: &'ctx Context, backend: &Backend) -> Result<ParamBuffer<'ctx>, Error> {
        // SAFETY: live context and backend; returns null when out of memory.
        let ptr = unsafe { sys::ggml_backend_alloc_ctx_tensors(ctx.raw(), backend.raw()) };
        NonNull::new(ptr).map(|ptr| ParamBuffer { ptr, _ctx: PhantomData }).ok_or(Error::GraphAlloc)
    }

    /// Allocates `tensors` of a context (none a view, none with memory yet) in one new buffer on
    /// `backend`: the parameters of the layers one device holds. The buffer is marked as weights,
    /// so that ggml's scheduler runs the ops reading them (the LoRA products, the gradient norm's
    /// terms, AdamW) on that device: unmarked, the gradient norm's chain of sums over a split
    /// went back and forth between the devices (29 graph splits for a two-layer model, 2 marked).
    pub fn alloc_tensors(backend: &Backend, tensors: &[Tensor<'ctx>]) -> Result<ParamBuffer<'ctx>, Error> {
        Ok(ParamBuffer { ptr: alloc_marked_as_weights(backend, tensors)?, _ctx: PhantomData })
    }

    /// Copies `data` into the f32 tensor `t`, which must have memory (in a buffer that outlives
    /// the call) of exactly `data`'s size.
    pub fn write_f32(t: Tensor<'ctx>, data: &[f32]) -> Result<(), Error> {
        set_bytes(t, data.as_ptr().cast(), std::mem::size_of_val(data))
    }

    /// Copies `data` into the I32 tensor `t`, which must have memory of exactly `data`'s size.
    pub fn write_i32(t: Tensor<'ctx>, data: &[i32]) -> Result<(), Error> {
        if t.ty() != Some(crate::gguf::GgmlType::I32) {
            return Err(Error::TensorData { what: "writing integers into a tensor that is not I32" });
        }
        set_bytes(t, data.as_ptr().cast(), std::mem::size_of_val(data))
    }

    /// The data of the f32 tensor `t`, which must have memory.
    pub fn read_f32(t: Tensor<'ctx>) -> Result<Vec<f32>, Error> {
        get_f32(t)
    }

    /// Copies `bytes` into the tensor `t` of this buffer's context, of any type (quantized weights
    /// as ggml stores them); `bytes` must be exactly the tensor's size.
    pub fn set_bytes(&self, t: Tensor<'ctx>, bytes: &[u8]) -> Result<(), Error> {
        set_bytes(t, bytes.as_ptr(), bytes.len())
    }

    /// Sets every byte of the tensor `t`, which must have memory, to zero.
    pub fn write_zeros(t: Tensor<'ctx>) -> Result<(), Error> {
        fill_zero(t)
    }

    /// Bytes of the buffer.
    pub fn size(&self) -> usize {
        // SAFETY: live buffer.
        unsafe { sys::ggml_backend_buffer_get_size(self.ptr.as_ptr()) }
    }
}

impl Drop for ParamBuffer<'_> {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_alloc_ctx_tensors or ggml_backend_buft_alloc_buffer,
        // freed once.
        unsafe { sys::ggml_backend_buffer_free(self.ptr.as_ptr()) }
    }
}

/// The share of a model's weights one device holds: one backend buffer, marked as weights
/// (`GGML_BACKEND_BUFFER_USAGE_WEIGHTS`): ggml's scheduler runs the ops reading them on this
/// buffer's backend, and an RPC server started with `--cache` keeps the large ones on its disk.
/// The bytes are copied in tensor by tensor ([`WeightBuffer::set_bytes`]). A device that caps
/// one buffer's size below the share is an error ([`Error::BufferTooLarge`]).
#[derive(Debug)]
pub struct WeightBuffer<'ctx> {
    ptr: NonNull<sys::ggml_backend_buffer>,
    _ctx: PhantomData<&'ctx Context>,
}

impl<'ctx> WeightBuffer<'ctx> {
    /// Gives `tensors` of a context (none a view, none with memory yet) memory in one new buffer
    /// on `backend`, marked as weights: the share of a model's weights one device holds. Views
    /// of them get their memory from [`init_views`].
    pub fn alloc_tensors(backend: &Backend, tensors: &[Tensor<'ctx>]) -> Result<WeightBuffer<'ctx>, Error> {
        Ok(WeightBuffer { ptr: alloc_marked_as_weights(backend, tensors)?, _ctx: PhantomData })
    }

    /// Copies `bytes` (exactly the tensor's size, in its stored type) into the tensor `t` of
    /// this buffer's context.
    pub fn set_bytes(&self, t: Tensor<'ctx>, bytes: &[u8]) -> Result<(), Error> {
        set_bytes(t, bytes.as_ptr(), bytes.len())
    }

    /// Bytes of the buffer.
    pub fn size(&self) -> usize {
        // SAFETY: live buffer.
        unsafe { sys::ggml_backend_buffer_get_size(self.ptr.as_ptr()) }
    }
}

/// One buffer of `backend`'s default type holding `tensors`, each placed in it by ggml's linear
/// allocator (`ggml_tallocr`), marked as weights (`GGML_BACKEND_BUFFER_USAGE_WEIGHTS`): ggml's
/// scheduler runs the ops reading a tensor of it on its backend.
fn alloc_marked_as_weights(
    backend: &Backend,
    tensors: &[Tensor<'_>],
) -> Result<NonNull<sys::ggml_backend_buffer>, Error> {
    if tensors.is_empty() || tensors.iter().any(|t| t.has_data() || t.view_src().is_some()) {
        return Err(Error::TensorData { what: "allocating no tensors, a view, or a tensor that has memory already" });
    }
    // SAFETY: a live backend; its default buffer type is static in ggml.
    let buft = unsafe { sys::ggml_backend_get_default_buffer_type(backend.raw()) };
    // SAFETY: a valid buffer type; both only answer.
    let (alignment, max_size) =
        unsafe { (sys::ggml_backend_buft_get_alignment(buft).max(1), sys::ggml_backend_buft_get_max_size(buft)) };
    // The linear allocator first aligns the buffer's base (up to `alignment - 1` bytes), then
    // pads every tensor to the alignment.
    let mut size = alignment;
    for t in tensors {
        // SAFETY: a valid buffer type and a live tensor; only answers.
        let bytes = unsafe { sys::ggml_backend_buft_get_alloc_size(buft, t.raw()) };
        size = bytes.checked_next_multiple_of(alignment).and_then(|b| size.checked_add(b)).ok_or(Error::GraphAlloc)?;
    }
    if size > max_size {
        return Err(Error::BufferTooLarge { bytes: size, max_bytes: max_size, backend: backend.name() });
    }
    // SAFETY: a valid buffer type; null when out of memory.
    let buffer = NonNull::new(unsafe { sys::ggml_backend_buft_alloc_buffer(buft, size) }).ok_or(Error::GraphAlloc)?;
    // SAFETY: a live buffer; the allocator only records its base and alignment.
    let mut talloc = unsafe { sys::ggml_tallocr_new(buffer.as_ptr()) };
    for t in tensors {
        // SAFETY: the buffer has room for every tensor padded to the alignment after the base's
        // alignment (sized above: ggml aborts when a tensor does not fit); each tensor is live,
        // not a view and without memory (checked).
        let status = unsafe { sys::ggml_tallocr_alloc(&mut talloc, t.raw()) };
        if status != sys::GGML_STATUS_SUCCESS {
            // SAFETY: the buffer made above, freed once; no tensor placed in it is used again.
            unsafe { sys::ggml_backend_buffer_free(buffer.as_ptr()) };
            return Err(Error::GraphAlloc);
        }
    }
    // SAFETY: a live buffer just made.
    unsafe { sys::ggml_backend_buffer_set_usage(buffer.as_ptr(), sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS) };
    Ok(buffer)
}

/// Gives every view in `ctx` whose source has memory and which has none itself its memory
/// (`ggml_backend_view_init`): the row views of a fused weight after the weight was placed
/// with [`WeightBuffer::alloc_tensors`] or bound to a mapped file.
pub fn init_views(ctx: &Context) -> Result<(), Error> {
    for t in context_tensors(ctx) {
        let Some(src) = t.view_src() else { continue };
        if t.has_data() || !src.has_data() {
            continue;
        }
        // SAFETY: a live view whose source has memory in a live buffer (checked) and which has
        // none itself (checked: ggml asserts both).
        let status = unsafe { sys::ggml_backend_view_init(t.raw()) };
        if status != sys::GGML_STATUS_SUCCESS {
            return Err(Error::TensorData { what: "ggml could not give a view its source's memory" });
        }
    }
    Ok(())
}

/// Every tensor of `ctx`, in creation order.
fn context_tensors(ctx: &Context) -> Vec<Tensor<'_>> {
    let mut out = Vec::new();
    // SAFETY: live context; returns its first tensor, or null when it has none.
    let mut t = unsafe { sys::ggml_get_first_tensor(ctx.raw()) };
    while let Some(tensor) = Tensor::from_raw(t) {
        out.push(tensor);
        // SAFETY: a live tensor of this context; returns the next one, or null after the last.
        t = unsafe { sys::ggml_get_next_tensor(ctx.raw(), t) };
    }
    out
}

impl Drop for WeightBuffer<'_> {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_alloc_ctx_tensors or ggml_backend_buft_alloc_buffer,
        // freed once.
        unsafe { sys::ggml_backend_buffer_free(self.ptr.as_ptr()) }
    }
}

/// Read-only bytes (a memory-mapped model file) used as a CPU buffer, so weight tensors point
/// straight into the mapping: no copy, and the pages load on first use.
#[derive(Debug)]
pub struct MappedBuffer<'data> {
    ptr: NonNull<sys::ggml_backend_buffer>,
    base: *const u8,
    len: usize,
    _data: PhantomData<&'data [u8]>,
}

impl<'data> MappedBuffer<'data> {
    /// Wraps `data`, which must start at a 32-byte boundary (a memory map does).
    pub fn new(_rt: &Runtime, data: &'data [u8]) -> Result<MappedBuffer<'data>, Error> {
        if data.as_ptr() as usize % 32 != 0 || data.is_empty() {
            return Err(Error::TensorData { what: "a mapped buffer must be non-empty and 32-byte aligned" });
        }
        // SAFETY: ggml only reads weight tensors (no op writes into a source), so the read-only
        // bytes are never written despite the *mut; the buffer does not own or free the memory,
        // and PhantomData ties it to the bytes' lifetime. Alignment checked (ggml asserts it).
        let ptr = unsafe { sys::ggml_backend_cpu_buffer_from_ptr(data.as_ptr() as *mut _, data.len()) };
        let ptr = NonNull::new(ptr).ok_or(Error::TensorData { what: "ggml refused the mapped buffer" })?;
        Ok(MappedBuffer { ptr, base: data.as_ptr(), len: data.len(), _data: PhantomData })
    }

    /// Points `t` at `len` bytes from `offset` in the buffer; `len` must equal the tensor's size.
    /// The context must not outlive the buffer: the caller keeps both for the computation.
    pub fn bind(&self, t: Tensor<'_>, offset: usize) -> Result<(), Error> {
        let end = offset.checked_add(t.nbytes());
        if t.has_data() || end.is_none_or(|e| e > self.len) || offset % 32 != 0 {
            return Err(Error::TensorData { what: "binding a tensor outside the buffer, misaligned, or twice" });
        }
        // SAFETY: the tensor has no memory yet and [offset, offset + nbytes) lies inside the
        // buffer (checked; ggml asserts the same), so the address is valid for the tensor.
        let status =
            unsafe { sys::ggml_backend_tensor_alloc(self.ptr.as_ptr(), t.raw(), self.base.add(offset) as *mut _) };
        if status != sys::GGML_STATUS_SUCCESS {
            return Err(Error::TensorData { what: "ggml could not bind the tensor" });
        }
        Ok(())
    }
}

impl Drop for MappedBuffer<'_> {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_cpu_buffer_from_ptr, freed once; this frees only ggml's
        // bookkeeping, not the borrowed bytes.
        unsafe { sys::ggml_backend_buffer_free(self.ptr.as_ptr()) }
    }
}
