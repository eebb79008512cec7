//! What `gguftune inspect` reports about a GGUF file, a safetensors file, a Hugging Face model
//! folder, or a checkpoint on the hub read by its headers. The report is data (and serialisable
//! for `--json`); rendering is the CLI's job.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::gguf::{GgufFile, Value};
use crate::hf::{Checkpoint, SafetensorsFile, TensorEntry};
use crate::hub::RemoteCheckpoint;
use crate::Error;

/// Arrays longer than this are summarised: their length, type and first elements.
pub const ARRAY_HEAD: usize = 8;

/// A report on one input.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `gguf`, `safetensors`, `hf-folder`, or `hf-hub` (a hub repository read by its headers).
    pub format: &'static str,
    /// The path inspected.
    pub path: String,
    /// `model` or `adapter` (from `general.type` in GGUF; `model` for Hugging Face inputs).
    pub kind: String,
    /// `general.architecture`, or config.json's `model_type`.
    pub architecture: Option<String>,
    /// `general.name`, if any.
    pub name: Option<String>,
    /// `general.file_type` by name (`Q4_K_M`), or the dtypes present.
    pub file_type: Option<String>,
    /// GGUF version.
    pub version: Option<u32>,
    /// Total elements of all tensors.
    pub parameter_count: u64,
    /// Size of the input in bytes (all shards for a folder).
    pub file_bytes: u64,
    /// Metadata in file order: GGUF key-value pairs, safetensors `__metadata__`, or config.json.
    pub metadata: Vec<MetadataEntry>,
    /// The tensors in file order.
    pub tensors: Vec<TensorRow>,
}

/// One metadata entry. Long arrays are summarised.
#[derive(Clone, Debug, Serialize)]
pub struct MetadataEntry {
    /// The key.
    pub key: String,
    /// The value's type (`u32`, `string`, `array[string]`, ...).
    #[serde(rename = "type")]
    pub value_type: String,
    /// The value; for an array longer than [`ARRAY_HEAD`], `{"len": n, "head": [...]}`.
    pub value: serde_json::Value,
}

