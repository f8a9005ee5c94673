//! The kustomize base in `deploy/kubernetes/`, read as data: every manifest
//! parsed (serde_yaml_ng), the kustomization's resources and generated
//! ConfigMap, and the parts of the DaemonSet the tests hold against the agent
//! config in that ConfigMap (container args, ports, probes, volumes, mounts).
//! [`crate::rotation::KubeVolume`] lays out the mounted folders.

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use crate::fixtures::workspace_root;

/// `deploy/kubernetes/`.
pub fn base_dir() -> PathBuf {
    workspace_root().join("deploy/kubernetes")
}

/// Every YAML document in `path`; panics naming the file if one does not parse.
pub fn documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{}: not valid YAML: {error}", path.display()))
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// The string at `value`, or a panic naming `what`.
pub fn str_at<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {value:?}"))
}

/// The list at `value`, or a panic naming `what`.
pub fn seq_at<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: expected a list, found {value:?}"))
}

/// The kustomize base: the kustomization and the manifests it lists.
pub struct Base {
    /// `kustomization.yaml`.
    pub kustomization: Value,
    /// Each resource the kustomization lists: its file and its documents.
    pub resources: Vec<(PathBuf, Vec<Value>)>,
}

impl Base {
    /// Reads `deploy/kubernetes/kustomization.yaml` and every resource it
    /// lists; panics if a listed file is missing or does not parse.
    pub fn load() -> Base {
        let dir = base_dir();
        let kustomization = documents(&dir.join("kustomization.yaml"))
            .into_iter()
            .next()
            .expect("kustomization.yaml holds a document");
        let resources = seq_at(&kustomization["resources"], "kustomization resources")
            .iter()
            .map(|name| {
                let path = dir.join(str_at(name, "a resource"));
                assert!(
                    path.is_file(),
                    "kustomization.yaml lists {}, which does not exist",
                    path.display()
                );
                let docs = documents(&path);
                (path, docs)
            })
            .collect();
        Base {
            kustomization,
            resources,
        }
    }

    /// The one manifest of `kind` named `name`.
    pub fn find(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .resources
            .iter()
            .flat_map(|(_, docs)| docs)
            .filter(|doc| {
                doc["kind"].as_str() == Some(kind) && doc["metadata"]["name"].as_str() == Some(name)
            })
            .collect();
        match found[..] {
            [one] => one,
            _ => panic!(
                "expected one {kind} {name} in the base, found {}",
                found.len()
            ),
        }
    }

    /// The namespace the kustomization puts everything in.
    pub fn namespace(&self) -> &str {
        str_at(&self.kustomization["namespace"], "kustomization namespace")
    }

    /// The generated ConfigMap `name`'s only file: `(key, path beside the kustomization)`.
    pub fn config_map_file(&self, name: &str) -> (String, PathBuf) {
        let generator = seq_at(
            &self.kustomization["configMapGenerator"],
            "configMapGenerator",
        )
        .iter()
        .find(|generator| generator["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no configMapGenerator named {name}"));
        match seq_at(&generator["files"], "configMapGenerator files") {
            [file] => {
                let file = str_at(file, "a configMapGenerator file");
                let path = base_dir().join(file);
                assert!(
                    path.is_file(),
                    "configMapGenerator {name} reads {}, which does not exist",
                    path.display()
                );
                let key = Path::new(file)
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (key, path)
            }
            files => panic!("configMapGenerator {name}: expected one file, found {files:?}"),
        }
    }
}

/// The Kubernetes reading of a volume's `defaultMode`: YAML 1.1, as the API
/// server reads it, takes `0440` as octal; a YAML 1.2 reader sees the
/// decimal 440 or the string.
pub fn file_mode(value: &Value) -> u32 {
    let text = match value {
        Value::Number(number) => number.to_string(),
        Value::String(text) => text.clone(),
        other => panic!("defaultMode: expected a number, found {other:?}"),
    };
    match text.strip_prefix("0o").or_else(|| text.strip_prefix('0')) {
        Some(octal) => u32::from_str_radix(octal, 8)
            .unwrap_or_else(|error| panic!("defaultMode {text}: {error}")),
        // Written without a leading zero it is decimal, as Kubernetes documents.
        None => text
            .parse()
            .unwrap_or_else(|error| panic!("defaultMode {text}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_default_modes_as_kubernetes_does() {
        let parse = |yaml: &str| file_mode(&serde_yaml_ng::from_str::<Value>(yaml).expect("YAML"));
        assert_eq!(parse("0440"), 0o440);
        assert_eq!(parse("0o400"), 0o400);
        assert_eq!(parse("288"), 0o440);
    }
}
