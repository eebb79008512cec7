//! Graph-building contexts and tensor handles. Contexts here never hold tensor data
//! (`no_alloc`): data lives in backend buffers (see `backend.rs`).
//!
//! Every op checks, in Rust, the `GGML_ASSERT`s of the ggml function it calls (named in its doc),
//! because a failed assert aborts the whole process.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::{Error, Runtime};
use crate::gguf::GgmlType;

/// A ggml context holding tensor metadata and graphs (no data).
#[derive(Debug)]
pub struct Context {
    ptr: NonNull<sys::ggml_context>,
}

/// A tensor of a [`Context`]: a copyable handle that cannot outlive its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tensor<'ctx> {
    ptr: NonNull<sys::ggml_tensor>,
    _ctx: PhantomData<&'ctx Context>,
}

/// ggml's rope modes (`GGML_ROPE_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs rotate together (Llama in llama.cpp's layout).
    Normal,
    /// The two halves of each head rotate together (Qwen2, GPT-NeoX).
    Neox,
}

/// Rope hyper-parameters (the arguments of `ggml_rope_ext` after the tensors).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    pub n_dims: i32,
    pub mode: RopeMode,
    pub n_ctx_orig: i32,
    pub freq_base: f32,
    pub freq_scale: f32,
    /// The factor of cos and sin (1 but for longrope's attention factor).
    pub attn_factor: f32,
}

impl Context {
    /// A context with room for `max_tensors` tensors and graphs of up to `graph_size` nodes.
    pub fn new(_rt: &Runtime, max_tensors: usize, graph_size: usize) -> Result<Context, Error> {
        // SAFETY: both functions only compute sizes.
        let mem_size =
            unsafe { max_tensors * sys::ggml_tensor_overhead() + sys::ggml_graph_overhead_custom(graph_size, false) };
        let params = sys::ggml_init_params { mem_size, mem_buffer: std::ptr::null_mut(), no_alloc: true };
        // SAFETY: valid parameters; ggml allocates and owns the metadata buffer, freed in Drop.
        let ptr = unsafe { sys::ggml_init(params) };
        NonNull::new(ptr).map(|ptr| Context { ptr }).ok_or(Error::ContextAlloc { bytes: mem_size })
    }

    pub(super) fn raw(&self) -> *mut sys::ggml_context {
        self.ptr.as_ptr()
    }

