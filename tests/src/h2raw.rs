//! HTTP/2 at the frame level, for what a well-behaved client library will not
//! send: malformed frames, header floods, streams beyond the advertised limit,
//! and the rapid-reset pattern. Frames are built by hand (RFC 9113 section 4)
//! and header blocks use HPACK literals without Huffman coding (RFC 7541
//! section 6.2.2), so the server's decoder sees exactly these bytes.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The client connection preface (without the SETTINGS frame that follows it).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types.
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
}

/// SETTINGS identifiers.
pub mod setting {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (RST_STREAM, GOAWAY).
pub mod code {
    /// NO_ERROR.
    pub const NO_ERROR: u32 = 0x0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// FLOW_CONTROL_ERROR.
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    /// FRAME_SIZE_ERROR.
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    /// CANCEL.
    pub const CANCEL: u32 = 0x8;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// ENHANCE_YOUR_CALM.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    /// The RFC 9113 name of an error code.
    pub fn name(code: u32) -> &'static str {
        match code {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "unknown",
        }
    }
}

/// A frame's 9-byte header: 24-bit length, type, flags, 31-bit stream id.
pub fn frame_header(len: u32, kind: u8, flags: u8, stream: u32) -> [u8; 9] {
    let len = len.to_be_bytes();
    let stream = (stream & 0x7fff_ffff).to_be_bytes();
    [
        len[1], len[2], len[3], kind, flags, stream[0], stream[1], stream[2], stream[3],
    ]
}

/// A whole frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a frame payload below 16 MiB");
    let mut out = frame_header(len, kind, flags, stream).to_vec();
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame with `settings`.
pub fn settings(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(settings.len() * 6);
    for (id, value) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(kind::SETTINGS, 0, 0, &payload)
}

/// An RST_STREAM frame.
pub fn rst_stream(stream: u32, error: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, stream, &error.to_be_bytes())
}

/// The preface and an empty SETTINGS frame: what a client sends first.
pub fn client_start() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(settings(&[]));
    out
}

/// An HPACK integer with an `n`-bit prefix, the prefix's high bits set to `high`.
fn hpack_int(out: &mut Vec<u8>, high: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman:
/// the simplest HPACK a decoder must accept.
pub fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The header block of a gRPC request for `path`.
pub fn grpc_request(path: &str) -> Vec<u8> {
    hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ])
}

/// The `RollDie` path.
pub const ROLL_DIE: &str = "/api.DiceService/RollDie";

/// A gRPC length-prefixed message: uncompressed flag, 32-bit length, payload.
pub fn grpc_message(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .expect("a message below 4 GiB")
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

/// A frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame type.
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// The stream id.
    pub stream: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of an RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            kind::RST_STREAM => 0,
            kind::GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }

    /// The value of SETTINGS entry `id`, if this SETTINGS frame has it.
    pub fn setting(&self, id: u16) -> Option<u32> {
        if self.kind != kind::SETTINGS {
            return None;
        }
        self.payload.chunks_exact(6).find_map(|entry| {
            (u16::from_be_bytes([entry[0], entry[1]]) == id)
                .then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
        })
    }

    /// A short description, e.g. `GOAWAY(ENHANCE_YOUR_CALM)`.
    pub fn describe(&self) -> String {
        let name = match self.kind {
            kind::DATA => "DATA",
            kind::HEADERS => "HEADERS",
            kind::PRIORITY => "PRIORITY",
            kind::RST_STREAM => "RST_STREAM",
            kind::SETTINGS => "SETTINGS",
            kind::PING => "PING",
            kind::GOAWAY => "GOAWAY",
            kind::WINDOW_UPDATE => "WINDOW_UPDATE",
            kind::CONTINUATION => "CONTINUATION",
            _ => "UNKNOWN",
        };
        match self.error_code() {
            Some(error) => format!("{name}[{}]({})", self.stream, code::name(error)),
            None => format!("{name}[{}]", self.stream),
        }
    }
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Frame>> {
    let mut header = [0u8; 9];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some(Frame {
        kind: header[3],
        flags: header[4],
        stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
        payload,
    }))
}

/// How a connection ended, as far as the frames the server sent tell.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    /// Every frame received, in order.
    pub frames: Vec<Frame>,
    /// Whether the server closed the connection (end of stream or a reset).
    pub closed: bool,
    /// The read error that ended it, if it was not a clean end of stream.
    pub error: Option<String>,
}

impl Ending {
    /// The error code of the first GOAWAY, if the server sent one.
    pub fn goaway(&self) -> Option<u32> {
        self.frames
            .iter()
            .find(|frame| frame.kind == kind::GOAWAY)
            .and_then(Frame::error_code)
    }

    /// RST_STREAM frames as `(stream, code)`.
    pub fn resets(&self) -> Vec<(u32, u32)> {
        self.frames
            .iter()
            .filter(|frame| frame.kind == kind::RST_STREAM)
            .filter_map(|frame| Some((frame.stream, frame.error_code()?)))
            .collect()
    }

    /// The frames received, described, for messages.
    pub fn describe(&self) -> String {
        let frames: Vec<String> = self.frames.iter().map(Frame::describe).collect();
        format!(
            "frames [{}], closed {}, error {:?}",
            frames.join(", "),
            self.closed,
            self.error
        )
    }
}

/// Reads frames until the server closes the connection or `timeout` passes,
/// acknowledging the server's SETTINGS and PINGs as a live client would.
/// Stops early once `stop` returns true for a received frame.
pub async fn read_until<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    timeout: Duration,
    stop: impl FnMut(&Frame) -> bool,
) -> Ending {
    read_frames(io, timeout, true, stop).await
}

/// [`read_until`], acknowledging the server's PINGs only if `ack_pings`: a
/// peer that never answers them is what keepalive timeouts are for.
pub async fn read_frames<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    timeout: Duration,
    ack_pings: bool,
    mut stop: impl FnMut(&Frame) -> bool,
) -> Ending {
    let mut ending = Ending::default();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let read = tokio::time::timeout_at(deadline, read_frame(io)).await;
        match read {
            Err(_) => return ending,
            Ok(Ok(None)) => {
                ending.closed = true;
                return ending;
            }
            Ok(Err(error)) => {
                ending.closed = true;
                ending.error = Some(error.to_string());
                return ending;
            }
            Ok(Ok(Some(received))) => {
                let ack = match received.kind {
                    kind::SETTINGS if received.flags & flag::ACK == 0 => {
                        Some(frame_header(0, kind::SETTINGS, flag::ACK, 0).to_vec())
                    }
                    kind::PING if ack_pings && received.flags & flag::ACK == 0 => {
                        Some(frame(kind::PING, flag::ACK, 0, &received.payload))
                    }
                    _ => None,
                };
                if let Some(ack) = ack {
                    // The server may already be gone; the read that follows says so.
                    let _ = io.write_all(&ack).await;
                }
                let done = stop(&received);
                ending.frames.push(received);
                if done {
                    return ending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_follow_rfc7541_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        hpack_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
    }

    #[test]
    fn frames_have_a_nine_byte_header() {
        let ping = frame(kind::PING, flag::ACK, 0, &[1; 8]);
        assert_eq!(&ping[..9], &[0, 0, 8, 6, 1, 0, 0, 0, 0]);
        let reset = Frame {
            kind: kind::RST_STREAM,
            flags: 0,
            stream: 3,
            payload: code::REFUSED_STREAM.to_be_bytes().to_vec(),
        };
        assert_eq!(reset.describe(), "RST_STREAM[3](REFUSED_STREAM)");
    }
}
