//! Serves the gRPC services on already-bound listeners until a stop signal,
//! then drains: health goes NOT_SERVING, accept loops stop, and in-flight
//! RPCs get the grace period to finish. Health listeners (`mode = "health"`)
//! have an HTTP/2 server of their own, serving health alone: it keeps
//! answering NOT_SERVING through the drain and stops at exit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dice_proto::api::dice_service_server::DiceServiceServer;
use dice_proto::info::admin_service_server::AdminServiceServer;
use dice_proto::info::agent_info_service_server::AgentInfoServiceServer;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::ServiceBuilder;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::config::Config;
use crate::log::RpcSink;
use crate::net::http2::Server;
use crate::net::{Bound, Connections, Listeners, watch_and_recheck};
use crate::process::{StopSignals, ready, systemd};
use crate::rpc::{
    Authz, Dispatch, HealthOnly, RateLimit, RequestTimeout, RpcLog, rewrite_response,
};
use crate::services::{AgentState, Dice, HealthStatus, Info};
use crate::tls::Reloader;

/// The smallest request size limit of the admin API: certificate chains and
/// CA bundles are larger than the 4 KiB default of `limits.max_message_bytes`.
const ADMIN_MIN_MESSAGE_BYTES: usize = 64 * 1024;

/// Finished connections waiting for the HTTP/2 server to pick them up.
const ACCEPTED_QUEUE: usize = 256;

/// How long the health listeners' connections get to close at exit, after
/// the drain: a health `Watch` never ends on its own.
const PROBES_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves until SIGTERM or SIGINT, then drains within `config.grace_period`.
/// Each RPC's log line goes to `rpc_sink`.
pub async fn serve(
    config: &Config,
    state: Arc<AgentState>,
    bound: Bound,
    mut signals: StopSignals,
    reloader: Reloader,
    ready_file: Option<&Path>,
    rpc_sink: RpcSink,
) -> anyhow::Result<()> {
    let limits = config.limits;
    let health = HealthReporter::new();
    let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()))
        .max_decoding_message_size(limits.max_message_bytes);
    let mut health_status = HealthStatus::new(health, state.clone());
    health_status.refresh().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dice_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?
        .max_decoding_message_size(limits.max_message_bytes);
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dice_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("cannot build the reflection service")?
        .max_decoding_message_size(limits.max_message_bytes);

    let ready_text = ready::render(&bound).context("cannot read a bound address")?;
    let stop = CancellationToken::new();
    let exit = CancellationToken::new();
    let health_stop = CancellationToken::new();
    let health_task = tokio::spawn(health_status.follow(health_stop.clone()));
    let (accepted, incoming) = mpsc::channel(ACCEPTED_QUEUE);
    let (probes, probes_incoming) = mpsc::channel(ACCEPTED_QUEUE);
    let mut accept_loops = JoinSet::new();
    accept_loops.spawn(crate::metrics::serve_following(
        bound.metrics,
        state.live.clone(),
        stop.clone(),
    ));
    let live = state.live.clone();
    let connections = Arc::new(Connections::default());
    let listeners = Listeners::new(
        state.clone(),
        connections.clone(),
        accepted,
        probes,
        bound.profiles,
        reloader.follower(),
    );
    let listeners_task = tokio::spawn(listeners.run(bound.listeners, stop.clone(), exit.clone()));
    let reload_task = tokio::spawn(reloader.run(stop.clone()));
    let recheck_task = tokio::spawn(watch_and_recheck(
        connections.clone(),
        state.clone(),
        stop.clone(),
    ));

    let admin = AdminServiceServer::new(Admin::new(state.clone()))
        .max_decoding_message_size(limits.max_message_bytes.max(ADMIN_MIN_MESSAGE_BYTES));
    let mut others = tonic::service::Routes::builder();
    others
        .add_service(health_service.clone())
        .add_service(
            AgentInfoServiceServer::new(Info::new(state.clone()))
                .max_decoding_message_size(limits.max_message_bytes),
        )
        .add_service(admin)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let others = others.routes();
    let dice = DiceServiceServer::new(Dice).max_decoding_message_size(limits.max_message_bytes);
    let stack = ServiceBuilder::new()
        .layer_fn(|inner| RpcLog::new(inner, rpc_sink))
        .map_response(rewrite_response)
        .layer_fn(Authz::new)
        .layer_fn(|inner| RateLimit::new(inner, state.rate_limits.clone()))
        .layer_fn(|inner| RequestTimeout::new(inner, limits.request_timeout))
        .service(Dispatch::new(dice, others));
    let server = Server::new(stack, stop.clone(), connections.clone(), live.clone()).run(incoming);
    let mut server = tokio::spawn(server);
    let probes_stack = ServiceBuilder::new()
        .layer_fn(RpcLog::probes)
        .map_response(rewrite_response)
        .layer_fn(|inner| RateLimit::new(inner, state.rate_limits.clone()))
        .layer_fn(|inner| RequestTimeout::new(inner, limits.request_timeout))
        .service(HealthOnly::new(health_service));
    let probes_server =
        Server::new(probes_stack, exit.clone(), connections, live.clone()).run(probes_incoming);
    let mut probes_server = tokio::spawn(probes_server);

    if let Some(path) = ready_file {
        ready::write(path, &ready_text)?;
    }
    systemd::ready();
    info!("ready");

    let signal = tokio::select! {
        signal = signals.recv() => signal,
        ended = &mut server => {
            stop.cancel();
            exit.cancel();
            return match ended {
                Ok(()) => Err(anyhow::anyhow!("the gRPC server stopped on its own")),
                Err(error) => Err(error).context("the gRPC server task failed"),
            };
        }
    };
    let grace_period = live.current().grace_period;
    info!(
        signal,
        ?grace_period,
        "stopping: refusing new connections, draining in-flight RPCs"
    );
    systemd::stopping();
    // NOT_SERVING before anything stops: a probe never sees SERVING from a
    // node that has stopped accepting.
    health_stop.cancel();
    let _ = health_task.await;
    stop.cancel();
    while accept_loops.join_next().await.is_some() {}
    // The reloader only waits on timers and events; it stops at once.
    let _ = reload_task.await;
    let _ = recheck_task.await;
    match tokio::time::timeout(grace_period, &mut server).await {
        Ok(Ok(())) => info!("stopped"),
        Ok(Err(error)) => {
            exit.cancel();
            return Err(error).context("the gRPC server task failed while draining");
        }
        Err(_) => {
            server.abort();
            warn!(
                ?grace_period,
                "grace period ran out; stopping with RPCs still in flight"
            );
        }
    }
    // The health listeners answered NOT_SERVING through the drain; now they close.
    exit.cancel();
    let _ = listeners_task.await;
    if tokio::time::timeout(PROBES_CLOSE_TIMEOUT, &mut probes_server)
        .await
        .is_err()
    {
        probes_server.abort();
    }
    Ok(())
}
