//! The model a plan is about: a GGUF, a Hugging Face folder, or a bare config.json, turned into
//! the GGUF file `convert` or `quantize` would make of it.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::convert::{plan_without_weights, TokenizerSource};
use crate::gguf::GgufFile;
use crate::hf::{Checkpoint, HfError, ModelConfig};
use crate::model::Model;
use crate::quant::{requantized_plan, FileType};

use super::PlanError;

/// What the user pointed `plan` at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF model file.
    Gguf(PathBuf),
    /// A Hugging Face folder with config.json (its safetensors may not be downloaded yet).
    Folder(PathBuf),
    /// A config.json on its own.
    Config(PathBuf),
}

impl ModelSource {
    /// Recognises `path`: a folder, a file starting with the GGUF magic, or a JSON file.
    pub fn detect(path: &Path) -> Result<ModelSource, PlanError> {
        let unknown = || PlanError::UnknownSource { path: path.to_owned() };
        if path.is_dir() {
            return Ok(ModelSource::Folder(path.to_owned()));
        }
        let mut magic = [0u8; 4];
        let mut file = std::fs::File::open(path).map_err(|source| HfError::Io { path: path.to_owned(), source })?;
        let n = file.read(&mut magic).map_err(|source| HfError::Io { path: path.to_owned(), source })?;
        if n == 4 && &magic == b"GGUF" {
            Ok(ModelSource::Gguf(path.to_owned()))
        } else if path.extension().is_some_and(|e| e == "json") {
            Ok(ModelSource::Config(path.to_owned()))
        } else {
            Err(unknown())
        }
    }
}

/// How the planned file's tensor table was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// The GGUF file itself.
    GgufFile,
    /// The GGUF `quantize` would write from the GGUF file.
    Requantized,
    /// The GGUF `convert` would write, planned from the safetensors headers.
    Converted,
    /// The GGUF `convert` would write, from config.json alone (tensor shapes follow from it).
    FromConfig(TokenizerSource),
}

/// The model file a run would use, ready to be measured.
#[derive(Debug)]
pub struct PlannedModel {
    /// The model: the real file, or a stand-in of the planned one.
    pub model: Model,
    /// Size of the GGUF file.
    pub file_bytes: u64,
    /// How it was planned.
    pub kind: SourceKind,
    /// The file type: the one asked for, or a GGUF's own (`None` when it does not say).
    pub file_type: Option<FileType>,
}

/// The GGUF a run on `source` would use: the file itself, or the one `convert` (for a Hugging
/// Face folder or config.json; f16 unless `file_type` says otherwise) or `quantize` (for a GGUF
/// with `file_type`) would write.
pub fn open_source(source: &ModelSource, file_type: Option<FileType>) -> Result<PlannedModel, PlanError> {
    let (gguf, kind) = match source {
        ModelSource::Gguf(path) => {
            let Some(ft) = file_type else {
                let model = Model::open(path)?;
                let own = model.gguf()?.get("general.file_type").and_then(|v| v.as_u64());
                return Ok(PlannedModel {
                    file_bytes: model.file_bytes(),
                    file_type: own.and_then(|id| FileType::from_llama_ftype(u32::try_from(id).ok()?)),
                    model,
                    kind: SourceKind::GgufFile,
                });
            };
            let file = GgufFile::open(path)?;
            (requantized_plan(&file.gguf()?, path, ft)?, SourceKind::Requantized)
        }
        ModelSource::Folder(dir) => {
            let ft = file_type.unwrap_or(FileType::F16);
            match Checkpoint::open(dir) {
                Ok(checkpoint) => (crate::convert::plan(&checkpoint, ft)?.gguf, SourceKind::Converted),
                Err(HfError::NoWeights { .. }) => {
                    let (plan, tokenizer) = plan_without_weights(&ModelConfig::load(dir)?, dir, ft)?;
                    (plan, SourceKind::FromConfig(tokenizer))
                }
                Err(e) => return Err(e.into()),
            }
        }
        ModelSource::Config(path) => {
            let ft = file_type.unwrap_or(FileType::F16);
            let config = ModelConfig::load_file(path)?;
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let (plan, tokenizer) = plan_without_weights(&config, dir, ft)?;
            (plan, SourceKind::FromConfig(tokenizer))
        }
    };
    Ok(PlannedModel {
        model: Model::planned(&gguf)?,
        file_bytes: gguf.file_size(),
        kind,
        file_type: file_type.or(Some(FileType::F16)),
    })
}
