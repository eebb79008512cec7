//! llama.cpp's own Python reader (the `gguf` package) reads our files as we do. Skipped, with the
//! reason printed, where Python or the package is missing; `scripts/test.sh` installs it.

use std::path::Path;
use std::process::Command;

use gguftune::gguf::{GgufFile, Value};
use serde_json::{json, Value as Json};

use crate::common::tiny_gguf::write_sample;
use crate::common::{repo_root, temp_dir};

/// The Python to use: `GGUFTUNE_PYTHON`, else the virtual environment `scripts/test.sh` makes,
/// else `python3`. `None` (with the reason) when it cannot import `gguf`.
fn python_with_gguf() -> Result<String, String> {
    let venv = repo_root().join("target/py/bin/python");
    let python = std::env::var("GGUFTUNE_PYTHON").ok().unwrap_or_else(|| {
        if venv.exists() {
            venv.display().to_string()
        } else {
            "python3".to_owned()
        }
    });
    match Command::new(&python).args(["-c", "import gguf"]).output() {
        Ok(out) if out.status.success() => Ok(python),
        Ok(out) => Err(format!("{python} cannot import gguf: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Err(format!("{python} not runnable: {e}")),
    }
}

fn dump(python: &str, path: &Path) -> Json {
    let out = Command::new(python).arg(repo_root().join("scripts/gguf_py_dump.py")).arg(path).output().unwrap();
    assert!(out.status.success(), "gguf_py_dump.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Our reading of a value, in the form gguf_py_dump.py prints.
fn ours(v: &Value<'_>) -> Json {
    match *v {
        Value::Array(a) if a.elem_type() == gguftune::gguf::ValueType::Array => json!("nested"),
        Value::Array(a) => Json::Array(a.iter().map(|e| ours(&e)).collect()),
        Value::String(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::F32(f) => json!(f64::from(f)),
        Value::F64(f) => json!(f),
        other => other.as_i64().map_or_else(|| json!(other.as_u64()), |i| json!(i)),
    }
}

fn sha256_hex(data: &[u8], python: &str) -> String {
    // Hash through Python too, so the test needs no hashing crate: same tool, same function.
    let out = Command::new(python)
        .args(["-c", "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn compare(python: &str, path: &Path) {
    let theirs = dump(python, path);
    let file = GgufFile::open(path).unwrap();
    let g = file.gguf().unwrap();
    let fields = theirs["fields"].as_array().unwrap();
    assert_eq!(fields.len(), g.metadata.len(), "{}", path.display());
    for ((key, value), field) in g.metadata.iter().zip(fields) {
        assert_eq!(field["key"], *key);
        assert_eq!(field["types"][0], value.value_type().id(), "type of {key}");
        assert_eq!(field["value"], ours(value), "value of {key}");
    }
    let tensors = theirs["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), g.tensors.len());
    for (t, theirs) in g.tensors.iter().zip(tensors) {
        assert_eq!(theirs["name"], t.name);
        assert_eq!(theirs["type"], t.ty.id(), "type of {}", t.name);
        assert_eq!(theirs["ne"], json!(t.ne), "ne of {}", t.name);
        assert_eq!(theirs["offset"], g.data_offset + t.offset, "offset of {}", t.name);
        assert_eq!(theirs["sha256"], sha256_hex(g.tensor_data(t), python), "data of {}", t.name);
    }
}

#[test]
fn gguf_py_reads_our_files_as_we_do() {
    let python = match python_with_gguf() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipped: {why} (scripts/test.sh installs the gguf package)");
            return;
        }
    };
    let dir = temp_dir();
    let sample = dir.path().join("sample.gguf");
    write_sample(&sample, 9);
    compare(&python, &sample);

    let model = dir.path().join("hf");
    std::fs::create_dir(&model).unwrap();
    let spec = crate::common::fixtures::TinyLlamaSpec { hidden: 256, ffn: 512, ..Default::default() };
    crate::common::fixtures::tiny_llama(
        &model,
        &spec,
        crate::common::fixtures::Dtype::BF16,
        crate::common::fixtures::Shards::One,
        3,
    )
    .unwrap();
    let out = dir.path().join("q4_k_m.gguf");
    crate::common::convert_to(&model, gguftune::quant::FileType::Q4_K_M, &out).unwrap();
    compare(&python, &out);
}
