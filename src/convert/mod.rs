//! `convert`: a Hugging Face checkpoint of a supported family (see [`crate::arch`]) to a GGUF
//! llama.cpp loads.
//!
//! [`plan`] decides everything first (names, types, shapes, metadata, the output's size) and can be
//! printed (`--dry-run`); [`execute`] then streams tensor by tensor, a block of rows at a time, from
//! the memory-mapped safetensors shards through ggml's quantization into a temporary file that is
//! renamed into place when complete.

mod transform;

use std::path::{Path, PathBuf};
use std::time::Instant;

use safetensors::Dtype;

use crate::gguf::{GgmlType, GgufPlan, GgufWriteError, GgufWriter, MetaValue};
use crate::hf::{llama3_frequency_factors, Checkpoint, HfError, ModelConfig, RopeScaling};
use crate::names::{TensorKind, TensorName};
use crate::quant::{decode_to_f32, ConversionSummary, DecodeError, FileType};

pub use transform::{falcon_qkv_source_row, permute_rotary_rows, unpermute_rotary_rows, Heads, RowOrder};

/// Rows converted at a time: bounds the f32 staging buffer independently of the tensor's size.
const ROWS_PER_BLOCK: usize = 512;

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error(transparent)]
    Write(#[from] GgufWriteError),
    #[error(transparent)]
    Ggml(#[from] crate::ggml::Error),
    #[error("{}: tensor '{tensor}' has no GGUF counterpart for {arch} (hint: is this a {arch} checkpoint?)", dir.display())]
    UnknownTensor { dir: PathBuf, tensor: String, arch: &'static str },
    #[error("{}: tensor '{tensor}' is beyond the {num_layers} layers config.json's num_hidden_layers says", dir.display())]
    LayerOutOfRange { dir: PathBuf, tensor: String, num_layers: u64 },
    #[error("{}: tensor '{tensor}' is missing", dir.display())]
    MissingTensor { dir: PathBuf, tensor: String },
    #[error("{}: tensor '{tensor}' has shape {found:?}, expected {expected:?} from config.json", dir.display())]
    ShapeMismatch { dir: PathBuf, tensor: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor '{tensor}' has dtype {dtype}; expected F32, F16 or BF16")]
    UnsupportedDtype { tensor: String, dtype: String },
    #[error("tensor '{tensor}'")]
    Decode { tensor: String, source: DecodeError },
}

/// One tensor of the plan.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    /// Name in the checkpoint.
    pub hf_name: String,
    /// Name in the GGUF.
    pub gguf_name: String,
    /// Source dtype, as the ggml type with the same encoding.
    pub src_type: GgmlType,
    /// Output type.
    pub ty: GgmlType,
    /// GGUF dims, innermost first (the Hugging Face shape reversed).
    pub ne: Vec<u64>,
    /// How the rows are reordered on the way.
    pub row_order: RowOrder,
    /// A value added to every element on the way (Gemma's norms: see
    /// [`crate::arch::Family::stored_offset`]).
    pub offset: f32,
    /// Bytes in the checkpoint.
    pub src_bytes: u64,
    /// Bytes in the output.
    pub out_bytes: u64,
}

/// A tensor whose values come from config.json, not from the checkpoint (Llama 3's
/// `rope_freqs.weight`), written as F32 before the checkpoint's tensors, as llama.cpp's converter
/// writes its generated tensors.
#[derive(Clone, Debug)]
pub struct ComputedTensor {
    /// Name in the GGUF.
    pub gguf_name: String,
    pub values: Vec<f32>,
}

/// Everything a conversion will do.
#[derive(Debug)]
pub struct ConvertPlan {
    pub config: ModelConfig,
    pub file_type: FileType,
    /// Tensors computed from the config, written first.
    pub computed: Vec<ComputedTensor>,
    /// Tensors read from the checkpoint.
    pub tensors: Vec<TensorPlan>,
    pub gguf: GgufPlan,
}

impl ConvertPlan {
    /// Size of the output file in bytes.
    pub fn output_bytes(&self) -> u64 {
        self.gguf.file_size()
    }

    /// Bytes read from the checkpoint.
    pub fn input_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.src_bytes).sum()
    }
}

