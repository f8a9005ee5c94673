//! HTTP/2 frame-level abuse on the h2c port: malformed frames, oversize
//! header blocks and a CONTINUATION flood.

use std::convert::identity;
use std::net::SocketAddr;

use dice_tests::abuse::Watch;
use dice_tests::h2raw::{
    self, Ending, ROLL_DIE, client_start, code, flag, frame, frame_header, grpc_request, hpack,
    kind, read_until, rst_stream, setting,
};
use dice_tests::within;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{DEADLINE, Noise, for_a_while, h2c, read_to_close, spawn_hostile};

/// One malformed exchange: bytes after the connection preface, and what the
/// agent must do about them.
struct Malformed {
    name: &'static str,
    /// Sent after the preface and SETTINGS (or instead, with `no_preface`).
    bytes: Vec<u8>,
    no_preface: bool,
    expect: Expect,
}

/// How the agent must end a malformed exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A connection error: GOAWAY with this code, then the connection closed.
    GoAway(u32),
    /// A stream error: RST_STREAM with this code on stream 1.
    Reset(u32),
    /// Not HTTP/2 at all: the connection closed, with no HTTP/1.1 answer and
    /// no GOAWAY (there is no HTTP/2 connection to end).
    ClosedUnanswered,
    /// The client closed its side mid-frame: the agent closes too.
    Closed,
}

fn malformed_cases() -> Vec<Malformed> {
    let request = grpc_request(ROLL_DIE);
    let headers = |stream: u32, flags: u8| frame(kind::HEADERS, flags, stream, &request);
    let fatal = |name, error, bytes: Vec<u8>| Malformed {
        name,
        bytes,
        no_preface: false,
        expect: Expect::GoAway(error),
    };
    let stream_error = |name, error, bytes: Vec<u8>| Malformed {
        name,
        bytes,
        no_preface: false,
        expect: Expect::Reset(error),
    };
    let mut decreasing = headers(5, flag::END_HEADERS);
    decreasing.extend(headers(3, flag::END_HEADERS));
    let mut window_overflow = frame(kind::WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes());
    window_overflow.extend(frame(
        kind::WINDOW_UPDATE,
        0,
        0,
        &0x7fff_ffffu32.to_be_bytes(),
    ));
    // h2's codes. RFC 9113 asks for FRAME_SIZE_ERROR on a SETTINGS or PING
    // frame of the wrong length; h2 answers PROTOCOL_ERROR, which is still a
    // connection error that names a protocol violation.
    const P: u32 = code::PROTOCOL_ERROR;
    let mut truncated = frame_header(100, kind::HEADERS, flag::END_HEADERS, 1).to_vec();
    truncated.extend_from_slice(&request[..10]);
    vec![
        Malformed {
            name: "HTTP/1.1 instead of the preface",
            bytes: b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            no_preface: true,
            expect: Expect::ClosedUnanswered,
        },
        Malformed {
            name: "random bytes instead of the preface",
            bytes: Noise(7).bytes(4096),
            no_preface: true,
            expect: Expect::ClosedUnanswered,
        },
        fatal(
            "SETTINGS of 5 bytes",
            P,
            frame(kind::SETTINGS, 0, 0, &[0; 5]),
        ),
        fatal("SETTINGS on a stream", P, frame(kind::SETTINGS, 0, 1, &[])),
        fatal(
            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
            P,
            h2raw::settings(&[(setting::INITIAL_WINDOW_SIZE, 0x8000_0000)]),
        ),
        fatal("DATA on stream 0", P, frame(kind::DATA, 0, 0, b"hello")),
        fatal(
            "a frame longer than SETTINGS_MAX_FRAME_SIZE",
            code::FRAME_SIZE_ERROR,
            frame_header(0xff_ffff, kind::DATA, 0, 1).to_vec(),
        ),
        fatal(
            "HEADERS with an HPACK index out of range",
            P,
            frame(
                kind::HEADERS,
                flag::END_HEADERS,
                1,
                &[0xff, 0xff, 0xff, 0xff, 0x0f],
            ),
        ),
        fatal(
            "WINDOW_UPDATE of 0 on the connection",
            P,
            frame(kind::WINDOW_UPDATE, 0, 0, &[0; 4]),
        ),
        fatal(
            "connection window overflow",
            code::FLOW_CONTROL_ERROR,
            window_overflow,
        ),
        fatal(
            "HEADERS on an even stream",
            P,
            headers(2, flag::END_HEADERS),
        ),
        fatal("stream ids going down", P, decreasing),
        fatal("PING of 7 bytes", P, frame(kind::PING, 0, 0, &[0; 7])),
        fatal(
            "CONTINUATION without HEADERS",
            P,
            frame(kind::CONTINUATION, flag::END_HEADERS, 1, &request),
        ),
        fatal(
            "RST_STREAM on an idle stream",
            P,
            rst_stream(7, code::CANCEL),
        ),
        fatal("GOAWAY of 3 bytes", P, frame(kind::GOAWAY, 0, 0, &[0; 3])),
        Malformed {
            name: "a frame cut off by the end of the connection",
            bytes: truncated,
            no_preface: false,
            expect: Expect::Closed,
        },
        stream_error(
            "a request without pseudo-headers",
            P,
            frame(
                kind::HEADERS,
                flag::END_HEADERS | flag::END_STREAM,
                1,
                &hpack(&[("content-type", "application/grpc")]),
            ),
        ),
        fatal(
            "an upper-case header name",
            P,
            frame(
                kind::HEADERS,
                flag::END_HEADERS | flag::END_STREAM,
                1,
                &hpack(&[
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", ROLL_DIE),
                    ("Content-Type", "application/grpc"),
                ]),
            ),
        ),
        stream_error(
            "a stream depending on itself",
            P,
            frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 1, 16]),
        ),
    ]
}

