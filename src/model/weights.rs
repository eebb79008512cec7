//! A model's weights bound to its memory-mapped file (or declared, to be copied to a device): the
//! shared [`Binder`] each family's `bind_layer` asks for tensors by kind and shape, and the
//! weights of a layer and of the model.

use std::cell::RefCell;
use std::collections::HashSet;

use crate::ggml::{Context, MappedBuffer, Tensor, WeightBuffer};
use crate::gguf::{GgmlType, Gguf};
use crate::names::{TensorKind, TensorName};

use super::{HParams, LayerSplit, ModelError};

/// One layer's weights: every tensor a layer of some family has. A family binds the ones it has
/// (see [`crate::arch::Family::bind_layer`]); the shared pieces of the layer graph read them. The
/// fused QKV weight of Falcon, GPT-NeoX and Phi-3 is bound as three row views, one per
/// projection (its bias likewise), so attention reads the same `wq`, `wk`, `wv` in every family;
/// Phi-3's fused gate and up weight likewise as `ffn_gate` and `ffn_up`.
#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'c> {
    pub attn_norm: Tensor<'c>,
    /// The layer-norm bias (Falcon, GPT-NeoX).
    pub attn_norm_b: Option<Tensor<'c>>,
    /// Falcon-40B's second norm (weight, bias), the one attention reads.
    pub attn_norm_2: Option<(Tensor<'c>, Tensor<'c>)>,
    pub wq: Tensor<'c>,
    pub wk: Tensor<'c>,
    pub wv: Tensor<'c>,
    /// Whether `wq`, `wk`, `wv` are views of one `attn_qkv` weight (Falcon, GPT-NeoX, Phi-3).
    pub fused_qkv: bool,
    pub wo: Tensor<'c>,
    pub bq: Option<Tensor<'c>>,
    pub bk: Option<Tensor<'c>>,
    pub bv: Option<Tensor<'c>>,
    /// GPT-NeoX's attention output bias.
    pub bo: Option<Tensor<'c>>,
    /// RMS-norm weights of each query and key head (`[head_dim]`), applied before the rope
    /// (Qwen3).
    pub attn_q_norm: Option<Tensor<'c>>,
    pub attn_k_norm: Option<Tensor<'c>>,
    /// The RMS norm of attention's output before its residual sum (Gemma).
    pub attn_post_norm: Option<Tensor<'c>>,
    /// The norm before the MLP (Llama family: RMS; GPT-NeoX: a layer norm with `ffn_norm_b`).
    /// Falcon's MLP reads `attn_norm`.
    pub ffn_norm: Option<Tensor<'c>>,
    pub ffn_norm_b: Option<Tensor<'c>>,
    /// The gate projection of a gated MLP.
    pub ffn_gate: Option<Tensor<'c>>,
    pub ffn_up: Tensor<'c>,
    /// Whether `ffn_gate` and `ffn_up` are the first and second halves of the rows of one
    /// `ffn_up` weight (Phi-3).
    pub fused_gate_up: bool,
    pub ffn_down: Tensor<'c>,
    /// GPT-NeoX's MLP biases.
    pub ffn_up_b: Option<Tensor<'c>>,
    pub ffn_down_b: Option<Tensor<'c>>,
    /// The RMS norm of the MLP's output before its residual sum (Gemma).
    pub ffn_post_norm: Option<Tensor<'c>>,
}

