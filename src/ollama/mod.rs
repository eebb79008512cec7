//! Ollama's model store as a source of models: `ollama:NAME[:TAG]` resolved to the GGUF blob
//! Ollama runs, with the template, system prompt and parameters Ollama serves it with.
//!
//! The store (Ollama's manifest/ and server/ packages, envconfig.Models):
//!
//! ```text
//! $OLLAMA_MODELS (else ~/.ollama/models)
//! ├── manifests/<host>/<namespace>/<model>/<tag>     JSON, schemaVersion 2
//! └── blobs/sha256-<64 hex digits>                   one file per layer, named by its digest
//! ```
//!
//! - **Names** ([`ModelName`]): `llama3.2` is `registry.ollama.ai/library/llama3.2:latest`, as
//!   Ollama's types/model/name.go fills in defaults.
//! - **Stores** ([`store_locations`]): `OLLAMA_MODELS` when set (trimmed of spaces and quotes,
//!   as Ollama's `envconfig.Var` reads it), else `~/.ollama/models` (Linux, macOS, Windows) and,
//!   on Linux, `/usr/share/ollama/.ollama/models`, the home of the `ollama` user that the
//!   official install script's system service runs as. The first store with the manifest wins.
//! - **Layers** (server/images.go `GetModel`): the layer of media type
//!   `application/vnd.ollama.image.model` is the GGUF; `.template` (or the older `.prompt`) is
//!   the Go template, `.system` the system prompt, `.params` a JSON object of parameters (`stop`,
//!   `temperature`, ...); `.adapter` and `.projector` layers are LoRA adapters and vision
//!   projectors applied on top. When a media type occurs twice, the last layer wins, as in
//!   Ollama. The manifest's `config` blob may name a built-in `renderer`/`parser` that replaces
//!   the template.
//! - **Refused**: a model stored in Ollama's newer per-tensor layout (layers of
//!   `application/vnd.ollama.image.tensor`, one per tensor, written by its safetensors import),
//!   a GGUF split over several model layers, and a manifest with no model layer (cloud models).
//!
//! Every file read here is capped ([`MAX_MANIFEST_BYTES`], [`MAX_TEXT_LAYER_BYTES`]) before it is
//! read; the GGUF blob itself is only named, and read by whoever opens it (mapped, bounded by the
//! GGUF reader). Nothing here writes to the store.
//!
//! How Ollama renders a chat for the model, and so how `finetune` renders training data for it,
//! is decided in [`ChatFormat`]. [`api`] talks to a running Ollama server over HTTP, to create
//! models in it.

pub mod api;
mod error;
mod format;
mod manifest;
mod name;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use error::OllamaError;
pub use format::{ChatFormat, GgufTemplateReason};
pub use name::{ModelName, DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG};

use manifest::Manifest;

/// The prefix of a model argument that names a model in Ollama's store.
pub const SCHEME: &str = "ollama:";

/// Media type of the GGUF layer.
pub const MEDIA_MODEL: &str = "application/vnd.ollama.image.model";
/// Media type of the Go template layer.
pub const MEDIA_TEMPLATE: &str = "application/vnd.ollama.image.template";
/// Media type of the template layer of models made before Ollama 0.1.14 (read as a template).
pub const MEDIA_PROMPT: &str = "application/vnd.ollama.image.prompt";
/// Media type of the system prompt layer.
pub const MEDIA_SYSTEM: &str = "application/vnd.ollama.image.system";
/// Media type of the parameters layer (a JSON object).
pub const MEDIA_PARAMS: &str = "application/vnd.ollama.image.params";
/// Media type of a LoRA adapter layer.
pub const MEDIA_ADAPTER: &str = "application/vnd.ollama.image.adapter";
/// Media type of a vision projector layer.
pub const MEDIA_PROJECTOR: &str = "application/vnd.ollama.image.projector";
/// Media type of the few-shot messages layer (Modelfile MESSAGE).
pub const MEDIA_MESSAGES: &str = "application/vnd.ollama.image.messages";
/// Media type of one tensor in Ollama's per-tensor layout.
pub const MEDIA_TENSOR: &str = "application/vnd.ollama.image.tensor";

