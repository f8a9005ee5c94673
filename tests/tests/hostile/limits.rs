//! The limits: connections and handshakes beyond their caps are refused at
//! once, streams beyond `max_concurrent_streams` are refused by HTTP/2, idle
//! connections and stalled RPCs end on time, keepalive pings go out and an
//! unanswered one closes the connection; every limit has a config key.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dice_tests::abuse::{Watch, h2_connect, raw_call};
use dice_tests::client::{handshake, roll_once};
use dice_tests::h2raw::{
    Ending, ROLL_DIE, client_start, code, flag, frame, grpc_message, grpc_request, kind,
    read_frames, read_until, setting,
};
use dice_tests::process::check_config;
use dice_tests::rpc_log::rpc_lines;
use dice_tests::{AgentConfig, Client, HandshakeStage, fresh_pki, poll_until, poll_until_async};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{
    DEADLINE, PROMPTLY, h2c, mtls, mtls_stream, open_connections, read_to_close, spawn_hostile,
};

/// The gRPC status code of a cancelled RPC.
const CANCELLED: i32 = 1;

/// An h2c connection that has finished the HTTP/2 preface exchange.
async fn h2c_connection(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(&client_start())
        .await
        .map_err(|e| format!("preface: {e}"))?;
    let ending = read_until(&mut stream, PROMPTLY, |frame| frame.kind == kind::SETTINGS).await;
    if ending
        .frames
        .iter()
        .any(|frame| frame.kind == kind::SETTINGS)
    {
        Ok(stream)
    } else {
        Err(format!("no SETTINGS from the agent: {}", ending.describe()))
    }
}

#[tokio::test]
async fn connections_beyond_max_connections_are_refused_at_once() {
    let (_dir, pki, agent) = spawn_hostile(|config| config.limit("max_connections", "5"));
    let h2c_addr = agent.addr("h2c");
    let mtls_addr = agent.addr("mtls");
    // The good client holds one of the five mTLS slots.
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), None).await;

    // h2c: five connections fill the listener; the rest are closed at once.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            h2c_connection(h2c_addr)
                .await
                .expect("a connection within the limit"),
        );
    }
    for _ in 0..100 {
        let mut stream = TcpStream::connect(h2c_addr).await.expect("TCP connect");
        let _ = stream.write_all(&client_start()).await;
        let started = Instant::now();
        let reply = read_to_close(&mut stream, PROMPTLY).await;
        assert!(
            reply.as_ref().is_ok_and(Vec::is_empty),
            "a connection over the limit should be closed unanswered: {reply:?} after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(open_connections(&agent, "h2c").await, 5.0);
    // A freed slot is usable again.
    held.pop();
    let rolled = poll_until_async(DEADLINE, || async {
        match Client::h2c(h2c_addr).await {
            Ok(client) => client.roll().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        rolled,
        "a slot freed by a closed connection should be reused"
    );

    // mTLS: the good client plus four more fill it.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let client = Client::mtls(mtls_addr, &pki.client_tls())
            .await
            .expect("an mTLS connection within the limit");
        client.roll().await.expect("roll within the limit");
        clients.push(client);
    }
    for _ in 0..50 {
        let started = Instant::now();
        let refused = handshake(mtls_addr, &pki.client_tls()).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.stage != HandshakeStage::Connect),
            "a connection over the limit should be refused: {refused:?}"
        );
        assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    }
    // The agent's log writer batches its lines: wait for them.
    let logged = poll_until(PROMPTLY, || {
        agent.logs().contains("too many open connections")
    });
    assert!(logged, "the refusals should be logged\n{}", agent.dump());
    watch.finish("connections beyond max_connections").await;
    drop(clients);
}

#[tokio::test]
async fn handshakes_beyond_max_handshakes_are_refused_at_once() {
    let (_dir, pki, agent) =
        spawn_hostile(|config| config.max_handshakes(3).handshake_timeout("20s"));
    let addr = agent.addr("mtls");
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), None).await;

    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(addr).await.expect("a silent connection"));
    }
    // Wait until the agent holds all three handshakes: then a fourth is refused.
    let refused = poll_until_async(DEADLINE, || async {
        matches!(handshake(addr, &pki.client_tls()).await, Err(e) if e.stage == HandshakeStage::Handshake)
    })
    .await;
    assert!(refused, "a fourth handshake should be refused");
    for _ in 0..50 {
        let started = Instant::now();
        let result = handshake(addr, &pki.client_tls()).await;
        assert!(result.is_err(), "handshake {result:?}");
        assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    }
    let logged = poll_until(PROMPTLY, || {
        agent.logs().contains("too many TLS handshakes in flight")
    });
    assert!(logged, "the refusals should be logged\n{}", agent.dump());
    // Closing the silent connections frees their slots.
    drop(silent);
    let rolled = poll_until_async(DEADLINE, || async {
        roll_once(addr, &pki.client_tls()).await.is_ok()
    })
    .await;
    assert!(
        rolled,
        "handshake slots should be freed when their peers go away"
    );
    watch.finish("handshakes beyond max_handshakes").await;
}

