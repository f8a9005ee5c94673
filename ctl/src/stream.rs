//! The `--output jsonl` runs of `roll` and `health`: the fan-out writes each
//! node's line the moment the node finishes and keeps no row, then writes
//! the summary line, so memory follows the nodes in flight.

use std::future::Future;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::time::Instant;

use crate::fanout::{Probed, fan_out_plan_each};
use crate::output::{self, jsonl};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::report::RunInfo;
use crate::select::Node;

/// Runs `probe` on every node of `plan`; `to_row` judges each result, which
/// is written as a JSON line at once (and its failure on stderr when
/// `verbose`); `summary` writes the last line from the tally. Whether every
/// node was OK; an error if stdout could not be written.
pub async fn stream<T, R, F, Fut>(
    plan: &Plan,
    progress: &mut Progress,
    verbose: bool,
    probe: F,
    mut to_row: impl FnMut(Probed<T>) -> (Node, R),
    summary: impl FnOnce(&mut jsonl::Lines, &RunInfo, &jsonl::Tally) -> anyhow::Result<()>,
) -> anyhow::Result<bool>
where
    R: jsonl::StreamedRow,
    F: Fn(Node, Arc<ClientConfig>, Instant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut lines = jsonl::Lines::default();
    let mut tally = jsonl::Tally::default();
    let mut failed_write = None;
    let run = fan_out_plan_each(plan, progress, probe, |_, probed| {
        let (node, row) = to_row(probed);
        if let Err(error) = row.write_line(&mut lines, &mut tally, &node) {
            failed_write.get_or_insert(error);
        }
        if verbose {
            output::failures_to_stderr(std::iter::once(row.failed()), true);
        }
    })
    .await;
    if let Some(error) = failed_write {
        return Err(error);
    }
    summary(&mut lines, &run, &tally)?;
    Ok(tally.all_ok())
}
