//! The audit log: every action on every node, one JSON line each, appended
//! to `audit.jsonl` in the CA directory.
//!
//! A line holds `time` (RFC 3339), `operator` (the subject of dicectl's
//! client certificate), `node`, `action` (`prepare`, `sign`, `install`,
//! `verify`, `rollback`, `skip`, `set_trust`), `old_serial`, `new_serial`,
//! `outcome` (`ok`, `failed`, `refused`, `skipped`), `error` when not ok, and
//! for trust changes `old_trust` and `new_trust`, the CA fingerprints
//! (SHA-256) before and after. The file is opened for appending and each
//! line is written whole by one write. Nothing secret is written: no key, no
//! CSR.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::certs::CertsError;

/// The audit log's file name inside the CA directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// What became of an action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    /// It was done.
    #[default]
    Ok,
    /// It was tried and failed.
    Failed,
    /// dicectl refused to go on (e.g. a CSR for other names).
    Refused,
    /// It was not needed.
    Skipped,
}

/// One action on one node.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// The node's name.
    pub node: String,
    /// What was done: `prepare`, `sign`, `install`, `verify`, `rollback`, `skip`, `set_trust`.
    pub action: &'static str,
    /// The serial the node served before.
    pub old_serial: Option<String>,
    /// The serial it serves (or was to serve) after.
    pub new_serial: Option<String>,
    /// What became of it.
    pub outcome: ActionOutcome,
    /// Why, when it was not ok.
    pub error: Option<String>,
    /// For trust changes: CA fingerprints trusted before.
    pub old_trust: Option<Vec<String>>,
    /// For trust changes: CA fingerprints trusted after.
    pub new_trust: Option<Vec<String>>,
}

/// The line as written: time and operator first, then the entry.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    operator: &'a str,
    node: &'a str,
    action: &'static str,
    old_serial: Option<&'a str>,
    new_serial: Option<&'a str>,
    outcome: ActionOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_trust: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_trust: Option<&'a [String]>,
}

/// An open audit log.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    operator: String,
    file: Mutex<File>,
}

impl Audit {
    /// Opens (creates) `DIR/audit.jsonl` for appending, recording `operator`
    /// on every line. Fails, before any node is touched, if it cannot.
    pub fn open(dir: &Path, operator: &str) -> Result<Self, CertsError> {
        let path = dir.join(AUDIT_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| CertsError::Io {
                path: path.clone(),
                action: "cannot open the audit log for appending (make the CA directory writable)",
                source,
            })?;
        Ok(Self {
            path,
            operator: operator.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one line. A failed write is reported on stderr and
    /// does not stop the run (the node's change has happened either way).
    pub fn record(&self, entry: &Entry) {
        let line = Line {
            time: dice_proto::cert::rfc3339(crate::unix_now()),
            operator: &self.operator,
            node: &entry.node,
            action: entry.action,
            old_serial: entry.old_serial.as_deref(),
            new_serial: entry.new_serial.as_deref(),
            outcome: entry.outcome,
            error: entry.error.as_deref(),
            old_trust: entry.old_trust.as_deref(),
            new_trust: entry.new_trust.as_deref(),
        };
        let mut text = match serde_json::to_string(&line) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("dicectl: warning: cannot encode an audit line: {error}");
                return;
            }
        };
        text.push('\n');
        let result = match self.file.lock() {
            Ok(mut file) => file.write_all(text.as_bytes()),
            Err(poisoned) => poisoned.into_inner().write_all(text.as_bytes()),
        };
        if let Err(error) = result {
            eprintln!(
                "dicectl: warning: {}: cannot append to the audit log: {error} (node {}, action {})",
                self.path.display(),
                entry.node,
                entry.action
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_one_whole_line_per_action() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(AUDIT_FILE), "{\"earlier\":true}\n").expect("seed");
        let audit = Audit::open(dir.path(), "CN=dicectl").expect("open");
        audit.record(&Entry {
            node: "node-1".to_owned(),
            action: "install",
            old_serial: Some("01".to_owned()),
            new_serial: Some("02".to_owned()),
            ..Entry::default()
        });
        audit.record(&Entry {
            node: "node-2".to_owned(),
            action: "set_trust",
            outcome: ActionOutcome::Failed,
            error: Some("rpc: FailedPrecondition: lockout".to_owned()),
            old_trust: Some(vec!["aa".to_owned()]),
            new_trust: Some(vec!["aa".to_owned(), "bb".to_owned()]),
            ..Entry::default()
        });
        drop(audit);
        let text = std::fs::read_to_string(dir.path().join(AUDIT_FILE)).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["earlier"], true, "appended, not replaced");
        let install = &lines[1];
        assert_eq!(install["operator"], "CN=dicectl");
        assert_eq!(install["node"], "node-1");
        assert_eq!(install["action"], "install");
        assert_eq!(install["old_serial"], "01");
        assert_eq!(install["new_serial"], "02");
        assert_eq!(install["outcome"], "ok");
        assert!(install.get("error").is_none());
        assert!(install["time"].as_str().expect("time").ends_with('Z'));
        let trust = &lines[2];
        assert_eq!(trust["outcome"], "failed");
        assert_eq!(trust["error"], "rpc: FailedPrecondition: lockout");
        assert_eq!(trust["old_serial"], serde_json::Value::Null);
        assert_eq!(trust["new_trust"], serde_json::json!(["aa", "bb"]));
    }

    #[test]
    fn an_unwritable_directory_is_refused_up_front() {
        let error = Audit::open(Path::new("/nonexistent/ca"), "CN=x").expect_err("refused");
        assert!(error.to_string().contains("audit.jsonl"), "{error}");
    }
}
