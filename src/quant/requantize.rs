//! `quantize`: an F32/F16/BF16 GGUF to another file type, tensor by tensor, as llama-quantize does.

use std::path::Path;
use std::time::Instant;

use crate::gguf::{GgmlType, Gguf, GgufFile, GgufFileError, GgufPlan, GgufWriteError, GgufWriter, MetaValue};

use super::{decode_to_f32, DecodeError, FileType, TypeChooser};

/// Rows converted at a time.
const ROWS_PER_BLOCK: usize = 512;

/// Why a requantization failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    #[error(transparent)]
    Read(#[from] GgufFileError),
    #[error(transparent)]
    Write(#[from] GgufWriteError),
    #[error(transparent)]
    Ggml(#[from] crate::ggml::Error),
    #[error("{}: tensor '{tensor}' is {ty}; only F32, F16 and BF16 sources can be quantized (hint: convert from the original checkpoint instead of requantizing)", path.display())]
    QuantizedSource { path: std::path::PathBuf, tensor: String, ty: GgmlType },
    #[error("tensor '{tensor}'")]
    Decode { tensor: String, source: DecodeError },
    #[error("{}: missing key '{key}'", path.display())]
    MissingKey { path: std::path::PathBuf, key: String },
}

/// What a finished conversion or requantization did.
#[derive(Clone, Debug)]
pub struct ConversionSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of tensor data read.
    pub input_bytes: u64,
    /// Size of the file written.
    pub output_bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// llama-quantize's per-tensor type choice for file type `ft` over the tensors of `g` (read from
/// `path`): its architecture, layer count and head counts come from the metadata.
pub fn type_chooser(path: &Path, g: &Gguf<'_>, ft: FileType) -> Result<TypeChooser, QuantizeError> {
    let arch = g.get_str("general.architecture").unwrap_or("llama");
    let n_layer_key = format!("{arch}.block_count");
    let n_layer = g
        .get(&n_layer_key)
        .and_then(|v| v.as_u64())
        .ok_or_else(|| QuantizeError::MissingKey { path: path.to_owned(), key: n_layer_key.clone() })?;
    let heads = |k: &str| g.get(&format!("{arch}.attention.{k}")).and_then(|v| v.as_u64()).unwrap_or(0);
    Ok(TypeChooser::new(ft, arch, n_layer, g.tensors.iter().map(|t| t.name))
        .with_heads(heads("head_count"), heads("head_count_kv")))
}

/// Copies the metadata of `g` into `plan`; with a file type `ft`, sets `general.file_type` and
/// `general.quantization_version` as llama-quantize does (adding them when absent).
pub fn add_metadata(plan: &mut GgufPlan, g: &Gguf<'_>, ft: Option<FileType>) -> Result<(), GgufWriteError> {
    for (key, value) in &g.metadata {
        let value = match (*key, ft) {
            ("general.file_type", Some(ft)) => MetaValue::U32(ft.llama_ftype()),
            ("general.quantization_version", Some(_)) => MetaValue::U32(2),
            _ => value.to_owned_value(),
        };
        plan.add_kv(key, value)?;
    }
    let Some(ft) = ft else { return Ok(()) };
    for key in ["general.file_type", "general.quantization_version"] {
        if g.get(key).is_none() {
            let v = if key == "general.file_type" { ft.llama_ftype() } else { 2 };
            plan.add_kv(key, MetaValue::U32(v))?;
        }
    }
    Ok(())
}

/// Requantizes `input` into `output` with the per-tensor types llama-quantize chooses for `ft`.
/// `progress` gets (tensor data bytes read so far, total).
pub fn requantize(
    input: &Path,
    output: &Path,
    ft: FileType,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConversionSummary, QuantizeError> {
    let start = Instant::now();
    let file = GgufFile::open(input)?;
    let g = file.gguf()?;
    if let Some(t) = g.tensors.iter().find(|t| !matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)) {
        return Err(QuantizeError::QuantizedSource { path: input.to_owned(), tensor: t.name.to_owned(), ty: t.ty });
    }
    let plan = requantized_plan(&g, input, ft)?;
    let types: Vec<GgmlType> = plan.tensors().iter().map(|t| t.ty).collect();
    let output_bytes = plan.file_size();
    let total: u64 = g.tensors.iter().map(|t| t.n_bytes).sum();
    let mut done = 0u64;
    let mut writer = GgufWriter::create(output, plan)?;
    let mut staged: Vec<f32> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    for (t, &ty) in g.tensors.iter().zip(&types) {
        let data = g.tensor_data(t);
        if ty == t.ty {
            writer.write_tensor(t.name, data)?;
            done += data.len() as u64;
            progress(done, total);
            file.release(data);
            continue;
        }
        let row_len = usize::try_from(t.ne[0]).unwrap_or(0);
        let width = usize::try_from(t.ty.type_size()).unwrap_or(4);
        let out_row = usize::try_from(ty.row_bytes(t.ne[0]).unwrap_or(0)).unwrap_or(0);
        for block in data.chunks(row_len.max(1) * width * ROWS_PER_BLOCK) {
            let n = block.len() / width;
            staged.resize(n, 0.0);
            decode_to_f32(t.ty, block, &mut staged)
                .map_err(|source| QuantizeError::Decode { tensor: t.name.to_owned(), source })?;
            out.resize(n / row_len.max(1) * out_row, 0);
            super::encode_rows(ty, &staged, row_len, &mut out)?;
            writer.write_chunk(t.name, &out)?;
            file.release(block);
            done += block.len() as u64;
            progress(done, total);
        }
        if data.is_empty() {
            writer.write_tensor(t.name, &[])?;
        }
    }
    writer.finish()?;
    Ok(ConversionSummary {
        tensors: types.len(),
        input_bytes: total,
        output_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The GGUF [`requantize`] writes for `g` (the file at `path`) at `ft`: the same metadata with the
/// file type updated, every tensor at the type llama-quantize chooses for it.
pub fn requantized_plan(g: &Gguf<'_>, path: &Path, ft: FileType) -> Result<GgufPlan, QuantizeError> {
    let mut chooser = type_chooser(path, g, ft)?;
    let mut plan = GgufPlan::new();
    add_metadata(&mut plan, g, Some(ft))?;
    for t in &g.tensors {
        let ty = chooser.choose(t.name, &t.ne);
        plan.add_tensor(t.name, ty, &t.ne)?;
    }
    Ok(plan)
}