/// Plans converting the checkpoint in `dir` to `file_type`.
pub fn plan(checkpoint: &Checkpoint, file_type: FileType) -> Result<ConvertPlan, ConvertError> {
    let dir = checkpoint.dir();
    let config = ModelConfig::load(dir)?;
    let tokenizer = crate::hf::load_tokenizer(dir, usize::try_from(config.vocab_size).ok())?;

    let mut sources = Vec::new();
    for (entry, _) in checkpoint.tensors()? {
        let Some(name) = TensorName::from_hf(&entry.name, config.arch) else {
            // Buffers some checkpoints store: rope frequencies, GPT-NeoX's causal masks; and what
            // llama.cpp's converter drops for the family.
            let buffers = ["rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias"];
            if buffers.iter().any(|b| entry.name.ends_with(b)) || config.arch.family().drops_hf_tensor(&entry.name) {
                continue;
            }
            return Err(ConvertError::UnknownTensor {
                dir: dir.to_owned(),
                tensor: entry.name,
                arch: config.arch.name(),
            });
        };
        sources.push((name, entry));
    }
    // llama.cpp's order: token_embd, then each layer's tensors, then output_norm and output.
    sources.sort_by_key(|(n, _)| order_key(n));
    check_shapes(dir, &config, &sources)?;

    let computed = computed_tensors(&config);
    let table = tensor_table(&computed, sources.iter().map(|(n, e)| (n.clone(), e.shape.clone())));
    let gguf = gguf_plan(&config, tokenizer.to_metadata(), file_type, dir, &table)?;
    let mut tensors = Vec::new();
    for ((name, entry), planned) in sources.into_iter().zip(gguf.tensors().iter().skip(computed.len())) {
        let heads = Heads {
            n_head: config.num_heads as usize,
            n_head_kv: config.num_kv_heads as usize,
            head_dim: config.head_dim as usize,
        };
        let row_order = config.arch.family().row_order(&heads, name.kind);
        let offset = config.arch.family().stored_offset(&name);
        tensors.push(TensorPlan {
            hf_name: entry.name.clone(),
            gguf_name: planned.name.clone(),
            src_type: source_type(&entry)?,
            ty: planned.ty,
            ne: planned.ne.clone(),
            row_order,
            offset,
            src_bytes: entry.n_bytes as u64,
            out_bytes: planned.n_bytes,
        });
    }
    let computed =
        computed.into_iter().map(|(name, values)| ComputedTensor { gguf_name: name.to_string(), values }).collect();
    Ok(ConvertPlan { config, file_type, computed, tensors, gguf })
}

/// The GGUF's tensor table (name, `ne`): the `computed` tensors first, then the checkpoint's by
/// their Hugging Face shapes (outermost first, reversed into `ne`).
fn tensor_table(
    computed: &[(TensorName, Vec<f32>)],
    checkpoint: impl IntoIterator<Item = (TensorName, Vec<usize>)>,
) -> Vec<(TensorName, Vec<u64>)> {
    computed
        .iter()
        .map(|(n, values)| (n.clone(), vec![values.len() as u64]))
        .chain(checkpoint.into_iter().map(|(n, shape)| (n, shape.iter().rev().map(|&d| d as u64).collect())))
        .collect()
}

/// The tensors llama.cpp reads that a checkpoint of `c` does not hold, computed from its config:
/// Llama 3's rope frequency factors, Phi-3's long and short rope factors.
fn computed_tensors(c: &ModelConfig) -> Vec<(TensorName, Vec<f32>)> {
    match c.rope_scaling {
        Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context }) => {
            let values = llama3_frequency_factors(
                c.rope_theta,
                c.rope_dims,
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            );
            vec![(TensorName { kind: TensorKind::RopeFreqs, layer: None, suffix: "weight".into() }, values)]
        }
        // Long first, as llama.cpp's converter writes them.
        Some(RopeScaling::LongRope { ref short, ref long }) => vec![
            (TensorName { kind: TensorKind::RopeFactorsLong, layer: None, suffix: "weight".into() }, long.clone()),
            (TensorName { kind: TensorKind::RopeFactorsShort, layer: None, suffix: "weight".into() }, short.clone()),
        ],
        _ => Vec::new(),
    }
}

