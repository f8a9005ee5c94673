//! Scrapes the agent's `/metrics` endpoint and parses what it serves: the
//! OpenMetrics 1.0 text format (what Prometheus negotiates with a
//! `prometheus-client` exporter).
//!
//! [`scrape`] speaks plain HTTP/1.1 over a `TcpStream`; [`parse`] is strict:
//! every sample must belong to the family the last `# TYPE` line declared
//! (with the suffixes its type allows), label values are unescaped, a series
//! may appear once, histogram buckets must be cumulative and end with
//! `le="+Inf"` equal to `_count`, and the text must end with `# EOF`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one scrape (connect, request, whole response) may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The content type `/metrics` must answer with.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text";

/// A metric family's type, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `counter`: samples `NAME_total` (and `NAME_created`).
    Counter,
    /// `gauge`: samples `NAME`.
    Gauge,
    /// `histogram`: `NAME_bucket{le}`, `NAME_sum`, `NAME_count` (and `NAME_created`).
    Histogram,
    /// `info`: samples `NAME_info` with value 1.
    Info,
    /// `summary`, `stateset`, `gaugehistogram` or `unknown`: accepted, not checked further.
    Other,
}

impl Kind {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "info" => Self::Info,
            "summary" | "stateset" | "gaugehistogram" | "unknown" => Self::Other,
            _ => return None,
        })
    }

    /// The suffixes a sample name may add to its family name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Counter => &["_total", "_created"],
            Self::Gauge => &[""],
            Self::Histogram => &["_bucket", "_sum", "_count", "_created"],
            Self::Info => &["_info"],
            Self::Other => &[
                "", "_sum", "_count", "_created", "_bucket", "_gsum", "_gcount",
            ],
        }
    }
}

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample name, suffix included (`dice_rpcs_total`).
    pub name: String,
    /// The labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A metric family: its `# TYPE`, `# HELP` and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family name (`dice_rpcs` for samples `dice_rpcs_total`).
    pub name: String,
    /// Its type.
    pub kind: Kind,
    /// Its `# HELP` text, if any.
    pub help: Option<String>,
    /// Its samples, in order.
    pub samples: Vec<Sample>,
}

/// A parsed exposition: every family, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposition {
    /// The families.
    pub families: Vec<Family>,
}

impl Exposition {
    /// The family named `name` (without sample suffix).
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|family| family.name == name)
    }

    /// Every sample named `name` (suffix included), from any family.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .iter()
            .flat_map(|family| &family.samples)
            .filter(move |sample| sample.name == name)
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self.samples(name)
            .find(|sample| sample.labels == wanted)
            .map(|sample| sample.value)
    }
}

/// An HTTP response, read to the end.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The body (chunked encoding removed).
    pub body: String,
}

/// `GET path` on `addr` over HTTP/1.1 (`Connection: close`), under [`SCRAPE_TIMEOUT`].
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|error| format!("connect to {addr}: {error}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {OPENMETRICS_CONTENT_TYPE}\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| format!("send the request to {addr}: {error}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|error| format!("read the response from {addr}: {error}"))?;
        parse_http(&raw)
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("GET http://{addr}{path} took longer than {SCRAPE_TIMEOUT:?}"))?
}

/// Scrapes `http://addr/metrics`: it must answer 200 with the OpenMetrics
/// content type and a body [`parse`] accepts.
pub async fn scrape(addr: SocketAddr) -> Result<Exposition, String> {
    let response = http_get(addr, "/metrics").await?;
    if response.status != 200 {
        return Err(format!(
            "GET /metrics answered {}: {}",
            response.status, response.body
        ));
    }
    let content_type = response
        .headers
        .get("content-type")
        .map(String::as_str)
        .unwrap_or("");
    if !content_type.starts_with(OPENMETRICS_CONTENT_TYPE) {
        return Err(format!(
            "GET /metrics answered content-type {content_type:?}, not {OPENMETRICS_CONTENT_TYPE}"
        ));
    }
    parse(&response.body).map_err(|error| format!("{error}\n--- /metrics ---\n{}", response.body))
}

fn parse_http(raw: &[u8]) -> Result<HttpResponse, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
        ["HTTP/1.1" | "HTTP/1.0", code, ..] => code
            .parse()
            .map_err(|_| format!("bad status line {status_line:?}"))?,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let mut headers = BTreeMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        dechunk(body)?
    } else if let Some(length) = headers.get("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad content-length {length:?}"))?;
        if body.len() != length {
            return Err(format!(
                "content-length {length}, but the body has {} bytes",
                body.len()
            ));
        }
        body.to_owned()
    } else {
        body.to_owned()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or("a chunk without a size line")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size:?}"))?;
        if size == 0 {
            return Ok(body);
        }
        let chunk = after.get(..size).ok_or("a chunk shorter than its size")?;
        body.push_str(chunk);
        rest = after[size..]
            .strip_prefix("\r\n")
            .ok_or("a chunk not followed by CRLF")?;
    }
}

