//! The order a rotation touches nodes in: canaries one after another, then
//! batches whose nodes run side by side, and when to stop.
//!
//! [`schedule`] splits a selection into [`Stage`]s; [`run`] works through
//! them. A canary that fails stops the run; otherwise the run stops once
//! more than `--max-failed` nodes failed, and a node not started by then is
//! not run (`None`).

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::progress::Progress;

/// `--batch N` nodes, or `--batch P%` of the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// A number of nodes.
    Nodes(usize),
    /// A percentage of the selection, rounded up.
    Percent(u32),
}

impl Default for BatchSize {
    /// 10% of the selection.
    fn default() -> Self {
        Self::Percent(10)
    }
}

impl FromStr for BatchSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{text:?}: expected a number of nodes (e.g. 5) or a percentage of the selection (e.g. 10%)"
            )
        };
        match text.strip_suffix('%') {
            Some(percent) => match percent.parse::<u32>() {
                Ok(p @ 1..=100) => Ok(Self::Percent(p)),
                _ => Err(bad()),
            },
            None => match text.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Self::Nodes(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nodes(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl BatchSize {
    /// Nodes per batch for a selection of `selected` nodes: at least 1.
    pub fn nodes(self, selected: usize) -> usize {
        match self {
            Self::Nodes(n) => n,
            Self::Percent(p) => (selected * p as usize).div_ceil(100),
        }
        .max(1)
    }
}

/// Where a node comes in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A canary: alone, before any batch.
    Canary,
    /// Batch N, counted from 1.
    Batch(usize),
}

impl std::fmt::Display for Stage {
    /// `canary`, `batch 2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Canary => f.write_str("canary"),
            Self::Batch(n) => write!(f, "batch {n}"),
        }
    }
}

/// The stages of a run: indices into the selection, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The canaries, one after another.
    pub canaries: Vec<usize>,
    /// The batches after them.
    pub batches: Vec<Vec<usize>>,
}

impl Schedule {
    /// The stage of every node, in selection order.
    pub fn stages(&self, selected: usize) -> Vec<Stage> {
        let mut stages = vec![Stage::Canary; selected];
        for (number, batch) in self.batches.iter().enumerate() {
            for &index in batch {
                stages[index] = Stage::Batch(number + 1);
            }
        }
        stages
    }
}

/// The first `canary` of `selected` nodes as canaries, the rest in batches of `batch`.
pub fn schedule(selected: usize, canary: usize, batch: BatchSize) -> Schedule {
    let canaries = canary.min(selected);
    let size = batch.nodes(selected);
    let rest: Vec<usize> = (canaries..selected).collect();
    Schedule {
        canaries: (0..canaries).collect(),
        batches: rest.chunks(size).map(<[usize]>::to_vec).collect(),
    }
}