/// Sends `case` on a fresh connection and checks that the agent ends it as
/// the case expects; returns what it did, described.
async fn send_malformed(addr: SocketAddr, case: &Malformed) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut bytes = if case.no_preface {
        Vec::new()
    } else {
        client_start()
    };
    bytes.extend_from_slice(&case.bytes);
    let _ = stream.write_all(&bytes).await;
    if case.expect == Expect::Closed {
        let _ = stream.shutdown().await;
    }
    if case.expect == Expect::ClosedUnanswered {
        // Raw bytes, not frames: an HTTP/1.1 answer would not parse as one.
        let reply = read_to_close(&mut stream, DEADLINE).await;
        let described = format!("{} bytes: {:?}", reply.as_ref().map_or(0, Vec::len), reply);
        let reply =
            reply.unwrap_or_else(|error| panic!("{}: the agent should close: {error}", case.name));
        assert!(
            !reply.windows(5).any(|window| window == b"HTTP/"),
            "{}: the agent answered in HTTP/1.1: {:?}",
            case.name,
            String::from_utf8_lossy(&reply)
        );
        // At most the agent's own SETTINGS, sent before it read anything.
        let mut rest = &reply[..];
        while let Ok(Some(frame)) = h2raw::read_frame(&mut rest).await {
            assert_eq!(frame.kind, kind::SETTINGS, "{}: {described}", case.name);
        }
        assert!(rest.is_empty(), "{}: {described}", case.name);
        return described;
    }
    let ending = read_until(&mut stream, DEADLINE, |frame| {
        matches!(case.expect, Expect::Reset(_)) && frame.kind == kind::RST_STREAM
    })
    .await;
    match case.expect {
        Expect::GoAway(error) => {
            assert_eq!(
                ending.goaway().map(code::name),
                Some(code::name(error)),
                "{}: the agent should end the connection with GOAWAY {}: {}",
                case.name,
                code::name(error),
                ending.describe()
            );
            assert!(
                ending.closed,
                "{}: the agent should close the connection after its GOAWAY: {}",
                case.name,
                ending.describe()
            );
        }
        Expect::Reset(error) => {
            assert_eq!(
                ending.resets(),
                [(1, error)],
                "{}: the agent should reset stream 1 with {}: {}",
                case.name,
                code::name(error),
                ending.describe()
            );
            assert_eq!(
                ending.goaway(),
                None,
                "{}: {}",
                case.name,
                ending.describe()
            );
        }
        Expect::Closed => {
            assert!(ending.closed, "{}: {}", case.name, ending.describe());
            assert!(
                ending.goaway().is_none_or(|error| error == code::NO_ERROR),
                "{}: {}",
                case.name,
                ending.describe()
            );
        }
        Expect::ClosedUnanswered => unreachable!("handled above"),
    }
    ending.describe()
}

