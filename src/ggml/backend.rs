//! Where tensor data lives and where graphs run: backends, graph allocation, and tensors bound
//! to memory-mapped model weights.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::buffer::{get_f32, set_bytes};
use super::context::{Context, Tensor};
use super::device::{Device, DeviceError};
use super::{Error, Runtime};

/// A ggml compute backend: the CPU's, or that of any device of ggml's registry
/// ([`Backend::from_device`]: a GPU, an RPC server's device).
#[derive(Debug)]
pub struct Backend {
    ptr: NonNull<sys::ggml_backend>,
    threads: usize,
}

impl Backend {
    /// The backend of `device`, with `threads` threads where its backend takes a thread count
    /// (the CPU's; ggml's `ggml_backend_set_n_threads` entry of the device's registry).
    pub fn from_device(_rt: &Runtime, device: &Device, threads: usize) -> Result<Backend, DeviceError> {
        // SAFETY: a registered device; null parameters are allowed; the backend is owned by the
        // returned value and freed in Drop. An RPC device's server was greeted when it was added.
        let ptr = unsafe { sys::ggml_backend_dev_init(device.raw(), std::ptr::null()) };
        let ptr = NonNull::new(ptr).ok_or_else(|| DeviceError::BackendInit { device: device.name() })?;
        let threads = threads.clamp(1, 512);
        // SAFETY: a registered device has a registry entry; the name is NUL-terminated.
        let set_threads = unsafe {
            sys::ggml_backend_reg_get_proc_address(
                sys::ggml_backend_dev_backend_reg(device.raw()),
                c"ggml_backend_set_n_threads".as_ptr(),
            )
        };
        if !set_threads.is_null() {
            // SAFETY: ggml's registries return this entry only with the signature of
            // `ggml_backend_set_n_threads_t` (ggml-backend.h), a function of the backend's own.
            let set_threads: sys::ggml_backend_set_n_threads_t = unsafe { std::mem::transmute(set_threads) };
            if let Some(set_threads) = set_threads {
                // SAFETY: a live backend of that registry; any positive thread count is valid.
                unsafe { set_threads(ptr.as_ptr(), threads as i32) };
            }
        }
        Ok(Backend { ptr, threads })
    }

    pub(super) fn raw(&self) -> *mut sys::ggml_backend {
        self.ptr.as_ptr()
    }

