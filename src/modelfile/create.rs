//! Making an Ollama model of a base model and a LoRA adapter through the Ollama server's HTTP
//! API ([`crate::ollama::api`]), as `ollama create -f Modelfile` does, without the `ollama`
//! program:
//!
//! 1. a base named by Ollama (`from`) must be one the server has ([`CreateError::UnknownBase`]:
//!    the server itself would pull a model it lacks);
//! 2. each file (a base GGUF, the adapter) is hashed, and uploaded unless the server already has
//!    its blob;
//! 3. `POST /api/create` carries `from` or `files`, the `adapters`, and the template, system
//!    prompt and parameters the Modelfile sets;
//! 4. when the server refuses the adapter (newer Ollama refuses every `adapters` request:
//!    `errAdaptersUnsupported`, "LoRA adapters are no longer supported", in its server/create.go),
//!    or when the caller asks for it ([`MergeWhen::Always`]), the adapter is merged into the base
//!    ([`crate::adapter::merge`], every tensor keeping the base's type) into
//!    `<adapter>.merged.gguf` next to the adapter, and that file is the model's GGUF. A base named
//!    by Ollama is then read from Ollama's local store, and its template, system prompt and
//!    parameters go into the request, since `files` does not inherit them as `from` does.
//!
//! Nothing here prints: the caller sees progress and the server's status lines as
//! [`CreateEvent`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::parse::{from_path, ParsedModelfile};
use super::{FamilySource, Modelfile, ModelfileError};
use crate::adapter::{merge, MergeError, MergeInput};
use crate::ollama::api::{file_digest, ApiError, BlobDigest, CreateRequest, Message, OllamaClient};
use crate::ollama::{ModelName, OllamaError};

/// The model an adapter is applied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A GGUF file, uploaded as a blob.
    File(PathBuf),
    /// A model the server has, by name.
    Ollama(ModelName),
}

/// What to create: the name, the base, the adapter, and what a Modelfile's TEMPLATE, SYSTEM,
/// PARAMETER, LICENSE and MESSAGE lines set (unset: inherited from a `from` base).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSpec {
    /// The new model's name.
    pub name: String,
    /// Its base.
    pub base: Base,
    /// The LoRA adapter (GGUF).
    pub adapter: PathBuf,
    /// TEMPLATE.
    pub template: Option<String>,
    /// SYSTEM.
    pub system: Option<String>,
    /// PARAMETER lines as Ollama's API takes them (`stop` a list).
    pub parameters: Map<String, Value>,
    /// LICENSE texts.
    pub license: Vec<String>,
    /// MESSAGE lines: role and content.
    pub messages: Vec<(String, String)>,
}

impl CreateSpec {
    /// The spec of a Modelfile planned here for `adapter` on `base`.
    pub fn from_modelfile(name: &str, base: Base, adapter: &Path, modelfile: &Modelfile) -> CreateSpec {
        let mut spec = CreateSpec {
            name: name.to_owned(),
            base,
            adapter: adapter.to_owned(),
            template: None,
            system: None,
            parameters: Map::new(),
            license: Vec::new(),
            messages: Vec::new(),
        };
        // A Modelfile FROM an Ollama model of a family gguftune writes keeps that model's
        // template, system prompt and parameters: it writes none of them (see `to_text`).
        if modelfile.family_source != FamilySource::Ollama {
            spec.template = Some(modelfile.template.clone());
            spec.system = modelfile.system.clone();
            if !modelfile.stop.is_empty() {
                spec.parameters.insert("stop".into(), modelfile.stop.iter().map(|s| Value::from(s.as_str())).collect());
            }
        }
        spec
    }

    /// The spec of a Modelfile read back from `path` (FROM and ADAPTER relative to its folder).
    /// `adapter` is the adapter the caller means: the Modelfile's one ADAPTER must be that file.
    pub fn from_parsed(
        name: &str,
        parsed: &ParsedModelfile,
        path: &Path,
        adapter: &Path,
    ) -> Result<CreateSpec, ModelfileError> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let named = match parsed.adapters.as_slice() {
            [one] => one,
            [] => return Err(ModelfileError::NoAdapterLine { path: path.to_owned() }),
            [..] => return Err(ModelfileError::SeveralAdapters { path: path.to_owned(), n: parsed.adapters.len() }),
        };
        let adapter_path =
            std::fs::canonicalize(adapter).map_err(|source| ModelfileError::Io { path: adapter.to_owned(), source })?;
        let same = std::fs::canonicalize(dir.join(named)).is_ok_and(|named| named == adapter_path);
        if !same {
            return Err(ModelfileError::OtherAdapter {
                path: path.to_owned(),
                named: named.clone(),
                adapter: adapter.to_owned(),
            });
        }
        let base = match from_path(&parsed.from, dir) {
            Some(file) => Base::File(file),
            None => Base::Ollama(
                ModelName::parse(&parsed.from)
                    .map_err(|_| ModelfileError::BadFrom { path: path.to_owned(), from: parsed.from.clone() })?,
            ),
        };
        let mut parameters = Map::new();
        for (key, value) in &parsed.parameters {
            if key == "stop" {
                let stops = parameters.entry("stop").or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = stops {
                    list.push(Value::from(value.as_str()));
                }
            } else {
                parameters.insert(key.clone(), parameter_value(value));
            }
        }
        Ok(CreateSpec {
            name: name.to_owned(),
            base,
            adapter: adapter.to_owned(),
            template: parsed.template.clone(),
            system: parsed.system.clone(),
            parameters,
            license: parsed.license.clone(),
            messages: parsed.messages.clone(),
        })
    }
}

