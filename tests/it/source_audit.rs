//! Checks on the sources themselves: `unsafe` and the FFI crate stay in their two modules.

use std::fs;
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_and_ffi_live_only_in_ggml_and_mmap() {
    let src = crate::common::repo_root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5);
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        if rel.starts_with("ggml/") || rel == "io/mmap.rs" || rel == "lib.rs" {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            assert!(!code.contains("unsafe"), "{rel}:{}: unsafe outside src/ggml and src/io/mmap.rs", i + 1);
            assert!(!code.contains("llama_cpp_sys_2"), "{rel}:{}: FFI crate used outside src/ggml", i + 1);
        }
    }
}