/// Runs `work(index)` per node of `schedule`: canaries one by one, each
/// batch's nodes `concurrency` at a time. `work` returns the node's result
/// and whether it failed. Returns each node's result, `None` for a node not
/// run because the run stopped first.
pub async fn run<T, F, Fut>(
    schedule: &Schedule,
    selected: usize,
    concurrency: usize,
    max_failed: usize,
    progress: &mut Progress,
    work: F,
) -> Vec<Option<T>>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = (T, bool)> + Send + 'static,
    T: Send + 'static,
{
    let mut results: Vec<Option<T>> = (0..selected).map(|_| None).collect();
    let failed = Arc::new(AtomicUsize::new(0));
    for &index in &schedule.canaries {
        let (result, node_failed) = work(index).await;
        results[index] = Some(result);
        progress.advance();
        if node_failed {
            progress.finish();
            return results;
        }
    }
    let semaphore = Arc::new(Semaphore::new(concurrency.max(1)));
    for batch in &schedule.batches {
        if failed.load(Ordering::SeqCst) > max_failed {
            break;
        }
        let mut tasks = JoinSet::new();
        for &index in batch {
            let (semaphore, failed, work) = (semaphore.clone(), failed.clone(), work.clone());
            tasks.spawn(async move {
                let _permit = semaphore
                    .acquire_owned()
                    .await
                    .expect("the batch semaphore is never closed");
                if failed.load(Ordering::SeqCst) > max_failed {
                    return (index, None);
                }
                let (result, node_failed) = work(index).await;
                if node_failed {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                (index, Some(result))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, result)) => results[index] = result,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(error) => panic!("a node's task was cancelled before it finished: {error}"),
            }
            progress.advance();
        }
    }
    progress.finish();
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_parse() {
        assert_eq!("3".parse(), Ok(BatchSize::Nodes(3)));
        assert_eq!("25%".parse(), Ok(BatchSize::Percent(25)));
        for bad in ["0", "0%", "101%", "x", "", "-1", "5 %"] {
            assert!(bad.parse::<BatchSize>().is_err(), "{bad:?}");
        }
        assert_eq!(BatchSize::Percent(10).nodes(20), 2);
        assert_eq!(BatchSize::Percent(10).nodes(21), 3);
        assert_eq!(BatchSize::Percent(10).nodes(3), 1);
        assert_eq!(BatchSize::Nodes(4).nodes(2), 4);
    }

    #[test]
    fn canary_then_ten_percent() {
        let plan = schedule(20, 1, BatchSize::default());
        assert_eq!(plan.canaries, [0]);
        assert_eq!(plan.batches.len(), 10);
        assert_eq!(plan.batches[0], [1, 2]);
        assert_eq!(plan.batches[9], [19]);
        let stages = plan.stages(20);
        assert_eq!(stages[0], Stage::Canary);
        assert_eq!(stages[19].to_string(), "batch 10");
    }

    #[test]
    fn fixed_and_percent_batches() {
        let plan = schedule(8, 1, BatchSize::Nodes(3));
        assert_eq!(plan.batches, [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
        let plan = schedule(8, 2, BatchSize::Percent(25));
        assert_eq!(plan.canaries, [0, 1]);
        assert_eq!(plan.batches, [vec![2, 3], vec![4, 5], vec![6, 7]]);
        let plan = schedule(2, 5, BatchSize::default());
        assert_eq!(plan.canaries, [0, 1]);
        assert!(plan.batches.is_empty());
        let plan = schedule(3, 0, BatchSize::Nodes(10));
        assert_eq!(plan.batches, [vec![0, 1, 2]]);
    }

    async fn outcome(
        plan: &Schedule,
        failing: &'static [usize],
        max_failed: usize,
    ) -> Vec<Option<usize>> {
        run(
            plan,
            8,
            1,
            max_failed,
            &mut Progress::disabled(),
            move |index| async move { (index, failing.contains(&index)) },
        )
        .await
    }

    #[tokio::test]
    async fn a_failed_canary_stops_the_run() {
        let plan = schedule(8, 2, BatchSize::Nodes(3));
        let results = outcome(&plan, &[1], 5).await;
        assert_eq!(results[..2], [Some(0), Some(1)]);
        assert!(results[2..].iter().all(Option::is_none));
    }

    #[tokio::test]
    async fn more_than_max_failed_stops_the_run() {
        let plan = schedule(8, 1, BatchSize::Nodes(3));
        // Node 2 fails: 1 is not more than 1, the run goes on.
        let results = outcome(&plan, &[2], 1).await;
        assert!(results.iter().all(Option::is_some));
        // Nodes 2 and 3 fail in batch 1: 2 is more than 1, batch 2 is not run.
        let results = outcome(&plan, &[2, 3], 1).await;
        assert_eq!(results[..4], [Some(0), Some(1), Some(2), Some(3)]);
        assert!(results[4..].iter().all(Option::is_none), "{results:?}");
        // With 0 allowed, the first failure stops it.
        let results = outcome(&plan, &[1], 0).await;
        assert_eq!(results[1], Some(1));
        assert!(results[2..].iter().all(Option::is_none), "{results:?}");
    }
}
