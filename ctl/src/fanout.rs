//! Runs one probe per node, at most `concurrency` at a time, each under its
//! own deadline.
//!
//! A node gets a task in a [`JoinSet`] only when one of the `concurrency`
//! slots is free, so memory is bounded by the nodes in flight, not by the
//! fleet: a task holds a whole probe's state (connection, TLS, HTTP/2), a few
//! kilobytes, and 50,000 of them waiting in line would cost hundreds of
//! megabytes. A node's deadline starts when its task does, so waiting in
//! line never eats into its timeout. On a multi-threaded runtime the TLS
//! handshakes of different nodes run on different cores.
//!
//! [`fan_out_each`] hands each result over as soon as its node finishes
//! (`--output jsonl`); [`fan_out`] collects them in the order of the input
//! (sorted by name), whatever order the nodes finish in. A failed node is a
//! result like any other, so one bad node never stops the others.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::plan::Plan;
use crate::progress::Progress;
use crate::report::RunInfo;
use crate::select::Node;
use crate::unix_now;

/// One node's result, and how long it took from its start to its end.
#[derive(Debug)]
pub struct Probed<T> {
    /// The node.
    pub node: Node,
    /// What the probe returned.
    pub result: T,
    /// Wall time from the node's start to its result.
    pub latency: Duration,
}

/// Calls `probe(node, deadline)` for every node, `concurrency` at a time, and
/// hands each result to `done` with the node's index in `nodes` as soon as
/// it finishes. `probe` must honour the deadline itself, so a timeout can say
/// which step was still waiting.
pub async fn fan_out_each<T, F, Fut>(
    nodes: impl IntoIterator<Item = Node>,
    concurrency: usize,
    timeout: Duration,
    progress: &mut Progress,
    probe: F,
    mut done: impl FnMut(usize, Probed<T>),
) where
    F: Fn(Node, Instant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut waiting = nodes.into_iter().enumerate();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < concurrency.max(1) {
            let Some((index, node)) = waiting.next() else {
                break;
            };
            let probe = probe.clone();
            tasks.spawn(async move {
                let start = Instant::now();
                let result = probe(node.clone(), start + timeout).await;
                (
                    index,
                    Probed {
                        node,
                        result,
                        latency: start.elapsed(),
                    },
                )
            });
        }
        match tasks.join_next().await {
            None => break,
            Some(Ok((index, probed))) => done(index, probed),
            Some(Err(error)) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Some(Err(error)) => panic!("a node's task was cancelled before it finished: {error}"),
        }
        progress.advance();
    }
    progress.finish();
}

/// As [`fan_out_each`], returning the results in the order of `nodes`.
pub async fn fan_out<T, F, Fut>(
    nodes: Vec<Node>,
    concurrency: usize,
    timeout: Duration,
    progress: &mut Progress,
    probe: F,
) -> Vec<Probed<T>>
where
    F: Fn(Node, Instant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut done: Vec<Option<Probed<T>>> = nodes.iter().map(|_| None).collect();
    fan_out_each(
        nodes,
        concurrency,
        timeout,
        progress,
        probe,
        |index, probed| {
            done[index] = Some(probed);
        },
    )
    .await;
    done.into_iter()
        .map(|probed| probed.expect("every task reports once before join_next ends"))
        .collect()
}

/// Calls `probe(node, tls, deadline)` for every node of `plan`, with the TLS
/// configuration they share, as [`fan_out_each`] does under the plan's
/// concurrency and timeout, handing each result to `done` as it finishes.
/// Returns the facts of the run.
pub async fn fan_out_plan_each<T, F, Fut>(
    plan: &Plan,
    progress: &mut Progress,
    probe: F,
    done: impl FnMut(usize, Probed<T>),
) -> RunInfo
where
    F: Fn(Node, Arc<ClientConfig>, Instant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let started_at = unix_now();
    let start = Instant::now();
    let tls = plan.tls.clone();
    fan_out_each(
        plan.nodes.iter().cloned(),
        plan.concurrency,
        plan.timeout,
        progress,
        move |node, deadline| probe(node, tls.clone(), deadline),
        done,
    )
    .await;
    RunInfo {
        started_at,
        elapsed: start.elapsed(),
        timeout: plan.timeout,
        concurrency: plan.concurrency,
    }
}

