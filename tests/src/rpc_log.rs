//! Reads the agent's per-RPC log lines (target `dice_agent::rpc`, message
//! `rpc`) from its text-format stderr, to see which agent served a call and
//! which client identity it logged.
//!
//! The agent writes its log on a writer thread, in batches when lines come
//! fast, so a line can land shortly after the RPC it records was answered:
//! read counts with [`await_rolls`], which waits for them.

use std::time::Duration;

use crate::{Agent, poll_until};

/// How long [`await_rolls`] waits for the agents' RPC lines.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// What precedes the fields of an RPC line: the target and the message.
const MARKER: &str = " dice_agent::rpc: rpc ";

/// One `dice_agent::rpc` log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcLine {
    /// The whole line.
    pub line: String,
}

impl RpcLine {
    /// The value of field `key` (`listener`, `code`, `client.subject`, ...),
    /// unquoted; `None` if the line does not have it. Values the agent logs
    /// with spaces (`user_agent`) are cut at the first space.
    pub fn field(&self, key: &str) -> Option<String> {
        // Fields after the message only: a span prefix may carry the same names.
        let fields = &self.line[self.line.find(MARKER)? + MARKER.len() - 1..];
        let needle = format!(" {key}=");
        let start = fields.find(&needle)? + needle.len();
        let rest = &fields[start..];
        match rest.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => return Some(value),
                        c => value.push(c),
                    }
                }
                None
            }
            None => Some(rest.split(' ').next().unwrap_or("").to_owned()),
        }
    }

    /// The gRPC method path, e.g. `/api.DiceService/RollDie`.
    pub fn method(&self) -> Option<String> {
        self.field("method")
    }

    /// The listener that served it.
    pub fn listener(&self) -> Option<String> {
        self.field("listener")
    }
}

/// Every RPC line in `logs`.
pub fn rpc_lines(logs: &str) -> Vec<RpcLine> {
    logs.lines()
        .filter(|line| line.contains(MARKER))
        .map(|line| RpcLine {
            line: line.to_owned(),
        })
        .collect()
}

/// The `RollDie` calls in `logs` that ended OK.
pub fn rolls(logs: &str) -> Vec<RpcLine> {
    rpc_lines(logs)
        .into_iter()
        .filter(|line| {
            line.method().as_deref() == Some("/api.DiceService/RollDie")
                && line.field("code").as_deref() == Some("0")
        })
        .collect()
}

/// Waits until `agents` together have logged at least `count` OK rolls,
/// then returns each agent's rolls. Panics with the agents' logs if they
/// have not within [`LOG_TIMEOUT`].
pub fn await_rolls<const N: usize>(agents: [&Agent; N], count: usize) -> [Vec<RpcLine>; N] {
    let total = || {
        agents
            .iter()
            .map(|agent| rolls(&agent.logs()).len())
            .sum::<usize>()
    };
    if !poll_until(LOG_TIMEOUT, || total() >= count) {
        let dumps: Vec<String> = agents.iter().map(|agent| agent.dump()).collect();
        panic!(
            "expected {count} rolls in the agents' logs within {LOG_TIMEOUT:?}, found {}\n{}",
            total(),
            dumps.join("\n")
        );
    }
    agents.map(|agent| rolls(&agent.logs()))
}

/// Asserts that `agent` has logged no OK roll before `marker`, a closure that
/// makes one good roll as the client whose subject is `marker_subject` (seen
/// nowhere else). The log writer batches lines, so an empty log proves nothing
/// by itself: this waits for the marker roll's line, written after any earlier
/// one, and then requires it to be the only roll.
pub fn assert_no_rolls_before(agent: &Agent, marker_subject: &str, marker: impl FnOnce()) {
    marker();
    let is_marker =
        |line: &RpcLine| line.field("client.subject").as_deref() == Some(marker_subject);
    let logged = poll_until(LOG_TIMEOUT, || rolls(&agent.logs()).iter().any(is_marker));
    assert!(
        logged,
        "the marker roll of {marker_subject} was not logged within {LOG_TIMEOUT:?}\n{}",
        agent.dump()
    );
    let lines = rolls(&agent.logs());
    assert!(
        lines.len() == 1,
        "rolls logged besides the marker roll: {lines:#?}\n{}",
        agent.dump()
    );
}

/// The agent's log lines after its first `seen`, up to and including the
/// first RPC line of `method` among them, once that line is written: a call
/// the caller just made marks the end of what came before it, so a check that
/// something was *not* logged does not run ahead of the log writer.
pub fn await_rpc_after(agent: &Agent, seen: usize, method: &str) -> Vec<String> {
    let upto = || {
        let logs = agent.logs();
        let lines: Vec<String> = logs.lines().skip(seen).map(str::to_owned).collect();
        let end = lines.iter().position(|line| {
            line.contains(MARKER)
                && RpcLine { line: line.clone() }.method().as_deref() == Some(method)
        })?;
        Some(lines[..=end].to_vec())
    };
    if !poll_until(LOG_TIMEOUT, || upto().is_some()) {
        panic!(
            "no {method} RPC line after line {seen} within {LOG_TIMEOUT:?}\n{}",
            agent.dump()
        );
    }
    upto().unwrap_or_default()
}

/// How many h2c connections the agent accepted (a debug-level line each).
pub fn h2c_connections(logs: &str) -> usize {
    logs.lines()
        .filter(|line| line.contains("accepted h2c connection"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_quoted_and_bare() {
        let logs = "2026-11-29T00:46:46.703903Z  INFO dice_agent::rpc: rpc \
            method=/api.DiceService/RollDie code=0 status=Ok duration_us=76 \
            authority=127.0.0.1:8443 peer=127.0.0.1:36484 \
            user_agent=grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2) listener=public \
            client.subject=\"CN=a \\\"b\\\",O=dice fleet\" client.via_proxy=true\n\
            2026-11-29T00:46:46Z DEBUG dice_agent::listener: accepted h2c connection\n";
        let lines = rolls(logs);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line.listener().as_deref(), Some("public"));
        assert_eq!(
            line.field("client.subject").as_deref(),
            Some("CN=a \"b\",O=dice fleet")
        );
        assert_eq!(line.field("client.via_proxy").as_deref(), Some("true"));
        assert_eq!(line.field("client.sans"), None);
        assert_eq!(h2c_connections(logs), 1);
    }
}
