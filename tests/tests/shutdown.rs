//! SIGTERM and SIGINT: health turns NOT_SERVING, the agent stops accepting,
//! in-flight RPCs finish within the grace period, and it exits 0.
//!
//! RollDie is instant, so the long call held in flight is a health `Watch`
//! stream, and rolls run back to back on a shared connection through the
//! signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dice_proto::DICE_SERVICE_NAME;
use dice_tests::abuse::{h2_connect, raw_call};
use dice_tests::client::{ServingStatus, is_clean_refusal, roll_once, status_chain};
use dice_tests::h2raw::{ROLL_DIE, grpc_message};
use dice_tests::{Agent, AgentConfig, Client, Signal, fresh_pki, poll_until_async, within};
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::codegen::{Bytes, http};
use tonic_health::pb::HealthCheckResponse;

/// A deadline for one roll.
const ROLL_DEADLINE: Duration = Duration::from_secs(2);

/// Slack on top of the grace period for the process to exit and be noticed.
const EXIT_SLACK: Duration = Duration::from_secs(3);

/// Opens a health watch and checks its first report is SERVING.
async fn serving_watch(client: &Client, service: &str) -> Streaming<HealthCheckResponse> {
    let mut watch = client
        .watch_health(service)
        .await
        .expect("open a health watch");
    let first = within(
        ROLL_DEADLINE,
        "the first health watch report",
        watch.message(),
    )
    .await
    .expect("health watch")
    .expect("a first health report");
    assert_eq!(
        first.status(),
        ServingStatus::Serving,
        "watch {service:?} before SIGTERM"
    );
    watch
}

/// Reads a health watch until it reports NOT_SERVING or ends; says which.
async fn until_not_serving(watch: &mut Streaming<HealthCheckResponse>) -> String {
    loop {
        match watch.message().await {
            Ok(Some(report)) if report.status() == ServingStatus::NotServing => {
                return "NOT_SERVING".to_owned();
            }
            Ok(Some(_)) => continue,
            Ok(None) => return "stream ended (listener closed)".to_owned(),
            Err(status) => return format!("stream failed: {}", status_chain(&status)),
        }
    }
}

/// How one roll ended.
#[derive(Debug)]
enum Outcome {
    Rolled,
    Refused(String),
    Broken(String),
}

