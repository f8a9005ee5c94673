//! Loads a page in Debian's headless Chromium and returns the DOM it built.
//!
//! The flags are the ones this machine needs: no sandbox (tests run as
//! root), no GPU, and no background networking (the machine's network is
//! closed, and Chromium would otherwise keep trying to reach Google).
//! Each run gets a fresh profile. Chromium takes seconds to start, so tests
//! load as few pages as they can.

use std::process::Command;
use std::time::Duration;

use crate::process::{RunOutput, run_with_timeout};
use crate::tools;

/// How long one Chromium run may take.
pub const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// Loads `url` and returns the serialized DOM (`--dump-dom`), after scripts ran.
/// Panics, with Chromium's output, if it fails.
pub fn dump_dom(url: &str) -> String {
    let profile = tempfile::Builder::new()
        .prefix("dice-chromium-")
        .tempdir()
        .expect("create a Chromium profile dir");
    let mut command = Command::new(tools::chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .env("HOME", profile.path());
    let output: RunOutput = run_with_timeout(command, CHROMIUM_TIMEOUT);
    output.assert_success();
    assert!(
        output.stdout.contains("<html"),
        "Chromium printed no DOM for {url}\n{output}"
    );
    output.stdout
}

/// The opening tag of the first element with `id="{id}"` in `dom`, if any.
pub fn element_tag<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!(" id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

/// The text right after the opening tag of the element with `id="{id}"`, up to the next tag.
pub fn element_text<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let tag = element_tag(dom, id)?;
    let after = dom.find(tag)? + tag.len();
    let end = after + dom[after..].find('<')?;
    Some(dom[after..end].trim())
}

/// The value of attribute `name` in an opening `tag`.
pub fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    Some(&tag[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_elements_and_attributes() {
        let dom = r#"<html><body><p class="x" id="die" data-value="3" aria-label="die">⚂</p></body></html>"#;
        let tag = element_tag(dom, "die").expect("the die element");
        assert_eq!(attribute(tag, "data-value"), Some("3"));
        assert_eq!(element_text(dom, "die"), Some("⚂"));
        assert_eq!(element_tag(dom, "error"), None);
        assert_eq!(attribute(tag, "data-kind"), None);
    }
}