/// How the tokenizer's metadata of a [`plan_without_weights`] was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerSource {
    /// From the tokenizer files next to the config, as `convert` reads them.
    Files,
    /// No tokenizer files: a stand-in vocabulary of `vocab_size` short tokens (about 20 bytes
    /// of metadata per token, which a real SentencePiece vocabulary is close to).
    Estimated,
}

/// The GGUF `convert` would write at `file_type` for a checkpoint of `config` whose weights are
/// not at hand (a bare config.json, a folder before its shards are downloaded): the same
/// metadata, tensor table and per-tensor types as [`plan`], with every tensor the config implies.
/// The tokenizer comes from `dir` when its files are there.
pub fn plan_without_weights(
    config: &ModelConfig,
    dir: &Path,
    file_type: FileType,
) -> Result<(GgufPlan, TokenizerSource), ConvertError> {
    let vocab = usize::try_from(config.vocab_size).unwrap_or(usize::MAX);
    let (tokenizer, source) = match crate::hf::load_tokenizer(dir, Some(vocab)) {
        Ok(t) => (t.to_metadata(), TokenizerSource::Files),
        Err(HfError::NoTokenizer { .. }) => (estimated_tokenizer(vocab), TokenizerSource::Estimated),
        Err(e) => return Err(e.into()),
    };
    let table = tensor_table(&computed_tensors(config), expected_tensors(config));
    Ok((gguf_plan(config, tokenizer, file_type, dir, &table)?, source))
}

fn estimated_tokenizer(vocab: usize) -> Vec<(String, MetaValue)> {
    use crate::gguf::MetaArray;
    vec![
        ("tokenizer.ggml.model".into(), "llama".into()),
        ("tokenizer.ggml.tokens".into(), MetaValue::Array(MetaArray::String(vec!["<token>".to_owned(); vocab]))),
        ("tokenizer.ggml.scores".into(), MetaValue::Array(MetaArray::F32(vec![0.0; vocab]))),
        ("tokenizer.ggml.token_type".into(), MetaValue::Array(MetaArray::I32(vec![1; vocab]))),
    ]
}

/// The metadata and tensor table of the GGUF for `config` with tensors `table` (GGUF name, `ne`,
/// in llama.cpp's order), each tensor at the type llama-quantize chooses for `file_type`.
fn gguf_plan(
    config: &ModelConfig,
    tokenizer: Vec<(String, MetaValue)>,
    file_type: FileType,
    dir: &Path,
    table: &[(TensorName, Vec<u64>)],
) -> Result<GgufPlan, ConvertError> {
    let mut gguf = GgufPlan::new();
    for (key, value) in model_metadata(config, file_type, dir)?.into_iter().chain(tokenizer) {
        gguf.add_kv(&key, value)?;
    }
    let names: Vec<String> = table.iter().map(|(n, _)| n.to_string()).collect();
    let mut chooser = crate::quant::TypeChooser::new(
        file_type,
        config.arch.name(),
        config.num_layers,
        names.iter().map(String::as_str),
    )
    .with_heads(config.num_heads, config.num_kv_heads);
    for ((_, ne), name) in table.iter().zip(&names) {
        let ty = chooser.choose(name, ne);
        gguf.add_tensor(name, ty, ne)?;
    }
    Ok(gguf)
}

/// The ggml type whose encoding equals the safetensors dtype.
fn source_type(entry: &crate::hf::TensorEntry) -> Result<GgmlType, ConvertError> {
    match entry.dtype {
        Dtype::F32 => Ok(GgmlType::F32),
        Dtype::F16 => Ok(GgmlType::F16),
        Dtype::BF16 => Ok(GgmlType::BF16),
        other => Err(ConvertError::UnsupportedDtype { tensor: entry.name.clone(), dtype: format!("{other:?}") }),
    }
}

fn order_key(n: &TensorName) -> (u32, u32, u8) {
    let kind_rank = TensorKind::PER_LAYER.iter().position(|k| *k == n.kind).unwrap_or(0) as u32;
    let suffix_rank = u8::from(n.suffix != "weight");
    match (n.kind, n.layer) {
        (TensorKind::TokenEmbd, _) => (0, 0, suffix_rank),
        (_, Some(l)) => (1 + l, kind_rank, suffix_rank),
        (TensorKind::OutputNorm, None) => (u32::MAX, 0, suffix_rank),
        _ => (u32::MAX, 1, suffix_rank),
    }
}