/// Parses the OpenMetrics text format strictly (see the module docs).
/// Errors name the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut families: Vec<Family> = Vec::new();
    let mut names = BTreeSet::new();
    let mut typed = BTreeSet::new();
    let mut series = BTreeSet::new();
    let mut eof = false;
    let body = text
        .strip_suffix('\n')
        .ok_or("the exposition does not end with a newline")?;
    for (index, line) in body.split('\n').enumerate() {
        let number = index + 1;
        let fail = |what: String| format!("line {number}: {what}: {line:?}");
        if eof {
            return Err(fail("text after # EOF".into()));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            let name = parts.next().ok_or_else(|| fail("no metric name".into()))?;
            let rest = parts.next().unwrap_or_default();
            check_name(name).map_err(&fail)?;
            if !matches!(keyword, "TYPE" | "HELP" | "UNIT") {
                return Err(fail(format!("unknown descriptor {keyword:?}")));
            }
            // Descriptors of one family come together, before its samples.
            let starts_family = families
                .last()
                .is_none_or(|family| family.name != name || !family.samples.is_empty());
            if starts_family {
                if !names.insert(name.to_owned()) {
                    return Err(fail(format!("family {name} described twice")));
                }
                families.push(Family {
                    name: name.to_owned(),
                    kind: Kind::Other,
                    help: None,
                    samples: Vec::new(),
                });
            }
            let Some(family) = families.last_mut() else {
                unreachable!("a family was just pushed");
            };
            match keyword {
                "TYPE" => {
                    family.kind =
                        Kind::parse(rest).ok_or_else(|| fail(format!("unknown type {rest:?}")))?;
                    if !typed.insert(name.to_owned()) {
                        return Err(fail(format!("two # TYPE lines for {name}")));
                    }
                }
                "HELP" if family.help.is_some() => {
                    return Err(fail(format!("two # HELP lines for {name}")));
                }
                "HELP" => family.help = Some(unescape(rest, false).map_err(&fail)?),
                _ => {}
            }
            continue;
        }
        let sample = parse_sample(line).map_err(&fail)?;
        let family = families
            .last_mut()
            .filter(|family| typed.contains(&family.name))
            .ok_or_else(|| fail("a sample without a # TYPE line before it".into()))?;
        let suffix = sample
            .name
            .strip_prefix(&family.name)
            .filter(|suffix| family.kind.suffixes().contains(suffix))
            .ok_or_else(|| {
                fail(format!(
                    "sample {} does not belong to family {} ({:?})",
                    sample.name, family.name, family.kind
                ))
            })?;
        if family.kind == Kind::Histogram && suffix == "_bucket" && sample.label("le").is_none() {
            return Err(fail("a histogram bucket without le".into()));
        }
        if family.kind == Kind::Info && sample.value != 1.0 {
            return Err(fail("an info sample whose value is not 1".into()));
        }
        if !series.insert((sample.name.clone(), sample.labels.clone())) {
            return Err(fail("the same series twice".into()));
        }
        family.samples.push(sample);
    }
    if !eof {
        return Err("no # EOF line at the end".into());
    }
    for family in &families {
        if family.kind == Kind::Histogram {
            check_histogram(family)?;
        }
    }
    Ok(Exposition { families })
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    if rest.contains(" # ") {
        return Err("exemplars are not expected here".into());
    }
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().unwrap_or_default())?;
    if let Some(timestamp) = fields.next() {
        parse_value(timestamp).map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the `}`.
fn parse_labels(mut rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('}') {
        return Ok((labels, after));
    }
    loop {
        let (key, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
        check_name(key).map_err(|_| format!("bad label name {key:?}"))?;
        // The value ends at the first quote not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (at, c) in after.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(at);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| format!("label {key} has no closing quote"))?;
        let value = unescape(&after[..end], true)?;
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &after[end + 1..];
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        rest = rest
            .strip_prefix(',')
            .ok_or("labels not separated by a comma")?;
    }
}

/// Undoes `\\`, `\n` and (in label values) `\"`.
fn unescape(text: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            other => return Err(format!("bad escape \\{other:?} in {text:?}")),
        }
    }
    Ok(out)
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        // Rust also reads `inf`, `infinity` and `nan`, which the format spells otherwise.
        _ if text.contains(|c: char| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E')) => {
            Err(format!("bad value {text:?}"))
        }
        _ => text.parse().map_err(|_| format!("bad value {text:?}")),
    }
}

