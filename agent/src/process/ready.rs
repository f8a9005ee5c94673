//! The ready file: the addresses actually bound, one line per listener
//! (`NAME MODE ADDRESS`, and `metrics metrics ADDRESS` for the metrics endpoint), written atomically once every listener is bound.
//! Scripts and tests wait for it instead of sleeping.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::net::Bound;

/// Renders the ready file's lines; the metrics listener, if any, is `metrics metrics ADDRESS`.
pub fn render(bound: &Bound) -> std::io::Result<String> {
    let mut text = String::new();
    for listener in &bound.listeners {
        let address = listener.local_addr()?;
        text.push_str(&format!(
            "{} {} {address}\n",
            listener.config.name,
            listener.config.mode.as_str()
        ));
    }
    if let Some(metrics) = &bound.metrics {
        text.push_str(&format!("metrics metrics {}\n", metrics.local_addr()?));
    }
    Ok(text)
}

/// Writes `text` to `path` through a temp file and a rename, so readers never see half of it.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)
        .with_context(|| format!("cannot create ready file {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write ready file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}
