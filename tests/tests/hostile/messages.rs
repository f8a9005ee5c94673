//! Oversize gRPC messages on both ports: RESOURCE_EXHAUSTED, and logged.

use std::convert::identity;

use dice_tests::abuse::{RawReply, Watch, h2_connect, raw_call};
use dice_tests::h2raw::{ROLL_DIE, grpc_message};
use dice_tests::poll_until;
use dice_tests::rpc_log::rpc_lines;

use super::{PROMPTLY, for_a_while, h2c_stream, mtls, mtls_stream, spawn_hostile};

/// The gRPC status code of a message over `max_message_bytes`.
const RESOURCE_EXHAUSTED: i32 = 8;

/// A RollDieRequest of exactly `len` bytes: one unknown length-delimited
/// field (number 15), which protobuf decoders skip.
fn padded_roll_request(len: usize) -> Vec<u8> {
    assert!(len >= 4);
    // Tag 0x7a, then a two-byte varint length for 128..=16383 bytes of padding.
    let pad = len - 3;
    assert!((128..16384).contains(&pad), "{len}");
    let mut out = vec![0x7a, (pad as u8 & 0x7f) | 0x80, (pad >> 7) as u8];
    out.resize(len, 0);
    out
}

async fn oversize_messages_on(send: &h2::client::SendRequest<tonic::codegen::Bytes>) {
    let call = |body: Vec<u8>| raw_call(send, ROLL_DIE, body, true);
    let ok = call(grpc_message(&padded_roll_request(4096))).await;
    assert_eq!(
        ok.as_ref().map(|r| r.grpc_status),
        Ok(Some(0)),
        "a 4096-byte request is within max_message_bytes: {ok:?}"
    );
    let over = call(grpc_message(&padded_roll_request(4097))).await;
    assert_resource_exhausted(&over, "a 4097-byte request");
    for _ in 0..10 {
        let huge = call(grpc_message(&vec![0; 4 << 20])).await;
        assert_resource_exhausted(&huge, "a 4 MiB request");
    }
    // A length prefix that promises 4 GiB and never delivers.
    let mut liar = vec![0, 0xff, 0xff, 0xff, 0xff];
    liar.extend_from_slice(&[0; 16]);
    let lied = call(liar).await;
    assert_resource_exhausted(&lied, "a request announcing 4 GiB");
}

fn assert_resource_exhausted(reply: &Result<RawReply, String>, what: &str) {
    assert!(
        reply
            .as_ref()
            .is_ok_and(|r| r.grpc_status == Some(RESOURCE_EXHAUSTED)),
        "{what} should fail with RESOURCE_EXHAUSTED: {reply:?}"
    );
}

#[tokio::test]
async fn oversize_messages_on_the_mtls_and_h2c_ports() {
    let (_dir, pki, agent) = spawn_hostile(identity);
    let watch = Watch::start(agent.pid(), mtls(&agent, &pki), Some(10)).await;

    let rounds = for_a_while(async |_| {
        let tls = mtls_stream(&agent, &pki).await;
        let send = h2_connect(tls).await.expect("HTTP/2 over mTLS");
        oversize_messages_on(&send).await;
        let tcp = h2c_stream(&agent).await;
        let send = h2_connect(tcp).await.expect("HTTP/2 over h2c");
        oversize_messages_on(&send).await;
    })
    .await;
    watch.finish("oversize messages").await;
    let expected = 24 * rounds as usize;
    let logged = poll_until(PROMPTLY, || {
        rpc_lines(&agent.logs())
            .iter()
            .filter(|line| line.field("code").as_deref() == Some("8"))
            .count()
            >= expected
    });
    assert!(
        logged,
        "{expected} oversize requests should be logged as code 8\n{}",
        agent.dump()
    );
}
