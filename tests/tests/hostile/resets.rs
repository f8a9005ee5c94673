//! Stream floods on both ports: rapid reset (CVE-2023-44487) and
//! MadeYouReset (CVE-2025-8671).

use std::convert::identity;

use dice_tests::Client;
use dice_tests::abuse::Watch;
use dice_tests::h2raw::{
    self, Ending, ROLL_DIE, client_start, code, flag, frame, grpc_request, kind, rst_stream,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{DEADLINE, for_a_while, h2c, h2c_stream, mtls_stream, spawn_hostile};

/// The rapid-reset pattern (CVE-2023-44487) on one connection: open a stream
/// and reset it at once, `streams` times, as fast as the connection takes it.
/// Returns how many pairs were written and how the agent ended the connection.
async fn rapid_reset<S>(io: S, streams: u32) -> (u32, Ending)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    stream_flood(io, streams, |id| rst_stream(id, code::CANCEL)).await
}

/// The "MadeYouReset" pattern (CVE-2025-8671): open a stream, then send a
/// frame that makes the server reset it (here a WINDOW_UPDATE that overflows
/// the stream's send window, a stream error), `streams` times.
async fn made_you_reset<S>(io: S, streams: u32) -> (u32, Ending)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    stream_flood(io, streams, |id| {
        frame(kind::WINDOW_UPDATE, 0, id, &0x7fff_ffff_u32.to_be_bytes())
    })
    .await
}

/// Opens `streams` streams on one connection, each RollDie's HEADERS followed
/// at once by `then(stream id)`, as fast as the connection takes them.
/// Returns how many were written and how the agent ended the connection.
async fn stream_flood<S>(io: S, streams: u32, then: fn(u32) -> Vec<u8>) -> (u32, Ending)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let writing = tokio::spawn(async move {
        let request = grpc_request(ROLL_DIE);
        let mut sent = 0;
        if writer.write_all(&client_start()).await.is_err() {
            return sent;
        }
        let mut batch = Vec::new();
        for n in 0..streams {
            let id = 2 * n + 1;
            batch.extend(frame(kind::HEADERS, flag::END_HEADERS, id, &request));
            batch.extend(then(id));
            if batch.len() > 32 * 1024 || n + 1 == streams {
                if writer.write_all(&batch).await.is_err() {
                    return sent;
                }
                sent = n + 1;
                batch.clear();
            }
        }
        sent
    });
    // The reader half cannot ACK (the writer owns the other half): a frame
    // reader that only watches is enough here.
    let mut ending = Ending::default();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, h2raw::read_frame(&mut reader)).await {
            Err(_) => break,
            Ok(Ok(Some(frame))) => {
                let goaway = frame.kind == kind::GOAWAY;
                ending.frames.push(frame);
                if goaway && writing.is_finished() {
                    break;
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                ending.closed = true;
                break;
            }
        }
    }
    writing.abort();
    let sent = writing.await.unwrap_or(streams);
    (sent, ending)
}

#[tokio::test]
async fn rapid_reset_on_the_h2c_and_mtls_ports() {
    let (_dir, pki, agent) = spawn_hostile(identity);
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;
    let mtls_watch_client = Client::mtls(agent.addr("mtls"), &pki.client_tls())
        .await
        .expect("a good mTLS client");

    const STREAMS: u32 = 100_000;
    let mut stopped_after = Vec::new();
    let rounds = for_a_while(async |round| {
        let tcp = h2c_stream(&agent).await;
        stopped_after.push(assert_stopped(
            "h2c",
            rapid_reset(tcp, STREAMS).await,
            round == 0,
        ));
        let tls = mtls_stream(&agent, &pki).await;
        stopped_after.push(assert_stopped(
            "mtls",
            rapid_reset(tls, STREAMS).await,
            round == 0,
        ));
        mtls_watch_client
            .roll()
            .await
            .expect("a good mTLS client rolls between rapid resets");
    })
    .await;
    eprintln!(
        "rapid reset: {rounds} rounds; the agent stopped each connection after {} to {} streams",
        stopped_after.iter().min().unwrap_or(&0),
        stopped_after.iter().max().unwrap_or(&0)
    );
    watch.finish("HTTP/2 rapid reset (CVE-2023-44487)").await;
}

#[tokio::test]
async fn made_you_reset_on_the_h2c_and_mtls_ports() {
    let (_dir, pki, agent) = spawn_hostile(identity);
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    // hyper stops a connection after 1,024 streams it had to reset itself
    // (resets still queued when it gives up are never sent).
    const STREAMS: u32 = 5_000;
    let tcp = h2c_stream(&agent).await;
    let (sent, ending) = made_you_reset(tcp, STREAMS).await;
    let tls = mtls_stream(&agent, &pki).await;
    let (tls_sent, tls_ending) = made_you_reset(tls, STREAMS).await;
    for (port, sent, ending) in [("h2c", sent, ending), ("mtls", tls_sent, tls_ending)] {
        let resets = ending.resets().len();
        eprintln!(
            "made-you-reset on {port}: {sent} streams sent, {resets} reset by the agent; GOAWAY {:?}",
            ending.goaway().map(code::name)
        );
        assert_eq!(
            ending.goaway(),
            Some(code::ENHANCE_YOUR_CALM),
            "the agent should stop a connection that makes it reset stream after stream on {port}: {}",
            ending.describe()
        );
        assert!(
            resets <= 1_100,
            "the agent reset {resets} streams before stopping the connection on {port}"
        );
    }
    watch.finish("HTTP/2 made-you-reset (CVE-2025-8671)").await;
}

/// Asserts that the agent stopped a rapid-reset connection on `port` with
/// GOAWAY ENHANCE_YOUR_CALM, printing what happened when `report`; returns how
/// many streams were sent before it did.
fn assert_stopped(port: &str, (sent, ending): (u32, Ending), report: bool) -> u32 {
    if report {
        eprintln!(
            "rapid reset on {port}: {sent} streams opened and reset; GOAWAY {:?}, closed {}",
            ending.goaway().map(code::name),
            ending.closed
        );
    }
    assert_eq!(
        ending.goaway().map(code::name),
        Some(code::name(code::ENHANCE_YOUR_CALM)),
        "the agent should stop a rapid-reset connection on {port} with GOAWAY ENHANCE_YOUR_CALM: sent {sent}, {}",
        ending.describe()
    );
    sent
}
