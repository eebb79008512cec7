//! Errors of finding a model in Ollama's store: each names the model, the file and what to do.

use std::path::PathBuf;

/// Why an `ollama:` model could not be found or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OllamaError {
    /// The name is not an Ollama model name.
    #[error("'{name}' is not an Ollama model name: {problem} ({expected})")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: String,
        /// What a name looks like.
        expected: &'static str,
    },
    /// Neither `OLLAMA_MODELS` nor `HOME` is set, so there is no store to look in.
    #[error("no Ollama model store: OLLAMA_MODELS and HOME are both unset (hint: set OLLAMA_MODELS to the folder that holds Ollama's manifests/ and blobs/)")]
    NoStore,
    /// No store has a manifest for the name.
    #[error(
        "no Ollama model '{name}': no manifest at {}{} (hint: `ollama pull {name}`, or set OLLAMA_MODELS to the store that has it)",
        list_paths(looked_at),
        available_text(available)
    )]
    UnknownModel {
        /// The name, as Ollama displays it.
        name: String,
        /// Every manifest path looked at, in order.
        looked_at: Vec<PathBuf>,
        /// Some models the stores do have (`model:tag`), to spot a typo.
        available: Vec<String>,
    },
    /// A manifest or one of the small blobs could not be read.
    #[error("reading {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A manifest or a text blob is larger than any Ollama writes.
    #[error("{}: {what} is larger than {limit_bytes} bytes, more than Ollama ever writes (hint: the store may be damaged; `ollama pull` the model again)", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What the file should be ("the manifest", "the template layer", ...).
        what: &'static str,
        /// The cap.
        limit_bytes: u64,
    },
    /// The manifest is not the JSON Ollama writes.
    #[error("{}: not an Ollama manifest: {detail} (hint: `ollama pull {name}` writes it again)", path.display())]
    BadManifest {
        /// The model.
        name: String,
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The model is stored as tensors in separate blobs (Ollama's safetensors-based layout),
    /// not as one GGUF.
    #[error("{name}: Ollama stores this model in its per-tensor layout ({n_tensor_layers} layers of {media_type} in {}), not as one GGUF file, and gguftune trains on GGUF models (hint: use a GGUF build of the model: `gguftune convert` its Hugging Face checkpoint, or pull a GGUF tag of it)", manifest.display())]
    TensorLayout {
        /// The model.
        name: String,
        /// The manifest.
        manifest: PathBuf,
        /// How many tensor layers it lists.
        n_tensor_layers: usize,
        /// Their media type.
        media_type: &'static str,
    },
    /// The model's GGUF is split over several blobs.
    #[error("{name}: the model is a GGUF split into {n_parts} parts ({}), and gguftune reads a model from one file (hint: merge the parts with llama.cpp's `llama-gguf-split --merge` and fine-tune that file)", manifest.display())]
    SplitGguf {
        /// The model.
        name: String,
        /// The manifest.
        manifest: PathBuf,
        /// How many model layers it lists.
        n_parts: usize,
    },
    /// The manifest has no model layer (a cloud model, or a manifest of something else).
    #[error("{name}: the manifest {} has no layer of {media_type}{} (hint: gguftune needs a model whose weights Ollama stores locally as a GGUF)", manifest.display(), remote_text(remote))]
    NoModelLayer {
        /// The model.
        name: String,
        /// The manifest.
        manifest: PathBuf,
        /// The media type looked for.
        media_type: &'static str,
        /// The remote host of a cloud model, when the config says so.
        remote: Option<String>,
    },
    /// A layer's digest is not `sha256:` and 64 hex digits.
    #[error("{}: layer {media_type} has digest '{digest}', not sha256:<64 hex digits> (hint: `ollama pull {name}` writes the manifest again)", manifest.display())]
    BadDigest {
        /// The model.
        name: String,
        /// The manifest.
        manifest: PathBuf,
        /// The layer's media type.
        media_type: String,
        /// The digest as written.
        digest: String,
    },
    /// The manifest names a blob the store does not have.
    #[error("{name}: the manifest {} names blob {digest} ({media_type}), and {} does not exist (hint: `ollama pull {name}` fetches it again)", manifest.display(), path.display())]
    MissingBlob {
        /// The model.
        name: String,
        /// The manifest.
        manifest: PathBuf,
        /// The layer's media type.
        media_type: String,
        /// The digest.
        digest: String,
        /// Where the blob should be.
        path: PathBuf,
    },
    /// A text layer (template, system prompt) is not UTF-8.
    #[error("{}: the {what} of {name} is not UTF-8", path.display())]
    NotUtf8 {
        /// The model.
        name: String,
        /// The blob.
        path: PathBuf,
        /// Which layer.
        what: &'static str,
    },
    /// The parameters or config layer is not the JSON object Ollama writes.
    #[error("{}: the {what} of {name} is not a JSON object: {detail}", path.display())]
    BadJson {
        /// The model.
        name: String,
        /// The blob.
        path: PathBuf,
        /// Which layer.
        what: &'static str,
        /// What the parser said.
        detail: String,
    },
}

impl OllamaError {
    /// Whether the error is a failure to read a file that is there (exit code 4), rather than
    /// a store or name that is not what it should be (3).
    pub fn is_io(&self) -> bool {
        matches!(self, OllamaError::Io { .. })
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(" or ")
}

fn available_text(available: &[String]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        format!("; the store has {}", available.join(", "))
    }
}

fn remote_text(remote: &Option<String>) -> String {
    remote.as_deref().map_or_else(String::new, |host| format!(": it is a cloud model that runs on {host}"))
}
