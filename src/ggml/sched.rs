//! ggml's backend scheduler (`ggml_backend_sched`): one graph placed over several backends, the
//! device's first and the CPU's last. Each node runs where its weights are (a tensor in a buffer
//! marked as weights pins the ops reading it to that buffer's backend), inputs start on the CPU
//! and are copied to the backend that reads them, and [`Scheduled::placement`] says which
//! backend ran how many nodes.

use std::marker::PhantomData;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::backend::{Allocated, Backend, Graph};
use super::context::{Context, Tensor};
use super::device::DeviceType;
use super::Error;

/// Most backends one scheduler takes (`GGML_SCHED_MAX_BACKENDS` in ggml-backend.cpp).
const MAX_BACKENDS: usize = 16;

/// Custom ops: a CPU function pointer, which no other backend can call (an RPC device says it
/// supports them, but cannot send them over the wire).
const CUSTOM_OPS: [u32; 4] =
    [sys::GGML_OP_CUSTOM, sys::GGML_OP_MAP_CUSTOM1, sys::GGML_OP_MAP_CUSTOM2, sys::GGML_OP_MAP_CUSTOM3];

/// Ops that compute nothing (ggml's `ggml_op_is_empty`): their result is memory of their source.
const EMPTY_OPS: [u32; 5] =
    [sys::GGML_OP_NONE, sys::GGML_OP_VIEW, sys::GGML_OP_RESHAPE, sys::GGML_OP_PERMUTE, sys::GGML_OP_TRANSPOSE];

/// A backend scheduler over borrowed backends, in priority order (the CPU's last).
#[derive(Debug)]
pub struct Scheduler<'b, 'ctx> {
    ptr: NonNull<sys::ggml_backend_sched>,
    backends: Vec<&'b Backend>,
    /// The tensors this scheduler gave memory to, in any graph since its last reset: their
    /// memory is forgotten before the next graph is placed, which may put them elsewhere (a graph
    /// placed again keeps no stale address of the previous placement).
    allocated: Vec<*mut sys::ggml_tensor>,
    /// The sources of every node of the graph placed last, as they were before: ggml's
    /// scheduler points sources at copies of the inputs it makes in memory of its own, which it
    /// frees when it places the next graph. They are set back before any graph is placed again.
    sources: Vec<(*mut sys::ggml_tensor, [*mut sys::ggml_tensor; 10])>,
    /// The graph placed last, which computes again as placed (its inputs set anew) without
    /// being placed again.
    placed: Option<*mut sys::ggml_cgraph>,
    /// The context of the graphs it places, which must outlive it: it writes into their tensors
    /// until it is dropped (see `undo_placement`).
    _ctx: PhantomData<&'ctx Context>,
    /// Nodes plus leafs of the largest graph it can place (the size of ggml's hash set is at
    /// least this).
    capacity: usize,
}

/// How a scheduled graph was placed: ggml's splits (runs of consecutive nodes on one backend)
/// and how many nodes each backend ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// ggml's split count (`ggml_backend_sched_get_n_splits`): 1 when one backend ran everything.
    pub splits: usize,
    /// Each backend of the scheduler, in its order, with the nodes it ran.
    pub backends: Vec<BackendNodes>,
}

/// One backend's share of a scheduled graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendNodes {
    /// ggml's name of the backend ([`Backend::name`]).
    pub backend: String,
    /// Graph nodes the scheduler ran on it (`ggml_backend_sched_get_tensor_backend`).
    pub nodes: usize,
    /// Those of them that compute nothing (views, reshapes, permutations, transpositions: ggml's
    /// `ggml_op_is_empty`), such as a view of an input that lives on the CPU.
    pub views: usize,
}

impl Placement {
    /// Nodes of the graph, all backends together.
    pub fn total_nodes(&self) -> usize {
        self.backends.iter().map(|b| b.nodes).sum()
    }
}