/// A PARAMETER value as JSON: a boolean or number when it reads as one (Ollama's client types
/// them by the option they set: its api.FormatParams), else the text.
fn parameter_value(text: &str) -> Value {
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => {
            if let Ok(n) = text.parse::<i64>() {
                Value::from(n)
            } else if let Some(x) = text.parse::<f64>().ok().filter(|x| x.is_finite()) {
                Value::from(x)
            } else {
                Value::from(text)
            }
        }
    }
}

/// When to merge the adapter into the base instead of sending it as an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeWhen {
    /// Only when the server refuses the adapter.
    Refused,
    /// Always: the server never sees the adapter.
    Always,
}

/// Why the adapter was merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeReason {
    /// The server refused it, with this message.
    Refused {
        /// The server's message.
        message: String,
    },
    /// The caller asked for it.
    Asked,
}

/// What happens, as it happens.
#[derive(Debug)]
pub enum CreateEvent<'a> {
    /// A file is being hashed (bytes done, total).
    Hashing {
        /// The file.
        file: &'a Path,
        /// Bytes hashed.
        done: u64,
        /// Its size.
        total: u64,
    },
    /// The server already has a file's blob: it is not uploaded.
    BlobPresent {
        /// The file.
        file: &'a Path,
    },
    /// A file is being uploaded (bytes sent, total).
    Uploading {
        /// The file.
        file: &'a Path,
        /// Bytes sent.
        done: u64,
        /// Its size.
        total: u64,
    },
    /// A status line of the server's answer to the create request.
    Status(&'a str),
    /// The adapter is being merged into the base (base tensor bytes done, total).
    Merging {
        /// Why.
        reason: &'a MergeReason,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// The merged model is written: what it cost.
    Merged {
        /// Why.
        reason: &'a MergeReason,
        /// The merged GGUF.
        output: &'a Path,
        /// Its size: the disk it takes here, and again in Ollama's store.
        output_bytes: u64,
        /// The adapter's size, what Ollama would have stored instead.
        adapter_bytes: u64,
    },
}

/// What was created.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CreateSummary {
    /// The model's name.
    pub name: String,
    /// The merged GGUF, when the adapter was merged.
    pub merged: Option<PathBuf>,
    /// Files uploaded.
    pub uploaded: Vec<PathBuf>,
    /// Files the server already had.
    pub present: Vec<PathBuf>,
}

/// Why a model could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// Talking to the server failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The base named by Ollama is not one the server has.
    #[error("the Ollama server at {host} has no model {name} to build on (hint: `ollama pull {name}`)")]
    UnknownBase {
        /// The server's base URL.
        host: String,
        /// The base's name.
        name: String,
    },
    /// The adapter must be merged, but the base named by Ollama is not in a local store.
    #[error("merging the adapter needs the GGUF of {name} (hint: give --model with the base GGUF file, or set OLLAMA_MODELS to the store of the Ollama server)")]
    BaseNotLocal {
        /// The base's name.
        name: String,
        /// Why it was not found.
        source: Box<OllamaError>,
    },
    /// Merging failed.
    #[error("merging {} into {}", adapter.display(), base.display())]
    Merge {
        /// The adapter.
        adapter: PathBuf,
        /// The base GGUF.
        base: PathBuf,
        /// What failed.
        source: Box<MergeError>,
    },
    /// A file's name is not UTF-8 (it is a key of the JSON request).
    #[error("{}: the file name is not valid UTF-8", path.display())]
    NonUtf8Name {
        /// The file.
        path: PathBuf,
    },
}