impl<'c> LayerWeights<'c> {
    /// A layer with the tensors every family has (its norm, the three attention projections, the
    /// output projection, the MLP's up and down projections), the others absent: a family's
    /// `bind_layer` sets the ones it has.
    pub fn new(
        attn_norm: Tensor<'c>,
        [wq, wk, wv]: [Tensor<'c>; 3],
        wo: Tensor<'c>,
        ffn_up: Tensor<'c>,
        ffn_down: Tensor<'c>,
    ) -> Self {
        LayerWeights {
            attn_norm,
            attn_norm_b: None,
            attn_norm_2: None,
            wq,
            wk,
            wv,
            fused_qkv: false,
            wo,
            bq: None,
            bk: None,
            bv: None,
            bo: None,
            attn_q_norm: None,
            attn_k_norm: None,
            attn_post_norm: None,
            ffn_norm: None,
            ffn_norm_b: None,
            ffn_gate: None,
            ffn_up,
            fused_gate_up: false,
            ffn_down,
            ffn_up_b: None,
            ffn_down_b: None,
            ffn_post_norm: None,
        }
    }
}

/// All weights, bound to the memory-mapped file or declared for a device buffer
/// ([`Weights::place`]).
#[derive(Clone, Debug)]
pub struct Weights<'c> {
    pub token_embd: Tensor<'c>,
    pub output_norm: Tensor<'c>,
    /// The output norm's bias (Falcon, GPT-NeoX).
    pub output_norm_b: Option<Tensor<'c>>,
    /// `output.weight`, or `token_embd` when the embeddings are tied.
    pub output: Tensor<'c>,
    /// Llama 3's per-pair rope frequency factors (`rope_freqs.weight`), which llama.cpp passes to
    /// every rope of every layer.
    pub rope_freqs: Option<Tensor<'c>>,
    /// Phi-3's long-context rope factors (long, short): llama.cpp passes the long ones to every
    /// rope when its context exceeds the original one, else the short ones.
    pub rope_factors: Option<(Tensor<'c>, Tensor<'c>)>,
    pub layers: Vec<LayerWeights<'c>>,
    /// Each tensor read from the file (views of them aside).
    stored: Vec<StoredTensor<'c>>,
}

/// A tensor read from the model file: where its bytes are, and the layer it belongs to.
#[derive(Clone, Copy, Debug)]
struct StoredTensor<'c> {
    tensor: Tensor<'c>,
    /// Byte offset in the file.
    offset: usize,
    /// Its layer (`None`: the embeddings, the output layer, rope factors).
    layer: Option<u32>,
}

/// Binds a GGUF's tensors, by kind and expected shape, to ggml tensors pointing into the mapped
/// file (or without memory yet, for a device buffer), and remembers which it bound: whatever the
/// file holds beyond them is refused.
pub struct Binder<'a, 'c> {
    ctx: &'c Context,
    /// The mapped file the tensors point into; `None` leaves them without memory.
    mapped: Option<&'a MappedBuffer<'a>>,
    /// Each tensor made.
    stored: RefCell<Vec<StoredTensor<'c>>>,
    g: &'a Gguf<'a>,
    /// The model's hyper-parameters, which size every tensor.
    pub h: &'a HParams,
    bound: RefCell<HashSet<&'a str>>,
    layer: Option<u32>,
}

impl<'a, 'c> Binder<'a, 'c> {
    /// The layer a family's `bind_layer` is binding (`None` for the model's other tensors).
    pub fn layer(&self) -> Option<u32> {
        self.layer
    }