    pub(super) fn wrap(&self, op: &'static str, ptr: *mut sys::ggml_tensor) -> Result<Tensor<'_>, Error> {
        NonNull::new(ptr).map(|ptr| Tensor { ptr, _ctx: PhantomData }).ok_or(Error::ContextFull { op })
    }

    pub(super) fn room(&self, op: &'static str) -> Result<(), Error> {
        // SAFETY: live context; reads its memory accounting.
        let (used, size) = unsafe { (sys::ggml_used_mem(self.raw()), sys::ggml_get_mem_size(self.raw())) };
        // SAFETY: only computes a size.
        let overhead = unsafe { sys::ggml_tensor_overhead() };
        if used + overhead > size {
            return Err(Error::ContextFull { op });
        }
        Ok(())
    }

    /// A new tensor of type `ty` and dimensions `ne` (innermost first, 1 to 4 of them).
    pub fn new_tensor(&self, ty: GgmlType, ne: &[u64]) -> Result<Tensor<'_>, Error> {
        if ne.is_empty() || ne.len() > 4 || ne[0] % ty.block_size() != 0 {
            return Err(Error::BadShape { op: "new_tensor", ne: ne.to_vec() });
        }
        let ne_i64: Vec<i64> = ne
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| Error::BadShape { op: "new_tensor", ne: ne.to_vec() })?;
        self.room("new_tensor")?;
        // SAFETY: live context with room for one more tensor (checked); `ne_i64` holds n_dims values.
        let t = unsafe { sys::ggml_new_tensor(self.raw(), ty.id(), ne_i64.len() as i32, ne_i64.as_ptr()) };
        self.wrap("new_tensor", t)
    }

    /// A new node computed exactly as `node` (same type, shape, strides, op and op parameters)
    /// from `srcs` instead of its sources and, for a view, viewing `view_src` at the same offset:
    /// the copy a recomputation adds to a graph. It carries no flags (not an input, output,
    /// parameter or loss) and no data.
    pub(super) fn clone_node<'c>(
        &'c self,
        node: Tensor<'c>,
        srcs: &[Option<Tensor<'c>>],
        view_src: Option<Tensor<'c>>,
    ) -> Result<Tensor<'c>, Error> {
        let inner = node.inner();
        if srcs.len() > inner.src.len() || view_src.is_some() == inner.view_src.is_null() {
            return Err(Error::TensorData { what: "clone_node: sources do not match the node's" });
        }
        self.room("clone_node")?;
        // SAFETY: live context with room for one more tensor (checked); the node's type id and
        // dimensions are those of a live tensor.
        let t = unsafe { sys::ggml_new_tensor(self.raw(), inner.type_, 4, inner.ne.as_ptr()) };
        let t = self.wrap("clone_node", t)?;
        // SAFETY: a fresh tensor of this context, not in any graph yet, without data; the fields
        // copied describe the same computation as `node`, and every source is a live tensor of
        // this context.
        unsafe {
            let c = &mut *t.raw();
            c.nb = inner.nb;
            c.op = inner.op;
            c.op_params = inner.op_params;
            c.flags = 0;
            c.src = [std::ptr::null_mut(); 10];
            for (dst, src) in c.src.iter_mut().zip(srcs) {
                *dst = src.map_or(std::ptr::null_mut(), |s| s.raw());
            }
            c.view_src = view_src.map_or(std::ptr::null_mut(), |v| v.raw());
            c.view_offs = inner.view_offs;
            c.name = inner.name;
        }
        Ok(t)
    }

    /// `ggml_mul_mat(a, b)`: `a` is `[k, m, ...]`, `b` is `[k, n, ...]`, the result `[m, n, ...]`
    /// (f32). Mirrors `ggml_can_mul_mat` (same `k`, `b`'s batch dims multiples of `a`'s) and
    /// `!ggml_is_transposed(a)`.
    pub fn mul_mat<'c>(&'c self, a: Tensor<'c>, b: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        let (x, y) = (a.ne(), b.ne());
        if x[0] != y[0] || y[2] % x[2] != 0 || y[3] % x[3] != 0 || a.is_transposed() {
            return Err(Error::ShapeMismatch { op: "mul_mat", a: x, b: y });
        }
        self.room("mul_mat")?;
        // SAFETY: live context and tensors of it; the asserts of ggml_mul_mat were checked above.
        self.wrap("mul_mat", unsafe { sys::ggml_mul_mat(self.raw(), a.raw(), b.raw()) })
    }

    fn binary<'c>(
        &'c self,
        op: &'static str,
        a: Tensor<'c>,
        b: Tensor<'c>,
        f: unsafe extern "C" fn(
            *mut sys::ggml_context,
            *mut sys::ggml_tensor,
            *mut sys::ggml_tensor,
        ) -> *mut sys::ggml_tensor,
    ) -> Result<Tensor<'c>, Error> {
        let (x, y) = (a.ne(), b.ne());
        // ggml_can_repeat(b, a): each of a's dims is a multiple of b's.
        if (0..4).any(|i| y[i] == 0 || x[i] % y[i] != 0) {
            return Err(Error::ShapeMismatch { op, a: x, b: y });
        }
        self.room(op)?;
        // SAFETY: live context and tensors of it; ggml_can_repeat(b, a) holds (checked above).
        self.wrap(op, unsafe { f(self.raw(), a.raw(), b.raw()) })
    }

    /// `ggml_add(a, b)`, `b` broadcast over `a` (`ggml_can_repeat(b, a)`).
    pub fn add<'c>(&'c self, a: Tensor<'c>, b: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.binary("add", a, b, sys::ggml_add)
    }

    /// `ggml_mul(a, b)`, `b` broadcast over `a` (`ggml_can_repeat(b, a)`).
    pub fn mul<'c>(&'c self, a: Tensor<'c>, b: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.binary("mul", a, b, sys::ggml_mul)
    }

    /// `ggml_rms_norm(a, eps)` over rows.
    pub fn rms_norm<'c>(&'c self, a: Tensor<'c>, eps: f32) -> Result<Tensor<'c>, Error> {
        self.room("rms_norm")?;
        // SAFETY: live context and tensor; rms_norm accepts any f32 tensor.
        self.wrap("rms_norm", unsafe { sys::ggml_rms_norm(self.raw(), a.raw(), eps) })
    }

    /// `ggml_silu(a)`.
    pub fn silu<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("silu")?;
        // SAFETY: live context and tensor.
        self.wrap("silu", unsafe { sys::ggml_silu(self.raw(), a.raw()) })
    }

    /// `ggml_gelu(a)`: GELU's tanh approximation, as llama.cpp's Falcon graph applies it (on the
    /// CPU through ggml's table of f16 values). ggml has no backward pass for it;
    /// [`super::Graph::build_backward_expand`] supplies one ([`super::gelu_derivative`]).
    pub fn gelu<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("gelu")?;
        // SAFETY: live context and tensor; gelu accepts any f32 tensor.
        self.wrap("gelu", unsafe { sys::ggml_gelu(self.raw(), a.raw()) })
    }

    /// `ggml_exp(a)`, element-wise (differentiable: its gradient is the result times the incoming
    /// one).
    pub fn exp<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("exp")?;
        // SAFETY: live context and tensor; exp accepts any f32 tensor.
        self.wrap("exp", unsafe { sys::ggml_exp(self.raw(), a.raw()) })
    }

    /// `ggml_softplus(a)`: `ln(1 + e^a)`, element-wise, `a` itself above 20 (differentiable: its
    /// gradient is the incoming one times `sigmoid(a)`).
    pub fn softplus<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("softplus")?;
        // SAFETY: live context and tensor; softplus accepts any f32 tensor.
        self.wrap("softplus", unsafe { sys::ggml_softplus(self.raw(), a.raw()) })
    }

    /// `ggml_tanh(a)`, element-wise, as llama.cpp's soft-capping applies it. ggml has no backward
    /// pass for it: graphs to be trained use `model::ops::soft_cap`.
    pub fn tanh<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("tanh")?;
        // SAFETY: live context and tensor; tanh accepts any f32 tensor.
        self.wrap("tanh", unsafe { sys::ggml_tanh(self.raw(), a.raw()) })
    }

    /// `ggml_sum_rows(a)`: `[1, ne1, ne2, ne3]`, each row summed.
    pub fn sum_rows<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("sum_rows")?;
        // SAFETY: live context and tensor; sum_rows accepts any tensor.
        self.wrap("sum_rows", unsafe { sys::ggml_sum_rows(self.raw(), a.raw()) })
    }

    /// `ggml_scale(a, s)`.
    pub fn scale<'c>(&'c self, a: Tensor<'c>, s: f32) -> Result<Tensor<'c>, Error> {
        self.room("scale")?;
        // SAFETY: live context and tensor.
        self.wrap("scale", unsafe { sys::ggml_scale(self.raw(), a.raw(), s) })
    }

    /// `ggml_scale_bias(a, s, b)`: `a * s + b`, element-wise.
    pub fn scale_bias<'c>(&'c self, a: Tensor<'c>, s: f32, b: f32) -> Result<Tensor<'c>, Error> {
        self.room("scale_bias")?;
        // SAFETY: live context and tensor.
        self.wrap("scale_bias", unsafe { sys::ggml_scale_bias(self.raw(), a.raw(), s, b) })
    }

    /// `ggml_get_rows(a, rows)`: rows of `a` picked by the I32 vector `rows`.
    pub fn get_rows<'c>(&'c self, a: Tensor<'c>, rows: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        let (x, y) = (a.ne(), rows.ne());
        if rows.ty() != Some(GgmlType::I32) || x[2] != y[1] || y[3] != 1 {
            return Err(Error::ShapeMismatch { op: "get_rows", a: x, b: y });
        }
        self.room("get_rows")?;
        // SAFETY: live context and tensors; ggml_get_rows' asserts (b I32, a.ne[2] == b.ne[1],
        // b.ne[3] == 1) checked above.
        self.wrap("get_rows", unsafe { sys::ggml_get_rows(self.raw(), a.raw(), rows.raw()) })
    }

    /// `ggml_soft_max(a)` over rows.
    pub fn soft_max<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("soft_max")?;
        // SAFETY: live context and tensor; soft_max accepts any f32 tensor.
        self.wrap("soft_max", unsafe { sys::ggml_soft_max(self.raw(), a.raw()) })
    }

    /// `ggml_log(a)`, element-wise.
    pub fn log<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("log")?;
        // SAFETY: live context and tensor.
        self.wrap("log", unsafe { sys::ggml_log(self.raw(), a.raw()) })
    }

    /// `ggml_sum(a)`: the scalar sum of all elements.
    pub fn sum<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("sum")?;
        // SAFETY: live context and tensor.
        self.wrap("sum", unsafe { sys::ggml_sum(self.raw(), a.raw()) })
    }

    /// `ggml_sqr(a)`, element-wise.
    pub fn sqr<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("sqr")?;
        // SAFETY: live context and tensor.
        self.wrap("sqr", unsafe { sys::ggml_sqr(self.raw(), a.raw()) })
    }

    /// `ggml_opt_step_adamw(param, grad, m, v, hparams)`: one AdamW step applied in place to the
    /// trainable `param` and its moments `m`, `v` (all the same shape), with `hparams` the 7 f32
    /// values `[lr, beta1, beta2, eps, weight_decay, 1/(1-beta1^t), 1/(1-beta2^t)]`.
    pub fn opt_step_adamw<'c>(
        &'c self,
        param: Tensor<'c>,
        grad: Tensor<'c>,
        m: Tensor<'c>,
        v: Tensor<'c>,
        hparams: Tensor<'c>,
    ) -> Result<Tensor<'c>, Error> {
        let ne = param.ne();
        if param.flags() & sys::GGML_TENSOR_FLAG_PARAM as i32 == 0 {
            return Err(Error::NotAParam { op: "opt_step_adamw" });
        }
        if [grad, m, v].iter().any(|t| t.ne() != ne) {
            return Err(Error::ShapeMismatch { op: "opt_step_adamw", a: ne, b: grad.ne() });
        }
        if hparams.ty() != Some(GgmlType::F32) || hparams.n_elements() != 7 {
            return Err(Error::BadShape { op: "opt_step_adamw", ne: hparams.ne().iter().map(|&d| d as u64).collect() });
        }
        self.room("opt_step_adamw")?;
        // SAFETY: live context and tensors; the asserts (a param, same shapes, 7 f32 hparams)
        // checked above.
        self.wrap("opt_step_adamw", unsafe {
            sys::ggml_opt_step_adamw(self.raw(), param.raw(), grad.raw(), m.raw(), v.raw(), hparams.raw())
        })
    }

    /// `ggml_cast(a, F32)`: `a`'s values as a new f32 tensor of the same shape (a graph node of
    /// its own, so the graph allocator gives it memory only when it is computed, unlike a copy
    /// into a separate destination tensor, which is a leaf allocated before the graph runs).
    pub fn cast_f32<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("cast")?;
        // SAFETY: live context and tensor; the CPU kernel converts every type to f32.
        self.wrap("cast", unsafe { sys::ggml_cast(self.raw(), a.raw(), sys::GGML_TYPE_F32) })
    }

    /// `ggml_transpose(a)`: a view with the first two dimensions swapped.
    pub fn transpose<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("transpose")?;
        // SAFETY: live context and tensor; any tensor can be transposed.
        self.wrap("transpose", unsafe { sys::ggml_transpose(self.raw(), a.raw()) })
    }

    /// `ggml_reshape_2d` / `_3d` / `_4d` by the length of `ne`; `a` must be contiguous and keep its
    /// element count.
    pub fn reshape<'c>(&'c self, a: Tensor<'c>, ne: &[i64]) -> Result<Tensor<'c>, Error> {
        let count: i64 = ne.iter().product();
        if !a.is_contiguous() || count != a.n_elements() || !(2..=4).contains(&ne.len()) {
            return Err(Error::BadShape { op: "reshape", ne: ne.iter().map(|&d| d.max(0) as u64).collect() });
        }
        self.room("reshape")?;
        // SAFETY: live context and tensor; contiguity and element count (the asserts) checked.
        let t = unsafe {
            match ne.len() {
                2 => sys::ggml_reshape_2d(self.raw(), a.raw(), ne[0], ne[1]),
                3 => sys::ggml_reshape_3d(self.raw(), a.raw(), ne[0], ne[1], ne[2]),
                _ => sys::ggml_reshape_4d(self.raw(), a.raw(), ne[0], ne[1], ne[2], ne[3]),
            }
        };
        self.wrap("reshape", t)
    }

    /// Columns `first..first + n` of the contiguous 2-d tensor `a` (`[ne0, ne1]`) as a
    /// `[ne0, n]` view (`ggml_view_2d`), sharing `a`'s memory.
    pub fn columns<'c>(&'c self, a: Tensor<'c>, first: i64, n: i64) -> Result<Tensor<'c>, Error> {
        let [ne0, ne1, ne2, ne3] = a.ne();
        if !a.is_contiguous() || ne2 != 1 || ne3 != 1 || first < 0 || n < 1 || first + n > ne1 {
            return Err(Error::BadShape { op: "columns", ne: vec![first.max(0) as u64, n.max(0) as u64] });
        }
        self.room("columns")?;
        let nb1 = a.inner().nb[1];
        // SAFETY: live context and tensor; the view lies inside `a` (checked), with `a`'s row stride.
        let t = unsafe { sys::ggml_view_2d(self.raw(), a.raw(), ne0, n, nb1, first as usize * nb1) };
        self.wrap("columns", t)
    }

    /// Values `first..first + n` of the contiguous 1-d tensor `a` as a view (`ggml_view_1d`),
    /// sharing `a`'s memory.
    pub fn elements<'c>(&'c self, a: Tensor<'c>, first: i64, n: i64) -> Result<Tensor<'c>, Error> {
        let [ne0, ne1, ne2, ne3] = a.ne();
        if !a.is_contiguous() || ne1 != 1 || ne2 != 1 || ne3 != 1 || first < 0 || n < 1 || first + n > ne0 {
            return Err(Error::BadShape { op: "elements", ne: vec![first.max(0) as u64, n.max(0) as u64] });
        }
        self.room("elements")?;
        let nb0 = a.inner().nb[0];
        // SAFETY: live context and tensor; the view lies inside `a` (checked), whose values are
        // `nb0` bytes apart.
        let t = unsafe { sys::ggml_view_1d(self.raw(), a.raw(), n, first as usize * nb0) };
        self.wrap("elements", t)
    }

    /// `ggml_permute(a, axes)`: dimension `i` of `a` becomes dimension `axes[i]`.
    pub fn permute<'c>(&'c self, a: Tensor<'c>, axes: [i32; 4]) -> Result<Tensor<'c>, Error> {
        let mut seen = [false; 4];
        for &ax in &axes {
            if !(0..4).contains(&ax) || std::mem::replace(&mut seen[ax as usize], true) {
                return Err(Error::BadPermutation { axes });
            }
        }
        self.room("permute")?;
        // SAFETY: live context and tensor; axes are a permutation of 0..4 (the asserts).
        self.wrap("permute", unsafe { sys::ggml_permute(self.raw(), a.raw(), axes[0], axes[1], axes[2], axes[3]) })
    }

    /// `ggml_cont(a)`: a contiguous copy.
    pub fn cont<'c>(&'c self, a: Tensor<'c>) -> Result<Tensor<'c>, Error> {
        self.room("cont")?;
        // SAFETY: live context and tensor.
        self.wrap("cont", unsafe { sys::ggml_cont(self.raw(), a.raw()) })
    }

    /// `ggml_soft_max_ext(a, mask, scale, 0)`: softmax over rows of `a * scale + mask`. The mask
    /// (f32) is `[a.ne0, >= a.ne1]`, broadcast over the other dims.
    pub fn soft_max_ext<'c>(
        &'c self,
        a: Tensor<'c>,
        mask: Option<Tensor<'c>>,
        scale: f32,
    ) -> Result<Tensor<'c>, Error> {
        if let Some(m) = mask {
            let (x, y) = (a.ne(), m.ne());
            if m.ty() != Some(GgmlType::F32)
                || !m.is_contiguous()
                || y[0] != x[0]
                || y[1] < x[1]
                || x[2] % y[2] != 0
                || x[3] % y[3] != 0
            {
                return Err(Error::ShapeMismatch { op: "soft_max_ext", a: x, b: y });
            }
        }
        self.room("soft_max_ext")?;
        let m = mask.map_or(std::ptr::null_mut(), |m| m.raw());
        // SAFETY: live context and tensors; the mask's asserts (contiguous, F16/F32, ne0 equal,
        // ne1 covering, broadcastable) checked above; a null mask is allowed.
        self.wrap("soft_max_ext", unsafe { sys::ggml_soft_max_ext(self.raw(), a.raw(), m, scale, 0.0) })
    }

    /// `ggml_rope_ext(a, positions, freq_factors, ...)` without YaRN: `a` is
    /// `[head_dim, n_head, n_tokens]`, `positions` an I32 vector of `n_tokens`, `freq_factors`
    /// (Llama 3's `rope_freqs.weight`) an F32 vector of at least `n_dims / 2` values by which each
    /// rotary pair's wavelength is multiplied.
    pub fn rope_ext<'c>(
        &'c self,
        a: Tensor<'c>,
        positions: Tensor<'c>,
        freq_factors: Option<Tensor<'c>>,
        p: RopeParams,
    ) -> Result<Tensor<'c>, Error> {
        let (x, y) = (a.ne(), positions.ne());
        if positions.ty() != Some(GgmlType::I32)
            || y[0] != x[2]
            || p.n_dims <= 0
            || i64::from(p.n_dims) > x[0]
            || p.n_dims % 2 != 0
        {
            return Err(Error::ShapeMismatch { op: "rope_ext", a: x, b: y });
        }
        if let Some(c) = freq_factors {
            if c.ty() != Some(GgmlType::F32) || c.ne()[0] < i64::from(p.n_dims / 2) {
                return Err(Error::ShapeMismatch { op: "rope_ext (frequency factors)", a: x, b: c.ne() });
            }
        }
        self.room("rope_ext")?;
        let mode = match p.mode {
            RopeMode::Normal => 0,
            RopeMode::Neox => 2,
        };
        let c = freq_factors.map_or(std::ptr::null_mut(), |c| c.raw());
        // SAFETY: live context and tensors; ggml_rope_ext's asserts (b an I32 vector with one
        // position per row of ne2; c null, or F32 with at least n_dims / 2 values) checked above.
        let t = unsafe {
            sys::ggml_rope_ext(
                self.raw(),
                a.raw(),
                positions.raw(),
                c,
                p.n_dims,
                mode,
                p.n_ctx_orig,
                p.freq_base,
                p.freq_scale,
                0.0,
                p.attn_factor,
                32.0,
                1.0,
            )
        };
        self.wrap("rope_ext", t)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context came from ggml_init and is freed exactly once, here.
        unsafe { sys::ggml_free(self.ptr.as_ptr()) }
    }
}

