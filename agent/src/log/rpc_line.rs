//! The log line the RPC log layer (`crate::rpc`) writes for every RPC. Off a terminal it is
//! formatted here, straight into the log writer, exactly as tracing-subscriber
//! formats the same event in the agent's text or JSON format (the tests
//! compare the bytes): tracing's per-event work (dispatch, a visitor call and
//! `core::fmt` for each of a dozen fields) cost more than everything else the
//! agent adds to an RPC. On a terminal, with colour, the line is an ordinary
//! tracing event. Either way `RUST_LOG` and `log.level` decide whether it is
//! written, as for any event of target `dice_agent::rpc`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;

use tonic::Code;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use super::timestamp::Timestamp;
use super::writer::NonBlocking;
use crate::config::LogFormat;

/// The target of the RPC log lines, for filters such as `RUST_LOG`.
pub const TARGET: &str = "dice_agent::rpc";

/// One RPC line as a tracing event at the level of macro `$level`.
macro_rules! rpc_event {
    ($level:ident, $line:expr) => {
        tracing::$level!(
            target: TARGET,
            method = %$line.method,
            code = $line.code as i32,
            status = %code_name($line.code),
            duration_us = $line.duration_us,
            authority = %$line.authority,
            peer = $line.peer.map(tracing::field::display),
            user_agent = %$line.user_agent,
            listener = %$line.listener,
            client.subject = $line.client_subject,
            client.via_proxy = $line.via_proxy.then_some(true),
            client.sans = $line.client_sans.map(|sans| sans.join(",")),
            "rpc"
        )
    };
}

/// One RPC's log line.
#[derive(Debug, Clone, Copy)]
pub struct RpcLine<'a> {
    /// The request path, `/package.Service/Method`.
    pub method: &'a str,
    /// The RPC's gRPC status.
    pub code: Code,
    /// From the request's arrival to the end of the response.
    pub duration_us: u64,
    /// The `:authority` (or `Host`) the client asked for.
    pub authority: &'a str,
    /// The peer's address, when the connection is known.
    pub peer: Option<&'a str>,
    /// The client's `user-agent`.
    pub user_agent: &'a str,
    /// The listener's name.
    pub listener: &'a str,
    /// The client certificate's subject, or the trusted proxy's header.
    pub client_subject: Option<&'a str>,
    /// Whether `client_subject` came from a trusted proxy's header.
    pub via_proxy: bool,
    /// The client certificate's subject alternative names.
    pub client_sans: Option<&'a [String]>,
}

/// Where RPC lines go: straight into the log writer, formatted here, or (by
/// default, and on a terminal) through tracing. Copied into every RPC's
/// record, so it is one pointer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcSink(Option<&'static Direct>);

/// The writer and format of lines that bypass tracing.
#[derive(Debug)]
struct Direct {
    writer: NonBlocking,
    json: bool,
}

impl RpcSink {
    /// Sends RPC lines straight to `writer` in `format` rather than through
    /// tracing. The log setup makes it once, when the log is not a terminal.
    pub(crate) fn direct(writer: NonBlocking, format: LogFormat) -> Self {
        let json = matches!(format, LogFormat::Json);
        // Made once per process and used until it exits.
        Self(Some(Box::leak(Box::new(Direct { writer, json }))))
    }
}

thread_local! {
    /// This thread's line buffer, reused.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl RpcLine<'_> {
    /// Writes the line to `sink`, if `dice_agent::rpc` is enabled at `INFO`.
    pub fn log(&self, sink: RpcSink) {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        let Some(sink) = sink.0 else {
            return self.log_with_tracing();
        };
        LINE.with_borrow_mut(|line| {
            line.clear();
            if sink.json {
                self.write_json(line);
            } else {
                self.write_text(line);
            }
            // Nowhere to report a failed write to the log; the line is dropped.
            let _ = sink.writer.make_writer().write_all(line.as_bytes());
        });
    }

    /// The same line as an ordinary tracing event.
    pub fn log_with_tracing(&self) {
        rpc_event!(info, self);
    }

    /// The line as a `DEBUG` event, for a health listener's probes: load
    /// balancers and kubelets probe every few seconds, and an `INFO` line
    /// each time would bury the RPCs that matter.
    pub fn log_probe(&self) {
        rpc_event!(debug, self);
    }

    /// tracing-subscriber's full text format, no colour: Display fields
    /// bare, strings quoted.
    fn write_text(&self, line: &mut String) {
        timestamp(line);
        line.push_str("  INFO dice_agent::rpc: rpc method=");
        line.push_str(self.method);
        line.push_str(" code=");
        push_number(line, self.code as u64);
        line.push_str(" status=");
        line.push_str(code_name(self.code));
        line.push_str(" duration_us=");
        push_number(line, self.duration_us);
        line.push_str(" authority=");
        line.push_str(self.authority);
        if let Some(peer) = self.peer {
            line.push_str(" peer=");
            line.push_str(peer);
        }
        line.push_str(" user_agent=");
        line.push_str(self.user_agent);
        line.push_str(" listener=");
        line.push_str(self.listener);
        if let Some(subject) = self.client_subject {
            let _ = write!(line, " client.subject={subject:?}");
        }
        if self.via_proxy {
            line.push_str(" client.via_proxy=true");
        }
        if let Some(sans) = self.client_sans {
            let _ = write!(line, " client.sans={:?}", sans.join(","));
        }
        line.push('\n');
    }

    /// tracing-subscriber's JSON format as the agent sets it up: flattened
    /// fields in the order logged, then the target.
    fn write_json(&self, line: &mut String) {
        line.push_str("{\"timestamp\":\"");
        timestamp(line);
        line.push_str("\",\"level\":\"INFO\",\"message\":\"rpc\",\"method\":");
        push_json_string(line, self.method);
        line.push_str(",\"code\":");
        push_number(line, self.code as u64);
        line.push_str(",\"status\":\"");
        line.push_str(code_name(self.code));
        line.push_str("\",\"duration_us\":");
        push_number(line, self.duration_us);
        line.push_str(",\"authority\":");
        push_json_string(line, self.authority);
        if let Some(peer) = self.peer {
            line.push_str(",\"peer\":");
            push_json_string(line, peer);
        }
        line.push_str(",\"user_agent\":");
        push_json_string(line, self.user_agent);
        line.push_str(",\"listener\":");
        push_json_string(line, self.listener);
        if let Some(subject) = self.client_subject {
            line.push_str(",\"client.subject\":");
            push_json_string(line, subject);
        }
        if self.via_proxy {
            line.push_str(",\"client.via_proxy\":true");
        }
        if let Some(sans) = self.client_sans {
            line.push_str(",\"client.sans\":");
            push_json_string(line, &sans.join(","));
        }
        line.push_str(",\"target\":\"dice_agent::rpc\"}\n");
    }
}