#[tokio::test]
async fn malformed_http2_frames_on_the_h2c_port() {
    let (_dir, _pki, agent) = spawn_hostile(identity);
    let addr = agent.addr("h2c");
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    let cases = malformed_cases();
    for_a_while(async |round| {
        for case in &cases {
            let ending = send_malformed(addr, case).await;
            if round == 0 {
                eprintln!("{}: {ending}", case.name);
            }
        }
    })
    .await;
    watch
        .finish("malformed HTTP/2 frames on the h2c port")
        .await;
}

/// Sends a request with one 64 KiB header (in HEADERS and CONTINUATION
/// frames) on a fresh connection and returns what the agent did.
async fn big_header(addr: SocketAddr) -> Ending {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut block = grpc_request(ROLL_DIE);
    block.extend(hpack(&[("x-big", &"x".repeat(64 * 1024))]));
    let mut bytes = client_start();
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 {
            kind::HEADERS
        } else {
            kind::CONTINUATION
        };
        let flags = if i + 1 == chunks.len() {
            flag::END_HEADERS | flag::END_STREAM
        } else {
            0
        };
        bytes.extend(frame(kind, flags, 1, chunk));
    }
    stream.write_all(&bytes).await.expect("send the headers");
    read_until(&mut stream, DEADLINE, |frame| {
        frame.kind == kind::RST_STREAM || frame.kind == kind::GOAWAY
    })
    .await
}

/// A header block that never ends: CONTINUATION frames without END_HEADERS,
/// for as long as the agent reads them (64 MiB at most). Returns how much was
/// written (or the write error that ended it) and whether the agent closed.
async fn continuation_flood(addr: SocketAddr) -> (std::io::Result<usize>, Result<Vec<u8>, String>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.split();
    let flood = async {
        let mut sent = 0usize;
        writer.write_all(&client_start()).await?;
        writer
            .write_all(&frame(kind::HEADERS, 0, 1, &grpc_request(ROLL_DIE)))
            .await?;
        let filler = frame(
            kind::CONTINUATION,
            0,
            1,
            &hpack(&[("x-fill", &"y".repeat(16_000))]),
        );
        while sent < 64 << 20 {
            writer.write_all(&filler).await?;
            sent += filler.len();
        }
        Ok::<_, std::io::Error>(sent)
    };
    let drain = read_to_close(&mut reader, DEADLINE);
    within(DEADLINE, "a CONTINUATION flood", async {
        tokio::join!(flood, drain)
    })
    .await
}

#[tokio::test]
async fn oversize_headers_on_the_h2c_port() {
    let (_dir, _pki, agent) = spawn_hostile(identity);
    let addr = agent.addr("h2c");
    let watch = Watch::start(agent.pid(), h2c(&agent), Some(10)).await;

    for_a_while(async |round| {
        // Over the 16 KiB header list limit: the stream is refused.
        for i in 0..5 {
            let ending = big_header(addr).await;
            if round == 0 && i == 0 {
                eprintln!("a 64 KiB header: {}", ending.describe());
            }
            // h2 refuses the stream, or (as it does for a block over the
            // limit spread across CONTINUATION frames) the whole connection.
            assert!(
                ending.resets().contains(&(1, code::REFUSED_STREAM))
                    || ending.goaway() == Some(code::ENHANCE_YOUR_CALM),
                "a 64 KiB header should be refused: {}",
                ending.describe()
            );
            assert!(
                !ending.frames.iter().any(|f| f.kind == kind::DATA),
                "a 64 KiB header was answered: {}",
                ending.describe()
            );
        }
        let (flooded, closed) = continuation_flood(addr).await;
        if round == 0 {
            eprintln!(
                "CONTINUATION flood: writer {flooded:?}, agent sent {:?} bytes before closing",
                closed.as_ref().map(Vec::len)
            );
        }
        assert!(
            flooded.is_err(),
            "the agent read 64 MiB of one header block without closing the connection"
        );
        assert!(
            closed.is_ok(),
            "the agent should close the connection: {closed:?}"
        );
    })
    .await;
    watch.finish("oversize headers on the h2c port").await;
}