/// The names of `graph`'s custom-op nodes: they run on the CPU alone, so a graph with any cannot
/// be placed over other backends.
pub fn custom_op_nodes(graph: &Graph<'_>) -> Vec<String> {
    graph.nodes().into_iter().filter(|n| CUSTOM_OPS.contains(&n.op().0)).map(|n| n.name()).collect()
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shares: Vec<String> = self
            .backends
            .iter()
            .map(|b| match b.views {
                0 => format!("{} on {}", b.nodes, b.backend),
                views => format!("{} on {} ({views} of them views)", b.nodes, b.backend),
            })
            .collect();
        write!(f, "{} nodes in {} split(s): {}", self.total_nodes(), self.splits, shares.join(", "))
    }
}

impl<'b, 'ctx> Scheduler<'b, 'ctx> {
    /// A scheduler over `backends` (1 to 16, the last one a CPU backend, as ggml requires) for
    /// graphs of up to `graph_size` nodes, each with their default buffer type, one copy of the
    /// inputs (no pipelining) and no offload of CPU-weight ops.
    pub fn new(backends: &[&'b Backend], graph_size: usize) -> Result<Scheduler<'b, 'ctx>, Error> {
        let last_is_cpu = backends.last().and_then(|b| b.device()).is_some_and(|d| d.kind() == DeviceType::Cpu);
        if backends.len() > MAX_BACKENDS || !last_is_cpu || graph_size == 0 {
            return Err(Error::BadScheduler { backends: backends.iter().map(|b| b.name()).collect() });
        }
        // Graphs hold up to `graph_size` nodes and as many leafs.
        let capacity = graph_size.checked_mul(2).ok_or(Error::GraphAlloc)?;
        let mut raw: Vec<*mut sys::ggml_backend> = backends.iter().map(|b| b.raw()).collect();
        // SAFETY: 1 to 16 live backends (checked), the last one on a CPU device (checked: ggml
        // asserts it); null buffer types mean each backend's default one, which it supports
        // (ggml asserts that too). The scheduler only borrows the backends, which outlive it
        // ('b), and is freed in Drop.
        let ptr = unsafe {
            sys::ggml_backend_sched_new(
                raw.as_mut_ptr(),
                std::ptr::null_mut(),
                raw.len() as i32,
                capacity,
                false,
                false,
            )
        };
        let ptr = NonNull::new(ptr).ok_or(Error::GraphAlloc)?;
        Ok(Scheduler {
            ptr,
            backends: backends.to_vec(),
            allocated: Vec::new(),
            sources: Vec::new(),
            placed: None,
            _ctx: PhantomData,
            capacity,
        })
    }

    /// Places `graph` on the backends and gives memory to every tensor that has none (each in a
    /// buffer of the backend that computes or first reads it). Set the inputs afterwards, on the
    /// returned graph, then [`Scheduled::compute`].
    ///
    /// Checked first, where ggml would abort: the graph fits the scheduler; some backend
    /// supports each node; every tensor with memory already (weights, adapters) is in a buffer
    /// some backend of the scheduler can use for its op; and no custom op is in the graph unless
    /// the CPU is the only backend.
    pub fn alloc_graph<'s, 'g>(&'s mut self, graph: &'g Graph<'ctx>) -> Result<Scheduled<'s, 'b, 'g, 'ctx>, Error> {
        if self.placed == Some(graph.raw()) {
            return Ok(Scheduled { sched: self, allocated: Allocated::new(graph) });
        }
        self.undo_placement();
        self.check(graph)?;
        let fresh = self.fresh_tensors(graph);
        self.sources = graph.nodes().into_iter().map(|n| (n.raw(), n.raw_srcs())).collect();
        // SAFETY: a live scheduler; clears the previous graph's placement (ggml asserts that a
        // scheduler allocates one graph at a time).
        unsafe { sys::ggml_backend_sched_reset(self.ptr.as_ptr()) };
        // SAFETY: a live scheduler and graph; the graph's nodes and leafs fit the hash set
        // (checked above, ggml asserts it); every pre-allocated tensor has a backend that can
        // run its op on its buffer (checked above, ggml aborts otherwise); some backend supports
        // every node (checked above: ggml asserts each node gets one). False when out of memory.
        if !unsafe { sys::ggml_backend_sched_alloc_graph(self.ptr.as_ptr(), graph.raw()) } {
            return Err(Error::GraphAlloc);
        }
        self.allocated = fresh.into_iter().filter(|t| t.has_data()).map(|t| t.raw()).collect();
        self.placed = Some(graph.raw());
        Ok(Scheduled { sched: self, allocated: Allocated::new(graph) })
    }

    /// Each backend's compute buffer for `graph`, in bytes, in the scheduler's order, as
    /// [`Scheduler::alloc_graph`] would size it, allocating nothing (ggml's
    /// `ggml_backend_sched_reserve_size`). Checked as [`Scheduler::alloc_graph`].
    pub fn measure(&mut self, graph: &Graph<'ctx>) -> Result<Vec<usize>, Error> {
        self.undo_placement();
        self.check(graph)?;
        self.sources = graph.nodes().into_iter().map(|n| (n.raw(), n.raw_srcs())).collect();
        let mut sizes = vec![0usize; self.backends.len()];
        // SAFETY: a live scheduler and graph, checked as in `alloc_graph` (the graph fits the
        // hash set, ggml asserts it); `sizes` has one slot per backend of the scheduler, which
        // ggml writes (one per buffer id = backend index). It resets the scheduler and places
        // the graph, allocating no buffer.
        unsafe { sys::ggml_backend_sched_reserve_size(self.ptr.as_ptr(), graph.raw(), sizes.as_mut_ptr()) };
        // Nothing was allocated; the sources the placement changed are set back.
        self.undo_placement();
        Ok(sizes)
    }

    /// Undoes what placing the last graph did to its tensors, before the next placement (or the
    /// scheduler's end) frees the memory they point into: each node's sources set back, and the
    /// memory of every tensor the scheduler allocated forgotten.
    fn undo_placement(&mut self) {
        for (node, srcs) in self.sources.drain(..) {
            if let Some(node) = Tensor::from_raw(node) {
                node.set_raw_srcs(srcs);
            }
        }
        for t in self.allocated.drain(..) {
            if let Some(t) = Tensor::from_raw(t) {
                t.forget_memory();
            }
        }
        self.placed = None;
    }

    /// The tensors of `graph` (nodes, their sources and view sources) without memory: the ones
    /// a placement allocates.
    fn fresh_tensors(&self, graph: &Graph<'ctx>) -> Vec<Tensor<'ctx>> {
        let mut seen = std::collections::HashSet::new();
        let mut fresh = Vec::new();
        for node in graph.nodes() {
            let sources = (0..10).filter_map(|i| node.src(i)).chain(node.view_src());
            for t in std::iter::once(node).chain(sources) {
                if seen.insert(t.raw()) && !t.has_data() && t.buffer().is_null() {
                    fresh.push(t);
                }
            }
        }
        fresh
    }

    /// Each backend's compute buffer, in bytes, in the scheduler's order.
    pub fn buffer_sizes(&self) -> Vec<usize> {
        self.backends
            .iter()
            // SAFETY: a live scheduler and one of its backends; only answers.
            .map(|b| unsafe { sys::ggml_backend_sched_get_buffer_size(self.ptr.as_ptr(), b.raw()) })
            .collect()
    }

    /// The checks before ggml places `graph`, where it would abort: see
    /// [`Scheduler::alloc_graph`].
    fn check(&self, graph: &Graph<'_>) -> Result<(), Error> {
        if graph.capacity().saturating_mul(2) > self.capacity {
            return Err(Error::ContextFull { op: "scheduler: the graph is larger than the scheduler's" });
        }
        let nodes = graph.nodes();
        for node in &nodes {
            if self.backends.len() > 1 && CUSTOM_OPS.contains(&node.op().0) {
                return Err(Error::CustomOpOffCpu { node: node.name() });
            }
            // SAFETY: live backends and node; each only answers.
            if !self.backends.iter().any(|b| unsafe { sys::ggml_backend_supports_op(b.raw(), node.raw()) }) {
                return Err(Error::NoBackendForOp { node: node.name() });
            }
            for t in std::iter::once(*node).chain((0..10).filter_map(|i| node.src(i))) {
                if !self.can_run_in_place(t) {
                    return Err(Error::NoBackendForBuffer { tensor: t.name() });
                }
            }
        }
        Ok(())
    }

    /// Whether `t`'s memory, if it has any, is in a buffer of a type some backend of the
    /// scheduler uses and that backend can compute `t` (ggml's test before it aborts with
    /// "pre-allocated tensor in a buffer that cannot run the operation").
    fn can_run_in_place(&self, t: Tensor<'_>) -> bool {
        let buffer = t.buffer();
        if buffer.is_null() {
            return true;
        }
        // SAFETY: a live buffer (the tensor's, which outlives the graph); its type is static.
        let buft = unsafe { sys::ggml_backend_buffer_get_type(buffer) };
        self.backends.iter().any(|b| {
            // SAFETY: a live backend, a buffer type and a live tensor; both only answer.
            unsafe { sys::ggml_backend_supports_buft(b.raw(), buft) && sys::ggml_backend_supports_op(b.raw(), t.raw()) }
        })
    }
}

impl Drop for Scheduler<'_, '_> {
    fn drop(&mut self) {
        // Tensors outliving the scheduler must not point into its freed memory.
        self.undo_placement();
        // SAFETY: created by ggml_backend_sched_new, freed once; frees the compute buffers it
        // allocated (no Scheduled can outlive this: it borrows the scheduler).
        unsafe { sys::ggml_backend_sched_free(self.ptr.as_ptr()) }
    }
}

/// A graph placed and allocated by a [`Scheduler`], which it borrows until dropped.
#[derive(Debug)]
pub struct Scheduled<'s, 'b, 'g, 'ctx> {
    sched: &'s mut Scheduler<'b, 'ctx>,
    allocated: Allocated<'g, 'ctx>,
}

impl<'g, 'ctx> Scheduled<'_, '_, 'g, 'ctx> {
    /// The allocated graph: set its inputs and read its outputs through it.
    pub fn tensors(&self) -> &Allocated<'g, 'ctx> {
        &self.allocated
    }

    /// Runs the graph, split by split, copying each split's inputs to its backend first.
    pub fn compute(&mut self) -> Result<(), Error> {
        // SAFETY: a live scheduler that allocated this very graph (it is borrowed, so no other
        // graph was allocated since); every tensor has memory; waits for the backends to finish.
        let status =
            unsafe { sys::ggml_backend_sched_graph_compute(self.sched.ptr.as_ptr(), self.allocated.graph().raw()) };
        if status != sys::GGML_STATUS_SUCCESS {
            return Err(Error::Compute { status: status as i32 });
        }
        Ok(())
    }

    /// Where the graph's nodes were placed.
    pub fn placement(&self) -> Placement {
        let sched = self.sched.ptr.as_ptr();
        let mut counts = vec![0usize; self.sched.backends.len()];
        let mut views = vec![0usize; self.sched.backends.len()];
        for node in self.allocated.graph().nodes() {
            // SAFETY: a live scheduler and a node of the graph it placed (so in its hash set:
            // the lookup inserts nothing); null for a node without a backend.
            let backend = unsafe { sys::ggml_backend_sched_get_tensor_backend(sched, node.raw()) };
            if let Some(i) = self.sched.backends.iter().position(|b| b.raw() == backend) {
                counts[i] += 1;
                if EMPTY_OPS.contains(&node.op().0) {
                    views[i] += 1;
                }
            }
        }
        // SAFETY: a live scheduler; reads its split count.
        let splits = unsafe { sys::ggml_backend_sched_get_n_splits(sched) };
        Placement {
            splits: usize::try_from(splits).unwrap_or(0),
            backends: self
                .sched
                .backends
                .iter()
                .zip(counts.into_iter().zip(views))
                .map(|(b, (nodes, views))| BackendNodes { backend: b.name(), nodes, views })
                .collect(),
        }
    }
}