    /// ggml's name of the backend (`CPU`, `RPC[host:port]`, `CUDA0`, ...).
    pub fn name(&self) -> String {
        // SAFETY: a live backend; ggml returns a NUL-terminated name that lives as long as it.
        let p = unsafe { sys::ggml_backend_name(self.ptr.as_ptr()) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// The device the backend runs on.
    pub fn device(&self) -> Option<Device> {
        // SAFETY: a live backend; returns its registered device (or null for one without).
        Device::from_raw(unsafe { sys::ggml_backend_get_device(self.ptr.as_ptr()) })
    }

    /// The CPU backend with `threads` threads.
    pub fn cpu(_rt: &Runtime, threads: usize) -> Result<Backend, Error> {
        // SAFETY: creates a new backend owned by the returned value, freed in Drop.
        let ptr = unsafe { sys::ggml_backend_cpu_init() };
        let ptr = NonNull::new(ptr).ok_or(Error::BackendInit { name: "CPU" })?;
        let threads = threads.clamp(1, 512);
        // SAFETY: a live CPU backend; any positive thread count is valid.
        unsafe { sys::ggml_backend_cpu_set_n_threads(ptr.as_ptr(), threads as i32) };
        Ok(Backend { ptr, threads })
    }

    /// Bytes of the scratch buffer the CPU backend allocates to run `graph` (ggml's
    /// `ggml_graph_plan` work size for this backend's thread count: quantized copies of
    /// activations for the dot products, per-thread rows).
    pub fn work_bytes(&self, graph: &Graph<'_>) -> usize {
        // SAFETY: live graph; planning only reads it, and a null threadpool is allowed.
        let plan = unsafe { sys::ggml_graph_plan(graph.raw, self.threads as i32, std::ptr::null_mut()) };
        plan.work_size
    }

    /// Runs an allocated graph.
    pub fn compute(&self, graph: &Allocated<'_, '_>) -> Result<(), Error> {
        // SAFETY: live backend; every tensor of the graph has memory (allocated by the borrowed
        // allocator, which outlives this call, or bound to a buffer that outlives the context).
        let status = unsafe { sys::ggml_backend_graph_compute(self.ptr.as_ptr(), graph.graph.raw) };
        if status != sys::GGML_STATUS_SUCCESS {
            return Err(Error::Compute { status: status as i32 });
        }
        Ok(())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_cpu_init or ggml_backend_dev_init, freed exactly once.
        unsafe { sys::ggml_backend_free(self.ptr.as_ptr()) }
    }
}

/// A computation graph built in a [`Context`].
#[derive(Debug)]
pub struct Graph<'ctx> {
    raw: *mut sys::ggml_cgraph,
    size: usize,
    /// How many of the first nodes are the forward pass (all of them until
    /// [`Graph::build_backward_expand`] adds the backward pass after them).
    n_forward: Option<usize>,
    _ctx: PhantomData<&'ctx Context>,
}

impl<'ctx> Graph<'ctx> {
    /// An empty graph of up to `size` nodes (the context was sized for it in [`Context::new`]).
    pub fn new(ctx: &'ctx Context, size: usize) -> Result<Graph<'ctx>, Error> {
        Self::with_capacity(ctx, size, false)
    }

    /// An empty graph of up to `size` nodes that can hold gradients.
    pub fn with_grads(ctx: &'ctx Context, size: usize) -> Result<Graph<'ctx>, Error> {
        Self::with_capacity(ctx, size, true)
    }

    fn with_capacity(ctx: &'ctx Context, size: usize, grads: bool) -> Result<Graph<'ctx>, Error> {
        // SAFETY: only computes a size.
        let need = unsafe { sys::ggml_graph_overhead_custom(size, grads) };
        // SAFETY: live context; reads its accounting.
        let (used, total) = unsafe { (sys::ggml_used_mem(ctx.raw()), sys::ggml_get_mem_size(ctx.raw())) };
        if used + need > total {
            return Err(Error::ContextFull { op: "new_graph" });
        }
        // SAFETY: live context with room for the graph (checked: ggml asserts it).
        let raw = unsafe { sys::ggml_new_graph_custom(ctx.raw(), size, grads) };
        Ok(Graph { raw, size, n_forward: None, _ctx: PhantomData })
    }

    /// Adds `t` and everything it depends on.
    pub fn build_forward_expand(&mut self, t: Tensor<'ctx>) -> Result<(), Error> {
        // SAFETY: live graph; reads the node count.
        let n = unsafe { sys::ggml_graph_n_nodes(self.raw) } as usize;
        if n >= self.size {
            return Err(Error::ContextFull { op: "build_forward_expand" });
        }
        // SAFETY: live graph and a tensor of the same context. ggml asserts when the graph
        // overflows its size; the caller sizes graphs generously and the node count is checked
        // before each expansion.
        unsafe { sys::ggml_build_forward_expand(self.raw, t.raw()) };
        Ok(())
    }
}

/// ggml ops with a backward pass in the pinned ggml (`ggml_compute_backward` in ggml.c), by
/// `ggml_op_name`. A graph to be differentiated may use only these: ggml aborts on any other.
pub const BACKWARD_OPS: &[&str] = &[
    "NONE",
    "ADD",
    "ADD1",
    "ACC",
    "SUB",
    "MUL",
    "DIV",
    "SQR",
    "SQRT",
    "LOG",
    "SIN",
    "COS",
    "SUM",
    "SUM_ROWS",
    "MEAN",
    "REPEAT",
    "REPEAT_BACK",
    "RMS_NORM",
    "MUL_MAT",
    "SCALE",
    "SET",
    "CPY",
    "CONT",
    "RESHAPE",
    "VIEW",
    "PERMUTE",
    "TRANSPOSE",
    "GET_ROWS",
    "DIAG_MASK_INF",
    "DIAG_MASK_ZERO",
    "SOFT_MAX",
    "ROPE",
    "CROSS_ENTROPY_LOSS",
];

/// Ops whose result is a view of their source's data, computing nothing.
const VIEW_OPS: [u32; 4] = [sys::GGML_OP_VIEW, sys::GGML_OP_RESHAPE, sys::GGML_OP_PERMUTE, sys::GGML_OP_TRANSPOSE];

/// Unary ops (`GGML_OP_UNARY`) with a backward pass, by `ggml_unary_op_name`: ggml's, and GELU,
/// whose backward [`Graph::build_backward_expand`] supplies.
pub const BACKWARD_UNARY_OPS: &[&str] =
    &["ABS", "SGN", "NEG", "STEP", "RELU", "SILU", "EXP", "EXPM1", "SOFTPLUS", "GELU"];

impl<'ctx> Graph<'ctx> {
    pub(super) fn raw(&self) -> *mut sys::ggml_cgraph {
        self.raw
    }

    /// Most nodes (and most leafs) the graph can hold.
    pub(super) fn capacity(&self) -> usize {
        self.size
    }

    pub(super) fn nodes(&self) -> Vec<Tensor<'ctx>> {
        // SAFETY: live graph.
        let n = unsafe { sys::ggml_graph_n_nodes(self.raw) };
        // SAFETY: 0 <= i < n_nodes, so ggml_graph_node returns a live node.
        (0..n).filter_map(|i| Tensor::from_raw(unsafe { sys::ggml_graph_node(self.raw, i) })).collect()
    }

    /// Adds the backward pass of the loss (a node marked with [`Tensor::set_loss`]) to the graph.
    /// Each trainable parameter's gradient accumulates into its tensor in `grad_accs` (pairs of
    /// parameter and accumulator, both f32 with memory of their own), so gradients never share
    /// memory with the computation. Every op of the forward graph is first checked against
    /// [`BACKWARD_OPS`]: an op without a backward pass is an error here instead of an abort.
    ///
    /// ggml has no backward pass for GELU: each GELU is differentiated as a SiLU in its place (an
    /// element-wise op of one input, whose backward node `silu_back(grad, x)` reads only `x`),
    /// then turned back into a GELU, and its backward node into `grad · gelu'(x)`
    /// ([`super::gelu_derivative`]). The activation memory is a SiLU's: `x` alone.
    pub fn build_backward_expand(
        &mut self,
        ctx: &'ctx Context,
        grad_accs: &[(Tensor<'_>, Tensor<'_>)],
    ) -> Result<(), Error> {
        // SAFETY: reads the graph's grads pointer through the public accessor below.
        let nodes = self.nodes();
        let name = |f: *const std::ffi::c_char| {
            // SAFETY: ggml returns static NUL-terminated names.
            unsafe { std::ffi::CStr::from_ptr(f) }.to_string_lossy().into_owned()
        };
        let (mut any_param, mut any_loss) = (false, false);
        for node in &nodes {
            let (op, unary) = node.op();
            // SAFETY: op ids come from live tensors; the name tables are static.
            let op_name = name(unsafe { sys::ggml_op_name(op) });
            match unary {
                Some(u) => {
                    // SAFETY: as above.
                    let u_name = name(unsafe { sys::ggml_unary_op_name(u) });
                    if !BACKWARD_UNARY_OPS.contains(&u_name.as_str()) {
                        return Err(Error::NoBackward { op: format!("UNARY({u_name})") });
                    }
                }
                None if !BACKWARD_OPS.contains(&op_name.as_str()) => return Err(Error::NoBackward { op: op_name }),
                None => {}
            }
            let flags = node.flags();
            any_param |= flags & sys::GGML_TENSOR_FLAG_PARAM as i32 != 0;
            any_loss |= flags & sys::GGML_TENSOR_FLAG_LOSS as i32 != 0;
        }
        if !any_param || !any_loss {
            return Err(Error::NothingToTrain);
        }
        let mut accs: Vec<*mut sys::ggml_tensor> = vec![std::ptr::null_mut(); nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            if let Some((_, acc)) = grad_accs.iter().find(|(p, _)| p.raw() == node.raw()) {
                if acc.ne() != node.ne() || acc.ty() != Some(crate::gguf::GgmlType::F32) || !acc.has_data() {
                    return Err(Error::ShapeMismatch { op: "build_backward_expand", a: node.ne(), b: acc.ne() });
                }
                accs[i] = acc.raw();
            }
        }
        if self.size < nodes.len() * 3 + 16 {
            return Err(Error::ContextFull { op: "build_backward_expand" });
        }
        let gelus: Vec<Tensor<'ctx>> =
            nodes.iter().copied().filter(|n| n.op().1 == Some(sys::GGML_UNARY_OP_GELU)).collect();
        let gelu_inputs: HashSet<*mut sys::ggml_tensor> =
            gelus.iter().filter_map(|n| n.src(0)).map(|x| x.raw()).collect();
        // A SiLU of a GELU's input would have a backward node like the GELU's own.
        if nodes.iter().any(|n| {
            n.op().1 == Some(sys::GGML_UNARY_OP_SILU) && n.src(0).is_some_and(|x| gelu_inputs.contains(&x.raw()))
        }) {
            return Err(Error::NoBackward { op: "UNARY(GELU) of a SILU's input".into() });
        }
        for gelu in &gelus {
            gelu.set_unary_op(sys::GGML_UNARY_OP_SILU);
        }
        // SAFETY: live context and graph (made with grads); the graph has a parameter and a loss
        // (checked: ggml asserts both); every op has a backward pass (checked; GELUs are SiLUs
        // for now); `accs` holds one entry per forward node, null or an f32 tensor of the node's
        // shape with memory.
        unsafe { sys::ggml_build_backward_expand(ctx.raw(), self.raw, accs.as_mut_ptr()) };
        for gelu in &gelus {
            gelu.set_unary_op(sys::GGML_UNARY_OP_GELU);
        }
        for node in self.nodes().into_iter().skip(nodes.len()) {
            if node.op().0 == sys::GGML_OP_SILU_BACK && node.src(1).is_some_and(|x| gelu_inputs.contains(&x.raw())) {
                node.make_gelu_back(ctx)?;
            }
        }
        self.n_forward = Some(nodes.len());
        Ok(())
    }

    /// The graph with the backward pass's outer products rewritten for speed, as a new graph of
    /// up to `size` nodes (without gradient bookkeeping: clear the accumulators yourself).
    ///
    /// ggml differentiates `y = W x` with respect to `x` as `out_prod(W, transpose(dy))`, whose
    /// CPU kernel dequantizes all of `W` again for every token (and has no BF16 kernel). Each such
    /// node becomes `mul_mat(Wᵀ, dy)` with `Wᵀ` a transposed f32 copy of the weight made right
    /// before it: the graph allocator frees it after use, so one weight's copy exists at a time,
    /// and the product runs on ggml's fast matrix kernels.
    ///
    /// Every other f32 `out_prod` (attention's products and LoRA's, with rows as short as the
    /// head size or the rank, which ggml's kernel accumulates one row at a time) becomes a custom
    /// op computing the same product as a blocked matrix multiplication over the operands'
    /// strides, without copies (`Tensor::make_out_prod_gemm`, with matrixmultiply's `sgemm`).
    pub fn with_fast_backward(&self, ctx: &'ctx Context, size: usize) -> Result<Graph<'ctx>, Error> {
        self.with_frozen_backward(ctx, size, None)
    }

    /// The graph with the backward pass through frozen quantized weights rewritten with ops every
    /// ggml backend has, as a new graph of up to `size` nodes (without gradient bookkeeping):
    /// [`Graph::with_fast_backward`]'s `mul_mat(Wᵀ, dy)`, with the weight dequantized by
    /// `get_rows` of all its rows (`row_ids`: an I32 tensor holding `0, 1, 2, ...`, at least as
    /// long as any weight's row count) where the CPU casts it. CUDA's `out_prod` takes f32
    /// operands only and its copies do not dequantize k-quants, while `get_rows`, the transposed
    /// copy and `mul_mat` run on the device: the quantized weight never leaves it, and its f32
    /// copy is freed after use. Other `out_prod`s (attention's, LoRA's) stay ggml's op.
    pub fn with_portable_backward(
        &self,
        ctx: &'ctx Context,
        size: usize,
        row_ids: Tensor<'ctx>,
    ) -> Result<Graph<'ctx>, Error> {
        if row_ids.ty() != Some(crate::gguf::GgmlType::I32) {
            return Err(Error::TensorData { what: "row ids for dequantizing weights must be I32" });
        }
        self.with_frozen_backward(ctx, size, Some(row_ids))
    }

    /// The rewrite of [`Graph::with_fast_backward`] (`row_ids` `None`: the CPU's, with custom
    /// ops) or [`Graph::with_portable_backward`].
    fn with_frozen_backward(
        &self,
        ctx: &'ctx Context,
        size: usize,
        row_ids: Option<Tensor<'ctx>>,
    ) -> Result<Graph<'ctx>, Error> {
        let nodes = self.nodes();
        let mut copies: HashMap<*mut sys::ggml_tensor, Tensor<'ctx>> = HashMap::new();
        for node in &nodes {
            if node.op().0 != sys::GGML_OP_OUT_PROD {
                continue;
            }
            let (Some(w), Some(dy_t)) = (node.src(0), node.src(1)) else { continue };
            let frozen = w.ty().is_some_and(|t| t != crate::gguf::GgmlType::F32)
                && w.flags() & sys::GGML_TENSOR_FLAG_PARAM as i32 == 0
                && w.src(0).is_none();
            let f32 = Some(crate::gguf::GgmlType::F32);
            if !frozen && w.ty() == f32 && dy_t.ty() == f32 && node.ty() == f32 {
                if row_ids.is_none() {
                    node.make_out_prod_gemm(ctx)?;
                }
                continue;
            }
            if !frozen || dy_t.op().0 != sys::GGML_OP_TRANSPOSE {
                continue;
            }
            let Some(dy) = dy_t.src(0) else { continue };
            let (wn, dn, nn) = (w.ne(), dy.ne(), node.ne());
            // W [n_in, n_out], dy [n_out, n], result [n_in, n].
            if wn[2] != 1 || wn[3] != 1 || dn[0] != wn[1] || nn != [wn[0], dn[1], dn[2], dn[3]] || !dy.is_contiguous() {
                continue;
            }
            // One copy per weight: a weight read several times (the output projection, once per
            // loss chunk) is copied once.
            let transposed = match copies.get(&w.raw()) {
                Some(&copy) => copy,
                None => {
                    let dequantized = match row_ids {
                        Some(ids) => ctx.get_rows(w, ctx.elements(ids, 0, wn[1])?)?,
                        None => ctx.cast_f32(w)?,
                    };
                    let copy = ctx.cont(ctx.transpose(dequantized)?)?;
                    copies.insert(w.raw(), copy);
                    copy
                }
            };
            node.make_mul_mat(transposed, dy);
        }
        let mut graph = Graph::rebuilt(ctx, &nodes, size)?;
        // The new nodes are backward nodes: the forward pass keeps its place at the front.
        graph.n_forward = self.n_forward;
        Ok(graph)
    }

    /// The graph with activation recomputation ("gradient checkpointing"), as a new graph of up
    /// to `size` nodes: the backward pass reads no value of the forward pass except `keep` and
    /// the graph's leaves (weights, inputs, parameters). Every other forward value it needs is
    /// computed again, from the kept values, by copies of the forward nodes placed right before
    /// their first use in the backward pass.
    ///
    /// ggml's allocator frees a tensor after its last reader, so the forward pass then holds only
    /// what it is computing plus `keep`, and the backward pass of one segment between kept values
    /// (one transformer layer, when `keep` holds each layer's input) holds that segment's
    /// recomputed values. The price is a second forward pass over each segment.
    ///
    /// Only views may be recomputed in place (a recomputed in-place op could overwrite a kept
    /// value); the graph must have been differentiated by [`Graph::build_backward_expand`].
    pub fn with_recomputation(
        &self,
        ctx: &'ctx Context,
        keep: &[Tensor<'ctx>],
        size: usize,
    ) -> Result<Graph<'ctx>, Error> {
        let n_forward = self.n_forward.ok_or(Error::NotDifferentiated)?;
        let nodes = self.nodes();
        let forward: HashSet<*mut sys::ggml_tensor> = nodes[..n_forward].iter().map(|t| t.raw()).collect();
        let kept: HashSet<*mut sys::ggml_tensor> = keep.iter().map(|t| t.raw()).collect();
        // Trainable parameters are forward nodes too (op NONE): never copied.
        let recomputed =
            |t: &Tensor<'ctx>| forward.contains(&t.raw()) && !kept.contains(&t.raw()) && t.op().0 != sys::GGML_OP_NONE;
        let mut copies: HashMap<*mut sys::ggml_tensor, Tensor<'ctx>> = HashMap::new();
        // The copy of forward node `t`, made after the copies of its sources (an explicit stack:
        // a chain between kept values can be long).
        let mut copy_of = |t: Tensor<'ctx>| -> Result<Tensor<'ctx>, Error> {
            let mut stack = vec![t];
            while let Some(&top) = stack.last() {
                if copies.contains_key(&top.raw()) {
                    stack.pop();
                    continue;
                }
                let inputs: Vec<Tensor<'ctx>> = (0..10).filter_map(|i| top.src(i)).chain(top.view_src()).collect();
                let pending: Vec<Tensor<'ctx>> =
                    inputs.into_iter().filter(|s| recomputed(s) && !copies.contains_key(&s.raw())).collect();
                if !pending.is_empty() {
                    stack.extend(pending);
                    continue;
                }
                let (op, _) = top.op();
                if top.view_src().is_some() && !VIEW_OPS.contains(&op) {
                    return Err(Error::InPlaceRecompute);
                }
                let map = |s: Tensor<'ctx>| copies.get(&s.raw()).copied().unwrap_or(s);
                let srcs: Vec<Option<Tensor<'ctx>>> = (0..10).map(|i| top.src(i).map(map)).collect();
                let copy = ctx.clone_node(top, &srcs, top.view_src().map(map))?;
                copies.insert(top.raw(), copy);
                stack.pop();
            }
            Ok(copies[&t.raw()])
        };
        for node in &nodes[n_forward..] {
            for i in 0..10 {
                if let Some(src) = node.src(i).filter(|s| recomputed(s)) {
                    node.set_src(i, copy_of(src)?);
                }
            }
            if let Some(view_src) = node.view_src().filter(|s| recomputed(s)) {
                node.set_view_src(copy_of(view_src)?);
            }
        }
        let mut graph = Graph::rebuilt(ctx, &nodes, size)?;
        graph.n_forward = Some(n_forward);
        Ok(graph)
    }

    /// A graph of up to `size` nodes computing `nodes` in their order, without the views that a
    /// rewrite left unread. Those must go: ggml's allocator frees a tensor only once every view
    /// of it in the graph has been read, so one unread view keeps its source (a gradient, an
    /// activation) in memory to the end of the step.
    fn rebuilt(ctx: &'ctx Context, nodes: &[Tensor<'ctx>], size: usize) -> Result<Graph<'ctx>, Error> {
        let mut dropped: HashSet<*mut sys::ggml_tensor> = HashSet::new();
        // Dropping a view can leave the view it was made from unread: repeat until none is left.
        loop {
            let read: HashSet<*mut sys::ggml_tensor> = nodes
                .iter()
                .filter(|n| !dropped.contains(&n.raw()))
                .flat_map(|n| (0..10).filter_map(|i| n.src(i)).chain(n.view_src()))
                .map(|t| t.raw())
                .collect();
            let unread_views: Vec<*mut sys::ggml_tensor> = nodes
                .iter()
                .filter(|n| {
                    VIEW_OPS.contains(&n.op().0)
                        && n.flags() & sys::GGML_TENSOR_FLAG_OUTPUT as i32 == 0
                        && !read.contains(&n.raw())
                        && !dropped.contains(&n.raw())
                })
                .map(|n| n.raw())
                .collect();
            if unread_views.is_empty() {
                break;
            }
            dropped.extend(unread_views);
        }
        let mut graph = Graph::new(ctx, size)?;
        for &node in nodes.iter().filter(|n| !dropped.contains(&n.raw())) {
            graph.build_forward_expand(node)?;
        }
        Ok(graph)
    }