/// Buckets of each series ascend in `le`, their counts never decrease, and
/// the `+Inf` bucket equals `_count`.
fn check_histogram(family: &Family) -> Result<(), String> {
    let name = &family.name;
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in &family.samples {
        if sample.name.ends_with("_bucket") {
            let mut labels = sample.labels.clone();
            let le = labels.remove("le").unwrap_or_default();
            let le = parse_value(&le).map_err(|error| format!("{name}: le: {error}"))?;
            series.entry(labels).or_default().push((le, sample.value));
        }
    }
    let count_name = format!("{name}_count");
    for (labels, buckets) in &series {
        let windows_ok = buckets
            .windows(2)
            .all(|pair| pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1);
        if !windows_ok {
            return Err(format!(
                "{name}{labels:?}: buckets not ascending and cumulative: {buckets:?}"
            ));
        }
        let Some(&(le, inf_count)) = buckets.last().filter(|(le, _)| *le == f64::INFINITY) else {
            return Err(format!("{name}{labels:?}: no le=\"+Inf\" bucket"));
        };
        let count = family
            .samples
            .iter()
            .find(|sample| sample.name == count_name && &sample.labels == labels)
            .map(|sample| sample.value);
        if count != Some(inf_count) {
            return Err(format!(
                "{name}{labels:?}: bucket le={le} holds {inf_count}, but _count is {count:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# HELP dice_rpcs RPCs served.
# TYPE dice_rpcs counter
dice_rpcs_total{method=\"/a.B/C\",code=\"Ok\"} 3
# TYPE dice_rpc_duration_seconds histogram
dice_rpc_duration_seconds_sum{method=\"/a.B/C\"} 0.5
dice_rpc_duration_seconds_count{method=\"/a.B/C\"} 3
dice_rpc_duration_seconds_bucket{le=\"0.1\",method=\"/a.B/C\"} 1
dice_rpc_duration_seconds_bucket{le=\"1.0\",method=\"/a.B/C\"} 3
dice_rpc_duration_seconds_bucket{le=\"+Inf\",method=\"/a.B/C\"} 3
# TYPE dice_cert gauge
dice_cert{cert=\"/a \\\"b\\\"\\\\c\\nd\"} 1.8e9
# TYPE dice_build info
dice_build_info{version=\"0.1.0\"} 1
# EOF
";

    #[test]
    fn parses_families_samples_and_escapes() {
        let exposition = parse(GOOD).expect("valid");
        assert_eq!(exposition.families.len(), 4);
        let rpcs = exposition.family("dice_rpcs").expect("rpcs");
        assert_eq!(rpcs.kind, Kind::Counter);
        assert_eq!(rpcs.help.as_deref(), Some("RPCs served."));
        assert_eq!(
            exposition.value("dice_rpcs_total", &[("method", "/a.B/C"), ("code", "Ok")]),
            Some(3.0)
        );
        assert_eq!(exposition.value("dice_rpcs_total", &[("code", "Ok")]), None);
        let cert = exposition.samples("dice_cert").next().expect("cert");
        assert_eq!(cert.label("cert"), Some("/a \"b\"\\c\nd"));
        assert_eq!(cert.value, 1.8e9);
    }

    #[test]
    fn rejects_malformed_expositions() {
        let cases = [
            ("no EOF", GOOD.replace("# EOF\n", "")),
            ("after EOF", format!("{GOOD}x 1\n")),
            ("no TYPE", "x 1\n# EOF\n".to_owned()),
            (
                "wrong suffix",
                GOOD.replace("dice_rpcs_total", "dice_rpcs_sum"),
            ),
            ("unclosed label", GOOD.replace("code=\"Ok\"}", "code=\"Ok}")),
            ("bad escape", GOOD.replace("\\nd", "\\td")),
            ("bad value", GOOD.replace("} 3\n#", "} three\n#")),
            (
                "duplicate series",
                GOOD.replace(
                    "# TYPE dice_rpc_",
                    "dice_rpcs_total{method=\"/a.B/C\",code=\"Ok\"} 3\n# TYPE dice_rpc_",
                ),
            ),
            (
                "not cumulative",
                GOOD.replace(
                    "le=\"1.0\",method=\"/a.B/C\"} 3",
                    "le=\"1.0\",method=\"/a.B/C\"} 0",
                ),
            ),
            (
                "+Inf is not _count",
                GOOD.replace("_count{method=\"/a.B/C\"} 3", "_count{method=\"/a.B/C\"} 4"),
            ),
            ("info not 1", GOOD.replace("} 1\n# EOF", "} 2\n# EOF")),
            (
                "TYPE twice",
                GOOD.replace("# TYPE dice_cert gauge", "# TYPE dice_rpcs gauge"),
            ),
        ];
        for (what, text) in cases {
            assert_ne!(text, GOOD, "{what}: the case changed nothing");
            assert!(parse(&text).is_err(), "{what}: accepted\n{text}");
        }
    }

    #[test]
    fn reads_http_responses() {
        let plain =
            parse_http(b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: 3\r\n\r\nabc")
                .expect("valid");
        assert_eq!(plain.status, 200);
        assert_eq!(plain.headers["content-type"], "a/b");
        assert_eq!(plain.body, "abc");
        let chunked = parse_http(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
        )
        .expect("valid");
        assert_eq!(chunked.status, 404);
        assert_eq!(chunked.body, "abc");
        assert!(parse_http(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc").is_err());
    }
}
