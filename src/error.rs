//! The crate's error type: one variant per module's error.

/// Any error from the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error(transparent)]
    GgufFile(#[from] crate::gguf::GgufFileError),
    #[error(transparent)]
    GgufWrite(#[from] crate::gguf::GgufWriteError),
    #[error(transparent)]
    Hf(#[from] crate::hf::HfError),
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    #[error(transparent)]
    Convert(#[from] crate::convert::ConvertError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Adapter(#[from] crate::adapter::AdapterError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Ggml(#[from] crate::ggml::Error),
}
