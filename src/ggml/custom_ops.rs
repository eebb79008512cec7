//! The graph rewrites of the CPU's training graphs: a node turned into another op in place (a
//! GELU's backward node into `grad · gelu'(x)`, an `out_prod` into a blocked product), through
//! ggml's custom ops, which run on the CPU alone. See [`super::Graph::build_backward_expand`].

use llama_cpp_sys_2 as sys;

use super::context::{Context, Tensor};
use super::Error;

impl<'ctx> Tensor<'ctx> {
    /// Sets the unary op this `GGML_OP_UNARY` node computes (its first op parameter); the caller
    /// checked the node's op.
    pub(super) fn set_unary_op(self, op: sys::ggml_unary_op) {
        // SAFETY: live tensor of a context that is not being computed (see make_mul_mat); a
        // unary node keeps its unary op in op_params[0].
        unsafe { (*self.raw()).op_params[0] = op as i32 };
    }

    /// Turns this `ggml_silu_back(grad, x)` node into a custom op computing
    /// `grad · gelu'(x)` ([`gelu_derivative`]) over the same operands; the caller checked that it
    /// is the backward node of a GELU differentiated as a SiLU.
    pub(super) fn make_gelu_back(self, ctx: &'ctx Context) -> Result<(), Error> {
        let (Some(grad), Some(x)) = (self.src(0), self.src(1)) else { return Ok(()) };
        let f32 = Some(crate::gguf::GgmlType::F32);
        if grad.ne() != x.ne() || grad.ty() != f32 || x.ty() != f32 || self.ty() != f32 {
            return Err(Error::ShapeMismatch { op: "gelu_back", a: grad.ne(), b: x.ne() });
        }
        self.become_custom(ctx, "gelu_back", &[grad, x], gelu_back)
    }