/// The largest manifest read. Ollama's are a few hundred bytes per layer; a per-tensor model
/// with thousands of tensors stays well below this.
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;
/// The largest template, system, parameters or config blob read.
pub const MAX_TEXT_LAYER_BYTES: u64 = 1 << 20;

/// A model in Ollama's store: where its GGUF is, and what Ollama serves it with.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OllamaModel {
    /// The model's full name.
    pub name: ModelName,
    /// The store it was found in (the folder holding `manifests/` and `blobs/`).
    pub store: PathBuf,
    /// Its manifest.
    pub manifest: PathBuf,
    /// The GGUF blob of its model layer.
    pub model_path: PathBuf,
    /// Ollama's Go template (TEMPLATE), when it has one.
    pub template: Option<String>,
    /// Ollama's system prompt (SYSTEM), when it has one.
    pub system: Option<String>,
    /// Ollama's parameters (PARAMETER), as the JSON object it stores.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// The built-in renderer the config names (it replaces the template), if any.
    pub renderer: Option<String>,
    /// The built-in parser the config names, if any.
    pub parser: Option<String>,
    /// LoRA adapter blobs Ollama applies on top of the model.
    pub adapters: Vec<PathBuf>,
    /// Vision projector blobs.
    pub projectors: Vec<PathBuf>,
    /// Whether the model has few-shot messages (MESSAGE) that Ollama puts before every chat.
    pub has_messages: bool,
}

impl OllamaModel {
    /// The stop sequences of its parameters (`PARAMETER stop`).
    pub fn stop(&self) -> Vec<String> {
        match self.parameters.get("stop") {
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
            }
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
}

/// The model name of an argument that starts with [`SCHEME`] (`ollama:llama3.2` ->
/// `llama3.2`), `None` for any other argument.
pub fn source_name(arg: &str) -> Option<&str> {
    arg.strip_prefix(SCHEME)
}

/// Resolves `name` (`model[:tag]`, with Ollama's defaults) in the stores of
/// [`store_locations`].
pub fn resolve(name: &str) -> Result<OllamaModel, OllamaError> {
    let name = ModelName::parse(name)?;
    resolve_in(&name, &store_locations()?)
}

/// The stores to look in, in order: `OLLAMA_MODELS` alone when it is set, else the default
/// locations for this platform under `HOME` (`USERPROFILE` on Windows).
pub fn store_locations() -> Result<Vec<PathBuf>, OllamaError> {
    let home = std::env::var_os(if cfg!(windows) { "USERPROFILE" } else { "HOME" });
    let stores = locations(std::env::var_os("OLLAMA_MODELS"), home, cfg!(target_os = "linux"));
    if stores.is_empty() {
        return Err(OllamaError::NoStore);
    }
    Ok(stores)
}

/// [`store_locations`] for given values of `OLLAMA_MODELS` and the home folder.
fn locations(ollama_models: Option<OsString>, home: Option<OsString>, linux: bool) -> Vec<PathBuf> {
    // Ollama's envconfig.Var: surrounding spaces, then quotes, are not part of the value.
    if let Some(dir) = ollama_models.as_ref().and_then(|v| v.to_str().map(|s| s.trim().trim_matches(['"', '\'']))) {
        if !dir.is_empty() {
            return vec![PathBuf::from(dir)];
        }
    } else if let Some(dir) = ollama_models.filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let mut stores: Vec<PathBuf> =
        home.filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".ollama").join("models")).into_iter().collect();
    if linux {
        stores.push(PathBuf::from("/usr/share/ollama/.ollama/models"));
    }
    stores
}