impl<'ctx> Tensor<'ctx> {
    pub(super) fn raw(self) -> *mut sys::ggml_tensor {
        self.ptr.as_ptr()
    }

    fn inner(&self) -> &sys::ggml_tensor {
        // SAFETY: the tensor lives in a context that outlives 'ctx, and ggml never moves tensors.
        unsafe { self.ptr.as_ref() }
    }

    /// Elements per dimension, innermost first.
    pub fn ne(&self) -> [i64; 4] {
        self.inner().ne
    }

    /// Number of elements.
    pub fn n_elements(&self) -> i64 {
        self.ne().iter().product()
    }

    /// The tensor's type (`None` for types gguftune does not name).
    pub fn ty(&self) -> Option<GgmlType> {
        GgmlType::from_id(self.inner().type_)
    }

    /// Bytes of data.
    pub fn nbytes(&self) -> usize {
        // SAFETY: live tensor.
        unsafe { sys::ggml_nbytes(self.raw()) }
    }

    pub(super) fn is_contiguous(&self) -> bool {
        // SAFETY: live tensor.
        unsafe { sys::ggml_is_contiguous(self.raw()) }
    }

    fn is_transposed(&self) -> bool {
        // SAFETY: live tensor.
        unsafe { sys::ggml_is_transposed(self.raw()) }
    }