    /// The gradient of `t` (after [`Graph::build_backward_expand`]).
    pub fn grad(&self, t: Tensor<'_>) -> Option<Tensor<'ctx>> {
        // SAFETY: live graph and tensor; returns null when the tensor has no gradient.
        Tensor::from_raw(unsafe { sys::ggml_graph_get_grad(self.raw, t.raw()) })
    }
}

/// Allocates the intermediate tensors of graphs in one buffer (`ggml_gallocr`), reusing memory
/// between tensors whose lifetimes do not overlap.
#[derive(Debug)]
pub struct Allocator {
    ptr: NonNull<sys::ggml_gallocr>,
}

/// A graph whose tensors all have memory, ready for [`Backend::compute`]. It borrows the
/// allocator (or the [`super::Scheduler`] that allocated it), so the memory cannot be freed while
/// the graph can still run.
#[derive(Debug)]
pub struct Allocated<'g, 'ctx> {
    graph: &'g Graph<'ctx>,
    _alloc: PhantomData<&'g Allocator>,
}

impl Allocator {
    /// An allocator for `backend`'s default buffer type.
    pub fn new(backend: &Backend) -> Result<Allocator, Error> {
        // SAFETY: live backend; the buffer type is static in ggml.
        let buft = unsafe { sys::ggml_backend_get_default_buffer_type(backend.ptr.as_ptr()) };
        // SAFETY: a valid buffer type; the allocator is freed in Drop.
        let ptr = unsafe { sys::ggml_gallocr_new(buft) };
        NonNull::new(ptr).map(|ptr| Allocator { ptr }).ok_or(Error::GraphAlloc)
    }

