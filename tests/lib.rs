//! Shared helpers for brook's integration tests (`tests/it`).
//!
//! The deployment under test is named by `MONGODB_URI`. `cargo xtask test` sets it to the
//! nx-27017 peer it starts; `MONGODB_URI=… cargo xtask test --live` points the same tests at
//! any deployment. When it is unset the tests fail with a message saying how to run them:
//! integration tests never skip silently.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use brook::{ClientOptions, Host};

/// The environment variable that names the deployment under test.
pub const MONGODB_URI_VAR: &str = "MONGODB_URI";

/// The connection string of the deployment under test.
///
/// # Panics
///
/// When `MONGODB_URI` is unset or empty, with a message saying how to run the tests.
pub fn mongodb_uri() -> String {
    match std::env::var(MONGODB_URI_VAR) {
        Ok(uri) if !uri.trim().is_empty() => uri,
        _ => panic!(
            "{MONGODB_URI_VAR} is not set: the integration tests need a deployment. Run them with \
             `cargo xtask test` (which starts an nx-27017 peer and sets it), or set \
             {MONGODB_URI_VAR}=mongodb://host:port/ (e.g. after `cargo xtask peer start`)"
        ),
    }
}

/// The first seed of a connection string as `host:port`, ready for
/// [`std::net::ToSocketAddrs`] (IPv6 literals in brackets), parsed by brook's own
/// connection-string parser.
///
/// # Panics
///
/// When the string does not parse or its first host is not a TCP host.
pub fn first_seed_address(uri: &str) -> String {
    let options = ClientOptions::parse(uri)
        .unwrap_or_else(|e| panic!("{MONGODB_URI_VAR}={uri} does not parse: {e}"));
    match options.hosts.first() {
        Some(Host::Tcp { host, port }) => {
            let port = port.unwrap_or(brook::DEFAULT_PORT);
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
        other => panic!("{MONGODB_URI_VAR}={uri}: first host {other:?} is not a TCP host"),
    }
}

/// A database or collection name no other test (nor an earlier run against the same
/// deployment) uses: `prefix`, the process id, a per-process counter and the time.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 100_000);
    format!("{prefix}_{}_{n}_{secs}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_seed_keeps_ipv6_brackets_and_defaults_the_port() {
        assert_eq!(first_seed_address("mongodb://[::1]:27018/"), "[::1]:27018");
        assert_eq!(first_seed_address("mongodb://a,b:2/"), "a:27017");
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("x"), unique_name("x"));
        assert!(unique_name("db").starts_with("db_"));
    }
}
