//! The agent's config parser on arbitrary text: `dice_agent::config::parse`
//! (TOML, then validation) must return a config or errors, never panic, and
//! every error must render.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match dice_agent::config::parse(Path::new("/etc/dice/node.toml"), text) {
        Ok(config) => {
            // What the agent logs about a config it accepted.
            let _ = format!("{config:?}");
        }
        Err(errors) => {
            for error in &errors.0 {
                let _ = error.to_string();
            }
        }
    }
});