    /// Gives memory to every tensor of `graph` that has none.
    pub fn alloc_graph<'g, 'ctx>(&'g mut self, graph: &'g Graph<'ctx>) -> Result<Allocated<'g, 'ctx>, Error> {
        // SAFETY: live allocator and graph; tensors that already have memory (bound weights) are
        // left alone by gallocr.
        let ok = unsafe { sys::ggml_gallocr_alloc_graph(self.ptr.as_ptr(), graph.raw) };
        if !ok {
            return Err(Error::GraphAlloc);
        }
        Ok(Allocated { graph, _alloc: PhantomData })
    }
}

impl Allocator {
    /// Bytes of the buffer [`Allocator::alloc_graph`] would allocate for `graph` on this
    /// allocator's fresh buffer, computed by ggml's allocator without allocating anything (its
    /// no-alloc reservation): the very plan a training run's buffer is cut from.
    pub fn measure(&mut self, graph: &Graph<'_>) -> usize {
        let mut size = 0usize;
        // SAFETY: live allocator and graph; with null buffer ids every tensor goes to buffer 0,
        // the allocator's only buffer, so `size` has room for the one size written. The
        // no-alloc reservation cannot fail (it allocates nothing) and leaves the graph as it was.
        unsafe {
            sys::ggml_gallocr_reserve_n_size(
                self.ptr.as_ptr(),
                graph.raw,
                std::ptr::null(),
                std::ptr::null(),
                &mut size,
            )
        };
        size
    }

