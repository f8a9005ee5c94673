//! The text format's field formatter when the log is not a terminal: it
//! writes exactly what tracing-subscriber's default one writes without
//! colour (`name=value`, separated by spaces, the message bare, control
//! characters in the message escaped), minus the colour machinery, which the
//! default runs for every field even when colour is off. The RPC lines,
//! which are most of the log, are written by [`super::rpc_line`] in this
//! same format without going through tracing.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

/// Formats fields as tracing-subscriber's `DefaultFields` does without ANSI colour.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> PlainVisitor<'a> {
        PlainVisitor {
            sanitize: target.sanitizes_ansi_escapes(),
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// The visitor [`PlainFields`] makes for each event or span.
#[derive(Debug)]
pub struct PlainVisitor<'a> {
    writer: Writer<'a>,
    sanitize: bool,
    is_empty: bool,
    result: fmt::Result,
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let sanitize = self.sanitize;
        let shown = Escaped::new(value, sanitize);
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!(
                    "{shown} {}.sources={}",
                    field.name(),
                    Sources { source, sanitize }
                ),
            ),
            None => self.record_debug(field, &format_args!("{shown}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // Metadata of events from the `log` crate, already in the line's prefix.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.pad();
        if self.result.is_err() {
            return;
        }
        self.result = match name {
            "message" => write!(self.writer, "{:?}", Escaped::new(value, self.sanitize)),
            name => self
                .name(name)
                .and_then(|()| write!(self.writer, "{value:?}")),
        };
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_integer(field, value.unsigned_abs(), value < 0);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_integer(field, value, false);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_text(field, if value { "true" } else { "false" });
    }
}

impl PlainVisitor<'_> {
    /// Separates this field from the one before, if any.
    fn pad(&mut self) {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.result = self.writer.write_char(' ');
        }
    }

    /// Writes `name=`, without a raw identifier's `r#`.
    fn name(&mut self, name: &str) -> fmt::Result {
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')
    }

    /// Writes `name=text` for a value whose `Debug` is `text`; the message
    /// and `log.` fields take the general path.
    fn record_text(&mut self, field: &Field, text: &str) {
        let name = field.name();
        if name == "message" || name.starts_with("log.") {
            self.record_debug(field, &format_args!("{text}"));
            return;
        }
        if self.result.is_err() {
            return;
        }
        self.pad();
        if self.result.is_ok() {
            self.result = self.name(name).and_then(|()| self.writer.write_str(text));
        }
    }

    /// An integer in decimal, as its `Debug` writes it, without `core::fmt`.
    fn record_integer(&mut self, field: &Field, magnitude: u64, negative: bool) {
        let mut digits = [0u8; 21];
        let text = decimal(&mut digits, magnitude, negative);
        self.record_text(field, text);
    }
}

/// `magnitude` in decimal, `-` first if `negative`, written into `digits`
/// without `core::fmt` (log lines are full of numbers).
pub fn decimal(digits: &mut [u8; 21], magnitude: u64, negative: bool) -> &str {
    let mut at = digits.len();
    let mut rest = magnitude;
    loop {
        at -= 1;
        // A digit: rest % 10 < 10.
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        digits[at] = b'-';
    }
    // Only ASCII digits and '-' were written.
    std::str::from_utf8(&digits[at..]).unwrap_or_default()
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// An error's chain, `[first, second, ...]`, each escaped.
struct Sources<'a> {
    source: &'a (dyn std::error::Error + 'static),
    sanitize: bool,
}

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.source);
        while let Some(error) = next {
            list.entry(&format_args!("{}", Escaped::new(error, self.sanitize)));
            next = error.source();
        }
        list.finish()
    }
}

/// Writes a value with the characters a terminal could act on escaped, as
/// tracing-subscriber does (ESC, BEL, BS, FF, DEL and the C1 controls).
struct Escaped<T> {
    value: T,
    sanitize: bool,
}

impl<T> Escaped<T> {
    fn new(value: T, sanitize: bool) -> Self {
        Self { value, sanitize }
    }
}

impl<T: fmt::Debug> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sanitize {
            write!(EscapingWriter { inner: f }, "{:?}", self.value)
        } else {
            write!(f, "{:?}", self.value)
        }
    }
}

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sanitize {
            write!(EscapingWriter { inner: f }, "{}", self.value)
        } else {
            write!(f, "{}", self.value)
        }
    }
}

struct EscapingWriter<'a, 'b> {
    inner: &'a mut fmt::Formatter<'b>,
}

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let is_control = |c: char| {
            matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        let mut rest = s;
        while let Some(at) = rest.find(is_control) {
            self.inner.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\x1b' => self.inner.write_str("\\x1b")?,
                '\x07' => self.inner.write_str("\\x07")?,
                '\x08' => self.inner.write_str("\\x08")?,
                '\x0c' => self.inner.write_str("\\x0c")?,
                '\x7f' => self.inner.write_str("\\x7f")?,
                c => write!(self.inner, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.inner.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_capture::Capture;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot read \x1b[31mkey\x1b[0m")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Logs the same events through the default field formatter and ours.
    fn both(log: impl Fn()) -> (String, String) {
        let default = Capture::default();
        let plain = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(default.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &log);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(PlainFields)
            .with_writer(plain.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &log);
        (default.text(), plain.text())
    }

    #[test]
    fn lines_are_byte_for_byte_the_default_formatters() {
        let (default, plain) = both(|| {
            let peer: std::net::SocketAddr = "127.0.0.1:4242".parse().expect("address");
            tracing::info!(
                method = %"/api.DiceService/RollDie",
                code = 0,
                duration_us = 76u64,
                min = i64::MIN,
                max = u64::MAX,
                zero = 0u64,
                negative = -42i64,
                flag = false,
                peer = %peer,
                client.subject = Some("CN=a \"b\",O=dice fleet"),
                client.via_proxy = Some(true),
                client.sans = None::<String>,
                r#type = "unit",
                ratio = 0.5,
                "rpc"
            );
            tracing::warn!(
                user_agent = "evil\x1b[2J",
                "reload failed: \x1b[2J\u{85} bell\x07"
            );
            let span = tracing::info_span!("conn", listener = "public", peer = %peer);
            let _entered = span.enter();
            let error = Outer(std::io::Error::other("disk \x1b full"));
            tracing::error!(error = &error as &dyn std::error::Error, "reload failed");
            let lone = std::io::Error::other("plain");
            tracing::error!(error = &lone as &dyn std::error::Error);
            tracing::info!(answer = 42, "multi\nline");
            tracing::info!(message = 7, log.target = "x", r#raw = true);
        });
        assert_eq!(plain, default);
        assert!(default.contains(" INFO "), "{default}");
        assert!(default.contains("sources=["), "{default}");
    }
}
