//! The Prometheus service discovery format that `http_sd` and `file_sd`
//! share: a list of target groups, each `{"targets": ["HOST:PORT", ...],
//! "labels": {"KEY": "VALUE", ...}}`. A node per target; its name is the
//! group's `name` label if there is one, else the target itself; its server
//! name is the target's host.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Found;
use crate::client::NodeTarget;

/// One target group, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetGroup {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The label that names a node.
pub const NAME_LABEL: &str = "name";

/// The nodes of a parsed document, and a message for each malformed entry
/// (`entry 2: ...`, `entry 0: targets[1] "x": ...`). An error if the document
/// is not a list at all.
pub fn parse(document: serde_json::Value) -> Result<(Vec<Found>, Vec<String>), String> {
    let serde_json::Value::Array(entries) = document else {
        return Err(
            "not a list of target groups (expected [{\"targets\": [\"HOST:PORT\"], \"labels\": {}}])"
                .to_owned(),
        );
    };
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let group: TargetGroup = match serde_json::from_value(entry) {
            Ok(group) => group,
            Err(error) => {
                errors.push(format!(
                    "entry {index}: {error} (an entry is {{\"targets\": [\"HOST:PORT\"], \"labels\": {{\"KEY\": \"VALUE\"}}}})"
                ));
                continue;
            }
        };
        if group.labels.keys().any(String::is_empty) {
            errors.push(format!("entry {index}: labels: empty label name"));
            continue;
        }
        let named = group.labels.get(NAME_LABEL).filter(|name| !name.is_empty());
        if named.is_some() && group.targets.len() > 1 {
            errors.push(format!(
                "entry {index}: a \"name\" label names one node, and the entry has {} targets (give each target its own entry)",
                group.targets.len()
            ));
            continue;
        }
        for (at, target) in group.targets.iter().enumerate() {
            match NodeTarget::parse(target, None) {
                Ok(node) => found.push(Found {
                    name: named.cloned().unwrap_or_else(|| target.clone()),
                    target: node,
                    labels: group.labels.clone(),
                }),
                Err(error) => errors.push(format!(
                    "entry {index}: targets[{at}]: {}",
                    error.to_string().trim_start_matches("--node ")
                )),
            }
        }
    }
    Ok((found, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<(Vec<Found>, Vec<String>), String> {
        parse(serde_json::from_str(text).expect("test JSON"))
    }

    #[test]
    fn a_node_per_target_named_by_the_name_label() {
        let (found, errors) = parse_text(
            r#"[{"targets": ["a.example:1", "[::1]:2"], "labels": {"region": "eu"}},
                {"targets": ["c.example:3"], "labels": {"name": "node-c"}}]"#,
        )
        .expect("a list");
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.example:1", "[::1]:2", "node-c"]);
        assert_eq!(
            found[0].labels.get("region").map(String::as_str),
            Some("eu")
        );
        assert_eq!(found[2].target.server_name().to_str(), "c.example");
    }

    #[test]
    fn malformed_entries_are_named_and_the_rest_kept() {
        let (found, errors) = parse_text(
            r#"[{"targets": ["ok.example:1"]},
                {"targets": "x"},
                {"targets": ["nope"]},
                {"targets": ["a:1", "b:2"], "labels": {"name": "n"}},
                {"targets": [], "extra": 1}]"#,
        )
        .expect("a list");
        assert_eq!(found.len(), 1);
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].starts_with("entry 1: invalid type"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("entry 2: targets[0]: \"nope\": missing port"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].starts_with("entry 3: a \"name\" label"),
            "{}",
            errors[2]
        );
        assert!(errors[3].contains("unknown field `extra`"), "{}", errors[3]);
        assert!(parse_text(r#"{"targets": []}"#).is_err());
    }
}