    /// Makes this node the custom op `fun` over `args`, with the node's own shape (through a
    /// template node ggml makes for the op, whose op, parameters and sources are copied).
    fn become_custom(
        self,
        ctx: &'ctx Context,
        name: &'static str,
        args: &[Tensor<'ctx>],
        fun: unsafe extern "C" fn(*mut sys::ggml_tensor, std::ffi::c_int, std::ffi::c_int, *mut std::ffi::c_void),
    ) -> Result<(), Error> {
        let ne = self.ne();
        let mut args: Vec<*mut sys::ggml_tensor> = args.iter().map(|a| a.raw()).collect();
        ctx.room(name)?;
        // SAFETY: live context and tensors; ggml_custom_4d only records the arguments, the
        // function and the shape in a new node, which serves as the template copied below.
        let template = unsafe {
            sys::ggml_custom_4d(
                ctx.raw(),
                sys::GGML_TYPE_F32,
                ne[0],
                ne[1],
                ne[2],
                ne[3],
                args.as_mut_ptr(),
                args.len() as std::ffi::c_int,
                Some(fun),
                -1, // GGML_N_TASKS_MAX: every thread of the graph
                std::ptr::null_mut(),
            )
        };
        let template = ctx.wrap(name, template)?;
        // SAFETY: as in make_mul_mat; the template was made by ggml for this very op, shape and
        // sources, so its op, parameters and sources are a valid custom node's.
        unsafe {
            let t = &mut *self.raw();
            let src = &*template.raw();
            t.op = src.op;
            t.op_params = src.op_params;
            t.src = src.src;
        }
        Ok(())
    }

    /// Turns this f32 `ggml_out_prod(a, b)` node into a custom op computing the same product with
    /// a blocked matrix multiplication over the operands' strides ([`out_prod_gemm`]); the caller
    /// checked that `a`, `b` and the node are f32.
    pub(super) fn make_out_prod_gemm(self, ctx: &'ctx Context) -> Result<(), Error> {
        let (Some(a), Some(b)) = (self.src(0), self.src(1)) else { return Ok(()) };
        self.become_custom(ctx, "out_prod_gemm", &[a, b], out_prod_gemm)
    }
}

/// The derivative of ggml's GELU, `x/2 · (1 + tanh(u))` with `u = √(2/π) · x · (1 + 0.044715 x²)`
/// (the smooth function whose values ggml's f16 table holds):
/// `(1 + tanh u)/2 + x/2 · (1 - tanh² u) · √(2/π) · (1 + 3 · 0.044715 x²)`.
pub fn gelu_derivative(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044_715;
    let t = (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * COEF_A * x * x)
}

/// The kernel of [`Tensor::make_gelu_back`], run by each of ggml's `nth` threads on its share of
/// the rows: `dst = grad · gelu'(x)`, element-wise, over the operands' strides.
extern "C" fn gelu_back(
    dst: *mut sys::ggml_tensor,
    ith: std::ffi::c_int,
    nth: std::ffi::c_int,
    _: *mut std::ffi::c_void,
) {
    // SAFETY: ggml calls this with the node made by make_gelu_back, whose two sources are f32
    // tensors of the node's shape with memory; strides are in bytes. Threads write disjoint rows.
    unsafe {
        let d = &*dst;
        let (grad, x) = (&*d.src[0], &*d.src[1]);
        let (ne0, ne1, ne2) = (d.ne[0] as usize, d.ne[1] as usize, d.ne[2] as usize);
        let rows = ne1 * ne2 * d.ne[3] as usize;
        let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
        for row in rows * ith / nth..rows * (ith + 1) / nth {
            let (i1, i2, i3) = (row % ne1, row / ne1 % ne2, row / (ne1 * ne2));
            let at = |t: &sys::ggml_tensor, i0: usize| {
                (t.data as *mut u8).add(i0 * t.nb[0] + i1 * t.nb[1] + i2 * t.nb[2] + i3 * t.nb[3]).cast::<f32>()
            };
            for i0 in 0..ne0 {
                *at(d, i0) = *at(grad, i0) * gelu_derivative(*at(x, i0));
            }
        }
    }
}

/// The kernel of [`Tensor::make_out_prod_gemm`], run by each of ggml's `nth` threads:
/// `dst[i0, i1, i2, i3] = Σ_k a[i0, k, i2 / (ne2 / a.ne2), i3 / (ne3 / a.ne3)] · b[i1, k, i2, i3]`,
/// as `ggml_out_prod` defines it, each thread taking its share of the `i1` columns of every
/// matrix.
extern "C" fn out_prod_gemm(
    dst: *mut sys::ggml_tensor,
    ith: std::ffi::c_int,
    nth: std::ffi::c_int,
    _: *mut std::ffi::c_void,
) {
    // SAFETY: ggml calls this with the node made by make_out_prod_gemm, whose sources are the
    // out_prod's f32 operands, all with memory; strides are in bytes and multiples of 4 for f32.
    // Threads write disjoint column ranges of `dst`.
    unsafe {
        let d = &*dst;
        let (a, b) = (&*d.src[0], &*d.src[1]);
        let (ne0, ne1, ne2, ne3) = (d.ne[0] as usize, d.ne[1] as usize, d.ne[2], d.ne[3]);
        let k = a.ne[1] as usize;
        let (dps2, dps3) = (ne2 / a.ne[2].max(1), ne3 / a.ne[3].max(1));
        let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
        let (c0, c1) = (ne1 * ith / nth, ne1 * (ith + 1) / nth);
        if c0 >= c1 {
            return;
        }
        let f = |nb: usize| (nb / 4) as isize;
        for i3 in 0..ne3 {
            for i2 in 0..ne2 {
                let a_ptr = (a.data as *const u8)
                    .add((i2 / dps2) as usize * a.nb[2] + (i3 / dps3) as usize * a.nb[3])
                    .cast::<f32>();
                let b_ptr = (b.data as *const u8)
                    .add(i2 as usize * b.nb[2] + i3 as usize * b.nb[3] + c0 * b.nb[0])
                    .cast::<f32>();
                let c_ptr =
                    (d.data as *mut u8).add(i2 as usize * d.nb[2] + i3 as usize * d.nb[3] + c0 * d.nb[1]).cast::<f32>();
                matrixmultiply::sgemm(
                    ne0,
                    k,
                    c1 - c0,
                    1.0,
                    a_ptr,
                    f(a.nb[0]),
                    f(a.nb[1]),
                    b_ptr,
                    f(b.nb[1]),
                    f(b.nb[0]),
                    0.0,
                    c_ptr,
                    f(d.nb[0]),
                    f(d.nb[1]),
                );
            }
        }
    }
}
