//! Compiles ggml's RPC backend (`ggml/src/ggml-rpc/`) from the llama.cpp sources that
//! `llama-cpp-sys-2` bundles and builds, into a static library linked beside that crate's ggml.
//!
//! `llama-cpp-sys-2` has no RPC feature (its CMake build sets `GGML_RPC=OFF`), but the sources are
//! in the crate. Compiling the two files of the backend here, against the same headers, gives
//! the RPC functions with exactly one ggml in the program: `ggml-rpc.cpp` only calls ggml's
//! public and backend-interface functions, which `libggml-base.a` of `llama-cpp-sys-2` defines,
//! and that library defines no RPC symbol (it was configured without RPC), so nothing clashes.
//!
//! Where the sources are: `llama-cpp-sys-2` declares `links = "llama"` and its CMake build
//! prints `cargo:root=OUT_DIR`, so cargo gives this script `DEP_LLAMA_ROOT`, the folder holding
//! that build. Its `build/CMakeCache.txt` records `ggml_SOURCE_DIR`, the ggml folder CMake
//! compiled (the crate's `llama.cpp/ggml`, wherever cargo unpacked or vendored it). Reading it
//! there finds the very sources the linked libraries came from, with no path guessed and no
//! search of `~/.cargo`.
//!
//! Compile definitions, as ggml's CMake gives a statically linked backend
//! (`ggml_add_backend_library` in `ggml/src/CMakeLists.txt` adds `GGML_BACKEND_BUILD` and
//! `GGML_BACKEND_SHARED` only to shared builds, and `GGML_BACKEND_DL` only with dynamic
//! backends, none of which applies here); `GGML_RPC_RDMA` is left out (TCP only, as
//! `ggml-rpc/CMakeLists.txt` does when libibverbs is absent). `_GNU_SOURCE` and
//! `_XOPEN_SOURCE=600` are those ggml-base is compiled with.
//!
//! The RPC protocol version and the HELLO message layout are read from the same sources and
//! passed to the crate as `GGML_RPC_PROTO_*` environment variables, so the Rust side that greets
//! a server before ggml connects to it (ggml aborts when the server is absent or of another
//! version) cannot drift from the C++ side.

use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(env("DEP_LLAMA_ROOT"));
    let cache = root.join("build").join("CMakeCache.txt");
    let ggml = ggml_source_dir(&cache);
    let rpc = ggml.join("src").join("ggml-rpc");
    // Should llama-cpp-sys-2 ever build ggml with RPC itself, its libraries have the backend:
    // compiling it again would define every RPC symbol twice.
    let compiled_in = cache_has(&cache, "GGML_RPC:BOOL=ON");
    let sources = [rpc.join("ggml-rpc.cpp"), rpc.join("transport.cpp")];
    for source in &sources {
        if !source.is_file() {
            fail(&format!("{} (named by {}) does not exist", source.display(), cache.display()));
        }
        println!("cargo:rerun-if-changed={}", source.display());
    }
    println!("cargo:rerun-if-changed={}", cache.display());

    if !compiled_in {
        compile(&ggml, &sources);
    }
    protocol_constants(&ggml, &rpc);
}

/// Compiles the RPC backend into a static library `gguftune-ggml-rpc`, which cargo links.
fn compile(ggml: &Path, sources: &[PathBuf]) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .files(sources)
        .include(ggml.join("include"))
        .include(ggml.join("src"))
        .define("_GNU_SOURCE", None)
        .define("_XOPEN_SOURCE", "600")
        .define("NDEBUG", None)
        // ggml's own build is optimised in every profile (RelWithDebInfo in debug builds); the
        // RPC backend copies tensors and serializes graphs, nothing that needs debugging here.
        .opt_level(2)
        .debug(false)
        .warnings(false);
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
        println!("cargo:rustc-link-lib=ws2_32");
    }
    build.compile("gguftune-ggml-rpc");
}

/// The RPC protocol version and the size of the HELLO capabilities, as environment variables of
/// the crate.
fn protocol_constants(ggml: &Path, rpc: &Path) {
    let header = ggml.join("include").join("ggml-rpc.h");
    let transport = rpc.join("transport.h");
    for (name, file, pattern) in [
        ("GGML_RPC_PROTO_MAJOR", &header, "#define RPC_PROTO_MAJOR_VERSION"),
        ("GGML_RPC_PROTO_MINOR", &header, "#define RPC_PROTO_MINOR_VERSION"),
        ("GGML_RPC_PROTO_PATCH", &header, "#define RPC_PROTO_PATCH_VERSION"),
        ("GGML_RPC_CONN_CAPS_SIZE", &transport, "static constexpr size_t RPC_CONN_CAPS_SIZE ="),
    ] {
        println!("cargo:rustc-env={name}={}", integer_after(file, pattern));
        println!("cargo:rerun-if-changed={}", file.display());
    }
}

/// Whether the CMake cache has the line `entry`.
fn cache_has(cache: &Path, entry: &str) -> bool {
    std::fs::read_to_string(cache).is_ok_and(|text| text.lines().any(|line| line.trim() == entry))
}

/// `ggml_SOURCE_DIR` from the CMake cache of llama-cpp-sys-2's build.
fn ggml_source_dir(cache: &Path) -> PathBuf {
    let text = std::fs::read_to_string(cache).unwrap_or_else(|e| {
        fail(&format!("cannot read {} ({e}): is llama-cpp-sys-2 built with CMake?", cache.display()))
    });
    text.lines()
        .find_map(|line| line.strip_prefix("ggml_SOURCE_DIR:STATIC="))
        .map(PathBuf::from)
        .unwrap_or_else(|| fail(&format!("{} has no ggml_SOURCE_DIR entry", cache.display())))
}

/// The integer that follows `pattern` on its line of `file` (a `#define` or a constant).
fn integer_after(file: &Path, pattern: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", file.display())));
    text.lines()
        .find_map(|line| line.trim().strip_prefix(pattern))
        .and_then(|rest| rest.trim().trim_end_matches(';').trim().parse().ok())
        .unwrap_or_else(|| fail(&format!("{} has no line `{pattern} <integer>`", file.display())))
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        fail(&format!("{name} is not set: llama-cpp-sys-2 (links = \"llama\") must be a dependency"))
    })
}

fn fail(message: &str) -> ! {
    panic!("building ggml's RPC backend: {message}");
}