/// The Hugging Face shape of tensor `name` in a checkpoint of `c`.
fn expected_shape(c: &ModelConfig, name: &TensorName) -> Vec<usize> {
    let (h, ff, v) = (c.hidden_size as usize, c.intermediate_size as usize, c.vocab_size as usize);
    let q = (c.num_heads * c.head_dim) as usize;
    let kv = (c.num_kv_heads * c.head_dim) as usize;
    let bias = name.suffix == "bias";
    let w = |out: usize, inp: usize| if bias { vec![out] } else { vec![out, inp] };
    match name.kind {
        TensorKind::TokenEmbd | TensorKind::Output => vec![v, h],
        TensorKind::OutputNorm
        | TensorKind::AttnNorm
        | TensorKind::AttnNorm2
        | TensorKind::FfnNorm
        | TensorKind::AttnPostNorm
        | TensorKind::FfnPostNorm => vec![h],
        TensorKind::AttnQ => w(q, h),
        TensorKind::AttnQkv => w(q + 2 * kv, h),
        TensorKind::AttnK | TensorKind::AttnV => w(kv, h),
        TensorKind::AttnOutput => w(h, q),
        TensorKind::FfnUp if c.arch.fused_gate_up() => w(2 * ff, h),
        TensorKind::FfnGate | TensorKind::FfnUp => w(ff, h),
        TensorKind::FfnDown => w(h, ff),
        TensorKind::RopeFreqs | TensorKind::RopeFactorsLong | TensorKind::RopeFactorsShort => {
            vec![(c.rope_dims / 2) as usize]
        }
        TensorKind::AttnQNorm | TensorKind::AttnKNorm => vec![c.head_dim as usize],
    }
}

/// The tensors a checkpoint of `c` must have, in llama.cpp's order. Falcon's `lm_head.weight`
/// is written when present and never required: llama.cpp reads the token embeddings in its place
/// ([`crate::arch::Family::requires_output`]).
fn required_tensors(c: &ModelConfig) -> Vec<TensorName> {
    let top = |kind, suffix: &str| TensorName { kind, layer: None, suffix: suffix.into() };
    let mut required = vec![top(TensorKind::TokenEmbd, "weight")];
    for layer in 0..c.num_layers as u32 {
        for (kind, suffix) in c.arch.family().layer_tensors(c) {
            required.push(TensorName { kind, layer: Some(layer), suffix: suffix.into() });
        }
    }
    required.push(top(TensorKind::OutputNorm, "weight"));
    if c.arch.layer_norms() {
        required.push(top(TensorKind::OutputNorm, "bias"));
    }
    if c.arch.family().requires_output() && !c.tie_word_embeddings {
        required.push(top(TensorKind::Output, "weight"));
    }
    required.sort_by_key(order_key);
    required
}

/// Every tensor a checkpoint of `c` holds with its Hugging Face shape, in llama.cpp's order.
fn expected_tensors(c: &ModelConfig) -> Vec<(TensorName, Vec<usize>)> {
    let mut names = required_tensors(c);
    if !c.arch.family().requires_output() && !c.tie_word_embeddings {
        names.push(TensorName { kind: TensorKind::Output, layer: None, suffix: "weight".into() });
    }
    names.into_iter().map(|n| (n.clone(), expected_shape(c, &n))).collect()
}

fn check_shapes(
    dir: &Path,
    c: &ModelConfig,
    sources: &[(TensorName, crate::hf::TensorEntry)],
) -> Result<(), ConvertError> {
    for (name, entry) in sources {
        if name.layer.is_some_and(|l| u64::from(l) >= c.num_layers) {
            return Err(ConvertError::LayerOutOfRange {
                dir: dir.to_owned(),
                tensor: entry.name.clone(),
                num_layers: c.num_layers,
            });
        }
        let want = expected_shape(c, name);
        if entry.shape != want {
            return Err(ConvertError::ShapeMismatch {
                dir: dir.to_owned(),
                tensor: entry.name.clone(),
                expected: want,
                found: entry.shape.clone(),
            });
        }
    }
    let present = |n: &TensorName| sources.iter().any(|(s, _)| s == n);
    if let Some(missing) = required_tensors(c).iter().find(|n| !present(n)) {
        return Err(ConvertError::MissingTensor { dir: dir.to_owned(), tensor: missing.to_string() });
    }
    Ok(())
}

