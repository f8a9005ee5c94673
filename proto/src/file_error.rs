//! Errors in the TOML files both binaries read (the agent config, the fleet
//! file): each names the file, the line and the key, and says what to do.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a TOML file. Displays as `FILE line N: KEY: MESSAGE (HINT)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `listeners[1].tls.cert`, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileError {}

/// Every problem found in a file, one per line; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileErrors(pub Vec<FileError>);

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileErrors {}

/// Builds errors for one file, turning byte offsets into line numbers.
pub struct Reporter<'a> {
    file: &'a Path,
    source: &'a str,
    /// The errors recorded so far.
    pub errors: Vec<FileError>,
}

impl<'a> Reporter<'a> {
    /// A reporter for `source`, read from `file`.
    pub fn new(file: &'a Path, source: &'a str) -> Self {
        Self {
            file,
            source,
            errors: Vec::new(),
        }
    }

    /// The 1-based line of byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        line_of(self.source, offset)
    }

    /// Records an error at byte offset `at`, a known position, for `key`.
    pub fn error_at(
        &mut self,
        at: usize,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: &str,
    ) {
        self.error(Some(at), key, message, Some(hint));
    }

    /// Records an error at byte offset `at` (if known) for `key`.
    pub fn error(
        &mut self,
        at: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: Option<&str>,
    ) {
        let error = FileError {
            file: self.file.to_owned(),
            line: at.map(|offset| line_of(self.source, offset)),
            key: Some(key.into()),
            message: message.into(),
            hint: hint.map(str::to_owned),
        };
        self.errors.push(error);
    }

    /// Converts a TOML parse error, recovering the key path from the span.
    pub fn parse_error(&mut self, error: &toml::de::Error) {
        let offset = error.span().map(|span| span.start);
        let key = offset.and_then(|offset| key_path_at(self.source, offset));
        let message = error.message().trim().replace('\n', " ");
        let hint = if message.starts_with("unknown field") {
            Some("remove it or fix its spelling; the README lists every key")
        } else if message.starts_with("missing field") {
            Some("add it; the README lists every key")
        } else if message.starts_with("invalid type") {
            Some("see the README for the type of each key")
        } else {
            Some("fix the TOML syntax")
        };
        self.errors.push(FileError {
            file: self.file.to_owned(),
            line: offset.map(|offset| line_of(self.source, offset)),
            key,
            message,
            hint: hint.map(str::to_owned),
        });
    }
}

/// The 1-based line holding byte `offset`.
pub fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Recovers the dotted key path at byte `offset`: the last table header above
/// it (array tables numbered), plus the key on that line if there is one.
fn key_path_at(source: &str, offset: usize) -> Option<String> {
    let mut table = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut line_start = 0;
    for line in source.split_inclusive('\n') {
        let line_end = line_start + line.len();
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
        {
            let name = name.trim().to_owned();
            let index = match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    counts.push((name.clone(), 1));
                    0
                }
            };
            table = format!("{name}[{index}]");
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_owned();
        }
        if offset < line_end || line_end == source.len() {
            let key = trimmed
                .split_once('=')
                .map(|(key, _)| key.trim().trim_matches('"').to_owned())
                .filter(|key| !key.is_empty() && !key.starts_with('['));
            return match (table.is_empty(), key) {
                (true, key) => key,
                (false, Some(key)) => Some(format!("{table}.{key}")),
                (false, None) => Some(table),
            };
        }
        line_start = line_end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_file_line_key_message_hint() {
        let error = FileError {
            file: "fleet.toml".into(),
            line: Some(7),
            key: Some("nodes[1].address".into()),
            message: "\"x\": missing port".into(),
            hint: Some("write HOST:PORT".into()),
        };
        assert_eq!(
            error.to_string(),
            "fleet.toml line 7: nodes[1].address: \"x\": missing port (write HOST:PORT)"
        );
    }

    #[test]
    fn key_paths_follow_tables_and_array_tables() {
        let source = "[node]\nname = \"a\"\n[[listeners]]\naddress = \"x\"\n[[listeners]]\nmode = \"y\"\nbogus = 1\n";
        let at = |needle: &str| source.find(needle).expect("needle in source");
        assert_eq!(key_path_at(source, at("name")), Some("node.name".into()));
        assert_eq!(
            key_path_at(source, at("address")),
            Some("listeners[0].address".into())
        );
        assert_eq!(
            key_path_at(source, at("bogus")),
            Some("listeners[1].bogus".into())
        );
        assert_eq!(line_of(source, at("bogus")), 7);
    }
}