/// Ends stream `id`'s request with an empty gRPC message, and reads until
/// its response ends.
async fn finish_stream(stream: &mut TcpStream, id: u32) -> Ending {
    let data = frame(kind::DATA, flag::END_STREAM, id, &grpc_message(&[]));
    if let Err(error) = stream.write_all(&data).await {
        panic!("finish stream {id}: {error}");
    }
    read_until(stream, PROMPTLY, |frame| {
        frame.stream == id && frame.flags & flag::END_STREAM != 0
    })
    .await
}

#[tokio::test]
async fn streams_beyond_max_concurrent_streams_are_refused() {
    let (_dir, _pki, agent) = spawn_hostile(|config| config.limit("max_concurrent_streams", "4"));
    let addr = agent.addr("h2c");
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&client_start()).await.expect("preface");
        let settings =
            read_until(&mut stream, PROMPTLY, |frame| frame.kind == kind::SETTINGS).await;
        let advertised = settings
            .frames
            .iter()
            .find_map(|frame| frame.setting(setting::MAX_CONCURRENT_STREAMS));
        assert_eq!(advertised, Some(4), "{}", settings.describe());
        // Four RPCs waiting for their request body, then a fifth.
        let request = grpc_request(ROLL_DIE);
        let mut bytes = Vec::new();
        for id in [1, 3, 5, 7, 9] {
            bytes.extend(frame(kind::HEADERS, flag::END_HEADERS, id, &request));
        }
        stream.write_all(&bytes).await.expect("open five streams");
        let refused = read_until(&mut stream, PROMPTLY, |frame| {
            frame.kind == kind::RST_STREAM
        })
        .await;
        assert_eq!(
            refused.resets(),
            [(9, code::REFUSED_STREAM)],
            "{}",
            refused.describe()
        );
        // Once one ends, its slot takes a new stream.
        let answered = finish_stream(&mut stream, 1).await;
        assert!(answered.resets().is_empty(), "{}", answered.describe());
        stream
            .write_all(&frame(kind::HEADERS, flag::END_HEADERS, 11, &request))
            .await
            .expect("open stream 11");
        let answered = finish_stream(&mut stream, 11).await;
        assert!(
            answered
                .frames
                .iter()
                .any(|f| f.stream == 11 && f.kind == kind::HEADERS),
            "stream 11 should be answered: {}",
            answered.describe()
        );
        assert!(answered.resets().is_empty(), "{}", answered.describe());
    }
    watch.finish("streams beyond max_concurrent_streams").await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (_dir, _pki, agent) = spawn_hostile(|config| {
        config
            .limit("idle_timeout", "\"1s\"")
            .limit("request_timeout", "\"20s\"")
    });
    let addr = agent.addr("h2c");
    // Rolling every 10 ms, the good client's connection is never idle.
    let watch = Watch::start(agent.pid(), h2c(&agent), None).await;

    let mut idle = h2c_connection(addr).await.expect("an h2c connection");
    let started = Instant::now();
    let ending = read_until(&mut idle, DEADLINE, |_| false).await;
    let took = started.elapsed();
    assert!(
        ending.closed,
        "an idle connection should be closed: {}",
        ending.describe()
    );
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(4)).contains(&took),
        "closed after {took:?}, with idle_timeout 1s"
    );

    // A connection with an RPC in flight is not idle, however long the RPC takes.
    let mut busy = h2c_connection(addr).await.expect("an h2c connection");
    busy.write_all(&frame(
        kind::HEADERS,
        flag::END_HEADERS,
        1,
        &grpc_request(ROLL_DIE),
    ))
    .await
    .expect("start an RPC");
    let during = read_until(&mut busy, Duration::from_millis(2500), |_| false).await;
    assert!(
        !during.closed,
        "a busy connection was closed: {}",
        during.describe()
    );
    busy.write_all(&frame(kind::DATA, flag::END_STREAM, 1, &grpc_message(&[])))
        .await
        .expect("finish the RPC");
    let started = Instant::now();
    let after = read_until(&mut busy, DEADLINE, |_| false).await;
    assert!(
        after
            .frames
            .iter()
            .any(|f| f.stream == 1 && f.kind == kind::HEADERS),
        "the RPC should be answered: {}",
        after.describe()
    );
    assert!(
        after.closed && started.elapsed() < Duration::from_secs(4),
        "{}",
        after.describe()
    );
    watch.finish("idle connections").await;
}