/// One tensor's row in the table.
#[derive(Clone, Debug, Serialize)]
pub struct TensorRow {
    /// The tensor's name.
    pub name: String,
    /// ggml type (GGUF) or dtype (safetensors).
    #[serde(rename = "type")]
    pub ty: String,
    /// For GGUF, `ne` (innermost first); for safetensors, the shape (outermost first).
    pub dims: Vec<u64>,
    /// Bytes of data.
    pub bytes: u64,
    /// The safetensors shard holding the tensor, for sharded folders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Inspects `path`: a GGUF file, a `.safetensors` file, or a model folder with config.json.
pub fn inspect(path: &Path) -> Result<Report, Error> {
    if path.is_dir() {
        return inspect_folder(path);
    }
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if is_safetensors {
        inspect_safetensors(path)
    } else {
        inspect_gguf(path)
    }
}

fn inspect_gguf(path: &Path) -> Result<Report, Error> {
    let file = GgufFile::open(path)?;
    let gguf = file.gguf()?;
    let metadata = gguf
        .metadata
        .iter()
        .map(|(k, v)| MetadataEntry { key: (*k).to_owned(), value_type: type_label(v), value: summarise(v) })
        .collect();
    let tensors: Vec<TensorRow> = gguf
        .tensors
        .iter()
        .map(|t| TensorRow {
            name: t.name.to_owned(),
            ty: t.ty.name().to_owned(),
            dims: t.ne.clone(),
            bytes: t.n_bytes,
            file: None,
        })
        .collect();
    let file_type = gguf.get("general.file_type").and_then(|v| v.as_u64()).map(|id| match file_type_name(id) {
        Some(name) => name.to_owned(),
        None => format!("unknown ({id})"),
    });
    Ok(Report {
        format: "gguf",
        path: path.display().to_string(),
        kind: gguf.get_str("general.type").unwrap_or("model").to_owned(),
        architecture: gguf.get_str("general.architecture").map(str::to_owned),
        name: gguf.get_str("general.name").map(str::to_owned),
        file_type,
        version: Some(gguf.version),
        parameter_count: gguf.tensors.iter().map(|t| t.n_elements()).sum(),
        file_bytes: gguf.file_len(),
        metadata,
        tensors,
    })
}

fn inspect_safetensors(path: &Path) -> Result<Report, Error> {
    let file = SafetensorsFile::open(path)?;
    let tensors = file.tensors()?;
    let metadata = file
        .metadata()?
        .into_iter()
        .map(|(key, value)| MetadataEntry { key, value_type: "string".to_owned(), value: json!(value) })
        .collect();
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(Report {
        format: "safetensors",
        path: path.display().to_string(),
        kind: "model".to_owned(),
        architecture: None,
        name: None,
        file_type: dtype_summary(tensors.iter().map(|t| t.dtype)),
        version: None,
        parameter_count: tensors.iter().map(|t| t.shape.iter().map(|&d| d as u64).product::<u64>()).sum(),
        file_bytes,
        metadata,
        tensors: tensors
            .into_iter()
            .map(|t| TensorRow {
                name: t.name,
                ty: format!("{:?}", t.dtype),
                dims: t.shape.iter().map(|&d| d as u64).collect(),
                bytes: t.n_bytes as u64,
                file: None,
            })
            .collect(),
    })
}

fn inspect_folder(dir: &Path) -> Result<Report, Error> {
    let checkpoint = Checkpoint::open(dir)?;
    let sharded = checkpoint.shards.len() > 1;
    let mut tensors = Vec::new();
    for (t, shard) in checkpoint.tensors()? {
        let file = sharded.then(|| shard.path().file_name().unwrap_or_default().to_string_lossy().into_owned());
        tensors.push((t, file));
    }
    let file_bytes = checkpoint.shards.iter().map(|s| std::fs::metadata(s.path()).map(|m| m.len()).unwrap_or(0)).sum();
    Ok(checkpoint_report("hf-folder", dir.display().to_string(), &checkpoint.config, tensors, file_bytes))
}

/// Reports on a checkpoint on the hub from its config and safetensors headers alone
/// ([`crate::hub::fetch_headers`]): the same metadata and tensor table as for the folder it would
/// download into, with `owner/name@commit` as the path.
pub fn inspect_hub(remote: &RemoteCheckpoint) -> Report {
    let sharded = remote.files.len() > 1;
    let tensors = remote
        .files
        .iter()
        .flat_map(|f| f.header.tensors.iter().map(move |t| (t.clone(), sharded.then(|| f.name.clone()))))
        .collect();
    let file_bytes = remote.files.iter().map(|f| f.size).sum();
    let path = format!("{}@{}", remote.repo.id(), remote.commit);
    checkpoint_report("hf-hub", path, &remote.config, tensors, file_bytes)
}

/// A report on a Hugging Face checkpoint: config.json as metadata, and its tensors in order,
/// each with its shard's name when there are several.
fn checkpoint_report(
    format: &'static str,
    path: String,
    config: &serde_json::Value,
    entries: Vec<(TensorEntry, Option<String>)>,
    file_bytes: u64,
) -> Report {
    let mut tensors = Vec::new();
    let mut parameter_count = 0u64;
    let mut dtypes = Vec::new();
    for (t, file) in entries {
        parameter_count += t.shape.iter().map(|&d| d as u64).product::<u64>();
        dtypes.push(t.dtype);
        tensors.push(TensorRow {
            name: t.name,
            ty: format!("{:?}", t.dtype),
            dims: t.shape.iter().map(|&d| d as u64).collect(),
            bytes: t.n_bytes as u64,
            file,
        });
    }
    let config = config.as_object().cloned().unwrap_or_default();
    let metadata = config
        .iter()
        .map(|(k, v)| MetadataEntry { key: k.clone(), value_type: json_type(v).to_owned(), value: v.clone() })
        .collect();
    let architecture = config.get("model_type").and_then(|v| v.as_str()).map(str::to_owned);
    let name = config.get("architectures").and_then(|a| a.get(0)).and_then(|v| v.as_str()).map(str::to_owned);
    Report {
        format,
        path,
        kind: "model".to_owned(),
        architecture,
        name,
        file_type: dtype_summary(dtypes.into_iter()),
        version: None,
        parameter_count,
        file_bytes,
        metadata,
        tensors,
    }
}

fn dtype_summary(dtypes: impl Iterator<Item = safetensors::Dtype>) -> Option<String> {
    let mut names: Vec<String> = dtypes.map(|d| format!("{d:?}")).collect();
    names.sort();
    names.dedup();
    (!names.is_empty()).then(|| names.join("+"))
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn type_label(v: &Value<'_>) -> String {
    match v.as_array() {
        Some(a) => format!("array[{}]", a.elem_type()),
        None => v.value_type().to_string(),
    }
}

/// A metadata value as JSON; arrays beyond [`ARRAY_HEAD`] elements become `{"len", "head"}`.
fn summarise(v: &Value<'_>) -> serde_json::Value {
    match *v {
        Value::Array(a) => {
            let head: Vec<serde_json::Value> = a.iter().take(ARRAY_HEAD).map(|e| summarise(&e)).collect();
            if a.len() as usize > ARRAY_HEAD {
                json!({ "len": a.len(), "head": head })
            } else {
                serde_json::Value::Array(head)
            }
        }
        Value::String(s) => json!(s),
        Value::Bool(b) => json!(b),
        // Through its shortest decimal form, so 1e-5 prints as 1e-5 and not 9.999999747378752e-6.
        Value::F32(f) => f.to_string().parse::<f64>().map_or(json!(null), |f| json!(f)),
        Value::F64(f) => json!(f),
        other => match other.as_i64() {
            Some(i) => json!(i),
            None => json!(other.as_u64()),
        },
    }
}

/// The name of a `general.file_type` (llama.cpp's `enum llama_ftype`), as llama.cpp prints it.
pub fn file_type_name(id: u64) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}