/// `general.name` for a checkpoint folder: its name, or for a snapshot in the Hugging Face cache
/// (`models--owner--name/snapshots/<commit>`) the repository's name rather than the commit hash.
fn model_name_of_dir(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let parent = dir.parent()?;
    let repo_folder = parent.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
    match repo_folder {
        // Hub names cannot contain "--", so the last part is the repository's name.
        Some(folder) if parent.file_name().is_some_and(|n| n == "snapshots") && folder.starts_with("models--") => {
            folder.rsplit("--").next().map(str::to_owned)
        }
        _ => Some(name),
    }
}

fn model_metadata(c: &ModelConfig, ft: FileType, dir: &Path) -> Result<Vec<(String, MetaValue)>, ConvertError> {
    let a = c.arch.name();
    let name = dir.canonicalize().ok().and_then(|p| model_name_of_dir(&p)).unwrap_or_else(|| c.hf_architecture.clone());
    let u32_of = |v: u64| MetaValue::U32(u32::try_from(v).unwrap_or(u32::MAX));
    let mut kv: Vec<(String, MetaValue)> = vec![
        ("general.architecture".into(), a.into()),
        ("general.type".into(), "model".into()),
        ("general.name".into(), name.into()),
        ("general.file_type".into(), MetaValue::U32(ft.llama_ftype())),
        ("general.quantization_version".into(), MetaValue::U32(2)),
        (format!("{a}.context_length"), u32_of(c.context_length)),
        (format!("{a}.embedding_length"), u32_of(c.hidden_size)),
        (format!("{a}.block_count"), u32_of(c.num_layers)),
        (format!("{a}.feed_forward_length"), u32_of(c.intermediate_size)),
        (format!("{a}.attention.head_count"), u32_of(c.num_heads)),
        (format!("{a}.attention.head_count_kv"), u32_of(c.num_kv_heads)),
        (format!("{a}.rope.freq_base"), MetaValue::F32(c.rope_theta)),
        (format!("{a}.rope.dimension_count"), u32_of(c.rope_dims)),
        (format!("{a}.vocab_size"), u32_of(c.vocab_size)),
    ];
    let norm_eps_key = if c.arch.layer_norms() { "layer_norm_epsilon" } else { "layer_norm_rms_epsilon" };
    kv.push((format!("{a}.attention.{norm_eps_key}"), MetaValue::F32(c.norm_eps)));
    c.arch.family().metadata(c, &mut kv);
    if c.head_dim * c.num_heads != c.hidden_size {
        kv.push((format!("{a}.attention.key_length"), u32_of(c.head_dim)));
        kv.push((format!("{a}.attention.value_length"), u32_of(c.head_dim)));
    }
    match &c.rope_scaling {
        None => {}
        Some(RopeScaling::Linear { factor }) => {
            kv.push((format!("{a}.rope.scaling.type"), "linear".into()));
            kv.push((format!("{a}.rope.scaling.factor"), MetaValue::F32(*factor)));
        }
        Some(RopeScaling::Yarn { factor, original_context }) => {
            kv.push((format!("{a}.rope.scaling.type"), "yarn".into()));
            kv.push((format!("{a}.rope.scaling.factor"), MetaValue::F32(*factor)));
            kv.push((format!("{a}.rope.scaling.original_context_length"), MetaValue::U32(*original_context)));
        }
        // Written as rope_freqs.weight (computed_tensors), with no scaling keys, as llama.cpp's
        // converter writes Llama 3; longrope as its two factor tensors and Phi-3's attention
        // factor key.
        Some(RopeScaling::Llama3 { .. } | RopeScaling::LongRope { .. }) => {}
    }
    Ok(kv)
}