#[tokio::test]
async fn a_stalled_rpc_is_cancelled_after_the_request_timeout() {
    let (_dir, pki, agent) = spawn_hostile(|config| config.limit("request_timeout", "\"1s\""));
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), Some(10)).await;

    let tls = mtls_stream(&agent, &pki).await;
    let send = h2_connect(tls).await.expect("HTTP/2");
    let mut calls = JoinSet::new();
    let started = Instant::now();
    for _ in 0..20 {
        let send = send.clone();
        calls.spawn(async move { raw_call(&send, ROLL_DIE, Vec::new(), false).await });
    }
    while let Some(reply) = calls.join_next().await {
        let reply = reply.expect("call task");
        assert_eq!(
            reply.as_ref().map(|r| r.grpc_status),
            Ok(Some(CANCELLED)),
            "a request that never finishes should be CANCELLED: {reply:?}"
        );
    }
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&took),
        "cancelled after {took:?}, with request_timeout 1s"
    );
    // The connection still serves.
    let ok = raw_call(&send, ROLL_DIE, grpc_message(&[]), true).await;
    assert_eq!(ok.map(|r| r.grpc_status), Ok(Some(0)));
    watch.finish("stalled RPCs").await;
    let logged = poll_until(PROMPTLY, || {
        rpc_lines(&agent.logs())
            .iter()
            .filter(|line| line.field("code").as_deref() == Some("1"))
            .count()
            >= 20
    });
    assert!(
        logged,
        "the cancelled RPCs should be logged with code 1\n{}",
        agent.dump()
    );
}

#[tokio::test]
async fn keepalive_pings_are_sent_and_an_unanswered_one_closes_the_connection() {
    let (_dir, _pki, agent) = spawn_hostile(|config| {
        config
            .limit("keepalive_interval", "\"500ms\"")
            .limit("keepalive_timeout", "\"1s\"")
    });
    let addr = agent.addr("h2c");
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    // A peer that answers pings keeps its connection.
    let mut live = h2c_connection(addr).await.expect("an h2c connection");
    let answered = read_until(&mut live, Duration::from_secs(3), |_| false).await;
    let pings = answered
        .frames
        .iter()
        .filter(|f| f.kind == kind::PING)
        .count();
    assert!(pings >= 2, "pings every 500 ms: {}", answered.describe());
    assert!(!answered.closed, "{}", answered.describe());

    // A peer that does not answer loses it after the keepalive timeout.
    let mut deaf = h2c_connection(addr).await.expect("an h2c connection");
    let started = Instant::now();
    let ignored = read_frames(&mut deaf, DEADLINE, false, |_| false).await;
    assert!(ignored.closed, "{}", ignored.describe());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    watch.finish("keepalive").await;
}

#[test]
fn every_limit_has_a_key_and_bad_values_are_named() {
    let (dir, pki) = fresh_pki();
    let path = dir.path().join("node.toml");
    let mut config = AgentConfig::standard(&pki)
        .handshake_timeout("3s")
        .max_handshakes(64);
    for (key, value) in [
        ("max_connections", "100"),
        ("max_concurrent_streams", "16"),
        ("max_message_bytes", "1024"),
        ("request_timeout", "\"5s\""),
        ("keepalive_interval", "\"15s\""),
        ("keepalive_timeout", "\"5s\""),
        ("idle_timeout", "\"1m\""),
    ] {
        config = config.limit(key, value);
    }
    config.write(&path);
    check_config(&path).assert_success();

    let bad = AgentConfig::standard(&pki)
        .limit("max_connections", "0")
        .limit("max_message_bytes", "-1")
        .limit("keepalive_interval", "\"soon\"")
        .limit("idle_timeout", "\"0s\"");
    bad.write(&path);
    let output = check_config(&path);
    output
        .assert_code(2)
        .assert_stderr_contains("limits.max_connections: must be a positive number, not 0")
        .assert_stderr_contains("limits.max_message_bytes: must be a positive number, not -1")
        .assert_stderr_contains("limits.keepalive_interval: not a duration: \"soon\"")
        .assert_stderr_contains("limits.idle_timeout: must be longer than zero");
    let unknown = AgentConfig::standard(&pki).limit("max_streams", "5");
    unknown.write(&path);
    check_config(&path)
        .assert_code(2)
        .assert_stderr_contains("max_streams");
}
