//! Generator errors: each names the file (and line, where there is one).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not load libclang: {0} (install libclang-dev, or set LIBCLANG_PATH)")]
    Libclang(String),
    #[error("headers: {0}")]
    Headers(String),
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{}", format_diagnostics(.0))]
    Diagnostics(Vec<(PathBuf, u32, String)>),
    #[error("{location}: {what} (add it to `templates` or `skip` in the generator configuration)")]
    Unsupported { location: String, what: String },
    #[error("configuration {file}: {message}")]
    Config { file: PathBuf, message: String },
    #[error("template {file}: {message}")]
    Template { file: PathBuf, message: String },
    #[error("bindgen failed on {file}: {message}")]
    Bindgen { file: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("internal error: {0}")]
    Internal(String),
}

fn format_diagnostics(d: &[(PathBuf, u32, String)]) -> String {
    let mut out = String::from("the headers do not parse:");
    for (file, line, message) in d {
        out.push_str(&format!("\n  {}:{line}: error: {message}", file.display()));
    }
    out
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}
