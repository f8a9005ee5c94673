//! Golden output: expected `dicectl` tables and JSON in `tests/golden/`,
//! compared after what changes from run to run is normalized: ports,
//! latencies, times, serials, rolled values and the version.
//!
//! Set `DICE_BLESS=1` to write the actual output as the new golden file
//! (then review the diff).

use std::path::PathBuf;

use regex::Regex;
use serde_json::Value;

/// `tests/golden/`.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Compares `actual` with `tests/golden/NAME`, printing both in full on a
/// mismatch; with `DICE_BLESS=1`, writes `actual` there instead.
pub fn assert_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("DICE_BLESS").is_some_and(|v| !v.is_empty()) {
        std::fs::create_dir_all(golden_dir()).expect("create tests/golden");
        std::fs::write(&path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error} (run with DICE_BLESS=1 to create it)\n--- actual ---\n{actual}",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "output differs from {} (DICE_BLESS=1 rewrites it)\n--- expected ---\n{expected}\n--- actual ---\n{actual}--- end ---",
        path.display()
    );
}

fn replace(text: &str, pattern: &str, with: &str) -> String {
    Regex::new(pattern)
        .expect("the normalization patterns are valid")
        .replace_all(text, with)
        .into_owned()
}

/// Normalizes one table cell or line of text.
fn normalize_text(text: &str) -> String {
    let text = replace(text, r"127\.0\.0\.1:\d+", "127.0.0.1:PORT");
    let text = replace(&text, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME");
    let text = replace(&text, r"\b\d{4}-\d\d-\d\d\b", "DATE");
    let text = replace(&text, r"\b\d+ms\b", "Nms");
    text.replace(env!("CARGO_PKG_VERSION"), "VERSION")
}

/// Normalizes `dicectl` table output: every cell of the table, then the
/// lines after it; the table is re-aligned so the golden file stays readable.
/// Columns are found at the header's words; `values_column` (e.g. `VALUE`)
/// has its dice replaced by `N`.
pub fn normalize_table(text: &str, values_column: Option<&str>) -> String {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|(i, c)| *c != ' ' && (*i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    let titles: Vec<&str> = header.split_whitespace().collect();
    let values_at = values_column.and_then(|name| titles.iter().position(|t| *t == name));
    let mut rows: Vec<Vec<String>> = vec![titles.iter().map(|t| (*t).to_owned()).collect()];
    let mut rest = Vec::new();
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            rest.push(String::new());
            break;
        }
        let cells = (0..starts.len())
            .map(|i| {
                let start = starts[i].min(line.len());
                let end = starts.get(i + 1).map_or(line.len(), |&e| e.min(line.len()));
                let cell = normalize_text(line[start..end].trim());
                if Some(i) == values_at && cell != "-" {
                    replace(&cell, r"\d+", "N")
                } else {
                    cell
                }
            })
            .collect();
        rows.push(cells);
    }
    rest.extend(lines.map(normalize_text));

    let mut widths = vec![0; starts.len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = (row.iter().zip(&widths))
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for line in rest {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Normalizes a `dicectl --output json` document: `*_ms` become 0, times
/// `TIME`, ports `PORT`, serials `SERIAL`, rolled values 0, the version `VERSION`.
pub fn normalize_json(value: &Value) -> Value {
    normalize_value(None, value)
}

fn normalize_value(key: Option<&str>, value: &Value) -> Value {
    match (key, value) {
        (_, Value::Object(map)) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalize_value(Some(k), v)))
                .collect(),
        ),
        (Some("values"), Value::Array(items)) => {
            Value::Array(items.iter().map(|_| Value::from(0)).collect())
        }
        (_, Value::Array(items)) => {
            Value::Array(items.iter().map(|v| normalize_value(None, v)).collect())
        }
        (Some(key), Value::Number(_))
            if key.ends_with("_ms") && key != "timeout_ms" && key != "expiry_warning_ms" =>
        {
            Value::from(0)
        }
        (Some("serial"), Value::String(_)) => Value::from("SERIAL"),
        (_, Value::String(text)) => Value::from(normalize_text(text)),
        (_, other) => other.clone(),
    }
}

/// Pretty JSON with a final newline, as golden files hold it.
pub fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("a Value always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_normalized_and_realigned() {
        let table = "\
NODE  ADDRESS          VALUE  LATENCY  ERROR
a     127.0.0.1:40123  3,6    1003ms   timeout: x
bb    127.0.0.1:9      -      2ms

ok 1/2; latency p50 2ms, max 2ms
";
        // Re-aligned: the widest ADDRESS is now 14 characters.
        let expected = "\
NODE  ADDRESS         VALUE  LATENCY  ERROR
a     127.0.0.1:PORT  N,N    Nms      timeout: x
bb    127.0.0.1:PORT  -      Nms

ok 1/2; latency p50 Nms, max Nms
";
        assert_eq!(normalize_table(table, Some("VALUE")), expected);
    }

    #[test]
    fn json_is_normalized() {
        let value = serde_json::json!({
            "started_at": "2026-01-02T03:04:05Z",
            "timeout_ms": 1000,
            "nodes": [{"address": "127.0.0.1:5555", "latency_ms": 3, "values": [4, 2], "serial": "ab"}],
        });
        let expected = serde_json::json!({
            "started_at": "TIME",
            "timeout_ms": 1000,
            "nodes": [{"address": "127.0.0.1:PORT", "latency_ms": 0, "values": [0, 0], "serial": "SERIAL"}],
        });
        assert_eq!(normalize_json(&value), expected);
    }
}
