//! Parses a large fleet file's `[[nodes]]` a batch at a time.
//!
//! `toml::from_str` builds a tree of the whole document before deserializing
//! it, about 2.3 KB per `[[nodes]]` entry: 120 MB for 50,000 nodes, freed
//! right after but counted in the peak. Here the `[[nodes]]` sections (each
//! header with its lines, `[nodes.labels]` sub-tables included) are parsed
//! in batches of [`BATCH`] entries, each batch's spans moved back to their
//! place in the file; the rest of the file is parsed on its own, with the
//! node sections blanked out so its offsets stay those of the file. Any
//! error, and any file this line scan cannot split safely (multi-line
//! strings, small files), goes through `toml::from_str` of the whole file,
//! which reports it as usual.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::raw::{RawFleet, RawNode};

/// Files smaller than this are parsed whole: the tree costs little.
const MIN_SIZE: usize = 256 << 10;
/// `[[nodes]]` entries per batch.
const BATCH: usize = 1000;

/// Only `[[nodes]]`: what a batch of node sections holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodes {
    nodes: Vec<Spanned<RawNode>>,
}

/// Parses `source` as [`RawFleet`], in batches when that is safe.
pub(super) fn parse(source: &str) -> Result<RawFleet, toml::de::Error> {
    match parse_in_batches(source) {
        Some(raw) => Ok(raw),
        None => toml::from_str(source),
    }
}

fn parse_in_batches(source: &str) -> Option<RawFleet> {
    if source.len() < MIN_SIZE || source.contains("\"\"\"") || source.contains("'''") {
        return None;
    }
    let sections = node_sections(source);
    if sections.is_empty() {
        return None;
    }
    let mut rest = source.as_bytes().to_vec();
    for section in &sections {
        for byte in &mut rest[section.clone()] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    }
    let rest = String::from_utf8(rest).ok()?;
    let mut raw: RawFleet = toml::from_str(&rest).ok()?;
    drop(rest);
    if !raw.nodes.is_empty() {
        // `nodes = [...]` besides `[[nodes]]`: let the whole parse say why.
        return None;
    }
    let mut nodes = Vec::with_capacity(sections.len());
    for batch in contiguous_batches(&sections) {
        let parsed: RawNodes = toml::from_str(&source[batch.clone()]).ok()?;
        nodes.extend(
            parsed
                .nodes
                .into_iter()
                .map(|node| shift_node(node, batch.start)),
        );
    }
    raw.nodes = nodes;
    Some(raw)
}

/// The byte ranges of the `[[nodes]]` sections: from each `[[nodes]]` header
/// to the next header that is not one of its sub-tables (`[nodes.…]`).
fn node_sections(source: &str) -> Vec<Range<usize>> {
    let mut sections = Vec::new();
    let mut open: Option<usize> = None;
    let mut at = 0;
    for line in source.split_inclusive('\n') {
        let header = line.trim_start();
        if header.starts_with('[') {
            let is_node = header.starts_with("[[nodes]]");
            let is_sub_table = header.starts_with("[nodes.") || header.starts_with("[[nodes.");
            if !is_sub_table {
                if let Some(start) = open.take() {
                    sections.push(start..at);
                }
                if is_node {
                    open = Some(at);
                }
            }
        }
        at += line.len();
    }
    if let Some(start) = open {
        sections.push(start..at);
    }
    sections
}

/// Runs of adjacent sections, at most [`BATCH`] sections each.
fn contiguous_batches(sections: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut batches: Vec<Range<usize>> = Vec::new();
    let mut count = 0;
    for section in sections {
        match batches.last_mut() {
            Some(last) if last.end == section.start && count < BATCH => {
                last.end = section.end;
                count += 1;
            }
            _ => {
                batches.push(section.clone());
                count = 1;
            }
        }
    }
    batches
}

fn shift<T>(value: Spanned<T>, by: usize) -> Spanned<T> {
    let span = value.span();
    Spanned::new(span.start + by..span.end + by, value.into_inner())
}

fn shift_node(node: Spanned<RawNode>, by: usize) -> Spanned<RawNode> {
    let span = node.span();
    let node = node.into_inner();
    Spanned::new(
        span.start + by..span.end + by,
        RawNode {
            name: shift(node.name, by),
            address: shift(node.address, by),
            server_name: node.server_name.map(|value| shift(value, by)),
            labels: node.labels.map(|value| shift(value, by)),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A fleet file past [`MIN_SIZE`], with sub-tables, other tables between
    /// node sections, and comments.
    fn big_fleet(bad_line: Option<&str>) -> String {
        let mut text = String::from("# fleet\n[client]\ntimeout = \"2s\"\n");
        for i in 0..6000 {
            text.push_str(&format!(
                "\n[[nodes]] # entry {i}\nname = \"n{i}\"\naddress = \"127.0.0.1:{}\"\n",
                1 + i % 60000
            ));
            if i % 7 == 0 {
                text.push_str(&format!("[nodes.labels]\nrack = \"r{i}\"\n"));
            }
            if i == 3000 {
                text.push_str("\n[[discovery]]\nkind = \"file_sd\"\npath = \"sd.json\"\n");
                if let Some(line) = bad_line {
                    text.push_str(line);
                }
            }
        }
        text
    }

    #[test]
    fn batches_give_what_the_whole_parse_gives() {
        let text = big_fleet(None);
        assert!(text.len() >= MIN_SIZE);
        let batched = parse_in_batches(&text).expect("split into batches");
        let whole: RawFleet = toml::from_str(&text).expect("valid TOML");
        assert_eq!(batched.nodes.len(), 6000);
        assert_eq!(batched.discovery.len(), 1);
        for (a, b) in batched.nodes.iter().zip(&whole.nodes) {
            assert_eq!(a.span(), b.span());
            let (a, b) = (a.get_ref(), b.get_ref());
            assert_eq!(
                (a.name.span(), a.name.get_ref()),
                (b.name.span(), b.name.get_ref())
            );
            assert_eq!(a.address.span(), b.address.span());
            assert_eq!(
                a.labels.as_ref().map(|l| (l.span(), l.get_ref().clone())),
                b.labels.as_ref().map(|l| (l.span(), l.get_ref().clone()))
            );
        }
        let fleet = super::super::parse(Path::new("f.toml"), &text).expect("a valid fleet");
        assert_eq!(fleet.nodes.len(), 6000);
    }

    #[test]
    fn errors_still_name_their_line() {
        let text = big_fleet(Some("retries = 3\n"));
        let line = 1 + text
            .lines()
            .position(|line| line == "retries = 3")
            .expect("the bad line");
        let errors = super::super::parse(Path::new("f.toml"), &text).expect_err("unknown key");
        let message = errors.to_string();
        assert!(
            message.starts_with(&format!("f.toml line {line}: ")),
            "{message}"
        );
        assert!(message.contains("unknown field `retries`"), "{message}");
    }
}