/// Runs `plan`, writing `output`. `progress` is called with (bytes read so far, total) after each
/// block of rows.
pub fn execute(
    checkpoint: &Checkpoint,
    plan: ConvertPlan,
    output: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConversionSummary, ConvertError> {
    let start = Instant::now();
    let total = plan.input_bytes();
    let mut done = 0u64;
    let mut views = Vec::new();
    for shard in &checkpoint.shards {
        views.push(shard.view()?);
    }
    let find = |name: &str| views.iter().find_map(|v| v.tensor(name).ok());
    let tensors = plan.tensors;
    let mut writer = GgufWriter::create(output, plan.gguf)?;
    for t in &plan.computed {
        writer.write_tensor(&t.gguf_name, &crate::adapter::f32_bytes(&t.values))?;
    }
    let mut staged: Vec<f32> = Vec::new();
    let mut permuted: Vec<f32> = Vec::new();
    let mut gathered: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    for t in &tensors {
        let view = find(&t.hf_name).ok_or_else(|| ConvertError::MissingTensor {
            dir: checkpoint.dir().to_owned(),
            tensor: t.hf_name.clone(),
        })?;
        let data = view.data();
        // A reordered bias (GPT-NeoX's QKV) has one value per row of its weight.
        let per_value = t.ne.len() == 1 && matches!(t.row_order, RowOrder::FalconQkv { .. });
        let row_len = if per_value { 1 } else { t.ne[0] as usize };
        let n_rows = (t.ne.iter().product::<u64>() / row_len.max(1) as u64) as usize;
        let src_width = data.len() / (row_len * n_rows).max(1);
        let src_row_bytes = row_len * src_width;
        let same_encoding =
            !matches!(t.row_order, RowOrder::RotaryHeads { .. }) && t.offset == 0.0 && t.src_type == t.ty;
        // Blocks of whole heads for permuted tensors, else of ROWS_PER_BLOCK rows.
        let rows_per_block = match t.row_order {
            RowOrder::RotaryHeads { head_dim } => (ROWS_PER_BLOCK / head_dim).max(1) * head_dim,
            _ => ROWS_PER_BLOCK,
        };
        let out_row_bytes = t.ty.row_bytes(row_len as u64).unwrap_or(0) as usize;
        let mut row = 0;
        while row < n_rows {
            let rows = rows_per_block.min(n_rows - row);
            let src = match t.row_order {
                RowOrder::FalconQkv { n_head, n_head_kv, head_dim } => {
                    gathered.clear();
                    for out_row in row..row + rows {
                        let from = falcon_qkv_source_row(out_row, n_head, n_head_kv, head_dim) * src_row_bytes;
                        gathered.extend_from_slice(&data[from..from + src_row_bytes]);
                    }
                    &gathered[..]
                }
                _ => &data[row * src_row_bytes..(row + rows) * src_row_bytes],
            };
            if same_encoding {
                writer.write_chunk(&t.gguf_name, src)?;
            } else {
                staged.resize(rows * row_len, 0.0);
                decode_to_f32(t.src_type, src, &mut staged)
                    .map_err(|source| ConvertError::Decode { tensor: t.hf_name.clone(), source })?;
                if t.offset != 0.0 {
                    staged.iter_mut().for_each(|v| *v += t.offset);
                }
                let rows_f32 = match t.row_order {
                    RowOrder::RotaryHeads { head_dim } => {
                        permuted.resize(staged.len(), 0.0);
                        permute_rotary_rows(&staged, &mut permuted, head_dim, row_len);
                        &permuted
                    }
                    _ => &staged,
                };
                out.resize(rows * out_row_bytes, 0);
                crate::quant::encode_rows(t.ty, rows_f32, row_len, &mut out)?;
                writer.write_chunk(&t.gguf_name, &out)?;
            }
            // These rows are done: their input pages need not stay resident (a gathered tensor's
            // are released whole at its end).
            if !matches!(t.row_order, RowOrder::FalconQkv { .. }) {
                checkpoint.release(src);
            }
            done += src.len() as u64;
            progress(done, total);
            row += rows;
        }
        if matches!(t.row_order, RowOrder::FalconQkv { .. }) {
            checkpoint.release(data);
        }
        if n_rows == 0 {
            writer.write_tensor(&t.gguf_name, &[])?;
        }
    }
    let output_bytes = writer.plan().file_size();
    writer.finish()?;
    Ok(ConversionSummary {
        tensors: plan.computed.len() + tensors.len(),
        input_bytes: total,
        output_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}
