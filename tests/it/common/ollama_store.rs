//! A model store in Ollama's layout, built in a temporary folder for `OLLAMA_MODELS`:
//! `manifests/<host>/<namespace>/<model>/<tag>` (JSON, schemaVersion 2) and
//! `blobs/sha256-<digest>`, as Ollama's manifest/ package writes them.
//!
//! Digests are the blobs' SHA-256 ([`sha256_hex`]), as Ollama names them (neither Ollama nor
//! gguftune hashes a blob when it reads a model).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::hub_server::sha256_hex;

/// Media types of the layers (Ollama's server/images.go).
pub const MODEL: &str = "application/vnd.ollama.image.model";
pub const TEMPLATE: &str = "application/vnd.ollama.image.template";
pub const SYSTEM: &str = "application/vnd.ollama.image.system";
pub const PARAMS: &str = "application/vnd.ollama.image.params";
pub const TENSOR: &str = "application/vnd.ollama.image.tensor";
const CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// A store under construction.
pub struct OllamaStore {
    /// The folder `OLLAMA_MODELS` points at.
    pub root: PathBuf,
}

/// One layer of a manifest: its media type and its blob's bytes.
pub struct Layer {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Layer {
    pub fn new(media_type: &'static str, bytes: impl Into<Vec<u8>>) -> Layer {
        Layer { media_type, bytes: bytes.into() }
    }
}

/// What an Ollama model is made of, for [`OllamaStore::add`].
#[derive(Default)]
pub struct ModelLayers<'a> {
    pub gguf: Option<&'a Path>,
    pub template: Option<&'a str>,
    pub system: Option<&'a str>,
    pub params: Option<Value>,
}

impl OllamaStore {
    /// An empty store in `root`.
    pub fn new(root: &Path) -> OllamaStore {
        fs::create_dir_all(root.join("manifests")).unwrap();
        fs::create_dir_all(root.join("blobs")).unwrap();
        OllamaStore { root: root.to_owned() }
    }

    /// Writes a blob; returns its digest `sha256:<hex>`.
    pub fn blob(&self, bytes: &[u8]) -> String {
        let hex = sha256_hex(bytes);
        fs::write(self.blob_path(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    }

    /// Where the blob of digest hex `hex` lives.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs").join(format!("sha256-{hex}"))
    }

    /// The manifest path of `name_path` (`host/namespace/model/tag`).
    pub fn manifest_path(&self, name_path: &str) -> PathBuf {
        self.root.join("manifests").join(name_path)
    }

    /// Writes the manifest `name_path` (`host/namespace/model/tag`) with a config blob and
    /// `layers`, as `ollama pull` leaves it; returns the manifest's path.
    pub fn manifest(&self, name_path: &str, config: Value, layers: &[Layer]) -> PathBuf {
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = self.blob(&config_bytes);
        let layers: Vec<Value> = layers
            .iter()
            .map(|l| json!({ "mediaType": l.media_type, "digest": self.blob(&l.bytes), "size": l.bytes.len() }))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": { "mediaType": CONFIG, "digest": config_digest, "size": config_bytes.len() },
            "layers": layers,
        });
        let path = self.manifest_path(name_path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        path
    }

    /// Adds a GGUF model with its template, system and parameters layers.
    pub fn add(&self, name_path: &str, model: ModelLayers<'_>) -> PathBuf {
        let mut layers = Vec::new();
        if let Some(gguf) = model.gguf {
            layers.push(Layer::new(MODEL, fs::read(gguf).unwrap()));
        }
        if let Some(template) = model.template {
            layers.push(Layer::new(TEMPLATE, template));
        }
        if let Some(system) = model.system {
            layers.push(Layer::new(SYSTEM, system));
        }
        if let Some(params) = &model.params {
            layers.push(Layer::new(PARAMS, serde_json::to_vec(params).unwrap()));
        }
        let config = json!({ "model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
            "model_type": "1M", "file_type": "Q8_0", "architecture": "amd64", "os": "linux" });
        self.manifest(name_path, config, &layers)
    }
}
