//! ggml's own quantization routines, so that our bytes equal llama-quantize's.

use std::path::Path;

use llama_cpp_sys_2 as sys;
use rayon::prelude::*;

use super::{c_path, log, Error, Runtime};
use crate::gguf::GgmlType;

/// Rows handed to one `ggml_quantize_chunk` call when converting in parallel.
const ROWS_PER_TASK: usize = 16;

/// Whether ggml can produce `ty` from f32 rows without an importance matrix.
pub fn can_quantize_to(ty: GgmlType) -> bool {
    let known = !matches!(
        ty,
        GgmlType::Q8_1 | GgmlType::Q8_K | GgmlType::I8 | GgmlType::I16 | GgmlType::I32 | GgmlType::I64 | GgmlType::F64
    );
    // SAFETY: a valid type id; the function only reads a static table.
    known && !unsafe { sys::ggml_quantize_requires_imatrix(ty.id()) }
}

/// Converts `src` (rows of `n_per_row` f32 values) into `ty`, writing exactly
/// `rows × row_bytes(n_per_row)` bytes into `dst`. Rows are split across rayon's threads; each row
/// is converted independently, so the bytes do not depend on the split.
///
/// Mirrors the asserts of `ggml_quantize_chunk`: a type ggml can quantize to without an importance
/// matrix, `n_per_row` a multiple of the block size, `src` whole rows, `dst` of the exact size.
pub fn quantize_rows(ty: GgmlType, src: &[f32], n_per_row: usize, dst: &mut [u8]) -> Result<(), Error> {
    Runtime::get();
    if !can_quantize_to(ty) {
        return Err(Error::CannotQuantize { ty });
    }
    let row_bytes = encoded_row_bytes(ty, n_per_row, dst.len())?;
    if n_per_row == 0 || src.len() % n_per_row != 0 {
        return Err(Error::PartialRow { len: src.len(), n_per_row });
    }
    let n_rows = src.len() / n_per_row;
    if dst.len() != n_rows * row_bytes {
        return Err(Error::BufferSize { expected: n_rows * row_bytes, found: dst.len() });
    }
    src.par_chunks(n_per_row * ROWS_PER_TASK).zip(dst.par_chunks_mut(row_bytes * ROWS_PER_TASK)).for_each(
        |(src, dst)| {
            let rows = src.len() / n_per_row;
            // SAFETY: checked above: the type needs no importance matrix (so null is allowed),
            // start 0 is a multiple of everything, `src` holds `rows` whole rows and `dst` exactly
            // `rows × row_bytes` bytes, which is what ggml writes (it asserts the same).
            unsafe {
                sys::ggml_quantize_chunk(
                    ty.id(),
                    src.as_ptr(),
                    dst.as_mut_ptr().cast(),
                    0,
                    rows as i64,
                    n_per_row as i64,
                    std::ptr::null(),
                )
            };
        },
    );
    Ok(())
}

/// Converts `src` (rows of `n_per_row` values of type `ty`, any type ggml can read back: the float
/// types and every quantized type) into f32 with ggml's own `to_float` routine, the one ggml's
/// CPU backend uses, so the values equal what llama.cpp computes with. `dst` holds exactly the
/// element count of `src`.
pub fn dequantize_rows(ty: GgmlType, src: &[u8], n_per_row: usize, dst: &mut [f32]) -> Result<(), Error> {
    Runtime::get();
    let row_bytes = encoded_row_bytes(ty, n_per_row, src.len())?;
    if n_per_row == 0 || row_bytes == 0 || src.len() % row_bytes != 0 {
        return Err(Error::PartialRow { len: src.len(), n_per_row });
    }
    let n_rows = src.len() / row_bytes;
    if dst.len() != n_rows * n_per_row {
        return Err(Error::BufferSize { expected: n_rows * n_per_row, found: dst.len() });
    }
    // SAFETY: a valid type id (GgmlType only holds ids ggml knows); ggml returns a pointer to its
    // static traits table, valid for the life of the process, or null for an unknown id.
    let traits = unsafe { sys::ggml_get_type_traits(ty.id()).as_ref() };
    let to_float = traits.and_then(|t| t.to_float).ok_or(Error::CannotDequantize { ty })?;
    src.par_chunks(row_bytes * ROWS_PER_TASK).zip(dst.par_chunks_mut(n_per_row * ROWS_PER_TASK)).for_each(
        |(src, dst)| {
            // SAFETY: `src` holds whole rows (checked above), which decode to exactly `dst.len()`
            // values, and `to_float` reads `dst.len() / block_size` blocks of `src` and writes
            // `dst.len()` floats; `dst.len()` is a multiple of the block size since `n_per_row` is.
            unsafe { to_float(src.as_ptr().cast(), dst.as_mut_ptr(), dst.len() as i64) };
        },
    );
    Ok(())
}

/// Runs llama.cpp's `llama_model_quantize` (what the `llama-quantize` tool does) from `input` to
/// `output` with file type `ftype` (a `llama_ftype` id). The reference our converter must match.
pub fn llama_model_quantize(_rt: &Runtime, input: &Path, output: &Path, ftype: u32, threads: i32) -> Result<(), Error> {
    let inp = c_path(input)?;
    let out = c_path(output)?;
    // SAFETY: returns a plain struct of defaults.
    let mut params = unsafe { sys::llama_model_quantize_default_params() };
    params.ftype = ftype as sys::llama_ftype;
    params.nthread = threads;
    log::clear_errors();
    // SAFETY: both paths are NUL-terminated and live for the call; params is a valid struct whose
    // pointer fields are the defaults' (null). llama.cpp catches its exceptions and returns 1.
    let rc = unsafe { sys::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params) };
    if rc != 0 {
        return Err(Error::QuantizeFailed { path: input.to_owned(), reason: log::take_errors() });
    }
    Ok(())
}

/// Bytes of one encoded row of `n_per_row` values of `ty` (`encoded_len`: the size of the
/// encoded buffer, for the error when the row size does not fit in memory).
fn encoded_row_bytes(ty: GgmlType, n_per_row: usize, encoded_len: usize) -> Result<usize, Error> {
    let row_bytes = ty.row_bytes(n_per_row as u64).ok_or(Error::RowNotBlockMultiple {
        ty,
        n_per_row,
        block_size: ty.block_size(),
    })?;
    usize::try_from(row_bytes).map_err(|_| Error::BufferSize { expected: usize::MAX, found: encoded_len })
}