fn spawn_roller(
    client: Client,
    stop: Arc<AtomicBool>,
    rolled: Arc<AtomicUsize>,
) -> JoinHandle<Vec<Outcome>> {
    tokio::spawn(async move {
        let mut outcomes = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let outcome = match tokio::time::timeout(ROLL_DEADLINE, client.roll()).await {
                Ok(Ok(value)) if (1..=6).contains(&value) => {
                    rolled.fetch_add(1, Ordering::Relaxed);
                    Outcome::Rolled
                }
                Ok(Ok(value)) => Outcome::Broken(format!("rolled {value}")),
                Ok(Err(status)) if is_clean_refusal(&status) => {
                    Outcome::Refused(status_chain(&status))
                }
                Ok(Err(status)) => Outcome::Broken(status_chain(&status)),
                Err(_) => Outcome::Broken(format!("no answer within {ROLL_DEADLINE:?}")),
            };
            let refused = matches!(outcome, Outcome::Refused(_));
            outcomes.push(outcome);
            if refused {
                // The agent is going away; don't spin on connection-refused.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        outcomes
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_rpcs_in_flight_drains_and_exits_zero() {
    let (_dir, pki) = fresh_pki();
    let grace = Duration::from_secs(5);
    let mut agent = Agent::spawn(&AgentConfig::standard(&pki).grace_period("5s"));
    let addr = agent.addr("mtls");
    let tls = pki.client_tls();

    let watcher = Client::mtls(addr, &tls).await.expect("connect the watcher");
    let mut watches = Vec::new();
    for service in ["", DICE_SERVICE_NAME] {
        watches.push((service, serving_watch(&watcher, service).await));
    }

    // Four rollers share one HTTP/2 connection, so rolls are in flight on it
    // when the signal lands.
    let roller = Client::mtls(addr, &tls).await.expect("connect the roller");
    let stop = Arc::new(AtomicBool::new(false));
    let rolled = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| spawn_roller(roller.clone(), Arc::clone(&stop), Arc::clone(&rolled)))
        .collect();
    let warmed = poll_until_async(Duration::from_secs(10), || {
        let rolled = Arc::clone(&rolled);
        async move { rolled.load(Ordering::Relaxed) >= 50 }
    })
    .await;
    assert!(
        warmed,
        "rollers made only {} rolls before SIGTERM",
        rolled.load(Ordering::Relaxed)
    );

    agent.signal(Signal::TERM);
    let signalled = Instant::now();

    for (service, watch) in &mut watches {
        let seen = within(
            grace + EXIT_SLACK,
            "health after SIGTERM",
            until_not_serving(watch),
        )
        .await;
        eprintln!("health {service:?} after SIGTERM: {seen}");
    }
    // Let the watch streams finish so the drain can complete.
    drop(watches);
    drop(watcher);

    tokio::task::block_in_place(|| agent.assert_clean_exit(grace + EXIT_SLACK, "after SIGTERM"));
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.expect("roller task"));
    }

    assert!(signalled.elapsed() < grace + EXIT_SLACK);

    let broken: Vec<&String> = (outcomes.iter())
        .filter_map(|outcome| match outcome {
            Outcome::Broken(why) => Some(why),
            _ => None,
        })
        .collect();
    let rolls = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Rolled))
        .count();
    let refusals: std::collections::BTreeSet<&String> = (outcomes.iter())
        .filter_map(|outcome| match outcome {
            Outcome::Refused(why) => Some(why),
            _ => None,
        })
        .collect();
    eprintln!(
        "{rolls} rolls, {} broken; clean refusals seen: {refusals:#?}",
        broken.len()
    );
    assert!(broken.is_empty(), "RPCs broken by shutdown: {broken:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_waits_only_for_in_flight_calls() {
    let (_dir, pki) = fresh_pki();
    // A long grace period: the agent must exit as soon as the last call ends, not at the deadline.
    let mut agent = Agent::spawn(&AgentConfig::standard(&pki).grace_period("30s"));
    let addr = agent.addr("mtls");
    let tls = pki.client_tls();

    let watcher = Client::mtls(addr, &tls).await.expect("connect the watcher");
    let mut watch = serving_watch(&watcher, DICE_SERVICE_NAME).await;

    agent.signal(Signal::TERM);
    let seen = within(
        ROLL_DEADLINE * 2,
        "health after SIGTERM",
        until_not_serving(&mut watch),
    )
    .await;
    assert_eq!(
        seen,
        "NOT_SERVING",
        "the open watch should see NOT_SERVING\n{}",
        agent.dump()
    );

    // New clients are turned away while the watch keeps the agent draining.
    let refused = poll_until_async(Duration::from_secs(5), || {
        let tls = tls.clone();
        async move {
            matches!(
                tokio::time::timeout(Duration::from_secs(1), roll_once(addr, &tls)).await,
                Err(_) | Ok(Err(_))
            )
        }
    })
    .await;
    assert!(
        refused,
        "a new client could still roll after SIGTERM\n{}",
        agent.dump()
    );

    drop(watch);
    drop(watcher);
    // Its last call has ended: it stops draining and exits.
    tokio::task::block_in_place(|| {
        agent.assert_clean_exit(
            Duration::from_secs(5),
            "after SIGTERM and the end of its last call",
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_bounds_shutdown_with_a_call_that_never_ends() {
    let (_dir, pki) = fresh_pki();
    let grace = Duration::from_secs(2);
    let mut agent = Agent::spawn(&AgentConfig::standard(&pki).grace_period("2s"));
    let addr = agent.addr("mtls");
    let client = Client::mtls(addr, &pki.client_tls())
        .await
        .expect("connect");
    // Held open through the whole shutdown: a watch stream, and a roll whose
    // request message never comes.
    let _watch = serving_watch(&client, DICE_SERVICE_NAME).await;
    let tls = pki.client_tls().connect(addr).await.expect("TLS");
    let send = h2_connect(tls).await.expect("HTTP/2");
    let (_response, _request_body) = roll_headers_only(&send).await;
    // Answered only once the agent has read the held roll's HEADERS.
    let after = raw_call(&send, ROLL_DIE, grpc_message(&[]), true).await;
    assert_eq!(after.map(|reply| reply.grpc_status), Ok(Some(0)));

    let signalled = Instant::now();
    agent.signal(Signal::TERM);
    tokio::task::block_in_place(|| {
        agent.assert_clean_exit(
            grace + EXIT_SLACK,
            &format!("after SIGTERM, outliving its {grace:?} grace period"),
        )
    });
    let took = signalled.elapsed();
    eprintln!("exited {took:?} after SIGTERM with calls held in flight");
    // Not before the grace period is over either: the calls were still running.
    assert!(
        took >= grace,
        "the agent exited {took:?} after SIGTERM, before its {grace:?} grace period ended, with calls in flight\n{}",
        agent.dump()
    );
}

#[test]
fn sigint_exits_zero() {
    let (_dir, pki) = fresh_pki();
    let mut agent = Agent::spawn(&AgentConfig::standard(&pki).grace_period("5s"));
    agent.signal(Signal::INT);
    agent.assert_clean_exit(Duration::from_secs(5) + EXIT_SLACK, "after SIGINT");
}

// === a call provably in flight across the signal ===

/// The log line the agent writes once it has the signal and starts draining.
const STOPPING: &str = "stopping: refusing new connections, draining in-flight RPCs";

/// Opens a RollDie call on `send` and sends only its HEADERS: the request
/// message (DATA with END_STREAM) goes later through the returned stream.
async fn roll_headers_only(
    send: &h2::client::SendRequest<Bytes>,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{ROLL_DIE}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request");
    let mut send = send.clone().ready().await.expect("the connection is ready");
    send.send_request(request, false)
        .expect("send the HEADERS of a RollDie call")
}

/// Reads a unary gRPC response to the end: the value rolled if it came with
/// HTTP 200, one message and `grpc-status: 0`; otherwise what came instead.
async fn read_roll(response: h2::client::ResponseFuture) -> Result<i32, String> {
    let response = response
        .await
        .map_err(|error| format!("response: {error}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status()));
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.map_err(|error| format!("response body: {error}"))?;
        let _ = body.flow_control().release_capacity(data.len());
        bytes.extend_from_slice(&data);
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|error| format!("trailers: {error}"))?
        .unwrap_or_default();
    let status = trailers.get("grpc-status").and_then(|v| v.to_str().ok());
    if status != Some("0") {
        return Err(format!("trailers {trailers:?}, body {bytes:?}"));
    }
    // One uncompressed gRPC message holding RollDieResponse { value = 1 (varint) }.
    match bytes[..] {
        [0, 0, 0, 0, 2, 0x08, value] => Ok(i32::from(value)),
        _ => Err(format!("not one RollDieResponse message: {bytes:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_in_flight_across_sigterm_completes() {
    let (_dir, pki) = fresh_pki();
    let grace = Duration::from_secs(10);
    let mut agent = Agent::spawn(&AgentConfig::standard(&pki).grace_period("10s"));
    let tls = pki
        .client_tls()
        .connect(agent.addr("mtls"))
        .await
        .expect("TLS");
    let send = h2_connect(tls).await.expect("HTTP/2");

    let (response, mut request_body) = roll_headers_only(&send).await;
    // A whole call opened after it on the same connection: once it is
    // answered, the agent has read the first call's HEADERS (HTTP/2 frames
    // arrive in order), so that call is in flight.
    let after = raw_call(&send, ROLL_DIE, grpc_message(&[]), true).await;
    assert_eq!(
        after.map(|reply| reply.grpc_status),
        Ok(Some(0)),
        "a roll next to the held one\n{}",
        agent.dump()
    );

    agent.signal(Signal::TERM);
    let signalled = Instant::now();
    let stopping = poll_until_async(grace, || async { agent.logs().contains(STOPPING) }).await;
    assert!(
        stopping,
        "the agent never logged {STOPPING:?}\n{}",
        agent.dump()
    );
    assert!(
        agent.try_wait().is_none(),
        "the agent exited with a call in flight\n{}",
        agent.dump()
    );

    // Only now does the request message go out.
    request_body
        .send_data(Bytes::from(grpc_message(&[])), true)
        .expect("send the request message after SIGTERM");
    let rolled = within(
        ROLL_DEADLINE * 2,
        "the held roll's answer",
        read_roll(response),
    )
    .await;
    assert!(
        rolled.as_ref().is_ok_and(|value| (1..=6).contains(value)),
        "the call in flight across SIGTERM should complete OK: {rolled:?}\n{}",
        agent.dump()
    );
    eprintln!(
        "the held roll answered {rolled:?} {:?} after SIGTERM",
        signalled.elapsed()
    );

    // Its last call over, the agent exits long before the grace period ends.
    drop(send);
    tokio::task::block_in_place(|| {
        agent.assert_clean_exit(EXIT_SLACK, "after SIGTERM and its last call")
    });
    assert!(signalled.elapsed() < grace, "{:?}", signalled.elapsed());
}
