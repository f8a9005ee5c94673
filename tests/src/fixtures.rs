//! Config files kept in the repository (`tests/fixtures/config/`, `config/`),
//! staged into a temp directory beside a freshly minted PKI so their
//! certificate paths resolve.
//!
//! An invalid fixture states what the agent must say about it in header lines
//! `# expect: SUBSTRING` (one substring per line, all required), or in a
//! sibling `NAME.expect` file with one substring per line.

use std::fs;
use std::path::{Component, Path, PathBuf};

use tempfile::TempDir;

use crate::config::quote;
use crate::pki::Pki;

/// `tests/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// One config file from the repository.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Where it lives in the repository.
    pub path: PathBuf,
    /// Its file name, e.g. `unknown-key.toml`.
    pub file_name: String,
    /// Its text.
    pub text: String,
    /// The substrings the agent's error output must contain.
    pub expect: Vec<String>,
}

impl Fixture {
    /// Reads `path` and its expectations.
    pub fn load(path: &Path) -> Fixture {
        let text = fs::read_to_string(path)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
        let mut expect: Vec<String> = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("# expect:"))
            .map(|substring| substring.trim().to_owned())
            .collect();
        if let Ok(sibling) = fs::read_to_string(path.with_extension("expect")) {
            expect.extend(
                sibling
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned),
            );
        }
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Fixture {
            path: path.to_owned(),
            file_name,
            text,
            expect,
        }
    }

    /// Every `*.toml` file directly in `dir`, sorted by name.
    pub fn load_dir(dir: &Path) -> Vec<Fixture> {
        toml_files(dir)
            .iter()
            .map(|path| Fixture::load(path))
            .collect()
    }
}

/// Every `*.toml` file directly in `dir`, sorted; empty if `dir` is missing.
pub fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "toml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// A config file copied into a temp directory with a PKI it can use.
pub struct Staged {
    /// The temp directory (removed on drop).
    pub dir: TempDir,
    /// The PKI: `ca.pem`, `server.pem`, `server-key.pem`, ... in [`Staged::dir`].
    pub pki: Pki,
    /// The staged config file.
    pub config: PathBuf,
}

/// Copies `fixture` into a fresh temp directory beside a new PKI, under its
/// own file name, so relative paths like `server.pem` resolve to real files.
pub fn stage(fixture: &Fixture) -> Staged {
    let dir = tempdir("dice-fixture-");
    let pki = Pki::new(dir.path());
    let config = dir.path().join(&fixture.file_name);
    fs::write(&config, &fixture.text).expect("write the staged config");
    Staged { dir, pki, config }
}

/// Stages an example config (from `config/`): every certificate, key and CA
/// path it names is made to exist. Relative paths get the PKI's files at the
/// place they resolve to (the config is nested deep enough that `../` stays
/// inside the temp directory); absolute paths that don't exist are rewritten to
/// the PKI's files. The text is otherwise unchanged, so line numbers hold.
pub fn stage_example(path: &Path) -> Staged {
    let fixture = Fixture::load(path);
    let table: toml::Table = toml::from_str(&fixture.text)
        .unwrap_or_else(|error| panic!("{} is not valid TOML: {error}", path.display()));
    let refs = tls_paths(&table);

    let depth = (refs.iter())
        .map(|(_, file)| {
            Path::new(file)
                .components()
                .take_while(|c| *c == Component::ParentDir)
                .count()
        })
        .max()
        .unwrap_or(0);
    let dir = tempdir("dice-example-");
    let pki = Pki::new(&dir.path().join("generated-pki"));
    let mut config_dir = dir.path().to_owned();
    for level in 0..depth {
        config_dir.push(format!("nest{level}"));
    }
    config_dir.push("config");
    fs::create_dir_all(&config_dir).expect("create the staged config dir");

    let mut text = fixture.text.clone();
    for (role, file) in &refs {
        let source = match role.as_str() {
            "cert" => &pki.server().cert,
            "key" => &pki.server().key,
            _ => pki.ca_cert(),
        };
        let file_path = Path::new(file);
        if file_path.is_absolute() {
            if !file_path.exists() {
                let replacement = quote(source.to_str().expect("UTF-8 temp path"));
                text = text
                    .replace(&quote(file), &replacement)
                    .replace(&format!("'{file}'"), &replacement);
            }
        } else {
            let target = normalize(&config_dir.join(file_path));
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).expect("create the referenced directory");
            }
            fs::copy(source, &target).expect("copy a PKI file into place");
        }
    }
    let config = config_dir.join(&fixture.file_name);
    fs::write(&config, text).expect("write the staged config");
    Staged { dir, pki, config }
}

/// `(role, path)` for every `cert`, `key` and `client_ca` under `[tls]` and
/// each listener's `tls`.
fn tls_paths(table: &toml::Table) -> Vec<(String, String)> {
    let mut tables: Vec<&toml::Table> = Vec::new();
    if let Some(tls) = table.get("tls").and_then(toml::Value::as_table) {
        tables.push(tls);
    }
    for listener in table
        .get("listeners")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(tls) = listener.get("tls").and_then(toml::Value::as_table) {
            tables.push(tls);
        }
    }
    let mut refs = Vec::new();
    for tls in tables {
        for role in ["cert", "key", "client_ca"] {
            if let Some(file) = tls.get(role).and_then(toml::Value::as_str) {
                refs.push((role.to_owned(), file.to_owned()));
            }
        }
    }
    refs
}

/// Resolves `.` and `..` lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_expect_headers() {
        let dir = tempdir("dice-fixture-test-");
        let path = dir.path().join("x.toml");
        fs::write(
            &path,
            "# expect: line 3\n#expect: not this\n  # expect:  colour \n[node]\n",
        )
        .expect("write");
        fs::write(dir.path().join("x.expect"), "\nfrom sibling\n").expect("write");
        let fixture = Fixture::load(&path);
        assert_eq!(fixture.expect, ["line 3", "colour", "from sibling"]);
        assert_eq!(fixture.file_name, "x.toml");
    }

    #[test]
    fn normalizes_parent_components() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