    /// Names the tensor (at most 63 bytes, longer names are cut by ggml).
    pub fn set_name(self, name: &str) -> Self {
        if let Ok(c) = CString::new(name) {
            // SAFETY: live tensor; ggml copies at most GGML_MAX_NAME - 1 bytes of the string.
            unsafe { sys::ggml_set_name(self.raw(), c.as_ptr()) };
        }
        self
    }

    /// The tensor's name (empty when it has none).
    pub fn name(&self) -> String {
        let name = &self.inner().name;
        let bytes: Vec<u8> = name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Marks the tensor as a graph input (its data is set before each computation).
    pub fn set_input(self) -> Self {
        // SAFETY: live tensor; sets a flag.
        unsafe { sys::ggml_set_input(self.raw()) };
        self
    }

    /// Marks the tensor as a graph output (its data is kept and read after a computation).
    pub fn set_output(self) -> Self {
        // SAFETY: live tensor; sets a flag.
        unsafe { sys::ggml_set_output(self.raw()) };
        self
    }

    /// Marks a leaf tensor as trainable (`ggml_set_param`, which asserts the tensor is a leaf).
    pub fn set_param(self) -> Result<Self, Error> {
        if self.inner().op != sys::GGML_OP_NONE {
            return Err(Error::NotALeaf);
        }
        // SAFETY: live tensor, a leaf (checked).
        unsafe { sys::ggml_set_param(self.raw()) };
        Ok(self)
    }

    /// Marks a scalar f32 tensor as the loss (`ggml_set_loss`, which asserts both).
    pub fn set_loss(self) -> Result<Self, Error> {
        if self.n_elements() != 1 || self.ty() != Some(GgmlType::F32) {
            return Err(Error::BadLoss { ne: self.ne() });
        }
        // SAFETY: live tensor, scalar f32 (checked).
        unsafe { sys::ggml_set_loss(self.raw()) };
        Ok(self)
    }

    /// The op that computes the tensor (ggml's `enum ggml_op` id) and, for unary ops, the unary op.
    pub(super) fn op(&self) -> (u32, Option<u32>) {
        let op = self.inner().op;
        // SAFETY: live tensor; ggml_get_unary_op only reads op_params of a GGML_OP_UNARY tensor.
        let unary = (op == sys::GGML_OP_UNARY).then(|| unsafe { sys::ggml_get_unary_op(self.raw()) });
        (op, unary)
    }

    /// Source `i` of the op that computes the tensor.
    pub(super) fn src(&self, i: usize) -> Option<Tensor<'ctx>> {
        self.inner().src.get(i).and_then(|&p| Tensor::from_raw(p))
    }

