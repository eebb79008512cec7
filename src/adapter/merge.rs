//! Merging LoRA adapters into their base model, as llama-export-lora does: for every adapted
//! weight `W` (`ne = [n_in, n_out]`), `W' = W + Σ scale_eff · B·A` over the adapters, with
//! `scale_eff = scale · alpha / rank` (or `scale` when the adapter's alpha is 0), computed in f32 in
//! the base layout. Quantized weights are dequantized with ggml's own routine first.
//!
//! Output types: with a [`FileType`], every tensor gets the type llama-quantize would choose for it
//! ([`crate::quant::type_chooser`]), so the merged file matches `quantize` of a merged f32 file;
//! without one, every tensor keeps its type (merged quantized tensors are quantized back to their
//! own type). Metadata is the base's (`general.file_type` updated with a file type).
//!
//! The work streams: the plan is made first, then each tensor is read, merged and written a block
//! of rows at a time, so memory holds one block in f32 plus one adapter pair, never the model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use super::read::{AdapterReadError, LoraAdapter};
use super::LoraTensorPair;
use crate::gguf::{GgmlType, GgufFile, GgufFileError, GgufPlan, GgufWriteError, GgufWriter};
use crate::quant::{add_metadata, decode_to_f32, type_chooser, DecodeError, FileType, QuantizeError};

/// Rows merged and converted at a time.
const ROWS_PER_BLOCK: usize = 256;

/// An adapter to merge, and the user scale to merge it at (llama.cpp's `--lora-scaled` scale).
#[derive(Clone, Debug, PartialEq)]
pub struct MergeInput {
    /// The adapter GGUF.
    pub path: PathBuf,
    /// User scale (1.0 for plain `--lora`).
    pub scale: f32,
}

