//! Why a YAML file the appliance reads (its configuration, a rules file)
//! was refused, and reading one: every error names the file, and the
//! parsers, which see only text, name it generically until `load` says
//! which file it was.

use std::path::Path;

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {}", .problems.join("; "))]
    Invalid { path: String, problems: Vec<String> },
}

impl FileError {
    /// The same error, about `path`.
    fn at(self, shown: &str) -> Self {
        match self {
            FileError::Read { source, .. } => FileError::Read {
                path: shown.to_string(),
                source,
            },
            FileError::Syntax { message, .. } => FileError::Syntax {
                path: shown.to_string(),
                message,
            },
            FileError::Invalid { problems, .. } => FileError::Invalid {
                path: shown.to_string(),
                problems,
            },
        }
    }
}

/// Reads `path` and parses its text with `parse`; errors name the file.
pub fn load<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, FileError>,
) -> Result<T, FileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|e| e.at(&shown))
}