    /// The tensor `kind.suffix` of the current layer, if the file has it, checked to have `ne`
    /// `expected` (trailing 1s ignored).
    pub fn get_named(
        &self,
        kind: TensorKind,
        suffix: &str,
        expected: &[u64],
    ) -> Result<Option<Tensor<'c>>, ModelError> {
        let full = TensorName { kind, layer: self.layer, suffix: suffix.into() }.to_string();
        let Some(info) = self.g.tensor(&full) else { return Ok(None) };
        self.bound.borrow_mut().insert(info.name);
        let mut found = info.ne.clone();
        while found.len() > expected.len() && found.last() == Some(&1) {
            found.pop();
        }
        if found != expected {
            return Err(ModelError::TensorShape { name: full, expected: expected.to_vec(), found: info.ne.clone() });
        }
        let t = self.ctx.new_tensor(info.ty, &info.ne)?.set_name(&full);
        let offset =
            usize::try_from(self.g.data_offset + info.offset).map_err(|_| ModelError::MissingTensor { name: full })?;
        if let Some(mapped) = self.mapped {
            mapped.bind(t, offset)?;
        }
        self.stored.borrow_mut().push(StoredTensor { tensor: t, offset, layer: self.layer });
        Ok(Some(t))
    }

    /// The weight of `kind` in the current layer, if the file has it.
    pub fn get(&self, kind: TensorKind, expected: &[u64]) -> Result<Option<Tensor<'c>>, ModelError> {
        self.get_named(kind, "weight", expected)
    }

    /// The bias of `kind` in the current layer, if the file has it.
    pub fn get_bias(&self, kind: TensorKind, expected: &[u64]) -> Result<Option<Tensor<'c>>, ModelError> {
        self.get_named(kind, "bias", expected)
    }

    /// The weight of `kind` in the current layer, which the file must have.
    pub fn need(&self, kind: TensorKind, expected: &[u64]) -> Result<Tensor<'c>, ModelError> {
        self.need_named(kind, "weight", expected)
    }

    /// The bias of `kind` in the current layer, which the file must have.
    pub fn need_bias(&self, kind: TensorKind, expected: &[u64]) -> Result<Tensor<'c>, ModelError> {
        self.need_named(kind, "bias", expected)
    }

    fn need_named(&self, kind: TensorKind, suffix: &str, expected: &[u64]) -> Result<Tensor<'c>, ModelError> {
        self.get_named(kind, suffix, expected)?.ok_or_else(|| ModelError::MissingTensor {
            name: TensorName { kind, layer: self.layer, suffix: suffix.into() }.to_string(),
        })
    }

    /// Rows `first..first + n` of a fused weight (`ne[1]`), the part one projection reads, as a
    /// view.
    pub fn rows(&self, t: Tensor<'c>, first: u64, n: u64) -> Result<Tensor<'c>, ModelError> {
        Ok(self.ctx.columns(t, first as i64, n as i64)?)
    }

    /// Elements `first..first + n` of a fused bias, as a view.
    pub fn elements(&self, t: Tensor<'c>, first: u64, n: u64) -> Result<Tensor<'c>, ModelError> {
        Ok(self.ctx.elements(t, first as i64, n as i64)?)
    }

    /// The fused QKV weight (`[n_embd, q + 2 kv]`) of the current layer as its query, key and
    /// value row views.
    pub fn fused_qkv(&self) -> Result<[Tensor<'c>; 3], ModelError> {
        let (e, q, kv) = (self.h.n_embd, self.h.n_q(), self.h.n_kv());
        let wqkv = self.need(TensorKind::AttnQkv, &[e, q + 2 * kv])?;
        Ok([self.rows(wqkv, 0, q)?, self.rows(wqkv, q, kv)?, self.rows(wqkv, q + kv, kv)?])
    }

    /// The fused QKV bias of the current layer, if any, as its query, key and value parts.
    #[allow(clippy::type_complexity)]
    pub fn fused_qkv_bias(&self) -> Result<[Option<Tensor<'c>>; 3], ModelError> {
        let (q, kv) = (self.h.n_q(), self.h.n_kv());
        let Some(b) = self.get_bias(TensorKind::AttnQkv, &[q + 2 * kv])? else { return Ok([None; 3]) };
        Ok([Some(self.elements(b, 0, q)?), Some(self.elements(b, q, kv)?), Some(self.elements(b, q + kv, kv)?)])
    }
}

impl<'c> Weights<'c> {
    /// Creates a tensor for each weight the graph uses and points it into `mapped` (the whole
    /// file) when given, else leaves it without memory for [`Weights::place`], checking each
    /// one's `ne` against the hyper-parameters; each layer's are bound by its family. A tensor of
    /// the file that the graph would not use is refused by name: whatever a model carries
    /// changes its math.
    pub fn bind(
        ctx: &'c Context,
        mapped: Option<&MappedBuffer<'_>>,
        g: &Gguf<'_>,
        h: &HParams,
    ) -> Result<Weights<'c>, ModelError> {
        let mut b = Binder {
            ctx,
            mapped,
            stored: RefCell::new(Vec::new()),
            g,
            h,
            bound: RefCell::new(HashSet::new()),
            layer: None,
        };
        let (e, v) = (h.n_embd, h.n_vocab);
        let token_embd = b.need(TensorKind::TokenEmbd, &[e, v])?;
        let output_norm = b.need(TensorKind::OutputNorm, &[e])?;
        let output_norm_b = if h.arch.layer_norms() { Some(b.need_bias(TensorKind::OutputNorm, &[e])?) } else { None };
        let output = b.get(TensorKind::Output, &[e, v])?.unwrap_or(token_embd);
        let pairs = [h.rope_dims / 2];
        let rope_freqs = b.get(TensorKind::RopeFreqs, &pairs)?;
        let rope_factors = match b.get(TensorKind::RopeFactorsLong, &pairs)? {
            Some(long) => Some((long, b.need(TensorKind::RopeFactorsShort, &pairs)?)),
            None => None,
        };
        let factors = [
            ("rope_freqs.weight", rope_freqs),
            ("rope_factors_long.weight", rope_factors.map(|f| f.0)),
            ("rope_factors_short.weight", rope_factors.map(|f| f.1)),
        ];
        if let Some((name, _)) = factors.iter().find(|(_, t)| t.is_some_and(|t| t.ty() != Some(GgmlType::F32))) {
            return Err(ModelError::Unsupported { what: format!("{name} stored in another type than F32") });
        }
        let mut layers = Vec::new();
        for il in 0..u32::try_from(h.n_layer).unwrap_or(0) {
            b.layer = Some(il);
            layers.push(h.arch.family().bind_layer(&b)?);
        }
        let bound = b.bound.into_inner();
        if let Some(unused) = g.tensors.iter().find(|t| !bound.contains(t.name)) {
            return Err(ModelError::UnusedTensor { name: unused.name.to_owned(), arch: h.arch.name() });
        }
        let stored = b.stored.into_inner();
        Ok(Weights { token_embd, output_norm, output_norm_b, output, rope_freqs, rope_factors, layers, stored })
    }

    /// Gives each weight memory where `split` says: the tensors of a layer on its backend, the
    /// others on the last one. A CPU backend's share points into `mapped` (the file's mapping,
    /// which must then be given); a device's share is copied, in its stored type, from `file`
    /// (the model file's bytes) into one buffer of that device marked as weights, one tensor at
    /// a time: the file's pages are read as each is sent, never all of it at once. With no
    /// `file`, a device's buffer is allocated and left unfilled: enough for ggml to place and
    /// size graphs, not to run them. Call [`crate::ggml::init_views`] afterwards for the row
    /// views of fused weights. The buffers must live as long as the weights are used.
    pub fn place(
        &self,
        split: &LayerSplit<'_>,
        mapped: Option<&MappedBuffer<'_>>,
        file: Option<&[u8]>,
    ) -> Result<Vec<WeightBuffer<'c>>, ModelError> {
        let mut buffers = Vec::new();
        for (i, backend) in split.backends.iter().enumerate() {
            let share: Vec<&StoredTensor<'c>> =
                self.stored.iter().filter(|s| split.backend_index(s.layer) == i).collect();
            if share.is_empty() {
                continue;
            }
            if split.is_cpu(i) {
                let mapped = mapped.ok_or_else(|| ModelError::Inconsistent {
                    what: "weights on the CPU need the file's mapping".into(),
                })?;
                for s in share {
                    mapped.bind(s.tensor, s.offset)?;
                }
                continue;
            }
            let tensors: Vec<Tensor<'c>> = share.iter().map(|s| s.tensor).collect();
            let buffer = WeightBuffer::alloc_tensors(backend, &tensors)?;
            let Some(file) = file else {
                buffers.push(buffer);
                continue;
            };
            for s in share {
                let bytes = s.offset.checked_add(s.tensor.nbytes()).and_then(|end| file.get(s.offset..end));
                let bytes = bytes.ok_or_else(|| ModelError::Inconsistent {
                    what: format!("tensor '{}' ends past the file's {} bytes", s.tensor.name(), file.len()),
                })?;
                buffer.set_bytes(s.tensor, bytes)?;
            }
            buffers.push(buffer);
        }
        Ok(buffers)
    }
}