/// Resolves `name` in the first of `stores` that has its manifest.
pub fn resolve_in(name: &ModelName, stores: &[PathBuf]) -> Result<OllamaModel, OllamaError> {
    let looked_at: Vec<PathBuf> = stores.iter().map(|s| s.join("manifests").join(name.manifest_path())).collect();
    let Some((store, manifest_path)) = stores.iter().zip(&looked_at).find(|(_, m)| m.is_file()) else {
        let available = stores.iter().flat_map(|s| list_models(s)).take(MAX_LISTED).collect();
        return Err(OllamaError::UnknownModel { name: name.to_string(), looked_at, available });
    };
    let bytes = read_capped(manifest_path, MAX_MANIFEST_BYTES, "the manifest")?;
    let manifest = Manifest::parse(&bytes, name, manifest_path)?;
    Store { name, store, manifest: manifest_path }.model(&manifest)
}

/// How many stored models an unknown-model error lists.
const MAX_LISTED: usize = 12;

/// Up to [`MAX_LISTED`] models of `store` as `name:tag`, sorted; empty when it cannot be read.
fn list_models(store: &Path) -> Vec<String> {
    let dir_names = |dir: &Path| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut names: Vec<String> =
            entries.flatten().take(1000).filter_map(|e| e.file_name().into_string().ok()).collect();
        names.sort();
        names
    };
    let manifests = store.join("manifests");
    let mut out = Vec::new();
    for host in dir_names(&manifests) {
        for namespace in dir_names(&manifests.join(&host)) {
            for model in dir_names(&manifests.join(&host).join(&namespace)) {
                for tag in dir_names(&manifests.join(&host).join(&namespace).join(&model)) {
                    let full = format!("{host}/{namespace}/{model}:{tag}");
                    if let Ok(name) = ModelName::parse(&full) {
                        out.push(name.shortest());
                    }
                    if out.len() >= MAX_LISTED {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// Reads all of `path`, refusing a file longer than `limit_bytes`.
fn read_capped(path: &Path, limit_bytes: u64, what: &'static str) -> Result<Vec<u8>, OllamaError> {
    let io = |source| OllamaError::Io { path: path.to_owned(), source };
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(io)?.take(limit_bytes + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit_bytes {
        return Err(OllamaError::TooLarge { path: path.to_owned(), what, limit_bytes });
    }
    Ok(bytes)
}

/// One model's manifest in one store, while its layers are read.
struct Store<'a> {
    name: &'a ModelName,
    store: &'a Path,
    manifest: &'a Path,
}

impl Store<'_> {
    /// The blob of a layer, checked to exist.
    fn blob(&self, layer: &manifest::Layer) -> Result<PathBuf, OllamaError> {
        let path = self.store.join("blobs").join(layer.blob_file_name());
        if !path.is_file() {
            return Err(OllamaError::MissingBlob {
                name: self.name.to_string(),
                manifest: self.manifest.to_owned(),
                media_type: layer.media_type.clone(),
                digest: layer.digest.clone(),
                path,
            });
        }
        Ok(path)
    }

    /// A text layer's contents.
    fn text(&self, layer: &manifest::Layer, what: &'static str) -> Result<String, OllamaError> {
        let path = self.blob(layer)?;
        let bytes = read_capped(&path, MAX_TEXT_LAYER_BYTES, what)?;
        String::from_utf8(bytes).map_err(|_| OllamaError::NotUtf8 { name: self.name.to_string(), path, what })
    }

    /// A JSON object layer's contents.
    fn json(
        &self,
        layer: &manifest::Layer,
        what: &'static str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, OllamaError> {
        let path = self.blob(layer)?;
        let bytes = read_capped(&path, MAX_TEXT_LAYER_BYTES, what)?;
        let bad =
            |detail: String| OllamaError::BadJson { name: self.name.to_string(), path: path.clone(), what, detail };
        match serde_json::from_slice(&bytes) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(other) => Err(bad(format!("found {}", json_kind(&other)))),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// The model, read from its layers as Ollama's `GetModel` reads them.
    fn model(&self, manifest: &Manifest) -> Result<OllamaModel, OllamaError> {
        let config = match &manifest.config {
            Some(layer) => self.json(layer, "config")?,
            None => serde_json::Map::new(),
        };
        let config_str =
            |key: &str| config.get(key).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_owned);
        let models: Vec<&manifest::Layer> = manifest.layers_of(MEDIA_MODEL).collect();
        let model_layer = match models.as_slice() {
            [one] => *one,
            [] => {
                let n_tensor_layers = manifest.layers_of(MEDIA_TENSOR).count();
                if n_tensor_layers > 0 {
                    return Err(OllamaError::TensorLayout {
                        name: self.name.to_string(),
                        manifest: self.manifest.to_owned(),
                        n_tensor_layers,
                        media_type: MEDIA_TENSOR,
                    });
                }
                return Err(OllamaError::NoModelLayer {
                    name: self.name.to_string(),
                    manifest: self.manifest.to_owned(),
                    media_type: MEDIA_MODEL,
                    remote: config_str("remote_host"),
                });
            }
            parts => {
                return Err(OllamaError::SplitGguf {
                    name: self.name.to_string(),
                    manifest: self.manifest.to_owned(),
                    n_parts: parts.len(),
                })
            }
        };
        let mut model = OllamaModel {
            name: self.name.clone(),
            store: self.store.to_owned(),
            manifest: self.manifest.to_owned(),
            model_path: self.blob(model_layer)?,
            template: None,
            system: None,
            parameters: serde_json::Map::new(),
            renderer: config_str("renderer"),
            parser: config_str("parser"),
            adapters: Vec::new(),
            projectors: Vec::new(),
            has_messages: false,
        };
        for layer in &manifest.layers {
            match layer.media_type.as_str() {
                MEDIA_TEMPLATE | MEDIA_PROMPT => model.template = Some(self.text(layer, "template layer")?),
                MEDIA_SYSTEM => model.system = Some(self.text(layer, "system layer")?),
                MEDIA_PARAMS => model.parameters = self.json(layer, "parameters layer")?,
                MEDIA_ADAPTER => model.adapters.push(self.blob(layer)?),
                MEDIA_PROJECTOR => model.projectors.push(self.blob(layer)?),
                MEDIA_MESSAGES => model.has_messages = true,
                _ => {}
            }
        }
        Ok(model)
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_models_alone_when_set_else_the_default_locations() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(locations(os(" '/srv/ollama' "), os("/home/u"), true), vec![PathBuf::from("/srv/ollama")]);
        assert_eq!(
            locations(os(""), os("/home/u"), true),
            vec![PathBuf::from("/home/u/.ollama/models"), PathBuf::from("/usr/share/ollama/.ollama/models")]
        );
        assert_eq!(locations(None, os("/Users/u"), false), vec![PathBuf::from("/Users/u/.ollama/models")]);
        assert!(locations(None, None, false).is_empty());
    }

    #[test]
    fn stop_reads_a_list_or_a_single_string() {
        let stores = [PathBuf::from("/nowhere")];
        let name = ModelName::parse("m").unwrap();
        let e = resolve_in(&name, &stores).unwrap_err();
        assert!(matches!(e, OllamaError::UnknownModel { .. }), "{e}");
        let mut model = OllamaModel {
            name,
            store: stores[0].clone(),
            manifest: PathBuf::new(),
            model_path: PathBuf::new(),
            template: None,
            system: None,
            parameters: serde_json::Map::new(),
            renderer: None,
            parser: None,
            adapters: Vec::new(),
            projectors: Vec::new(),
            has_messages: false,
        };
        assert!(model.stop().is_empty());
        model.parameters.insert("stop".into(), serde_json::json!(["<|eot_id|>", "<|end|>"]));
        assert_eq!(model.stop(), ["<|eot_id|>", "<|end|>"]);
        model.parameters.insert("stop".into(), serde_json::json!("###"));
        assert_eq!(model.stop(), ["###"]);
    }
}