/// As [`fan_out_plan_each`], returning the results in the order of the
/// plan's nodes (sorted by name).
pub async fn fan_out_plan<T, F, Fut>(
    plan: &Plan,
    progress: &mut Progress,
    probe: F,
) -> (Vec<Probed<T>>, RunInfo)
where
    F: Fn(Node, Arc<ClientConfig>, Instant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut done: Vec<Option<Probed<T>>> = plan.nodes.iter().map(|_| None).collect();
    let run = fan_out_plan_each(plan, progress, probe, |index, probed| {
        done[index] = Some(probed);
    })
    .await;
    let probed = done
        .into_iter()
        .map(|probed| probed.expect("every task reports once before join_next ends"))
        .collect();
    (probed, run)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::client::NodeTarget;

    fn nodes(count: usize) -> Vec<Node> {
        (0..count)
            .map(|i| Node {
                name: format!("n{i}"),
                target: NodeTarget::parse(&format!("127.0.0.1:{}", i + 1), None).expect("target"),
                ad_hoc: false,
                source: "static".into(),
            })
            .collect()
    }

    /// Each node sleeps until its deadline: with width 2 and 5 nodes that is
    /// 3 rounds, and no node ever has less than its own full timeout.
    #[tokio::test(start_paused = true)]
    async fn bounded_with_a_deadline_per_node() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let timeout = Duration::from_secs(1);
        let results = {
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            fan_out(
                nodes(5),
                2,
                timeout,
                &mut Progress::disabled(),
                move |node, deadline| {
                    let (in_flight, peak) = (in_flight.clone(), peak.clone());
                    async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        let budget = deadline - Instant::now();
                        tokio::time::sleep_until(deadline).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        (node.name, budget)
                    }
                },
            )
            .await
        };
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        let names: Vec<&str> = results.iter().map(|r| r.result.0.as_str()).collect();
        assert_eq!(names, ["n0", "n1", "n2", "n3", "n4"]);
        for probed in &results {
            assert_eq!(probed.result.1, timeout, "{}", probed.node.name);
            assert_eq!(probed.latency, timeout);
        }
    }

    /// A node is taken from the list only when a slot is free: with width 4,
    /// no more than 4 nodes are ever taken and not yet finished, however long
    /// the list (a task per node up front held a whole probe's state each).
    #[tokio::test(start_paused = true)]
    async fn takes_nodes_only_as_slots_free_up() {
        let taken = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let list = {
            let taken = taken.clone();
            nodes(100).into_iter().inspect(move |_| {
                taken.fetch_add(1, Ordering::SeqCst);
            })
        };
        let mut most_waiting = 0;
        let mut count = 0;
        let (probe_taken, probe_finished) = (taken.clone(), finished.clone());
        fan_out_each(
            list,
            4,
            Duration::from_secs(1),
            &mut Progress::disabled(),
            move |_, _| {
                let (taken, finished) = (probe_taken.clone(), probe_finished.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    taken.load(Ordering::SeqCst) - finished.load(Ordering::SeqCst)
                }
            },
            |_, probed| {
                most_waiting = most_waiting.max(probed.result);
                finished.fetch_add(1, Ordering::SeqCst);
                count += 1;
            },
        )
        .await;
        assert_eq!(count, 100);
        assert_eq!(taken.load(Ordering::SeqCst), 100);
        assert!(
            most_waiting <= 4,
            "{most_waiting} nodes taken and not finished"
        );
    }

    /// Results keep the input order even when later nodes finish first.
    #[tokio::test(start_paused = true)]
    async fn results_keep_the_input_order() {
        let results = fan_out(
            nodes(4),
            64,
            Duration::from_secs(10),
            &mut Progress::disabled(),
            |node, _| async move {
                let index: u64 = node.name[1..].parse().expect("index");
                tokio::time::sleep(Duration::from_millis(100 * (4 - index))).await;
                index
            },
        )
        .await;
        let order: Vec<u64> = results.iter().map(|r| r.result).collect();
        assert_eq!(order, [0, 1, 2, 3]);
        assert_eq!(results[3].latency, Duration::from_millis(100));
    }
}