    /// The tensor this one is a view of (its data lives in that tensor's memory).
    pub(super) fn view_src(&self) -> Option<Tensor<'ctx>> {
        Tensor::from_raw(self.inner().view_src)
    }

    /// Points source `i` of this node at `src`; the caller keeps the op's shape rules (it only
    /// swaps a tensor for one computed the same way).
    pub(super) fn set_src(self, i: usize, src: Tensor<'ctx>) {
        // SAFETY: live tensor of a context that is not being computed (see make_mul_mat);
        // i < GGML_MAX_SRC is checked by the slice index.
        unsafe { (*self.raw()).src[i] = src.raw() };
    }

    /// Forgets the memory a graph allocator gave this tensor (data and buffer back to null), so
    /// that the next allocation gives it memory again instead of taking the old address as the
    /// tensor's own (ggml-backend.h: after a scheduler reset, "discard the deallocated tensors").
    pub(super) fn forget_memory(self) {
        // SAFETY: as in set_src; the tensor is not being computed, and ggml reads a null data and
        // buffer as "no memory yet".
        unsafe {
            (*self.raw()).data = std::ptr::null_mut();
            (*self.raw()).buffer = std::ptr::null_mut();
        }
    }

    /// The node's sources as ggml holds them (null where none).
    pub(super) fn raw_srcs(self) -> [*mut sys::ggml_tensor; 10] {
        self.inner().src
    }

    /// Sets the node's sources back to `srcs`, as [`Tensor::raw_srcs`] gave them: ggml's
    /// scheduler points a node's sources at copies of its inputs on its backend, in memory it
    /// frees when it places the next graph.
    pub(super) fn set_raw_srcs(self, srcs: [*mut sys::ggml_tensor; 10]) {
        // SAFETY: as in set_src; the sources are the node's own, as they were before a scheduler
        // replaced some by copies.
        unsafe { (*self.raw()).src = srcs };
    }

    /// Points this view node at `view_src` (same offset); see [`Tensor::set_src`].
    pub(super) fn set_view_src(self, view_src: Tensor<'ctx>) {
        // SAFETY: as in set_src.
        unsafe { (*self.raw()).view_src = view_src.raw() };
    }

    /// Turns this `ggml_out_prod` node into `ggml_mul_mat(a, b)` in place; the caller checked
    /// that the product has this node's shape and type (f32).
    pub(super) fn make_mul_mat(self, a: Tensor<'ctx>, b: Tensor<'ctx>) {
        // SAFETY: live tensor of a context that is not being computed (graphs are built and run
        // through `&` borrows of their context, and this runs while building); a mul_mat node
        // reads only op, src[0..2] and its (zeroed) op_params.
        unsafe {
            let t = &mut *self.raw();
            t.op = sys::GGML_OP_MUL_MAT;
            t.op_params = [0; 16];
            t.src = [std::ptr::null_mut(); 10];
            t.src[0] = a.raw();
            t.src[1] = b.raw();
        }
    }

    pub(super) fn flags(&self) -> i32 {
        self.inner().flags
    }

    pub(super) fn from_raw(ptr: *mut sys::ggml_tensor) -> Option<Tensor<'ctx>> {
        NonNull::new(ptr).map(|ptr| Tensor { ptr, _ctx: PhantomData })
    }

    /// The backend buffer holding the tensor's memory (its view source's, for a view), or null.
    pub(super) fn buffer(&self) -> *mut sys::ggml_backend_buffer {
        match self.view_src() {
            Some(src) => src.inner().buffer,
            None => self.inner().buffer,
        }
    }

    /// Whether the tensor has memory (after allocation or binding).
    pub fn has_data(&self) -> bool {
        !self.inner().data.is_null()
    }
}
