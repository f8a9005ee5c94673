//! The system `openssl` CLI, for the key forms rcgen (built with ring) cannot
//! write: RSA key generation (PKCS#1) and EC keys in SEC1 form.
//!
//! A missing `openssl` fails the test with the install command; it never skips.

use std::path::Path;
use std::process::{Command, Output};

const MISSING: &str = "openssl not found: apt-get install openssl";

/// Runs `openssl ARGS...`, returning stdout; panics with stderr on failure.
pub fn run(args: &[&str]) -> String {
    let output: Output = match Command::new("openssl").args(args).output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
        Err(error) => panic!("could not run openssl ({MISSING} if it is missing): {error}"),
    };
    assert!(
        output.status.success(),
        "openssl {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("openssl writes PEM as ASCII")
}

/// Generates an RSA key of `bits` bits, written to `out` in PKCS#1 form
/// (`BEGIN RSA PRIVATE KEY`), and returns the same key as PKCS#8 PEM text.
pub fn generate_rsa(out: &Path, bits: u32) -> String {
    let out = path_str(out);
    run(&["genrsa", "-traditional", "-out", out, &bits.to_string()]);
    run(&["pkcs8", "-topk8", "-nocrypt", "-in", out])
}

/// Rewrites the EC key in `pkcs8` (a PKCS#8 PEM file) as SEC1 (`BEGIN EC PRIVATE KEY`) in `out`.
pub fn ec_to_sec1(pkcs8: &Path, out: &Path) {
    run(&["ec", "-in", path_str(pkcs8), "-out", path_str(out)]);
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}
