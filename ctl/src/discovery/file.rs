//! `kind = "file_sd"`: a Prometheus `file_sd` file, JSON (`.json`) or YAML
//! (`.yaml`, `.yml`), in the same format as `http_sd`.

use std::path::Path;

/// Reads `path` into a JSON value, whichever of the two it is written in.
pub async fn read(path: &Path) -> Result<serde_json::Value, String> {
    let extension = path
        .extension()
        .and_then(|ext| ext.to_str())
        .map(str::to_ascii_lowercase);
    let yaml = match extension.as_deref() {
        Some("json") => false,
        Some("yaml" | "yml") => true,
        _ => {
            return Err(format!(
                "{}: cannot tell JSON from YAML (name the file .json, .yaml or .yml)",
                path.display()
            ));
        }
    };
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => format!(
                "{}: no such file (path is relative to the fleet file)",
                path.display()
            ),
            _ => format!("{}: cannot read: {error}", path.display()),
        })?;
    if yaml {
        serde_yaml_ng::from_str(&text).map_err(|error| format!("not YAML: {error}"))
    } else {
        serde_json::from_str(&text).map_err(|error| format!("not JSON: {error}"))
    }
}
