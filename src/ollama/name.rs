//! Ollama model names: `[host/][namespace/]model[:tag]`, with Ollama's defaults and rules.
//!
//! Mirrors Ollama's types/model/name.go: `ParseNameBare` (the tag is what follows the last `:`
//! when that comes after the last `/`; then model, namespace and host from the right, split at
//! `/`; a `scheme://` before the host is dropped), merged with `DefaultName` (host
//! `registry.ollama.ai`, namespace `library`, tag `latest`), and `isValidPart` (each part 1 to
//! 80 bytes, 350 for the host, starting with a letter, digit or `_`, then letters, digits, `_`,
//! `-`, and `.` except in the namespace, and `:` only in the host). A valid name cannot climb
//! out of the manifests folder: no part is empty, `.` or `..`, or holds a `/`.

use std::fmt;
use std::path::PathBuf;

use super::OllamaError;

/// Ollama's default registry.
pub const DEFAULT_HOST: &str = "registry.ollama.ai";
/// Ollama's default namespace, that of its library.
pub const DEFAULT_NAMESPACE: &str = "library";
/// Ollama's default tag.
pub const DEFAULT_TAG: &str = "latest";

/// What a name looks like, for error messages.
const EXPECTED: &str = "expected [host/][namespace/]model[:tag], parts of letters, digits, '_', '-' and '.'";

/// A fully qualified Ollama model name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelName {
    /// The registry, `registry.ollama.ai` by default.
    pub host: String,
    /// The namespace, `library` by default.
    pub namespace: String,
    /// The model.
    pub model: String,
    /// The tag, `latest` by default.
    pub tag: String,
}

/// Which part of a name a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Host,
    Namespace,
    Model,
    Tag,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Host => "host",
            Part::Namespace => "namespace",
            Part::Model => "model",
            Part::Tag => "tag",
        }
    }
}

impl ModelName {
    /// Parses a name as Ollama does, filling in the default host, namespace and tag.
    pub fn parse(s: &str) -> Result<ModelName, OllamaError> {
        let bad = |part: Part, found: &str| OllamaError::BadName {
            name: s.to_owned(),
            problem: format!("the {} part '{found}' is not valid", part.name()),
            expected: EXPECTED,
        };
        // The tag follows the last ':' when that comes after the last '/' (a ':' before it
        // belongs to the host's port).
        let (rest, tag) = match (s.rfind(':'), s.rfind('/')) {
            (Some(colon), slash) if slash.is_none_or(|slash| colon > slash) => (&s[..colon], Some(&s[colon + 1..])),
            _ => (s, None),
        };
        let mut parts = rest.rsplitn(3, '/');
        let model = parts.next().unwrap_or_default();
        let namespace = parts.next();
        // A scheme (`https://host/...`) is not part of the name on disk.
        let host = parts.next().map(|h| h.split_once("://").map_or(h, |(_, host)| host));
        let name = ModelName {
            host: host.unwrap_or(DEFAULT_HOST).to_owned(),
            namespace: namespace.unwrap_or(DEFAULT_NAMESPACE).to_owned(),
            model: model.to_owned(),
            tag: tag.unwrap_or(DEFAULT_TAG).to_owned(),
        };
        for (part, value) in [
            (Part::Host, &name.host),
            (Part::Namespace, &name.namespace),
            (Part::Model, &name.model),
            (Part::Tag, &name.tag),
        ] {
            if !is_valid_part(part, value) {
                return Err(bad(part, value));
            }
        }
        Ok(name)
    }

    /// The manifest's path below a store's `manifests` folder: `host/namespace/model/tag`.
    pub fn manifest_path(&self) -> PathBuf {
        [&self.host, &self.namespace, &self.model, &self.tag].iter().collect()
    }

    /// The shortest name Ollama resolves back to this one (its `DisplayShortest`): `model:tag`
    /// in the default namespace of the default registry, `namespace/model:tag` in another
    /// namespace, the whole name on another registry. What a Modelfile's FROM says.
    pub fn shortest(&self) -> String {
        if !self.host.eq_ignore_ascii_case(DEFAULT_HOST) {
            format!("{}/{}/{}:{}", self.host, self.namespace, self.model, self.tag)
        } else if !self.namespace.eq_ignore_ascii_case(DEFAULT_NAMESPACE) {
            format!("{}/{}:{}", self.namespace, self.model, self.tag)
        } else {
            format!("{}:{}", self.model, self.tag)
        }
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shortest())
    }
}

/// Ollama's `isValidPart`.
fn is_valid_part(part: Part, s: &str) -> bool {
    let max = if part == Part::Host { 350 } else { 80 };
    if s.is_empty() || s.len() > max {
        return false;
    }
    s.bytes().enumerate().all(|(i, c)| {
        let word = c.is_ascii_alphanumeric() || c == b'_';
        match c {
            _ if i == 0 => word,
            b'-' => true,
            b'.' => part != Part::Namespace,
            b':' => part == Part::Host,
            _ => word,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, String, String) {
        let n = ModelName::parse(s).unwrap();
        (n.host, n.namespace, n.model, n.tag)
    }

    fn owned(p: (&str, &str, &str, &str)) -> (String, String, String, String) {
        (p.0.into(), p.1.into(), p.2.into(), p.3.into())
    }

    #[test]
    fn defaults_fill_the_missing_parts_as_ollama_does() {
        assert_eq!(parts("llama3.2"), owned((DEFAULT_HOST, "library", "llama3.2", "latest")));
        assert_eq!(parts("llama3.2:1b"), owned((DEFAULT_HOST, "library", "llama3.2", "1b")));
        assert_eq!(parts("me/tuned:v1"), owned((DEFAULT_HOST, "me", "tuned", "v1")));
        assert_eq!(parts("hf.co/bartowski/Qwen2-GGUF:Q4_K_M"), owned(("hf.co", "bartowski", "Qwen2-GGUF", "Q4_K_M")));
        assert_eq!(parts("localhost:5000/me/m"), owned(("localhost:5000", "me", "m", "latest")));
        assert_eq!(parts("https://example.com/me/m:t"), owned(("example.com", "me", "m", "t")));
    }

    #[test]
    fn invalid_names_are_refused_and_none_climbs_out_of_the_store() {
        for bad in
            ["", ":", "m:", ":t", "../m", "m/..", "a/b/c/d", "me.x/m", "m:t:u/", "-m", "m t", "m:t/x", "/m", "m@sha256"]
        {
            assert!(matches!(ModelName::parse(bad), Err(OllamaError::BadName { .. })), "{bad:?}");
        }
        assert!(ModelName::parse(&"m".repeat(81)).is_err());
        assert!(ModelName::parse(&"m".repeat(80)).is_ok());
    }

    #[test]
    fn the_shortest_form_resolves_back_to_the_same_name() {
        for (s, short) in [
            ("llama3.2", "llama3.2:latest"),
            ("registry.ollama.ai/library/qwen2:0.5b", "qwen2:0.5b"),
            ("me/tuned", "me/tuned:latest"),
            ("hf.co/a/b:Q8_0", "hf.co/a/b:Q8_0"),
        ] {
            let name = ModelName::parse(s).unwrap();
            assert_eq!(name.shortest(), short);
            assert_eq!(ModelName::parse(short).unwrap(), name);
        }
        let name = ModelName::parse("me/tuned:v2").unwrap();
        assert_eq!(name.manifest_path(), PathBuf::from("registry.ollama.ai/me/tuned/v2"));
    }
}
