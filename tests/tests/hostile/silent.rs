//! A thousand silent connections on each port: the handshake or idle
//! timeout closes them all while a good client still gets in. Both tests
//! hold [`many_connections`], so they never run at the same time as each
//! other or as the other connection bursts.

use std::time::Instant;

use dice_tests::abuse::Watch;
use dice_tests::client::roll_once;
use dice_tests::heavy::{many_connections, silent_connections};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{
    DEADLINE, PROMPTLY, h2c, handshakes, mtls, open_connections, read_to_close, spawn_hostile,
};

/// How many silent connections each test opens.
const SILENT: usize = 1000;

/// Waits for the agent to close every one of `silent` within [`DEADLINE`];
/// `expected` says which timeout should have closed them.
async fn expect_all_closed(silent: Vec<TcpStream>, expected: &'static str) {
    let mut closes = JoinSet::new();
    for mut stream in silent {
        closes.spawn(async move { read_to_close(&mut stream, DEADLINE).await });
    }
    while let Some(closed) = closes.join_next().await {
        closed.expect("close task").expect(expected);
    }
}

#[tokio::test]
async fn thousand_silent_connections_on_the_mtls_port() {
    let _heavy = many_connections().await;
    let (_dir, pki, agent) = spawn_hostile(|config| config.handshake_timeout("2s"));
    let addr = agent.addr("mtls");
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), Some(10)).await;

    let silent = silent_connections(addr, SILENT).await;
    // A good client gets in at once beside them (1000 < max_handshakes 1024).
    let started = Instant::now();
    roll_once(addr, &pki.client_tls())
        .await
        .expect("a fresh roll beside 1000 silent connections");
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    // The handshake timeout closes every one of them.
    expect_all_closed(
        silent,
        "the agent should close a silent connection after the handshake timeout",
    )
    .await;
    watch
        .finish("1000 silent connections on the mTLS port")
        .await;
    assert!(handshakes(&agent, "timeout").await >= 1000.0);
}

#[tokio::test]
async fn thousand_silent_connections_on_the_h2c_port() {
    let _heavy = many_connections().await;
    let (_dir, _pki, agent) = spawn_hostile(|config| config.limit("idle_timeout", "\"2s\""));
    let addr = agent.addr("h2c");
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    let started = Instant::now();
    let silent = silent_connections(addr, SILENT).await;
    let opened = started.elapsed();
    let open = open_connections(&agent, "h2c").await;
    eprintln!("1000 silent h2c connections opened in {opened:?}; the agent holds {open}");
    assert!(
        open > 0.0,
        "the agent should hold silent h2c connections until the idle timeout"
    );
    expect_all_closed(
        silent,
        "the agent should close a silent connection after the idle timeout",
    )
    .await;
    watch
        .finish("1000 silent connections on the h2c port")
        .await;
    let open = open_connections(&agent, "h2c").await;
    assert!(open <= 2.0, "{open} h2c connections still open");
}
