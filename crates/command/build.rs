//! Records the version of the compiler building brook, for the handshake's
//! `client.platform` field (e.g. "rustc 1.95.0"). Runs `$RUSTC --version` once at
//! build time; the library itself never spawns processes or reads the environment.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| String::from("rustc"));
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| String::from("unknown"));
    println!("cargo::rustc-env=BROOK_RUSTC_VERSION={version}");
}
