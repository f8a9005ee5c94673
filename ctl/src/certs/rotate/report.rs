//! What `certs rotate` did, as data: a row per node and the facts of the
//! run. [`crate::output::rotate`] writes it as a table or JSON.

use std::path::PathBuf;

use super::batches::{BatchSize, Stage};
use super::observe::CertId;
use crate::report::RunInfo;

/// What became of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RotateResult {
    /// It serves a new certificate, checked by a fresh handshake and a health check.
    Rotated,
    /// Left alone: its certificate expires later than `--if-expires-within`.
    Skipped,
    /// It failed; nothing was installed, or the rollback failed too.
    Failed,
    /// The new certificate failed its check and the previous one was put back.
    RolledBack,
    /// Not tried: the run stopped first.
    NotRun,
    /// `--dry-run`: it would be rotated.
    WouldRotate,
    /// `--dry-run`: it would be skipped.
    WouldSkip,
}

impl RotateResult {
    /// As tables and JSON show it: `rotated`, `rolled back`, `would rotate`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotated => "rotated",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::RolledBack => "rolled back",
            Self::NotRun => "not run",
            Self::WouldRotate => "would rotate",
            Self::WouldSkip => "would skip",
        }
    }

    /// Whether the node is where the run wanted it (exit status 0 if all are).
    pub fn ok(self) -> bool {
        matches!(
            self,
            Self::Rotated | Self::Skipped | Self::WouldRotate | Self::WouldSkip
        )
    }

    /// Whether the node counts against `--max-failed`.
    pub fn failed(self) -> bool {
        matches!(self, Self::Failed | Self::RolledBack)
    }
}

/// One node's rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The certificate it served before, if it was reached.
    pub old: Option<CertId>,
    /// The certificate signed for it (installed unless the result says otherwise).
    pub new: Option<CertId>,
    /// What became of it.
    pub result: RotateResult,
    /// What went wrong, when it did.
    pub error: Option<String>,
    /// Why it was skipped, or what a dry run would do.
    pub note: Option<String>,
}

impl Rotation {
    /// A node that failed with `error`.
    pub fn failed(old: Option<CertId>, error: String) -> Self {
        Self {
            old,
            new: None,
            result: RotateResult::Failed,
            error: Some(error),
            note: None,
        }
    }

    /// A node the run did not reach.
    pub fn not_run() -> Self {
        Self {
            old: None,
            new: None,
            result: RotateResult::NotRun,
            error: None,
            note: None,
        }
    }
}

/// The row of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateRow {
    /// The node's name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// Canary or batch N.
    pub stage: Stage,
    /// What happened to it.
    pub rotation: Rotation,
}

/// The result of `certs rotate`.
#[derive(Debug, Clone)]
pub struct RotateReport {
    /// The run.
    pub run: RunInfo,
    /// `--dry-run`: nothing was changed.
    pub dry_run: bool,
    /// The CA directory that signed.
    pub ca_dir: PathBuf,
    /// The audit log written, if any.
    pub audit: Option<PathBuf>,
    /// `--days`.
    pub days: u32,
    /// `--canary`.
    pub canary: usize,
    /// `--batch`, and what it came to in nodes.
    pub batch: (BatchSize, usize),
    /// `--max-failed`.
    pub max_failed: usize,
    /// One row per node, sorted by name.
    pub rows: Vec<RotateRow>,
}

impl RotateReport {
    /// Rows whose node is where the run wanted it.
    pub fn ok(&self) -> usize {
        self.rows
            .iter()
            .filter(|row| row.rotation.result.ok())
            .count()
    }

    /// Rows with `result`.
    pub fn count(&self, result: RotateResult) -> usize {
        self.rows
            .iter()
            .filter(|row| row.rotation.result == result)
            .count()
    }
}