/// Creates `spec` in the server `client` talks to, merging the adapter into the base when the
/// server refuses it or `when` asks for it.
pub fn create(
    client: &OllamaClient,
    spec: &CreateSpec,
    when: MergeWhen,
    events: &mut dyn FnMut(CreateEvent<'_>),
) -> Result<CreateSummary, CreateError> {
    let mut summary =
        CreateSummary { name: spec.name.clone(), merged: None, uploaded: Vec::new(), present: Vec::new() };
    let reason = match when {
        MergeWhen::Always => MergeReason::Asked,
        MergeWhen::Refused => {
            let mut request = request_of(spec);
            match &spec.base {
                Base::File(path) => {
                    let digest = ensure_blob(client, path, &mut summary, events)?;
                    request.files.insert(file_name(path)?, digest);
                }
                // Ollama's server would pull a `from` it lacks; here that is reported, with the
                // `ollama pull` hint, rather than downloaded unasked.
                Base::Ollama(name) if !client.has_model(&name.shortest())? => {
                    return Err(CreateError::UnknownBase { host: client.host().to_string(), name: name.shortest() });
                }
                Base::Ollama(name) => request.from = Some(name.shortest()),
            }
            let digest = ensure_blob(client, &spec.adapter, &mut summary, events)?;
            request.adapters.insert(file_name(&spec.adapter)?, digest);
            match client.create(&request, &mut |status| events(CreateEvent::Status(status))) {
                Ok(()) => return Ok(summary),
                Err(e) => match refused_adapter(&e) {
                    Some(message) => MergeReason::Refused { message: message.to_owned() },
                    None => return Err(e.into()),
                },
            }
        }
    };
    let (base_path, inherited) = match &spec.base {
        Base::File(path) => (path.clone(), None),
        Base::Ollama(name) => {
            let model = crate::ollama::store_locations()
                .and_then(|stores| crate::ollama::resolve_in(name, &stores))
                .map_err(|source| CreateError::BaseNotLocal { name: name.shortest(), source: Box::new(source) })?;
            (model.model_path.clone(), Some(model))
        }
    };
    let output = merged_path(&spec.adapter);
    let inputs = [MergeInput { path: spec.adapter.clone(), scale: 1.0 }];
    let merged = merge(&base_path, &inputs, None, &output, &mut |done, total| {
        events(CreateEvent::Merging { reason: &reason, done, total })
    })
    .map_err(|source| CreateError::Merge {
        adapter: spec.adapter.clone(),
        base: base_path.clone(),
        source: Box::new(source),
    })?;
    let adapter_bytes = std::fs::metadata(&spec.adapter).map(|m| m.len()).unwrap_or(0);
    events(CreateEvent::Merged { reason: &reason, output: &output, output_bytes: merged.output_bytes, adapter_bytes });
    let mut request = request_of(spec);
    if let Some(model) = inherited {
        // `files` starts from nothing: what `from` would have inherited is sent, unless the
        // Modelfile sets it (Ollama's setTemplate, setSystem, setParameters).
        request.template = request.template.or(model.template);
        request.system = request.system.or(model.system);
        let mut parameters = model.parameters;
        parameters.extend(request.parameters);
        request.parameters = parameters;
    }
    let digest = ensure_blob(client, &output, &mut summary, events)?;
    request.files.insert(file_name(&output)?, digest);
    client.create(&request, &mut |status| events(CreateEvent::Status(status)))?;
    summary.merged = Some(output);
    Ok(summary)
}

/// The server's message when `error` is its refusal of the adapter: an error answer to a
/// request that carried adapters, whose message is about adapters. (Ollama gives no error
/// code: its refusal is `errAdaptersUnsupported`, "LoRA adapters are no longer supported", a
/// 400 answer of server/create.go.)
fn refused_adapter(error: &ApiError) -> Option<&str> {
    error.server_message().filter(|m| m.to_ascii_lowercase().contains("adapter"))
}

/// `<adapter stem>.merged.gguf` next to the adapter.
pub fn merged_path(adapter: &Path) -> PathBuf {
    crate::adapter::sibling_path(adapter, "merged.gguf")
}

/// The request of `spec`, without its base and adapter.
fn request_of(spec: &CreateSpec) -> CreateRequest {
    CreateRequest {
        model: spec.name.clone(),
        from: None,
        files: BTreeMap::new(),
        adapters: BTreeMap::new(),
        template: spec.template.clone(),
        system: spec.system.clone(),
        parameters: spec.parameters.clone(),
        license: spec.license.clone(),
        messages: spec
            .messages
            .iter()
            .map(|(role, content)| Message { role: role.clone(), content: content.clone() })
            .collect(),
        stream: true,
    }
}

/// The file's name, the key it has in the request.
fn file_name(path: &Path) -> Result<String, CreateError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| CreateError::NonUtf8Name { path: path.to_owned() })
}

/// Hashes `path` and uploads it unless the server has its blob; its digest.
fn ensure_blob(
    client: &OllamaClient,
    path: &Path,
    summary: &mut CreateSummary,
    events: &mut dyn FnMut(CreateEvent<'_>),
) -> Result<BlobDigest, CreateError> {
    let digest = file_digest(path, &mut |done, total| events(CreateEvent::Hashing { file: path, done, total }))?;
    if client.has_blob(&digest)? {
        events(CreateEvent::BlobPresent { file: path });
        summary.present.push(path.to_owned());
    } else {
        client
            .push_blob(path, &digest, &mut |done, total| events(CreateEvent::Uploading { file: path, done, total }))?;
        summary.uploaded.push(path.to_owned());
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_typed_as_json() {
        assert_eq!(parameter_value("42"), Value::from(42));
        assert_eq!(parameter_value("0.7"), Value::from(0.7));
        assert_eq!(parameter_value("true"), Value::Bool(true));
        assert_eq!(parameter_value("</s>"), Value::from("</s>"));
        assert_eq!(parameter_value("NaN"), Value::from("NaN"));
    }

    #[test]
    fn the_merged_model_sits_next_to_the_adapter() {
        assert_eq!(merged_path(Path::new("out/adapter.gguf")), Path::new("out/adapter.merged.gguf"));
    }
}