/// What a merge did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MergeSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Tensors that at least one adapter changed.
    pub merged: usize,
    /// Adapters merged.
    pub adapters: usize,
    /// Bytes of base tensor data read.
    pub input_bytes: u64,
    /// Size of the file written.
    pub output_bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    #[error(transparent)]
    Base(#[from] GgufFileError),
    #[error(transparent)]
    Adapter(#[from] AdapterReadError),
    #[error(transparent)]
    Write(#[from] GgufWriteError),
    #[error(transparent)]
    Types(#[from] QuantizeError),
    #[error("no adapter to merge")]
    NoAdapters,
    #[error("{}: tensor '{tensor}'", path.display())]
    Decode { path: PathBuf, tensor: String, source: DecodeError },
    #[error("{}: tensor '{tensor}' ({ty})", path.display())]
    Ggml { path: PathBuf, tensor: String, ty: GgmlType, source: Box<crate::ggml::Error> },
}

/// Merges `adapters` into `base` and writes the result to `output` (atomically), with every
/// tensor in the type llama-quantize chooses for `file_type`, or in its own type when `None`.
/// `progress` gets (base tensor bytes done, total).
pub fn merge(
    base: &Path,
    adapters: &[MergeInput],
    file_type: Option<FileType>,
    output: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<MergeSummary, MergeError> {
    let start = Instant::now();
    if adapters.is_empty() {
        return Err(MergeError::NoAdapters);
    }
    let file = GgufFile::open(base)?;
    let g = file.gguf()?;
    let mut opened = Vec::with_capacity(adapters.len());
    for input in adapters {
        let adapter = LoraAdapter::open(&input.path)?;
        adapter.check_base(base, &g)?;
        opened.push((adapter, input.scale));
    }
    // Base tensor name -> (adapter, pair) indices, in adapter order.
    let mut by_tensor: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (i, (adapter, _)) in opened.iter().enumerate() {
        for (j, pair) in adapter.pairs().iter().enumerate() {
            by_tensor.entry(pair.base.as_str()).or_default().push((i, j));
        }
    }

    let mut chooser = file_type.map(|ft| type_chooser(base, &g, ft)).transpose()?;
    let mut plan = GgufPlan::new();
    add_metadata(&mut plan, &g, file_type)?;
    let mut types = Vec::with_capacity(g.tensors.len());
    for t in &g.tensors {
        let ty = chooser.as_mut().map_or(t.ty, |c| c.choose(t.name, &t.ne));
        plan.add_tensor(t.name, ty, &t.ne)?;
        types.push(ty);
    }
    let output_bytes = plan.file_size();
    let total: u64 = g.tensors.iter().map(|t| t.n_bytes).sum();
    let mut done = 0u64;
    let mut merged = 0;
    let mut writer = GgufWriter::create(output, plan)?;
    let mut rows_f32: Vec<f32> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    for (t, &ty) in g.tensors.iter().zip(&types) {
        let data = g.tensor_data(t);
        let deltas: Vec<(LoraTensorPair, f32)> = match by_tensor.get(t.name) {
            Some(list) => list
                .iter()
                .map(|&(i, j)| {
                    let (adapter, scale) = &opened[i];
                    let pair = &adapter.pairs()[j];
                    Ok((adapter.read_pair(pair)?, adapter.scale(pair, *scale)))
                })
                .collect::<Result<_, AdapterReadError>>()?,
            None => Vec::new(),
        };
        merged += usize::from(!deltas.is_empty());
        if deltas.is_empty() && ty == t.ty {
            writer.write_tensor(t.name, data)?;
            file.release(data);
            done += data.len() as u64;
            progress(done, total);
            continue;
        }
        let ggml_err = |source| MergeError::Ggml {
            path: base.to_owned(),
            tensor: t.name.to_owned(),
            ty: t.ty,
            source: Box::new(source),
        };
        let row_len = usize::try_from(t.ne[0]).unwrap_or(0);
        // The parser checked that every tensor's row length is a multiple of its block size.
        let in_row = usize::try_from(t.ty.row_bytes(t.ne[0]).unwrap_or(0)).unwrap_or(0).max(1);
        let out_row = usize::try_from(ty.row_bytes(t.ne[0]).unwrap_or(0)).unwrap_or(0);
        let mut first_row = 0;
        for block in data.chunks(in_row * ROWS_PER_BLOCK) {
            let rows = block.len() / in_row;
            rows_f32.resize(rows * row_len, 0.0);
            if t.ty.is_quantized() {
                crate::ggml::dequantize_rows(t.ty, block, row_len, &mut rows_f32).map_err(ggml_err)?;
            } else {
                decode_to_f32(t.ty, block, &mut rows_f32).map_err(|source| MergeError::Decode {
                    path: base.to_owned(),
                    tensor: t.name.to_owned(),
                    source,
                })?;
            }
            for (pair, scale) in &deltas {
                add_delta(&mut rows_f32, pair, *scale, first_row);
            }
            out.resize(rows * out_row, 0);
            crate::quant::encode_rows(ty, &rows_f32, row_len, &mut out).map_err(ggml_err)?;
            writer.write_chunk(t.name, &out)?;
            file.release(block);
            done += block.len() as u64;
            progress(done, total);
            first_row += rows;
        }
        if data.is_empty() {
            writer.write_tensor(t.name, &[])?;
        }
    }
    writer.finish()?;
    Ok(MergeSummary {
        tensors: types.len(),
        merged,
        adapters: opened.len(),
        input_bytes: total,
        output_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Adds `scale · B·A` to `rows`, rows `first_row..` of the weight `pair` adapts (`n_in` values
/// each): row `o` gets `scale · Σ_k B[o][k] · A[k]`, with `A` rows of `n_in` values
/// (`ne = [n_in, r]`) and `B` rows of `r` values (`ne = [r, n_out]`).
pub fn add_delta(rows: &mut [f32], pair: &LoraTensorPair, scale: f32, first_row: usize) {
    let (n_in, rank) = (pair.n_in as usize, pair.rank as usize);
    rows.par_chunks_mut(n_in).enumerate().for_each(|(i, row)| {
        let o = first_row + i;
        for (k, a_row) in pair.a.chunks_exact(n_in).enumerate().take(rank) {
            let b = scale * pair.b[o * rank + k];
            for (w, a) in row.iter_mut().zip(a_row) {
                *w += b * a;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_is_scale_times_b_times_a() {
        // W: 2 outputs × 3 inputs; A: rank 2 × 3; B: 2 outputs × rank 2.
        let pair = LoraTensorPair {
            base: "w".into(),
            n_in: 3,
            n_out: 2,
            rank: 2,
            a: vec![1.0, 2.0, 3.0, 0.0, 1.0, 0.0],
            b: vec![1.0, 1.0, 2.0, 0.0],
        };
        let mut rows = vec![0.0; 6];
        add_delta(&mut rows, &pair, 0.5, 0);
        // Row 0: 0.5 · (1·[1,2,3] + 1·[0,1,0]); row 1: 0.5 · 2·[1,2,3].
        assert_eq!(rows, [0.5, 1.5, 1.5, 1.0, 2.0, 3.0]);
        let mut second = vec![0.0; 3];
        add_delta(&mut second, &pair, 1.0, 1);
        assert_eq!(second, [2.0, 4.0, 6.0]);
    }
}