fn timestamp(line: &mut String) {
    let _ = Timestamp.format_time(&mut Writer::new(line));
}

/// Writes `n` in decimal without `core::fmt`.
fn push_number(line: &mut String, n: u64) {
    line.push_str(itoa::Buffer::new().format(n));
}

/// Writes `text` as a JSON string, escaped as serde_json escapes it: `"`,
/// `\` and control characters, the common ones by their short escapes.
fn push_json_string(line: &mut String, text: &str) {
    line.push('"');
    let mut plain = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        line.push_str(&text[plain..at]);
        plain = at + 1;
        if escape.is_empty() {
            let _ = write!(line, "\\u{byte:04x}");
        } else {
            line.push_str(escape);
        }
    }
    line.push_str(&text[plain..]);
    line.push('"');
}

/// A gRPC code's name as `{code:?}` writes it (`Ok`, `NotFound`, ...), without formatting.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_capture::Capture;

    /// What the agent's subscriber (`log::init`'s, off a terminal) writes for `line`.
    fn through_tracing(line: &RpcLine<'_>, json: bool) -> String {
        let captured = Capture::default();
        let format = if json {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
        let filter = tracing_subscriber::EnvFilter::new("info");
        let dispatch = crate::log::subscriber(format, false, filter, captured.clone());
        tracing::dispatcher::with_default(&dispatch, || line.log_with_tracing());
        captured.text()
    }

    fn direct(line: &RpcLine<'_>, json: bool) -> String {
        let mut text = String::new();
        if json {
            line.write_json(&mut text);
        } else {
            line.write_text(&mut text);
        }
        text
    }

    /// The line without its timestamp, which differs between two calls.
    fn untimed(line: &str) -> String {
        let at = line.find('Z').expect("a timestamp");
        assert_eq!(line.as_bytes()[at - 7], b'.', "{line}");
        format!("{}{}", &line[..at - 26], &line[at + 1..])
    }

    #[test]
    fn lines_are_byte_for_byte_tracing_subscribers() {
        let sans = [
            "DNS:web-1.fleet.example".to_owned(),
            "URI:spiffe://dice/ns/\"prod\"/sa/web\\1".to_owned(),
            "IP:127.0.0.1".to_owned(),
        ];
        let h2c = RpcLine {
            method: "/api.DiceService/RollDie",
            code: Code::Ok,
            duration_us: 1234,
            authority: "127.0.0.1:50051",
            peer: Some("127.0.0.1:40000"),
            user_agent: "grpc-python/1.70.0 grpc-c/45.0.0 (linux; chttp2)",
            listener: "public",
            client_subject: None,
            via_proxy: false,
            client_sans: None,
        };
        let mtls = RpcLine {
            code: Code::PermissionDenied,
            duration_us: 0,
            client_subject: Some("CN=web-1, O=Dice \"Fleet\"\tunit\u{7}\n, L=Zürich"),
            client_sans: Some(&sans),
            ..h2c
        };
        let proxied = RpcLine {
            code: Code::Cancelled,
            duration_us: u64::MAX,
            peer: None,
            user_agent: "",
            authority: "",
            client_subject: Some("CN=nginx-client"),
            via_proxy: true,
            ..h2c
        };
        let odd = RpcLine {
            method: "/grpc.health.v1.Health/Check",
            code: Code::Unauthenticated,
            authority: "dice.invalid",
            listener: "back\\end \"1\"",
            client_sans: Some(&[]),
            ..h2c
        };
        for line in [h2c, mtls, proxied, odd] {
            for json in [false, true] {
                let theirs = through_tracing(&line, json);
                let ours = direct(&line, json);
                assert_eq!(untimed(&ours), untimed(&theirs), "json: {json}");
                assert_eq!(ours.len(), theirs.len(), "{ours}");
            }
        }
    }

    #[test]
    fn numbers_and_json_escapes() {
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut text = String::new();
            push_number(&mut text, n);
            assert_eq!(text, n.to_string());
        }
        let mut text = String::new();
        push_json_string(&mut text, "a\"b\\c\nd\u{1}e\u{1f}f\u{7f}\u{fc}");
        assert_eq!(text, "\"a\\\"b\\\\c\\nd\\u0001e\\u001ff\u{7f}\u{fc}\"");
    }
}
