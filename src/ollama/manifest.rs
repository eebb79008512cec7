//! An Ollama manifest: the JSON file that lists a model's layers by media type and digest.
//!
//! ```json
//! {"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
//!  "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:…","size":485},
//!  "layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:…","size":1321082688}, …]}
//! ```
//!
//! Mirrors Ollama's manifest/manifest.go (`Manifest`, `Layer`) and manifest/paths.go
//! (`BlobsPath`: only `sha256:` or `sha256-` followed by 64 hex digits is a digest; the blob's
//! file name is the digest with `:` turned into `-`).

use std::path::Path;

use serde::Deserialize;

use super::{ModelName, OllamaError};

/// The schema version Ollama writes and reads.
const SCHEMA_VERSION: u64 = 2;

/// A parsed, checked manifest.
#[derive(Debug)]
pub(super) struct Manifest {
    /// The config layer, when it names a blob.
    pub(super) config: Option<Layer>,
    /// The layers, in order.
    pub(super) layers: Vec<Layer>,
}

/// One layer: a blob and what it holds.
#[derive(Debug, Deserialize)]
pub(super) struct Layer {
    /// What the blob holds (`application/vnd.ollama.image.model`, ...).
    #[serde(rename = "mediaType")]
    pub(super) media_type: String,
    /// `sha256:<64 hex digits>`.
    pub(super) digest: String,
}

impl Layer {
    /// The blob's file name in the store's `blobs/` folder.
    pub(super) fn blob_file_name(&self) -> String {
        self.digest.replacen(':', "-", 1)
    }
}

#[derive(Debug, Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u64,
    #[serde(default)]
    config: Option<RawConfig>,
    layers: Vec<Layer>,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    digest: String,
}

impl Manifest {
    /// Parses the manifest `bytes` of model `name`, read from `path`.
    pub(super) fn parse(bytes: &[u8], name: &ModelName, path: &Path) -> Result<Manifest, OllamaError> {
        let bad = |detail: String| OllamaError::BadManifest { name: name.to_string(), path: path.to_owned(), detail };
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if raw.schema_version != SCHEMA_VERSION {
            return Err(bad(format!("schemaVersion {} (expected {SCHEMA_VERSION})", raw.schema_version)));
        }
        let config =
            raw.config.filter(|c| !c.digest.is_empty()).map(|c| Layer { media_type: c.media_type, digest: c.digest });
        for layer in config.iter().chain(&raw.layers) {
            if !is_digest(&layer.digest) {
                return Err(OllamaError::BadDigest {
                    name: name.to_string(),
                    manifest: path.to_owned(),
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                });
            }
        }
        Ok(Manifest { config, layers: raw.layers })
    }

    /// The layers of one media type, in order.
    pub(super) fn layers_of<'a>(&'a self, media_type: &'a str) -> impl Iterator<Item = &'a Layer> + 'a {
        self.layers.iter().filter(move |l| l.media_type == media_type)
    }
}

/// Ollama's digest pattern `^sha256[:-][0-9a-fA-F]{64}$`.
fn is_digest(digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").or_else(|| digest.strip_prefix("sha256-"));
    hex.is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, OllamaError> {
        Manifest::parse(text.as_bytes(), &ModelName::parse("m").unwrap(), Path::new("manifest"))
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn layers_and_config_are_read_and_digests_checked() {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{HEX}","size":9}},
            "layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{HEX}","size":1,"from":"/x"}}]}}"#
        );
        let m = parse(&text).unwrap();
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].blob_file_name(), format!("sha256-{HEX}"));
        assert!(m.config.is_some());
        assert_eq!(m.layers_of("application/vnd.ollama.image.model").count(), 1);

        let bad_digest = text.replace(&format!("sha256:{HEX}\",\"size\":1"), "sha256:../../etc\",\"size\":1");
        assert!(matches!(parse(&bad_digest), Err(OllamaError::BadDigest { .. })));
        let v1 = text.replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert!(matches!(parse(&v1), Err(OllamaError::BadManifest { .. })));
        for broken in ["", "[]", "{\"schemaVersion\":2}", "{\"schemaVersion\":2,\"layers\":{}}"] {
            assert!(matches!(parse(broken), Err(OllamaError::BadManifest { .. })), "{broken:?}");
        }
    }

    #[test]
    fn a_config_without_digest_is_no_config() {
        let m = parse(r#"{"schemaVersion":2,"config":{"digest":""},"layers":[]}"#).unwrap();
        assert!(m.config.is_none() && m.layers.is_empty());
    }
}