    /// Bytes of the allocator's buffer (the largest graph it has allocated so far).
    pub fn buffer_size(&self) -> usize {
        // SAFETY: live allocator; buffer 0 is its only one (one buffer type).
        unsafe { sys::ggml_gallocr_get_buffer_size(self.ptr.as_ptr(), 0) }
    }
}

impl Drop for Allocator {
    fn drop(&mut self) {
        // SAFETY: created by ggml_gallocr_new, freed exactly once.
        unsafe { sys::ggml_gallocr_free(self.ptr.as_ptr()) }
    }
}

impl<'g, 'ctx> Allocated<'g, 'ctx> {
    /// A graph whose tensors the caller gave memory to, which lives as long as `'g`.
    pub(super) fn new(graph: &'g Graph<'ctx>) -> Self {
        Allocated { graph, _alloc: PhantomData }
    }

    /// The graph.
    pub(super) fn graph(&self) -> &'g Graph<'ctx> {
        self.graph
    }

    /// Copies `data` into tensor `t` (which must have exactly `data.len() * 4` bytes, f32 or i32).
    pub fn set_f32(&self, t: Tensor<'_>, data: &[f32]) -> Result<(), Error> {
        set_bytes(t, data.as_ptr().cast(), std::mem::size_of_val(data))
    }

    /// Copies `data` into the I32 tensor `t`.
    pub fn set_i32(&self, t: Tensor<'_>, data: &[i32]) -> Result<(), Error> {
        set_bytes(t, data.as_ptr().cast(), std::mem::size_of_val(data))
    }

    /// The data of the F32 tensor `t`.
    pub fn get_f32(&self, t: Tensor<'_>) -> Result<Vec<f32>, Error> {
        get_f32(t)
    }
}
